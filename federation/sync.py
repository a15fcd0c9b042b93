"""Catalog sync: pulling each approved peer's catalog feed into the local search index.

A peer's entries are stored under its own source key (its public id) through
:func:`core.catalog.apply_changes`, so they can never overwrite this
instance's courses or another peer's.  Every page is checked before anything
of it is stored: a page that is not the documented JSON, holds more items
than asked for or an item over the size cap, or announces a course whose
``id`` or ``url`` is not on the peer's own origin, is refused whole, logged
with the peer's id, and the peer is retried later with a doubling backoff;
other peers' syncs are separate jobs and never wait for it.

Scheduling: :data:`catalog_tick` runs every ``catalog_tick_seconds`` and
enqueues :data:`catalog_sync` for each approved peer that is due (its
interval passed, its backoff ran out, or it announced a change), and sends
itself again.  A signed ``catalog.changed`` activity in the inbox enqueues
that peer's sync at once; a change to one of our federated courses enqueues
:data:`catalog_announce`, which notifies every approved peer.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import Any
from typing import Literal

from flask import Flask
from flask import current_app
from pydantic import AwareDatetime
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core import catalog
from core import db
from core.catalog import EntryData
from core.config import Settings
from core.db import utcnow
from core.models import Job
from core.tasks import ActorSpec
from core.tasks import actor
from core.tasks import current_job_id
from core.tasks import enqueue_with_options
from federation.client import PeerClient
from federation.client import PeerRequestError
from federation.client import PeerResponse
from federation.config import FederationSettings
from federation.config import federation_settings
from federation.inbox import deliver
from federation.inbox import new_activity
from federation.jsondoc import JsonInvalid
from federation.jsondoc import load_object
from federation.models import FederationPeer
from federation.peers import PeerError
from federation.signed import peer_client
from federation.wellknown import CATALOG_PATH
from federation.wellknown import base_url

__all__ = [
    "ANNOUNCE",
    "SYNC",
    "TICK",
    "CatalogSyncError",
    "FeedMalformed",
    "FeedTooLarge",
    "ForeignEntry",
    "SyncResult",
    "catalog_announce",
    "catalog_sync",
    "catalog_tick",
    "ensure_tick",
    "register",
    "source_key",
    "sync_peer",
]

log = logging.getLogger(__name__)

SYNC = "federation.catalog_sync"
TICK = "federation.catalog_tick"
ANNOUNCE = "federation.catalog_announce"
BACKOFF_START = 30
"""Seconds before the first retry of a failed pull; doubled per further failure."""
_CURSOR = re.compile(r"^[0-9]{1,16}$")

# ---------------------------------------------------------------- errors


class CatalogSyncError(Exception):
    """A feed page was refused; nothing of it was stored.

    ``slug`` names the failure in logs and in the peer's ``catalog_error``.
    """

    slug = "catalog-sync-failed"


class FeedMalformed(CatalogSyncError):
    """The page is not JSON, or not a ``CatalogPage`` as documented."""

    slug = "feed-malformed"


class FeedTooLarge(CatalogSyncError):
    """The page holds more items than asked for, or an item over ``catalog_max_entry_bytes``."""

    slug = "feed-too-large"


class ForeignEntry(CatalogSyncError):
    """An item's ``id`` or course ``url`` is not on the peer's own origin."""

    slug = "foreign-entry"


# ---------------------------------------------------------------- the feed's shape


class _Page(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["CatalogPage"]
    instance: str = Field(max_length=500)
    after: str = Field(pattern=_CURSOR.pattern)
    next: str = Field(pattern=_CURSOR.pattern)
    more: bool
    items: list[dict[str, Any]]


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    seq: int = Field(ge=0, lt=10**16)
    id: str = Field(min_length=1, max_length=500)
    deleted: bool = False
    course: dict[str, Any] | None = None


class _Thing(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(default="", max_length=100)


class _Course(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    type_: Literal["Course"] = Field(alias="@type")
    name: str = Field(min_length=1, max_length=300)
    abstract: str = Field(default="", max_length=1000)
    description: str = Field(default="", max_length=20_000)
    in_language: str = Field(default="", max_length=35, alias="inLanguage")
    educational_level: str = Field(default="", max_length=50, alias="educationalLevel")
    about: str | _Thing = ""
    url: str = Field(max_length=1000)
    image: str = Field(default="", max_length=1000)
    date_modified: AwareDatetime | None = Field(default=None, alias="dateModified")


_COURSE_TERMS = frozenset(
    {
        "@type",
        "name",
        "abstract",
        "description",
        "inLanguage",
        "educationalLevel",
        "about",
        "url",
        "image",
        "dateModified",
        "provider",
    }
)


@dataclass(frozen=True)
class _Parsed:
    upserts: list[EntryData]
    deletions: list[str]
    next: str
    more: bool


def source_key(peer: FederationPeer) -> str:
    """The catalog source under which a peer's entries are stored: its public id."""
    return peer.public_id


def _on_origin(url: str, peer: FederationPeer) -> bool:
    return url.startswith(peer.base_url.rstrip("/") + "/")


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
        for e in exc.errors(include_url=False)[:5]
    )


def parse_page(
    response: PeerResponse, peer: FederationPeer, cursor: str, policy: FederationSettings
) -> _Parsed:
    """Check a feed page in full and turn it into catalog changes.

    :raise FeedMalformed: not JSON, not a ``CatalogPage``, a bad item, or a
        cursor that goes backwards or stands still while ``more`` is true.
    :raise FeedTooLarge: more items than asked for, or an item over the cap.
    :raise ForeignEntry: an item's id or url is not on the peer's origin.
    """
    try:
        raw = load_object(response.body)
    except JsonInvalid as exc:
        raise FeedMalformed(f"not a JSON object: {exc}") from None
    try:
        page = _Page.model_validate(raw)
    except ValidationError as exc:
        raise FeedMalformed(f"not a catalog page: {_errors(exc)}") from None
    if page.instance.rstrip("/") != peer.base_url.rstrip("/"):
        raise ForeignEntry(f"the page is of instance {page.instance!r}")
    if len(page.items) > policy.catalog_page_size:
        raise FeedTooLarge(
            f"{len(page.items)} items on a page, asked for at most {policy.catalog_page_size}"
        )
    if page.after != cursor or int(page.next) < int(cursor):
        raise FeedMalformed(f"cursor went from {cursor} to {page.next} (page after {page.after})")
    if page.more and page.next == cursor:
        raise FeedMalformed("more pages announced but the cursor did not move")
    upserts: list[EntryData] = []
    deletions: list[str] = []
    for index, item_raw in enumerate(page.items):
        size = len(json.dumps(item_raw, separators=(",", ":"), ensure_ascii=False).encode())
        if size > policy.catalog_max_entry_bytes:
            raise FeedTooLarge(
                f"item {index} is {size} bytes, over {policy.catalog_max_entry_bytes}"
            )
        try:
            item = _Item.model_validate(item_raw)
        except ValidationError as exc:
            raise FeedMalformed(f"item {index}: {_errors(exc)}") from None
        if not _on_origin(item.id, peer):
            raise ForeignEntry(f"item {index}: id {item.id[:200]!r} is not on {peer.base_url}")
        if item.deleted:
            deletions.append(item.id)
            continue
        if item.course is None:
            raise FeedMalformed(f"item {index}: neither deleted nor a course")
        try:
            course = _Course.model_validate(item.course)
        except ValidationError as exc:
            raise FeedMalformed(f"item {index}: course: {_errors(exc)}") from None
        if not _on_origin(course.url, peer):
            raise ForeignEntry(
                f"item {index}: course url {course.url[:200]!r} is not on {peer.base_url}"
            )
        image = course.image if _on_origin(course.image, peer) else ""
        about = course.about if isinstance(course.about, str) else course.about.name
        extras = {k: v for k, v in item.course.items() if k not in _COURSE_TERMS}
        upserts.append(
            EntryData(
                external_id=item.id,
                title=course.name,
                summary=course.abstract,
                description=course.description,
                language=course.in_language,
                subject=about[:100],
                level=course.educational_level,
                institution=peer.name,
                url=course.url,
                image=image,
                data=extras,
                updated_at=course.date_modified,
                seq=item.seq,
            )
        )
    return _Parsed(upserts, deletions, page.next, page.more)


# ---------------------------------------------------------------- one peer


@dataclass(frozen=True)
class SyncResult:
    """What one sync run of a peer did.

    ``status``: ``synced`` (read to the end), ``partial`` (stopped at
    ``catalog_max_pages``; the rest follows), ``not_modified`` (answered 304),
    ``failed`` (``error`` says why), ``skipped`` (the peer is not approved).
    """

    status: Literal["synced", "partial", "not_modified", "failed", "skipped"]
    pages: int = 0
    stored: int = 0
    removed: int = 0
    error: str | None = None


def _feed_url(peer: FederationPeer) -> str:
    url = peer.endpoint("catalog")
    if url is None or not _on_origin(url, peer):
        url = peer.base_url.rstrip("/") + CATALOG_PATH
    return url


def _backoff(failures: int, policy: FederationSettings) -> timedelta:
    seconds = min(BACKOFF_START * 2 ** min(failures - 1, 30), policy.catalog_backoff_max)
    return timedelta(seconds=seconds)


def sync_peer(
    sess: Session, client: PeerClient, peer: FederationPeer, policy: FederationSettings
) -> SyncResult:
    """Pull one peer's feed from its stored cursor, committing each page as it is stored.

    A refused page rolls back (nothing of it stored), records the failure and
    the backoff on the peer, and ends the run.
    """
    if not peer.approved:
        return SyncResult("skipped")
    peer_pk = peer.id
    url = _feed_url(peer)
    pages = stored = removed = 0
    status: Literal["synced", "partial", "not_modified"] = "partial"
    try:
        while pages < policy.catalog_max_pages:
            cursor = peer.catalog_cursor or "0"
            headers = {"If-None-Match": peer.catalog_etag} if peer.catalog_etag else {}
            target = f"{url}?after={cursor}&limit={policy.catalog_page_size}"
            response = client.signed_request(
                "GET", target, peer=peer.base_url, extra_headers=headers
            )
            pages += 1
            if response.status == 304:
                status = "not_modified"
                break
            parsed = parse_page(response, peer, cursor, policy)
            counts = catalog.apply_changes(sess, source_key(peer), parsed.upserts, parsed.deletions)
            stored += counts[0]
            removed += counts[1]
            peer.catalog_cursor = parsed.next
            etag = _header(response, "ETag")
            peer.catalog_etag = etag[:200] if etag and not parsed.more else None
            sess.commit()
            if not parsed.more:
                status = "synced"
                break
    except (CatalogSyncError, PeerRequestError, PeerError) as exc:
        sess.rollback()
        peer = sess.get_one(FederationPeer, peer_pk)
        slug = getattr(exc, "slug", type(exc).__name__)
        peer.catalog_failures += 1
        peer.catalog_error = f"{slug}: {exc}"[:2000]
        wait = _backoff(peer.catalog_failures, policy)
        peer.catalog_next_sync_at = utcnow() + wait
        sess.commit()
        log.warning(
            "federation=catalog_sync peer=%s status=refused reason=%s failures=%d retry_in=%ds "
            "detail=%r",
            peer.base_url,
            slug,
            peer.catalog_failures,
            int(wait.total_seconds()),
            str(exc)[:500],
        )
        return SyncResult("failed", pages, stored, removed, peer.catalog_error)
    now = utcnow()
    peer.catalog_failures = 0
    peer.catalog_error = None
    peer.catalog_pull_due_at = None
    peer.catalog_synced_at = now
    peer.catalog_next_sync_at = (
        now if status == "partial" else now + timedelta(seconds=policy.catalog_sync_interval)
    )
    sess.commit()
    log.info(
        "federation=catalog_sync peer=%s status=%s pages=%d stored=%d removed=%d cursor=%s",
        peer.base_url,
        status,
        pages,
        stored,
        removed,
        peer.catalog_cursor,
    )
    return SyncResult(status, pages, stored, removed)


def _header(response: PeerResponse, name: str) -> str | None:
    for key, value in response.headers:
        if key.lower() == name.lower():
            return value
    return None


def _policy(app: Flask | None = None) -> FederationSettings:
    settings: Settings = (app or current_app).extensions["trivium.settings"]
    return federation_settings(settings)


def _due(peer: FederationPeer, now: datetime) -> bool:
    if peer.catalog_pull_due_at is not None:
        return True
    return peer.catalog_next_sync_at is None or peer.catalog_next_sync_at <= now


# ---------------------------------------------------------------- jobs


@actor(SYNC, queue="federation", max_retries=3, time_limit_ms=15 * 60_000)
def catalog_sync(peer_pk: int) -> None:
    """Pull one approved peer's feed if it is due (a duplicate run finds it is not)."""
    sess = db.session()
    peer = sess.get(FederationPeer, peer_pk)
    if peer is None or not peer.approved or not _due(peer, utcnow()):
        return
    policy = _policy()
    with peer_client(sess) as client:
        result = sync_peer(sess, client, peer, policy)
    if result.status == "partial":
        enqueue_with_options(SYNC, args=(peer_pk,), delay_ms=100)


def _other_tick_queued(sess: Session) -> bool:
    me = current_job_id()
    stmt = select(Job.id).where(Job.actor == TICK, Job.state.in_(("queued", "running")))
    if me is not None:
        stmt = stmt.where(Job.message_id != me)
    return sess.scalar(stmt.limit(1)) is not None


@actor(TICK, queue="federation", max_retries=0, time_limit_ms=60_000)
def catalog_tick() -> None:
    """Enqueue a pull for every approved peer that is due, then schedule the next tick."""
    sess = db.session()
    now = utcnow()
    peers = sess.scalars(select(FederationPeer).where(FederationPeer.state == "approved"))
    due = [peer.id for peer in peers if _due(peer, now)]
    sess.rollback()
    for peer_pk in due:
        enqueue_with_options(SYNC, args=(peer_pk,))
    if not _other_tick_queued(sess):
        enqueue_with_options(TICK, delay_ms=_policy().catalog_tick_seconds * 1000)
    sess.rollback()
    if due:
        log.info("federation=catalog_tick due=%d", len(due))


def ensure_tick(app: Flask) -> bool:
    """Start the scheduler's chain of ticks unless one is queued or running already.

    :return: whether a tick was enqueued.
    """
    try:
        with app.app_context():
            with db.get_db(app).sessions() as sess:
                if _other_tick_queued(sess):
                    return False
            enqueue_with_options(TICK)
    except SQLAlchemyError as exc:
        # An instance whose database is not migrated yet: the next start will do.
        log.warning("federation=catalog_tick status=not_started reason=%r", str(exc)[:200])
        return False
    log.info("federation=catalog_tick status=started")
    return True


@actor(ANNOUNCE, queue="federation", max_retries=0, time_limit_ms=5 * 60_000)
def catalog_announce() -> None:
    """Send a signed ``catalog.changed`` activity to every approved peer.

    A peer that cannot be reached is logged and skipped: it still pulls on
    its own schedule.
    """
    sess = db.session()
    settings: Settings = current_app.extensions["trivium.settings"]
    own = base_url(settings)
    peers = list(sess.scalars(select(FederationPeer).where(FederationPeer.state == "approved")))
    for peer in peers:
        try:
            deliver(sess, peer, new_activity(own, "catalog.changed"))
        except (PeerRequestError, PeerError) as exc:
            log.warning(
                "federation=catalog_announce peer=%s status=failed reason=%s detail=%r",
                peer.base_url,
                type(exc).__name__,
                str(exc)[:300],
            )
            continue
        log.info("federation=catalog_announce peer=%s status=delivered", peer.base_url)
    sess.rollback()


def register() -> list[ActorSpec]:
    """The catalog sync's background jobs."""
    return [catalog_sync, catalog_tick, catalog_announce]
