"""The course catalog's search index: local courses and entries from other sources.

One table, ``catalog_entries``, holds what search reads: this instance's
public courses (source ``''``, kept up to date by :mod:`core.courses` in the
same transaction as the change) and entries another source published (a
peer, stored by the federation plugin through :func:`apply_changes`).  Core
knows nothing of peers: a source is an opaque key.

Full text runs on SQLite's FTS5 (an external-content table kept in step by
triggers) or PostgreSQL's full-text search (a GIN expression index over a
weighted ``tsvector``), with the same behaviour on both: every word of the
query must match, the last one as a prefix (search as you type); the title
weighs most, then summary, subject and institution, then the description.

Local rows are never removed: a course that stops being public keeps a row
marked ``deleted`` with its text blanked, and every change takes the next
value of the local change sequence, so a change feed can page through them.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import zlib
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import Any

from flask import current_app
from flask import has_app_context
from sqlalchemy import DDL
from sqlalchemy import ColumnElement
from sqlalchemy import Double
from sqlalchemy import Integer
from sqlalchemy import Select
from sqlalchemy import Table
from sqlalchemy import and_
from sqlalchemy import bindparam
from sqlalchemy import cast
from sqlalchemy import column
from sqlalchemy import delete
from sqlalchemy import event
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import literal
from sqlalchemy import literal_column
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import table
from sqlalchemy import text
from sqlalchemy import union_all
from sqlalchemy import update
from sqlalchemy.orm import Session

from core import rbac
from core.db import utcnow
from core.errors import BadRequest
from core.models import CatalogEntry
from core.models import Course
from core.models import User
from core.plugins import PluginHost

__all__ = [
    "FACETS",
    "LOCAL",
    "MAX_LIMIT",
    "CatalogCursorInvalid",
    "CatalogFilterInvalid",
    "CatalogHit",
    "CatalogPage",
    "EntryData",
    "LocalSourceRefused",
    "apply_changes",
    "course_path",
    "delete_source",
    "index_course",
    "local_changes",
    "local_head",
    "reindex_local",
    "search",
]

log = logging.getLogger(__name__)

LOCAL = ""
"""The source of this instance's own courses."""
FACETS = ("institution", "language", "subject", "level")
"""Facets counted on every search, and the filters :func:`search` accepts."""
MAX_LIMIT = 100
"""The largest page :func:`search` returns."""
FACET_VALUES = 20
"""At most this many values per facet, the most frequent first."""
FACET_SCAN = 10_000
"""Facets count at most this many matches (a broad query on a big index stays fast)."""
MAX_QUERY_WORDS = 12
MAX_WORD = 64

_TEXT_FIELDS = ("title", "summary", "description", "language", "subject", "level")
_ENTRY_FIELDS = (
    "title",
    "summary",
    "description",
    "language",
    "subject",
    "level",
    "institution",
    "url",
    "image",
    "data",
)
_WORD = re.compile(r"\w+", re.UNICODE)

# ---------------------------------------------------------------- errors


class CatalogCursorInvalid(BadRequest):
    """The cursor was not one :func:`search` returned (or is for another query)."""

    type_slug = "catalog-cursor-invalid"


class CatalogFilterInvalid(BadRequest):
    """A filter names something other than a facet, or is not a short string."""

    type_slug = "catalog-filter-invalid"


class LocalSourceRefused(ValueError):
    """:func:`apply_changes` was asked to write this instance's own entries."""


# ---------------------------------------------------------------- full-text DDL

#: The weighted document of a row, PostgreSQL (the GIN index is on exactly this).
PG_VECTOR = (
    "setweight(to_tsvector('simple'::regconfig, coalesce(title, '')), 'A') || "
    "setweight(to_tsvector('simple'::regconfig, coalesce(summary, '') || ' ' || "
    "coalesce(subject, '') || ' ' || coalesce(institution, '')), 'B') || "
    "setweight(to_tsvector('simple'::regconfig, coalesce(description, '')), 'C')"
)

#: SQLite: an external-content FTS5 table and the triggers keeping it in step.
SQLITE_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS catalog_entries_fts USING fts5("
    "title, summary, description, subject, institution, "
    "content='catalog_entries', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2', prefix='2 3 4')",
    "CREATE TRIGGER IF NOT EXISTS catalog_entries_fts_ai AFTER INSERT ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(rowid, title, summary, description, subject, institution) "
    "VALUES (new.id, new.title, new.summary, new.description, new.subject, new.institution); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS catalog_entries_fts_ad AFTER DELETE ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(catalog_entries_fts, rowid, title, summary, description, "
    "subject, institution) VALUES ('delete', old.id, old.title, old.summary, old.description, "
    "old.subject, old.institution); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS catalog_entries_fts_au AFTER UPDATE OF title, summary, "
    "description, subject, institution ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(catalog_entries_fts, rowid, title, summary, description, "
    "subject, institution) VALUES ('delete', old.id, old.title, old.summary, old.description, "
    "old.subject, old.institution); "
    "INSERT INTO catalog_entries_fts(rowid, title, summary, description, subject, institution) "
    "VALUES (new.id, new.title, new.summary, new.description, new.subject, new.institution); "
    "END",
)
SQLITE_DROP = ("DROP TABLE IF EXISTS catalog_entries_fts",)
PG_DDL = (
    "CREATE INDEX IF NOT EXISTS ix_catalog_entries_search ON catalog_entries "
    f"USING gin (({PG_VECTOR}))",
)
PG_DROP = ("DROP INDEX IF EXISTS ix_catalog_entries_search",)


def _ddl(statement: str) -> DDL:
    return DDL(statement)  # type: ignore[no-untyped-call]


# The migration (core_0002) runs the same statements; these listeners give a
# schema built with ``metadata.create_all`` (tests) the same full-text setup.
_ENTRIES: Table = CatalogEntry.__table__  # type: ignore[assignment]
for _statement in SQLITE_DDL:
    event.listen(_ENTRIES, "after_create", _ddl(_statement).execute_if(dialect="sqlite"))
for _statement in SQLITE_DROP:
    event.listen(_ENTRIES, "before_drop", _ddl(_statement).execute_if(dialect="sqlite"))
for _statement in PG_DDL:
    event.listen(_ENTRIES, "after_create", _ddl(_statement).execute_if(dialect="postgresql"))

# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class EntryData:
    """One catalog entry as a source publishes it.

    :param external_id: the source's id for it (unique within the source).
    :param url: the absolute URL of the course page where it is hosted.
    :param data: further schema.org ``Course`` members (JSON-compatible).
    :param seq: the source's change sequence for the entry, if it has one.
    """

    external_id: str
    title: str
    summary: str = ""
    description: str = ""
    language: str = ""
    subject: str = ""
    level: str = ""
    institution: str = ""
    url: str = ""
    image: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None
    seq: int = 0


@dataclass(frozen=True)
class CatalogHit:
    """One search result.

    ``url`` is the course page: a path on this instance for a local course
    (``course_id`` is then its public id), the hosting instance's absolute URL
    for an entry of another source (``course_id`` is None).
    """

    title: str
    summary: str
    url: str
    institution: str
    source: str
    language: str
    subject: str
    level: str
    image: str
    course_id: str | None
    external_id: str


@dataclass(frozen=True)
class CatalogPage:
    """A page of search results, facet counts over the matches, and the next page's cursor.

    ``facets`` maps each of :data:`FACETS` to ``(value, count)`` pairs, the
    most frequent first (empty values left out).  They count every match
    unless there are more than :data:`FACET_SCAN`: then they count that many
    of them and ``facets_exact`` is False (show them as "about").
    ``next_cursor`` is None on the last page.
    """

    entries: list[CatalogHit]
    facets: dict[str, list[tuple[str, int]]]
    next_cursor: str | None
    facets_exact: bool = True


# ---------------------------------------------------------------- local courses


def course_path(public_id: str) -> str:
    """The path of a local course's page, which local catalog entries link to."""
    return f"/courses/{public_id}"


def _host() -> PluginHost:
    host: PluginHost = current_app.extensions["trivium.plugins"]
    return host


def _institution() -> str:
    name: str = current_app.extensions["trivium.settings"].instance.name
    return name


def _is_postgres(sess: Session) -> bool:
    return sess.get_bind().dialect.name == "postgresql"


def _next_local_seq(sess: Session) -> int:
    # Changes must become visible in sequence order, or a feed reader past
    # seq n could miss a slower transaction's n-1: on PostgreSQL a
    # transaction-scoped lock serialises local index writers until commit;
    # SQLite has one writer at a time anyway.
    if _is_postgres(sess):
        sess.execute(text("SELECT pg_advisory_xact_lock(7413920551)"))
    current = sess.scalar(select(func.max(CatalogEntry.seq)).where(CatalogEntry.source == LOCAL))
    return int(current or 0) + 1


def _extra_metadata(course: Course) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for result in _host().call("catalog_entry_metadata", course=course):
        if isinstance(result, Mapping):
            for key, value in result.items():
                if isinstance(key, str) and key not in extra:
                    extra[key] = value
    try:
        json.dumps(extra)
    except (TypeError, ValueError):
        log.warning("catalog=metadata_dropped course=%s reason=not_json", course.public_id)
        return {}
    return extra


def _local_values(course: Course) -> dict[str, Any]:
    public = course.status == "published" and course.visibility in ("instance", "federated")
    if not public:
        return {
            "deleted": True,
            "federated": False,
            **{name: "" for name in _ENTRY_FIELDS if name != "data"},
            "data": {},
        }
    return {
        "deleted": False,
        "federated": course.visibility == "federated",
        "title": course.title,
        "summary": course.summary or "",
        "description": course.description or "",
        "language": course.language or "",
        "subject": course.subject or "",
        "level": course.level or "",
        "institution": _institution(),
        "url": course_path(course.public_id),
        "image": "",
        "data": _extra_metadata(course),
    }


def index_course(sess: Session, course: Course) -> bool:
    """Bring the course's catalog entry in line with the course (flushes, never commits).

    A published course of visibility ``instance`` or ``federated`` is indexed;
    any other keeps (or gets no) entry, marked deleted.  Called by
    :mod:`core.courses` on every change that can alter the entry; the
    ``catalog_changed`` hook hears of changes to entries of federated courses.

    :return: whether the entry changed.
    """
    row = sess.scalar(
        select(CatalogEntry).where(
            CatalogEntry.source == LOCAL, CatalogEntry.external_id == course.public_id
        )
    )
    values = _local_values(course)
    if row is None:
        if values["deleted"]:
            return False
        row = CatalogEntry(source=LOCAL, external_id=course.public_id)
        sess.add(row)
    elif all(getattr(row, name) == value for name, value in values.items()):
        return False
    was_shared = bool(row.shared)
    for name, value in values.items():
        setattr(row, name, value)
    row.shared = was_shared or bool(values["federated"])
    row.updated_at = utcnow()
    row.seq = _next_local_seq(sess)
    sess.flush()
    if row.shared:
        _host().call("catalog_changed", session=sess, external_ids=[course.public_id])
    return True


def reindex_local(sess: Session) -> int:
    """Re-index every local course (after a rename of the instance, say).

    :return: how many entries changed.
    """
    changed = 0
    for course in sess.scalars(select(Course).order_by(Course.id)):
        changed += index_course(sess, course)
    return changed


def local_head(sess: Session) -> int:
    """The newest change sequence of local entries ever federated (0 if none)."""
    value = sess.scalar(
        select(func.max(CatalogEntry.seq)).where(CatalogEntry.source == LOCAL, CatalogEntry.shared)
    )
    return int(value or 0)


def local_changes(sess: Session, after: int, limit: int) -> list[CatalogEntry]:
    """Local entries of courses that are or were federated, changed after ``after``.

    An entry whose course is no longer federated (unpublished, archived, made
    private or instance-only) has ``federated`` False: a change feed publishes
    it as a tombstone.

    :return: at most ``limit`` entries in change-sequence order.
    """
    return list(
        sess.scalars(
            select(CatalogEntry)
            .where(CatalogEntry.source == LOCAL, CatalogEntry.shared, CatalogEntry.seq > after)
            .order_by(CatalogEntry.seq)
            .limit(limit)
        )
    )


# ---------------------------------------------------------------- other sources


def apply_changes(
    sess: Session, source: str, upserts: Sequence[EntryData], deletions: Iterable[str] = ()
) -> tuple[int, int]:
    """Store a batch of a source's entries and remove the ones it withdrew (flushes only).

    Entries are keyed by ``(source, external_id)``, so a source can only ever
    write its own rows; this instance's courses are out of reach.

    :param source: the source's key (not ``''``).
    :param upserts: entries to insert or replace (the last one wins for a repeated id).
    :param deletions: external ids the source withdrew.
    :return: ``(stored, removed)`` counts.
    :raise LocalSourceRefused: ``source`` is this instance's own.
    """
    if source == LOCAL:
        raise LocalSourceRefused("entries of this instance are indexed from its courses")
    latest: dict[str, EntryData] = {entry.external_id: entry for entry in upserts}
    gone = [external_id for external_id in deletions if external_id not in latest]
    removed = 0
    if gone:
        result = sess.execute(
            delete(CatalogEntry).where(
                CatalogEntry.source == source, CatalogEntry.external_id.in_(gone)
            ),
            execution_options={"synchronize_session": False},
        )
        removed = int(getattr(result, "rowcount", 0) or 0)
    if not latest:
        return 0, removed
    existing: dict[str, int] = {
        row[0]: row[1]
        for row in sess.execute(
            select(CatalogEntry.external_id, CatalogEntry.id).where(
                CatalogEntry.source == source, CatalogEntry.external_id.in_(list(latest))
            )
        )
    }
    now = utcnow()
    new_rows: list[dict[str, Any]] = []
    changed_rows: list[dict[str, Any]] = []
    for external_id, entry in latest.items():
        values = {
            "title": entry.title,
            "summary": entry.summary,
            "description": entry.description,
            "language": entry.language,
            "subject": entry.subject,
            "level": entry.level,
            "institution": entry.institution,
            "url": entry.url,
            "image": entry.image,
            "data": dict(entry.data),
            "updated_at": entry.updated_at or now,
            "seq": entry.seq,
            "deleted": False,
            "federated": False,
            "shared": False,
        }
        if external_id in existing:
            changed_rows.append({"row_id": existing[external_id], **values})
        else:
            new_rows.append({"source": source, "external_id": external_id, **values})
    if new_rows:
        sess.execute(insert(_ENTRIES), new_rows)
    if changed_rows:
        sess.execute(
            update(_ENTRIES).where(_ENTRIES.c.id == bindparam("row_id")),
            changed_rows,
        )
    return len(latest), removed


def delete_source(sess: Session, source: str) -> int:
    """Remove every entry of a source (a peer that was removed).

    :return: how many were removed.
    :raise LocalSourceRefused: ``source`` is this instance's own.
    """
    if source == LOCAL:
        raise LocalSourceRefused("entries of this instance are indexed from its courses")
    result = sess.execute(
        delete(CatalogEntry).where(CatalogEntry.source == source),
        execution_options={"synchronize_session": False},
    )
    return int(getattr(result, "rowcount", 0) or 0)


# ---------------------------------------------------------------- search

_FTS = table("catalog_entries_fts", column("rowid", Integer))
_FTS_MATCH: ColumnElement[Any] = literal_column("catalog_entries_fts")
_PG_VECTOR: ColumnElement[Any] = literal_column(PG_VECTOR)


def _words(q: str | None) -> list[str]:
    if not q:
        return []
    return [w[:MAX_WORD] for w in _WORD.findall(q)][:MAX_QUERY_WORDS]


def _encode_cursor(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, fingerprint: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise CatalogCursorInvalid("the cursor is not valid") from exc
    if (
        not isinstance(payload, dict)
        or payload.get("f") != fingerprint
        or not isinstance(payload.get("i"), int)
        or ("r" in payload and not isinstance(payload["r"], int | float))
    ):
        raise CatalogCursorInvalid("the cursor does not belong to this search")
    return payload


def _clean_filters(filters: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in filters.items():
        if name not in FACETS:
            raise CatalogFilterInvalid(f"unknown filter {name!r}; filters are {', '.join(FACETS)}")
        if not isinstance(value, str) or len(value) > 200:
            raise CatalogFilterInvalid(
                f"filter {name!r} must be a string of at most 200 characters"
            )
        if value:
            out[name] = value
    return out


def _matches(
    sess: Session, words: list[str], filters: Mapping[str, str]
) -> tuple[Select[Any], ColumnElement[Any] | None]:
    """The matching entries (an ``id`` column) and a rank expression where lower is better."""
    entries = CatalogEntry.__table__
    base: Select[Any] = select(entries.c.id).where(entries.c.deleted.is_(False))
    if not words:
        return _filtered(base, filters), None
    if _is_postgres(sess):
        query = func.to_tsquery(
            literal_column("'simple'::regconfig"),
            bindparam("tsq"),
        )
        # real -> double precision, so the value in a cursor compares equal
        # to the row's own when it comes back.
        pg_rank: ColumnElement[Any] = cast(-func.ts_rank_cd(_PG_VECTOR, query), Double())
        return _filtered(base.where(_PG_VECTOR.op("@@")(query)), filters), pg_rank
    match = _FTS_MATCH.op("MATCH")(bindparam("fts"))
    rank: ColumnElement[Any] = func.bm25(_FTS_MATCH, 10.0, 4.0, 1.0, 3.0, 3.0)
    if not filters:
        # Deleted rows have no text, so they never match: the full-text
        # index alone answers, without reading a row per match.
        return select(_FTS.c.rowid.label("id")).where(match), rank
    stmt = base.join(_FTS, _FTS.c.rowid == entries.c.id).where(match)
    return _filtered(stmt, filters), rank


def _filtered(stmt: Select[Any], filters: Mapping[str, str]) -> Select[Any]:
    entries = CatalogEntry.__table__
    for name, value in filters.items():
        col: ColumnElement[Any] = entries.c[name]
        stmt = stmt.where(func.lower(col) == value.lower())
    return stmt


def search(
    sess: Session,
    q: str | None,
    *,
    filters: Mapping[str, str] | None = None,
    viewer: User | None = None,
    cursor: str | None = None,
    limit: int = 20,
) -> CatalogPage:
    """Full-text search over local and other sources' catalog entries.

    Everyone, anonymous visitors included, sees published local courses of
    visibility ``instance`` or ``federated`` and every other source's entries;
    a plugin's ``permission_allowed`` veto on ``course.view`` hides a local
    course from ``viewer``.  Private and draft courses are never in the index:
    their staff and learners find them through :func:`core.courses.catalog`.

    :param q: words to look for (each must match; the last one as a prefix); None or blank
        lists every entry, newest change first.
    :param filters: exact (case-insensitive) values of facets: ``subject``,
        ``language``, ``level``, ``institution``.
    :param viewer: the user searching, or None for an anonymous visitor.
    :param cursor: ``next_cursor`` of the previous page of the same search.
    :param limit: page size, 1 to :data:`MAX_LIMIT`.
    :raise CatalogFilterInvalid: a filter is not a facet or not a short string.
    :raise CatalogCursorInvalid: the cursor is garbled or from another search.
    """
    limit = max(1, min(limit, MAX_LIMIT))
    clean = _clean_filters(filters or {})
    words = _words(q)
    fingerprint = _fingerprint(words, clean)
    matched, rank = _matches(sess, words, clean)
    entries = CatalogEntry.__table__

    ranked = matched.add_columns((rank if rank is not None else -entries.c.id).label("rank"))
    inner = ranked.subquery("hits")
    page_stmt = select(inner.c.id, inner.c.rank)
    if cursor:
        payload = _decode_cursor(cursor, fingerprint)
        last_rank = payload.get("r", -payload["i"])
        page_stmt = page_stmt.where(
            or_(
                inner.c.rank > last_rank,
                and_(inner.c.rank == last_rank, inner.c.id > payload["i"]),
            )
        )
    page_stmt = page_stmt.order_by(inner.c.rank, inner.c.id).limit(limit + 1)
    params = _params(sess, words)
    ranked_ids = sess.execute(page_stmt, params).all()
    more = len(ranked_ids) > limit
    ranked_ids = ranked_ids[:limit]
    next_cursor = None
    if more and ranked_ids:
        last_id, last = ranked_ids[-1]
        payload = {"f": fingerprint, "i": int(last_id)}
        if words:
            payload["r"] = float(last)
        next_cursor = _encode_cursor(payload)

    rows = {
        row.id: row
        for row in sess.execute(select(entries).where(entries.c.id.in_([r[0] for r in ranked_ids])))
    }
    hits = [_hit(rows[r[0]]) for r in ranked_ids if r[0] in rows]
    hits = _without_vetoed(sess, hits, viewer)
    facets, exact = _facets(sess, matched, params)
    return CatalogPage(entries=hits, facets=facets, next_cursor=next_cursor, facets_exact=exact)


def _fingerprint(words: list[str], filters: Mapping[str, str]) -> str:
    key = json.dumps([[w.lower() for w in words], sorted(filters.items())])
    return format(zlib.crc32(key.encode()), "08x")


def _params(sess: Session, words: list[str]) -> dict[str, Any]:
    if not words:
        return {}
    if _is_postgres(sess):
        return {"tsq": " & ".join(f"{w.lower()}{star}" for w, star in _terms(words, ":*"))}
    return {"fts": " ".join(f'"{w}"{star}' for w, star in _terms(words, "*"))}


def _terms(words: list[str], star: str) -> list[tuple[str, str]]:
    """Each word with the prefix marker if it is matched as a prefix.

    Search as you type: the last word may be unfinished, so it matches as a
    prefix (from two characters on); the words before it are whole.
    """
    last = len(words) - 1
    return [(w, star if n == last and len(w) >= 2 else "") for n, w in enumerate(words)]


def _hit(row: Any) -> CatalogHit:
    local = row.source == LOCAL
    institution = row.institution
    if local and not institution and has_app_context():
        institution = _institution()  # indexed by the migration, not changed since
    return CatalogHit(
        title=row.title,
        summary=row.summary,
        url=row.url,
        institution=institution,
        source=row.source,
        language=row.language,
        subject=row.subject,
        level=row.level,
        image=row.image,
        course_id=row.external_id if local else None,
        external_id=row.external_id,
    )


def _without_vetoed(sess: Session, hits: list[CatalogHit], viewer: User | None) -> list[CatalogHit]:
    local_ids = [hit.course_id for hit in hits if hit.course_id is not None]
    if not local_ids:
        return hits
    courses = {
        c.public_id: c for c in sess.scalars(select(Course).where(Course.public_id.in_(local_ids)))
    }
    kept: list[CatalogHit] = []
    for hit in hits:
        course = courses.get(hit.course_id) if hit.course_id is not None else None
        if course is not None and rbac.plugin_vote(viewer, "course.view", course) is False:
            continue
        kept.append(hit)
    return kept


def _facets(
    sess: Session, matched: Select[Any], params: dict[str, Any]
) -> tuple[dict[str, list[tuple[str, int]]], bool]:
    # One statement: at most FACET_SCAN + 1 matches are read once (a
    # materialised CTE holding the four facet columns) and grouped per facet.
    entries = CatalogEntry.__table__
    ids = matched.limit(FACET_SCAN + 1).subquery("matched")
    rows = (
        select(*(entries.c[name] for name in FACETS))
        .select_from(entries.join(ids, ids.c.id == entries.c.id))
        .cte("facet_rows")
        .prefix_with("MATERIALIZED")
    )
    total = select(
        literal("").label("facet"), literal("").label("value"), func.count().label("n")
    ).select_from(rows)
    branches = [
        select(
            literal(name).label("facet"),
            rows.c[name].label("value"),
            func.count().label("n"),
        )
        .where(rows.c[name] != "")
        .group_by(rows.c[name])
        for name in FACETS
    ]
    counts: dict[str, list[tuple[str, int]]] = {name: [] for name in FACETS}
    scanned = 0
    for facet, value, n in sess.execute(union_all(total, *branches), params):
        if facet == "":
            scanned = int(n)
        else:
            counts[facet].append((str(value), int(n)))
    exact = scanned <= FACET_SCAN
    facets = {
        name: sorted(values, key=lambda pair: (-pair[1], pair[0]))[:FACET_VALUES]
        for name, values in counts.items()
    }
    return facets, exact
