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
interval passed, its backoff ran out, or it asked for a pull while not
backing off) and has none queued, and sends itself again (one chain
survives: :func:`continues_chain`).  A signed ``catalog.changed`` activity in
the inbox marks that peer's pull due and enqueues it, unless one was due
already.  A run takes the peer's lease first (:func:`sync_peer`), so one run
of a peer goes on at a time.  A transaction that changes our federated
courses enqueues one :data:`catalog_announce`, which notifies every approved
peer.
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
from sqlalchemy import ColumnElement
from sqlalchemy import and_
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core import catalog
from core import db
from core.catalog import EntryData
from core.config import Settings
from core.db import rowcount
from core.db import utcnow
from core.tasks import ActorSpec
from core.tasks import PendingJob
from core.tasks import actor
from core.tasks import current_job_id
from core.tasks import enqueue_with_options
from core.tasks import is_queued
from core.tasks import pending_jobs
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
from federation.peers import CATALOG_SYNC
from federation.peers import PeerError
from federation.signed import peer_client
from federation.wellknown import CATALOG_PATH
from federation.wellknown import base_url

__all__ = [
    "ANNOUNCE",
    "MAX_SEQ",
    "SYNC",
    "TICK",
    "CatalogSyncError",
    "EntriesNotStored",
    "FeedMalformed",
    "FeedTooLarge",
    "ForeignEntry",
    "SyncResult",
    "catalog_announce",
    "catalog_sync",
    "catalog_tick",
    "continues_chain",
    "ensure_tick",
    "register",
    "source_key",
    "sync_peer",
]

log = logging.getLogger(__name__)

SYNC = CATALOG_SYNC
TICK = "federation.catalog_tick"
ANNOUNCE = "federation.catalog_announce"
BACKOFF_START = 30
"""Seconds before the first retry of a failed pull; doubled per further failure."""
_CURSOR = re.compile(r"^[0-9]{1,16}$")
MAX_SEQ = 2**31
"""Item ``seq`` values must lie below this (the index stores them as 32-bit integers)."""
LEASE = timedelta(minutes=16)
"""How long a sync run holds its peer at most: the job's time limit and a margin (a run
whose worker died frees the peer when it runs out)."""

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


class EntriesNotStored(CatalogSyncError):
    """The database refused a checked page (a value the index cannot hold); rolled back."""

    slug = "entries-not-stored"


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

    seq: int = Field(ge=0, lt=MAX_SEQ)
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
    ``failed`` (``error`` says why), ``skipped`` (the peer is not approved, not
    due, or another run holds it), ``stopped`` (the peer was suspended or removed
    during the run, or another run took it over; the page in hand was dropped).
    """

    status: Literal["synced", "partial", "not_modified", "failed", "skipped", "stopped"]
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


def _due_clause(now: datetime) -> ColumnElement[bool]:
    """An approved peer that no run holds and whose pull is due: its interval or backoff
    ran out, or it asked for a pull (approval, ``catalog.changed``) while not backing off."""
    return and_(
        FederationPeer.state == "approved",
        or_(
            FederationPeer.catalog_lease_until.is_(None), FederationPeer.catalog_lease_until <= now
        ),
        or_(
            FederationPeer.catalog_next_sync_at.is_(None),
            FederationPeer.catalog_next_sync_at <= now,
            and_(
                FederationPeer.catalog_pull_due_at.is_not(None),
                FederationPeer.catalog_failures == 0,
            ),
        ),
    )


def _claim(sess: Session, peer_pk: int, *, due_only: bool) -> datetime | None:
    """Take the peer for one run (a compare-and-set, committed): its lease's end, the run's
    fencing token, or None if the peer is not approved, another run holds it, or
    (``due_only``) its pull is not due."""
    now = utcnow()
    token = now + LEASE
    free = or_(
        FederationPeer.catalog_lease_until.is_(None), FederationPeer.catalog_lease_until <= now
    )
    condition = _due_clause(now) if due_only else and_(FederationPeer.state == "approved", free)
    result = sess.execute(
        update(FederationPeer)
        .where(FederationPeer.id == peer_pk, condition)
        .values(catalog_lease_until=token, catalog_pull_due_at=None)
        .execution_options(synchronize_session=False)
    )
    sess.commit()
    return token if rowcount(result) == 1 else None


def _still_ours(token: datetime) -> ColumnElement[bool]:
    return and_(FederationPeer.state == "approved", FederationPeer.catalog_lease_until == token)


def sync_peer(
    sess: Session,
    client: PeerClient,
    peer: FederationPeer,
    policy: FederationSettings,
    *,
    due_only: bool = False,
) -> SyncResult:
    """Pull one peer's feed from its stored cursor, committing each page as it is stored.

    The run first takes the peer's lease, so that one run of a peer goes on at
    a time; every page is stored in one transaction that starts by moving the
    cursor under that lease (a conditional ``UPDATE`` of the peer's row, which
    locks it): a page of a peer suspended or removed meanwhile, or whose lease
    another run took over, is dropped and the run stops.  A refused page rolls
    back (nothing of it stored), records the failure and the backoff on the
    peer, and ends the run.

    :param due_only: run only if the peer's pull is due (the scheduled job);
        otherwise (an operator's "sync now") whenever no other run holds it.
    """
    peer_pk = peer.id
    token = _claim(sess, peer_pk, due_only=due_only)
    if token is None:
        return SyncResult("skipped")
    sess.refresh(peer)
    sess.expunge(peer)  # a snapshot of the row at the start; stored state is written by id
    url = _feed_url(peer)
    cursor, etag = peer.catalog_cursor or "0", peer.catalog_etag
    pages = stored = removed = 0
    status: Literal["synced", "partial", "not_modified"] = "partial"
    try:
        while pages < policy.catalog_max_pages:
            headers = {"If-None-Match": etag} if etag else {}
            target = f"{url}?after={cursor}&limit={policy.catalog_page_size}"
            response = client.signed_request(
                "GET", target, peer=peer.base_url, extra_headers=headers
            )
            pages += 1
            if response.status == 304:
                status = "not_modified"
                break
            parsed = parse_page(response, peer, cursor, policy)
            new_etag = _header(response, "ETag")
            new_etag = new_etag[:200] if new_etag and not parsed.more else None
            counts = _store_page(sess, peer, token, parsed, new_etag)
            if counts is None:
                return _lost(peer, pages, stored, removed)
            cursor, etag = parsed.next, new_etag
            stored += counts[0]
            removed += counts[1]
            if not parsed.more:
                status = "synced"
                break
    except (CatalogSyncError, PeerRequestError, PeerError) as exc:
        sess.rollback()
        return _failed(sess, peer, token, exc, policy, pages, stored, removed)
    now = utcnow()
    result = sess.execute(
        update(FederationPeer)
        .where(FederationPeer.id == peer_pk, _still_ours(token))
        .values(
            catalog_failures=0,
            catalog_error=None,
            catalog_synced_at=now,
            catalog_next_sync_at=(
                now
                if status == "partial"
                else now + timedelta(seconds=policy.catalog_sync_interval)
            ),
            catalog_lease_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    sess.commit()
    if rowcount(result) != 1:
        return _lost(peer, pages, stored, removed)
    log.info(
        "federation=catalog_sync peer=%s status=%s pages=%d stored=%d removed=%d cursor=%s",
        peer.base_url,
        status,
        pages,
        stored,
        removed,
        cursor,
    )
    return SyncResult(status, pages, stored, removed)


def _store_page(
    sess: Session, peer: FederationPeer, token: datetime, parsed: _Parsed, etag: str | None
) -> tuple[int, int] | None:
    """Store one checked page with its cursor in one transaction: ``(stored, removed)``,
    or None (nothing stored) if the run no longer holds the peer.

    The cursor moves first: that ``UPDATE`` locks the peer's row (PostgreSQL) or
    takes SQLite's write lock, so a suspension or removal either committed
    before it (and the page is dropped) or waits until the page committed (and
    then removes its entries too).

    :raise EntriesNotStored: the database refused the page.
    """
    try:
        moved = sess.execute(
            update(FederationPeer)
            .where(FederationPeer.id == peer.id, _still_ours(token))
            .values(catalog_cursor=parsed.next, catalog_etag=etag)
            .execution_options(synchronize_session=False)
        )
        if rowcount(moved) != 1:
            sess.rollback()
            return None
        counts = catalog.apply_changes(sess, source_key(peer), parsed.upserts, parsed.deletions)
        sess.commit()
    except SQLAlchemyError as exc:
        sess.rollback()
        raise EntriesNotStored(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
    return counts


def _lost(peer: FederationPeer, pages: int, stored: int, removed: int) -> SyncResult:
    log.warning(
        "federation=catalog_sync peer=%s status=stopped reason=peer_changed pages=%d "
        "detail='suspended, removed or taken over by another run'",
        peer.base_url,
        pages,
    )
    return SyncResult("stopped", pages, stored, removed)


def _failed(
    sess: Session,
    peer: FederationPeer,
    token: datetime,
    exc: Exception,
    policy: FederationSettings,
    pages: int,
    stored: int,
    removed: int,
) -> SyncResult:
    """Record a refused page or a failed request: the backoff, the error, the lease given back.

    A pull asked for meanwhile is dropped too: while a peer fails, only its
    backoff decides when it is asked again.
    """
    slug = getattr(exc, "slug", type(exc).__name__)
    error = f"{slug}: {exc}"[:2000]
    failures = (peer.catalog_failures or 0) + 1
    wait = _backoff(failures, policy)
    result = sess.execute(
        update(FederationPeer)
        .where(FederationPeer.id == peer.id, _still_ours(token))
        .values(
            catalog_failures=failures,
            catalog_error=error,
            catalog_next_sync_at=utcnow() + wait,
            catalog_pull_due_at=None,
            catalog_lease_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    sess.commit()
    if rowcount(result) != 1:
        return _lost(peer, pages, stored, removed)
    log.warning(
        "federation=catalog_sync peer=%s status=refused reason=%s failures=%d retry_in=%ds "
        "detail=%r",
        peer.base_url,
        slug,
        failures,
        int(wait.total_seconds()),
        str(exc)[:500],
    )
    return SyncResult("failed", pages, stored, removed, error)


def _header(response: PeerResponse, name: str) -> str | None:
    for key, value in response.headers:
        if key.lower() == name.lower():
            return value
    return None


def _policy(app: Flask | None = None) -> FederationSettings:
    settings: Settings = (app or current_app).extensions["trivium.settings"]
    return federation_settings(settings)


# ---------------------------------------------------------------- jobs


@actor(SYNC, queue="federation", max_retries=3, time_limit_ms=15 * 60_000)
def catalog_sync(peer_pk: int) -> None:
    """Pull one approved peer's feed if it is due and no other run holds it (a duplicate
    job finds it is not due, or held, and does nothing)."""
    sess = db.session()
    peer = sess.get(FederationPeer, peer_pk)
    if peer is None:
        return
    policy = _policy()
    with peer_client(sess) as client:
        result = sync_peer(sess, client, peer, policy, due_only=True)
    if result.status == "partial":
        enqueue_with_options(SYNC, args=(peer_pk,), delay_ms=100)
    elif result.status in ("synced", "not_modified") and _pull_asked(sess, peer_pk):
        # The peer announced a change while this run read its feed: read again.
        enqueue_with_options(SYNC, args=(peer_pk,))


def _pull_asked(sess: Session, peer_pk: int) -> bool:
    due = sess.scalar(
        select(FederationPeer.catalog_pull_due_at).where(FederationPeer.id == peer_pk)
    )
    sess.rollback()
    return due is not None


def continues_chain(ticks: list[PendingJob], me: str | None) -> bool:
    """Whether the tick ``me`` sends the next one, given every tick queued or running.

    Exactly one chain survives: a queued tick carries the chain on, so none is
    added next to it; among ticks running at once, only the one enqueued first
    (lowest row id) sends the next.  Every tick that stops saw a queued tick, or
    an older running one, which decides in its turn.
    """
    others = [job for job in ticks if job.message_id != me]
    if any(job.state == "queued" for job in others):
        return False
    mine = next((job.id for job in ticks if job.message_id == me), None)
    if mine is None:
        return not others
    return not any(job.id < mine for job in others)


@actor(TICK, queue="federation", max_retries=10, time_limit_ms=60_000)
def catalog_tick() -> None:
    """Enqueue a pull for every approved peer that is due, then schedule the next tick.

    Retried after an error (a retry is harmless: a sync job claims its peer).
    """
    sess = db.session()
    due = list(sess.scalars(select(FederationPeer.id).where(_due_clause(utcnow()))))
    sess.rollback()
    queued = 0
    for peer_pk in due:
        if not is_queued(SYNC, args=(peer_pk,)):
            enqueue_with_options(SYNC, args=(peer_pk,))
            queued += 1
    if continues_chain(pending_jobs(TICK), current_job_id()):
        enqueue_with_options(TICK, delay_ms=_policy().catalog_tick_seconds * 1000)
    if due:
        log.info("federation=catalog_tick due=%d queued=%d", len(due), queued)


def ensure_tick(app: Flask) -> bool:
    """Start the scheduler's chain of ticks unless one is queued or running already.

    Two processes starting at once may both enqueue one; the chain rule of
    :func:`continues_chain` lets only one of them go on.

    :return: whether a tick was enqueued.
    """
    try:
        with app.app_context():
            if is_queued(TICK):
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
