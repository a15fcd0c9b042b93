"""The catalog feed: ``GET /federation/v1/catalog``, this instance's federated courses as changes.

An approved peer pages through changes after a cursor, signed like every
federation request (see docs/federation.md, "Catalog feed")::

    GET /federation/v1/catalog?after=0&limit=200

    {"type": "CatalogPage", "instance": "https://lms.uni-a.example",
     "after": "0", "next": "17", "more": false, "items": [
        {"seq": 12, "id": "https://lms.uni-a.example/courses/3f…", "course": {…}},
        {"seq": 17, "id": "https://lms.uni-a.example/courses/9a…", "deleted": true}]}

Each item is the newest state of one course: an upsert carrying a schema.org
``Course``, or a tombstone for a course that stopped being federated
(unpublished, archived, made private or instance-only).  The ``ETag`` names
the state of the whole feed; a reader that reached the end sends it back as
``If-None-Match`` and is answered ``304`` while nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import jsonify
from flask import request
from flask.typing import ResponseReturnValue

from core import catalog
from core import db
from core.config import Settings
from core.errors import BadRequest
from core.models import CatalogEntry
from federation.signed import SignedRequest
from federation.signed import signed_endpoint
from federation.wellknown import CATALOG_PATH
from federation.wellknown import PROTOCOL_VERSION
from federation.wellknown import base_url

__all__ = [
    "DEFAULT_PAGE",
    "MAX_ENTRY_BYTES",
    "MAX_PAGE",
    "FeedCursorInvalid",
    "bp",
    "course_document",
    "feed_etag",
]

log = logging.getLogger(__name__)

bp = Blueprint("federation_catalog", __name__)

DEFAULT_PAGE = 100
"""Items per page when the reader names no ``limit``."""
MAX_PAGE = 500
"""The most items one page holds, whatever the reader asks."""
MAX_ENTRY_BYTES = 16 * 1024
"""An item never exceeds this serialised (extras dropped, then the description cut)."""
MAX_CURSOR = 10**15

_CORE_TERMS = frozenset(
    {
        "@context",
        "@type",
        "@id",
        "identifier",
        "name",
        "abstract",
        "description",
        "provider",
        "inLanguage",
        "educationalLevel",
        "about",
        "url",
        "image",
        "hasCourseInstance",
        "dateModified",
    }
)


class FeedCursorInvalid(BadRequest):
    """``after`` is not a cursor this feed gave (a decimal sequence number), or ``limit`` is not
    a positive integer."""

    type_slug = "catalog-cursor-invalid"


def _settings() -> Settings:
    settings: Settings = current_app.extensions["trivium.settings"]
    return settings


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def course_document(entry: CatalogEntry, base: str, provider: str) -> dict[str, Any]:
    """An entry of a federated course in schema.org ``Course`` terms.

    Extra members from the ``catalog_entry_metadata`` hook are added unless
    they would replace one of these terms; an item that would exceed
    :data:`MAX_ENTRY_BYTES` loses its extras, then description text.

    :param base: this instance's id (base URL).
    :param provider: this instance's name.
    """
    url = base + entry.url
    course: dict[str, Any] = {
        "@context": "https://schema.org",
        "@type": "Course",
        "@id": url,
        "identifier": entry.external_id,
        "name": entry.title,
        "abstract": entry.summary,
        "description": entry.description,
        "provider": {"@type": "EducationalOrganization", "name": provider, "url": base},
        "inLanguage": entry.language,
        "educationalLevel": entry.level,
        "about": entry.subject,
        "url": url,
        "hasCourseInstance": [{"@type": "CourseInstance", "courseMode": "online", "url": url}],
        "dateModified": entry.updated_at.isoformat().replace("+00:00", "Z"),
    }
    if entry.image:
        course["image"] = entry.image if "://" in entry.image else base + entry.image
    extras = {k: v for k, v in (entry.data or {}).items() if k not in _CORE_TERMS}
    with_extras = {**course, **extras}
    if _json_size(with_extras) <= MAX_ENTRY_BYTES - 200:
        return with_extras
    overflow = _json_size(course) - (MAX_ENTRY_BYTES - 200)
    if overflow > 0:
        # Cut the description's UTF-8 by the excess (JSON escapes may still
        # add some: cut a little more until it fits), never mid-character.
        encoded = course["description"].encode()
        while overflow > 0 and encoded:
            encoded = encoded[: max(0, len(encoded) - overflow)]
            course["description"] = encoded.decode(errors="ignore")
            overflow = _json_size(course) - (MAX_ENTRY_BYTES - 200)
    return course


def feed_etag(head: int, base: str, provider: str) -> str:
    """The ETag of the feed while its newest change is ``head`` (weak: it names the feed's
    state, the same for every cursor)."""
    digest = hashlib.sha256(f"{PROTOCOL_VERSION}|{base}|{provider}|{head}".encode()).hexdigest()
    return f'W/"{head}-{digest[:16]}"'


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {part.strip() for part in header.split(",") if part.strip()}


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 16:
        raise FeedCursorInvalid(f"{name} must be a decimal integer, got {raw[:40]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise FeedCursorInvalid(f"{name} must lie between {low} and {high}")
    return value


@bp.get(CATALOG_PATH)
@signed_endpoint
def feed(signed: SignedRequest) -> ResponseReturnValue:
    """One page of changes to this instance's federated courses, for an approved peer."""
    after = _int_arg("after", 0, 0, MAX_CURSOR)
    limit = min(_int_arg("limit", DEFAULT_PAGE, 1, MAX_CURSOR), MAX_PAGE)
    settings = _settings()
    base = base_url(settings)
    provider = settings.instance.name
    sess = db.session()
    head = catalog.local_head(sess)
    etag = feed_etag(head, base, provider)
    if after >= head and etag in _etags(request.headers.get("If-None-Match")):
        log.info("federation=catalog_feed peer=%s after=%d status=304", signed.peer.base_url, after)
        response = Response(status=304)
        response.headers["ETag"] = etag
        return response
    rows = catalog.local_changes(sess, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items: list[dict[str, Any]] = []
    for row in rows:
        url = base + row.url if row.url else base + catalog.course_path(row.external_id)
        if row.federated and not row.deleted:
            items.append(
                {"seq": row.seq, "id": url, "course": course_document(row, base, provider)}
            )
        else:
            items.append({"seq": row.seq, "id": url, "deleted": True})
    next_cursor = rows[-1].seq if rows else after
    body = {
        "type": "CatalogPage",
        "instance": base,
        "after": str(after),
        "next": str(next_cursor),
        "more": more,
        "items": items,
    }
    log.info(
        "federation=catalog_feed peer=%s after=%d items=%d more=%s status=200",
        signed.peer.base_url,
        after,
        len(items),
        more,
    )
    response = jsonify(body)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "private, no-cache"
    return response
