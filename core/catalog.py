"""The course catalog's search index: local courses and entries from other sources.

One table, ``catalog_entries``, holds what search reads: this instance's
public courses (source ``''``, kept up to date by :mod:`core.courses` in the
same transaction as the change) and entries another source published (a
peer, stored by the federation plugin through :func:`apply_changes`).  Core
knows nothing of peers: a source is an opaque key.

Full text runs on SQLite's FTS5 (an external-content table kept in step by
triggers) or PostgreSQL's full-text search (a weighted ``tsvector`` stored
as a generated column; a GIN index keys its words by id bucket, so that the
newest matches are read first), with the same behaviour on both:
every word of the query must match, the last one as a prefix (search as you
type); the title weighs most, then summary, subject and institution, then
the description.
On SQLite, a word held by many entries (as an unfinished last word of a
few letters often is) only narrows the matches and does not rank them
(:data:`RANKED_PREFIX_MATCHES`, :data:`RANKED_WORD_MATCHES`): they are
ranked by the other words, or listed newest first when none is left.

Local rows are never removed: a course that stops being public keeps a row
marked ``deleted`` with its text blanked, and every change takes the next
value of the local change sequence, so a change feed can page through them.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import heapq
import json
import logging
import re
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import Any
from typing import TypeVar

from flask import current_app
from flask import has_app_context
from sqlalchemy import DDL
from sqlalchemy import ColumnElement
from sqlalchemy import Double
from sqlalchemy import Integer
from sqlalchemy import Select
from sqlalchemy import Table
from sqlalchemy import Text
from sqlalchemy import bindparam
from sqlalchemy import cast
from sqlalchemy import column
from sqlalchemy import delete
from sqlalchemy import event
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import literal_column
from sqlalchemy import select
from sqlalchemy import table
from sqlalchemy import text
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core import rbac
from core.cache import Cache
from core.db import rowcount
from core.db import utcnow
from core.errors import BadRequest
from core.models import CatalogEntry
from core.models import CatalogState
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
    "optimize_index",
    "reindex_local",
    "search",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

LOCAL = ""
"""The source of this instance's own courses."""
FACETS = ("institution", "language", "subject", "level")
"""Facets counted on every search, and the filters :func:`search` accepts."""
MAX_LIMIT = 100
"""The largest page :func:`search` returns."""
FACET_VALUES = 20
"""At most this many values per facet, the most frequent first."""
FACET_SCAN = 10_000
"""Facets of a search without words count at most this many entries, the newest first."""
SEARCH_CACHE_SECONDS = 300
"""Facet counts and pages of ranked matches are cached this long, under the index's version.

Any change to the index gives it a new version, so a cached value is never stale.
"""
MATCH_SCAN = 2_000
"""A search with words reads at most this many matches, the most recently indexed first.

It ranks them and counts their facets; a broader search (more matches than
this) says so with ``ranking_exact`` and ``facets_exact`` False.  This
bounds the work per search whatever the size of the index: ranking a match
costs a few microseconds, so ranking all 200,000 matches of a short prefix
in an index of a million would take most of a second.  The words' own
statistics are the other cost of ranking: SQLite's bm25 counts every entry
holding each word it ranks, which is why a word held by many entries (an
unfinished last word of two to six letters often is) only narrows the
matches (:data:`RANKED_PREFIX_MATCHES`, :data:`RANKED_WORD_MATCHES`).
"""
RANKED_PREFIX_MATCHES = 500
"""On SQLite, an unfinished last word ranks the matches only if at most this many entries hold it.

bm25 weighs each word it ranks by counting every entry that holds it: for
two to six letters beginning words of most of the index that is a pass over
nearly all of it (about 150 ms in a million entries), for a word that,
being nearly everywhere, would barely move the order anyway.  The bound is
low because a rare word's matches lie scattered over the index and bm25
reads each one's length: ranking 2,000 of them took 15 to 30 ms in a
million entries, 500 take a few.  A broader unfinished word only narrows
the matches, which are ranked by the complete words; alone, it lists them
newest first.  PostgreSQL's ``ts_rank_cd`` keeps no statistics over the
index and ranks every word.
"""
RANKED_WORD_MATCHES = 50_000
"""On SQLite, a complete word ranks the matches only if at most about this many entries hold it.

Held by more (a word like "introduction" in a large index), it weighs
little in bm25 and counting its entries would cost most of the search;
it then only narrows the matches, like a broad unfinished word.
"""
WORD_SAMPLE = 1_000
"""How many of a word's entries are read to tell how many hold it (:func:`_holders`)."""
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

#: The weighted document of a row, PostgreSQL (stored as ``search_vector``, see PG_DDL).
PG_VECTOR = (
    "setweight(to_tsvector('simple'::regconfig, coalesce(title, '')), 'A') || "
    "setweight(to_tsvector('simple'::regconfig, coalesce(summary, '') || ' ' || "
    "coalesce(subject, '') || ' ' || coalesce(institution, '')), 'B') || "
    "setweight(to_tsvector('simple'::regconfig, coalesce(description, '')), 'C')"
)

#: Columns of the SQLite full-text table: the words of a query are looked for
#: in the first five (ranked with :data:`SQLITE_WEIGHTS`); ``language`` and
#: ``level`` are there for filters, which the full-text index then answers
#: along with the words instead of a row being read per match.
SQLITE_COLUMNS = ("title", "summary", "description", "subject", "institution", "language", "level")
SQLITE_TEXT_COLUMNS = SQLITE_COLUMNS[:5]
SQLITE_WEIGHTS = (10.0, 4.0, 1.0, 3.0, 3.0, 0.0, 0.0)

#: SQLite: an external-content FTS5 table and the triggers keeping it in step.
#: Prefix indexes up to six characters let search-as-you-type prefixes read
#: one list instead of merging every word they begin.
SQLITE_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS catalog_entries_fts USING fts5("
    "title, summary, description, subject, institution, language, level, "
    "content='catalog_entries', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2', prefix='2 3 4 5 6')",
    "CREATE TRIGGER IF NOT EXISTS catalog_entries_fts_ai AFTER INSERT ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(rowid, title, summary, description, subject, institution, "
    "language, level) VALUES (new.id, new.title, new.summary, new.description, new.subject, "
    "new.institution, new.language, new.level); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS catalog_entries_fts_ad AFTER DELETE ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(catalog_entries_fts, rowid, title, summary, description, "
    "subject, institution, language, level) VALUES ('delete', old.id, old.title, old.summary, "
    "old.description, old.subject, old.institution, old.language, old.level); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS catalog_entries_fts_au AFTER UPDATE OF title, summary, "
    "description, subject, institution, language, level ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(catalog_entries_fts, rowid, title, summary, description, "
    "subject, institution, language, level) VALUES ('delete', old.id, old.title, old.summary, "
    "old.description, old.subject, old.institution, old.language, old.level); "
    "INSERT INTO catalog_entries_fts(rowid, title, summary, description, subject, institution, "
    "language, level) VALUES (new.id, new.title, new.summary, new.description, new.subject, "
    "new.institution, new.language, new.level); "
    "END",
)
SQLITE_DROP = ("DROP TABLE IF EXISTS catalog_entries_fts",)

PG_BUCKET_BITS = 15
"""PostgreSQL's index keys each word by its entry's bucket: ``id >> PG_BUCKET_BITS``.

A bucket holds 32,768 consecutive ids.  The index then hands out the
matches of a few buckets (the newest first) without reading the rest: see
:func:`_pg_scan`.  The value is part of the index (:data:`PG_KEYS`):
changing it takes a migration that rebuilds the index.
"""
#: Codes of the filters' keys (:data:`PG_KEYS_FUNCTION`): ``<bucket>|=<code><lower(value)>``.
PG_FILTER_CODES = {"language": "l", "subject": "s", "level": "v", "institution": "i"}
#: The keys of a row: each word of its document as ``<bucket>|<word>`` (words of more than
#: 256 characters cut there: a key must stay under tsvector's 2,047 bytes, and a query's
#: words are far shorter, so none matches differently), then its filter values.
PG_KEYS_FUNCTION = """\
CREATE OR REPLACE FUNCTION catalog_search_keys(
    doc tsvector, bucket integer, language text, subject text, level text, institution text
) RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT array_to_tsvector(ARRAY(
    SELECT bucket::text || '|' || left(lexeme, 256) FROM unnest(doc)
    UNION ALL
    SELECT bucket::text || '|=' || facet FROM unnest(ARRAY[
        'l' || lower(coalesce(language, '')), 's' || lower(coalesce(subject, '')),
        'v' || lower(coalesce(level, '')), 'i' || lower(coalesce(institution, ''))
    ]) AS facet
))
$$"""
#: The indexed expression; a search must spell it the same for the index to answer it.
PG_KEYS = (
    f"catalog_search_keys(search_vector, id >> {PG_BUCKET_BITS}, language, subject, level, "
    "institution)"
)
#: PostgreSQL: the document as a stored column (tokenised once per row, which
#: searches read and rank without tokenising again) and a GIN index on its
#: keys.  A small pending list: every search reads the whole of it, with each
#: of its (many) keys; inserts still go in batches.
PG_DDL = (
    "ALTER TABLE catalog_entries ADD COLUMN IF NOT EXISTS search_vector tsvector "
    f"GENERATED ALWAYS AS ({PG_VECTOR}) STORED",
    PG_KEYS_FUNCTION,
    "CREATE INDEX IF NOT EXISTS ix_catalog_entries_keys ON catalog_entries "
    f"USING gin (({PG_KEYS})) WITH (gin_pending_list_limit = 256)",
)
PG_DROP = (
    "DROP FUNCTION IF EXISTS catalog_search_keys(tsvector, integer, text, text, text, text)",
)


def _ddl(statement: str) -> DDL:
    return DDL(statement)  # type: ignore[no-untyped-call]


# The migrations (core_0002 to core_0005) run the same statements; these listeners give a
# schema built with ``metadata.create_all`` (tests) the same full-text setup.
_ENTRIES: Table = CatalogEntry.__table__  # type: ignore[assignment]
for _statement in SQLITE_DDL:
    event.listen(_ENTRIES, "after_create", _ddl(_statement).execute_if(dialect="sqlite"))
for _statement in SQLITE_DROP:
    event.listen(_ENTRIES, "before_drop", _ddl(_statement).execute_if(dialect="sqlite"))
for _statement in PG_DDL:
    event.listen(_ENTRIES, "after_create", _ddl(_statement).execute_if(dialect="postgresql"))
for _statement in PG_DROP:
    event.listen(_ENTRIES, "after_drop", _ddl(_statement).execute_if(dialect="postgresql"))
_STATE: Table = CatalogState.__table__  # type: ignore[assignment]
_STATE_ROW = "INSERT INTO catalog_state (id, version) VALUES (1, '0')"
event.listen(_STATE, "after_create", _ddl(_STATE_ROW))

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
    unless there are more than :data:`MATCH_SCAN`: then they count the
    ``MATCH_SCAN + 1`` most recently indexed matches and ``facets_exact`` is
    False (show them as "about", or as "among the most recent").

    Results are ranked by the words of the query, the newest first among
    equals; on SQLite a word held by many entries only narrows them
    (:data:`RANKED_PREFIX_MATCHES`, :data:`RANKED_WORD_MATCHES`).
    ``ranking_exact`` is False when a search with words matched more than
    :data:`MATCH_SCAN` entries: the results are then the best-ranked of the
    ``MATCH_SCAN + 1`` most recently indexed matches, and paging ends there
    (ask for more words or a filter).  It is False too when no word is left
    to rank by (a broad unfinished word alone, typically): the matches then
    come newest first (show them so until the word is complete).  A
    search without words lists every entry, newest first, and is always
    exact.
    ``next_cursor`` is None on the last page.
    """

    entries: list[CatalogHit]
    facets: dict[str, list[tuple[str, int]]]
    next_cursor: str | None
    facets_exact: bool = True
    ranking_exact: bool = True


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
    _touch(sess)
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


def optimize_index(sess: Session) -> bool:
    """Merge SQLite's full-text index into one segment (flushes, never commits).

    FTS5 adds entries to the index in segments that it merges a few at a
    time as it goes, so this is rarely needed: searches of a million entries
    loaded in bulk were no faster after it.  It takes a while on a large
    index (about half a minute for a million) and writes the index anew.
    PostgreSQL's GIN index needs no such step.

    :return: whether there was anything to do (False on PostgreSQL).
    """
    if _is_postgres(sess):
        return False
    sess.execute(text("INSERT INTO catalog_entries_fts(catalog_entries_fts) VALUES('optimize')"))
    return True


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
        removed = rowcount(result)
        if removed:
            _touch(sess)
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
    _touch(sess)
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
    removed = rowcount(result)
    if removed:
        _touch(sess)
    return removed


def _touch(sess: Session) -> None:
    """Give the index a new version: facet counts cached under the old one are stale.

    A fresh random value rather than a counter: a version seen inside a
    transaction that then rolls back is never handed out again.  On
    PostgreSQL the row lock orders concurrent index writers until commit.
    """
    upsert = pg_insert if _is_postgres(sess) else sqlite_insert
    stmt = upsert(_STATE).values(id=1, version=uuid.uuid4().hex)
    sess.execute(
        stmt.on_conflict_do_update(
            index_elements=[_STATE.c.id], set_={"version": stmt.excluded.version}
        )
    )


# ---------------------------------------------------------------- search

_FTS = table("catalog_entries_fts", column("rowid", Integer))
_FTS_MATCH: ColumnElement[Any] = literal_column("catalog_entries_fts")
_PG_VECTOR: ColumnElement[Any] = literal_column("search_vector")
"""The stored document (:data:`PG_DDL`); not a model column, as SQLite has none."""


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


def _cursor_terms(words: list[str], chosen: Any) -> list[tuple[str, str]]:
    """The ranking terms a cursor names by their places among the search's terms."""
    terms = _terms(words, "*")
    if (
        not isinstance(chosen, list)
        or not all(isinstance(n, int) and 0 <= n < len(terms) for n in chosen)
        or chosen != sorted(set(chosen))
    ):
        raise CatalogCursorInvalid("the cursor does not belong to this search")
    return [terms[n] for n in chosen]


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


def _browsed(filters: Mapping[str, str], *columns: ColumnElement[Any]) -> Select[Any]:
    """Every entry a search without words lists (``columns`` of it), newest first."""
    entries = CatalogEntry.__table__
    stmt = select(*columns).where(entries.c.deleted.is_(False))
    return _filtered(stmt, filters).order_by(entries.c.id.desc())


_Match = tuple[int, float, str, str, str, str]
"""One match a search with words read: id, rank (lower is better), then the :data:`FACETS`."""

_UNRANKED: ColumnElement[Any] = literal_column("0.0", Double())


def _scan(
    sess: Session, words: list[str], filters: Mapping[str, str], params: dict[str, Any]
) -> list[_Match]:
    """The matches a search with words reads, each with its rank and facet values.

    At most :data:`MATCH_SCAN` + 1, the most recently indexed first (the
    full-text indexes hand them out in that order, so nothing else is read):
    both the page and the facet counts are worked out from these rows.
    PostgreSQL ranks them in the same statements (:func:`_pg_scan`); SQLite in
    a second one (:func:`_sqlite_ranks`), or not at all when no word ranks
    (``ranked`` missing from ``params``): every rank is then 0.
    """
    if _is_postgres(sess):
        return _pg_scan(sess, filters, params)
    entries = CatalogEntry.__table__
    facet_columns = [entries.c[name] for name in FACETS]
    # Deleted rows have no text, so they never match.
    stmt = _filtered(
        select(_FTS.c.rowid, _UNRANKED, *facet_columns)
        .select_from(_FTS.join(entries, entries.c.id == _FTS.c.rowid))
        .where(_FTS_MATCH.op("MATCH")(bindparam("fts"))),
        filters,
    ).order_by(_FTS.c.rowid.desc())
    # Rows as the driver returns them (ints, floats, strings: the columns are
    # not nullable), fetched at once: up to MATCH_SCAN + 1 of them.
    rows: list[Any] = list(sess.execute(stmt.limit(MATCH_SCAN + 1), params).all())
    if rows and "ranked" in params:
        ranks = _sqlite_ranks(sess, [row[0] for row in rows], params["ranked"])
        rows = [(row[0], ranks.get(row[0], 0.0), *row[2:]) for row in rows]
    return rows


PG_FIRST_IDS = 1 << PG_BUCKET_BITS
"""PostgreSQL: the first statement of a search reads the buckets of its newest this many ids."""
_PG_KEYS: ColumnElement[Any] = literal_column(PG_KEYS)
# The newest id, the words' tsquery as PostgreSQL parses them, and the buckets
# holding entries, one step down the primary key each: ids leave gaps of
# empty buckets as a source's entries come and go, which searches then skip.
_PG_BUCKETS = text(
    """\
WITH RECURSIVE filled(bucket) AS (
    SELECT max(id) >> :bits FROM catalog_entries
    UNION ALL
    SELECT (SELECT max(id) >> :bits FROM catalog_entries WHERE id < (filled.bucket << :bits))
    FROM filled WHERE filled.bucket IS NOT NULL
)
SELECT (SELECT max(id) FROM catalog_entries),
    CAST(to_tsquery('simple'::regconfig, :tsq) AS text),
    ARRAY(SELECT bucket FROM filled WHERE bucket IS NOT NULL)"""
).bindparams(bits=PG_BUCKET_BITS)
# A quoted word in the text of a tsquery (quotes in it doubled), and its prefix mark.
_PG_OPERAND = re.compile(r"'((?:[^']|'')*)'(:\*)?")
_PG_PHRASE = re.compile(r"<(?:-|\d+)>")


def _pg_scan(sess: Session, filters: Mapping[str, str], params: dict[str, Any]) -> list[_Match]:
    """PostgreSQL's :func:`_scan`: the newest matches, read a few buckets of ids at a time.

    The index keys each word by the bucket of its entry's id
    (:data:`PG_BUCKET_BITS`), so a statement can ask it for the matches in a
    few buckets alone.  (An index of the words alone hands out every match,
    in no useful order: a broad prefix's matches fill most pages of the
    table, and reading them, or walking the table down from the newest
    entry, took 50 to 300 ms in a million entries.)  The first statement
    reads the buckets of the newest :data:`PG_FIRST_IDS` ids; each next one
    reads older buckets, as many as the matches found so far say it takes
    to find the rest (whole buckets: some to spare), until
    :data:`MATCH_SCAN` + 1 matches are found or no bucket is left.  From
    the third statement on it reads at least as many ids as were read so
    far, should the matches lie much thinner in older entries.  Each match
    read costs a page of the table (they lie scattered), about all a search
    costs: the buckets read hold little more than the matches needed.  Every
    statement also checks each row itself (words, filters, ``deleted``): the
    keys only pick the rows to read.
    """
    entries = CatalogEntry.__table__
    highest, parsed, filled = sess.execute(_PG_BUCKETS, params).one()
    if highest is None or not parsed:  # an empty index, or no word the parser keeps
        return []
    query = func.to_tsquery(literal_column("'simple'::regconfig"), bindparam("tsq"))
    # real -> double precision, so the value in a cursor compares equal
    # to the row's own when it comes back.
    rank: ColumnElement[Any] = cast(-func.ts_rank_cd(_PG_VECTOR, query), Double())
    # The keys' query as a value of its own (an InitPlan), which the planner
    # does not look into: it takes the usual share of matches instead of
    # adding up one per bucket and word, which over many buckets looked like
    # most of the table (and a plan worth compiling with JIT).
    keys = select(cast(bindparam("keys", type_=Text()), TSQUERY())).scalar_subquery()
    stmt = (
        _filtered(
            select(entries.c.id, rank, *(entries.c[name] for name in FACETS)).where(
                _PG_KEYS.op("@@")(keys),
                entries.c.deleted.is_(False),
                _PG_VECTOR.op("@@")(query),
            ),
            filters,
        )
        .order_by(entries.c.id.desc())
        # Always the whole scan's worth: told of fewer, the planner could walk
        # the primary key down from the newest entry instead.
        .limit(MATCH_SCAN + 1)
    )
    values = [PG_FILTER_CODES[name] + value.lower() for name, value in sorted(filters.items())]
    newest = int(highest) >> PG_BUCKET_BITS

    def ids_in(bucket: int) -> int:
        if bucket == newest:
            return int(highest) - (bucket << PG_BUCKET_BITS) + 1
        return 1 << PG_BUCKET_BITS

    unread = sorted(filled, reverse=True)  # buckets holding entries, newest first
    rows: list[Any] = []
    read = 0  # ids in the buckets read so far
    span = PG_FIRST_IDS  # ids the next statement reads, at least one bucket's
    statements = 0
    while unread and len(rows) <= MATCH_SCAN:
        chosen = [unread.pop(0)]
        covered = ids_in(chosen[0])
        while unread and covered < span:
            chosen.append(unread.pop(0))
            covered += ids_in(chosen[-1])
        found = sess.execute(stmt, {**params, "keys": _pg_keys(parsed, values, chosen)}).all()
        rows += found[: MATCH_SCAN + 1 - len(rows)]
        read += covered
        statements += 1
        # none found yet counts as one (then the rest is read at once, short of huge indexes)
        span = int((MATCH_SCAN + 1 - len(rows)) * read / max(len(rows), 1))
        if statements >= 2:
            span = max(span, read)
    return rows


def _pg_keys(parsed: str, values: list[str], buckets: Iterable[int]) -> str:
    """The tsquery (as text) of a search's keys in ``buckets`` (:data:`PG_KEYS_FUNCTION`).

    :param parsed: the text of the words' tsquery, as PostgreSQL parsed it: each word
        becomes the same word in any of the buckets.  Phrases (a word the parser
        splits) become plain "and": the keys keep no positions, and the row's own
        document settles them.
    :param values: the filters' keys, without their bucket.
    """
    buckets = list(buckets)

    def any_bucket(word: re.Match[str]) -> str:
        star = word.group(2) or ""
        return "(" + " | ".join(f"'{b}|{word.group(1)}'{star}" for b in buckets) + ")"

    keys = _PG_OPERAND.sub(any_bucket, _PG_PHRASE.sub("&", parsed))
    for value in values:
        quoted = [_pg_quoted(f"{b}|={value}") for b in buckets]
        keys += " & (" + " | ".join(quoted) + ")"
    return keys


def _pg_quoted(key: str) -> str:
    """``key`` as a quoted word of a tsquery: every character literal."""
    return "'" + key.replace("\\", "\\\\").replace("'", "''") + "'"


_RANK_IDS: ColumnElement[Any] = literal_column("value")
# A unary plus makes rowid an expression: SQLite then checks the list on each
# row the full-text index hands out instead of asking the index once per id
# (which would count the words' statistics anew for each).
_ROWID_VALUE: ColumnElement[Any] = literal_column("+rowid")


def _sqlite_ranks(sess: Session, ids: list[int], ranked: str) -> dict[int, float]:
    """bm25 of the ranking words (``ranked``) for the matches ``ids`` a scan read (lower is better).

    A full-text match of its own, with only the ranking words in it: bm25
    counts every entry holding each phrase of its match to weigh it, and a
    broad unfinished last word or a filter's value may be in most of the index.
    The rowid range keeps the pass over the words' entries to the span of
    the matches read; the list (as JSON) picks them out.
    """
    stmt = select(_FTS.c.rowid, func.bm25(_FTS_MATCH, *SQLITE_WEIGHTS)).where(
        _FTS_MATCH.op("MATCH")(bindparam("ranked")),
        _FTS.c.rowid >= bindparam("low"),
        _FTS.c.rowid <= bindparam("high"),
        _ROWID_VALUE.in_(select(_RANK_IDS).select_from(func.json_each(bindparam("ids")))),
    )
    params = {"ranked": ranked, "low": min(ids), "high": max(ids), "ids": json.dumps(ids)}
    return {int(row[0]): float(row[1]) for row in sess.execute(stmt, params)}


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
        lists every entry, newest change first.  Matches are ranked by the words, on
        SQLite only by those held by few enough entries (:data:`RANKED_PREFIX_MATCHES`);
        query syntax of SQLite or PostgreSQL is plain text.
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
    entries = CatalogEntry.__table__

    payload = _decode_cursor(cursor, fingerprint) if cursor else None
    version = sess.scalar(select(_STATE.c.version).where(_STATE.c.id == 1))
    if payload is not None and "k" in payload:
        # the words that ranked the first page rank the rest: the order must not change
        ranked = _cursor_terms(words, payload["k"])
    else:
        ranked = _ranked_terms(sess, words, version)
    params = _params(sess, words, ranked, clean)
    # The page and the facets of a search with words come from one scan of
    # its matches, run at most once, and only if either is not cached.
    scan = functools.cache(lambda: _scan(sess, words, clean, params))
    # Words and filter values match case-insensitively: one cache entry for all spellings.
    same_search = [[w.lower() for w in words], sorted((k, v.lower()) for k, v in clean.items())]
    if words:
        if payload is not None and "r" not in payload:
            raise CatalogCursorInvalid("the cursor does not belong to this search")
        after = (payload["r"], -payload["i"]) if payload is not None else None
        # The order depends on which of the words rank.
        ranked_ids = _cached(
            version,
            "page",
            [*same_search, MATCH_SCAN, [w.lower() + star for w, star in ranked], after, limit],
            lambda: _ranked_page(sess, words, clean, after, limit, params, scan),
            lambda stored: [(int(i), float(r)) for i, r in stored],
        )
    else:
        # Newest first, straight down the primary key.
        browse_stmt = _browsed(clean, entries.c.id)
        if payload is not None:
            browse_stmt = browse_stmt.where(entries.c.id < payload["i"])
        browse_stmt = browse_stmt.limit(limit + 1)
        ranked_ids = [(row[0], 0.0) for row in sess.execute(browse_stmt, params)]
    more = len(ranked_ids) > limit
    ranked_ids = ranked_ids[:limit]
    next_cursor = None
    if more and ranked_ids:
        last_id, last_rank = ranked_ids[-1]
        payload = {"f": fingerprint, "i": int(last_id)}
        if words:
            payload["r"] = float(last_rank)
            terms = _terms(words, "*")
            payload["k"] = [n for n, term in enumerate(terms) if term in ranked]
        next_cursor = _encode_cursor(payload)

    rows = {
        row.id: row
        for row in sess.execute(select(entries).where(entries.c.id.in_([r[0] for r in ranked_ids])))
    }
    hits = [_hit(rows[r[0]]) for r in ranked_ids if r[0] in rows]
    hits = _without_vetoed(sess, hits, viewer)
    facets, exact = _cached(
        version,
        "facets",
        [*same_search, MATCH_SCAN if words else FACET_SCAN],
        lambda: _facets(sess, words, clean, params, scan),
        lambda stored: (
            {name: [(str(v), int(n)) for v, n in stored[0][name]] for name in FACETS},
            bool(stored[1]),
        ),
    )
    return CatalogPage(
        entries=hits,
        facets=facets,
        next_cursor=next_cursor,
        facets_exact=exact,
        ranking_exact=not words or (exact and bool(ranked)),
    )


def _fingerprint(words: list[str], filters: Mapping[str, str]) -> str:
    key = json.dumps([[w.lower() for w in words], sorted(filters.items())])
    return format(zlib.crc32(key.encode()), "08x")


def _params(
    sess: Session,
    words: list[str],
    ranked: list[tuple[str, str]],
    filters: Mapping[str, str],
) -> dict[str, Any]:
    """The full-text queries of a search: every word and filter; on SQLite, the words ranking.

    :param ranked: the terms that rank the matches (:func:`_ranked_terms`).
    """
    if not words:
        return {}
    if _is_postgres(sess):
        return {"tsq": " & ".join(f"{w.lower()}{star}" for w, star in _terms(words, ":*"))}
    expr = _sqlite_words(_terms(words, "*"))
    for name, value in sorted(filters.items()):
        # The filter's words as a phrase in its column: every entry whose
        # value equals the filter's has them, so the index narrows the
        # matches first and _filtered's comparison on the row settles them.
        if _WORD.search(value):
            expr += f' AND {{{name}}} : "{value.replace(chr(34), chr(34) * 2)}"'
    params = {"fts": expr}
    if ranked:
        params["ranked"] = _sqlite_words(ranked)
    return params


def _sqlite_words(terms: list[tuple[str, str]]) -> str:
    """An FTS5 query for every one of ``terms`` in the searched columns, each as a quoted phrase.

    Words hold no quotes (they are runs of :data:`_WORD`), so the quotes make
    any operator or column name in the query plain text.
    """
    phrases = " ".join(f'"{w}"{star}' for w, star in terms)
    return f"{{{' '.join(SQLITE_TEXT_COLUMNS)}}} : ({phrases})"


def _terms(words: list[str], star: str) -> list[tuple[str, str]]:
    """Each word with the prefix marker if it is matched as a prefix.

    Search as you type: the last word may be unfinished, so it matches as a
    prefix (from two characters on); the words before it are whole.  Which
    of them rank the matches is :func:`_ranked_terms`'s choice.
    """
    last = len(words) - 1
    return [(w, star if n == last and len(w) >= 2 else "") for n, w in enumerate(words)]


def _ranked_terms(sess: Session, words: list[str], version: str | None) -> list[tuple[str, str]]:
    """The terms (:func:`_terms`) that rank a search's matches.

    All of them on PostgreSQL.  On SQLite, whose bm25 counts every entry
    holding a word to weigh it, those held by few enough entries: at most
    :data:`RANKED_PREFIX_MATCHES` for an unfinished last word, at most
    :data:`RANKED_WORD_MATCHES` for a complete one.  How many hold each is
    estimated once per index version (cached like the pages).
    """
    terms = _terms(words, "*")
    if _is_postgres(sess):
        return terms
    ranked: list[tuple[str, str]] = []
    for word, star in terms:
        bound = RANKED_PREFIX_MATCHES if star else RANKED_WORD_MATCHES
        holders = _cached(
            version,
            "holders",
            [word.lower(), star, WORD_SAMPLE],
            functools.partial(_holders, sess, word, star),
            int,
        )
        if holders <= bound:
            ranked.append((word, star))
    return ranked


def _holders(sess: Session, word: str, star: str) -> int:
    """How many entries hold ``word`` (or a word it begins, with ``star``), about (SQLite).

    Exact up to :data:`WORD_SAMPLE`; beyond, the share of entries holding it
    among those since the oldest of its newest ``WORD_SAMPLE`` holders,
    applied to the whole index.  Reads at most ``WORD_SAMPLE`` rows of the
    full-text index.
    """
    entries = CatalogEntry.__table__
    newest = (
        select(_FTS.c.rowid.label("id"))
        .where(_FTS_MATCH.op("MATCH")(bindparam("word")))
        .order_by(_FTS.c.rowid.desc())
        .limit(WORD_SAMPLE)
        .subquery()
    )
    params = {"word": _sqlite_words([(word, star)])}
    found, oldest = sess.execute(select(func.count(), func.min(newest.c.id)), params).one()
    count = int(found)
    if count < WORD_SAMPLE:
        return count
    # Two subqueries: SQLite reads min() or max() of a key from the index's
    # end only when it is the query's one aggregate.
    first, last = sess.execute(
        select(
            select(func.min(entries.c.id)).scalar_subquery(),
            select(func.max(entries.c.id)).scalar_subquery(),
        )
    ).one()
    share = count / (int(last) - int(oldest) + 1)
    return round(share * (int(last) - int(first) + 1))


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


def _cache() -> Cache | None:
    if not has_app_context():
        return None
    cache: Cache | None = current_app.extensions.get("trivium.cache")
    return cache


def _ranked_page(
    sess: Session,
    words: list[str],
    filters: Mapping[str, str],
    after: tuple[float, int] | None,
    limit: int,
    params: dict[str, Any],
    scan: Callable[[], list[_Match]] | None = None,
) -> list[tuple[int, float]]:
    """Up to ``limit + 1`` matches after ``(rank, -id)``: best first, then the newest.

    :param scan: returns the search's matches (:func:`_scan` when omitted).
    """
    matches = scan() if scan is not None else _scan(sess, words, filters, params)
    ranked = ((match[1], -match[0]) for match in matches)
    if after is not None:
        ranked = (pair for pair in ranked if pair > after)
    return [(-negated_id, rank) for rank, negated_id in heapq.nsmallest(limit + 1, ranked)]


def _cached(
    version: str | None,
    kind: str,
    search_key: list[Any],
    compute: Callable[[], _T],
    load: Callable[[Any], _T],
) -> _T:
    """``compute()``, or what it returned for the same search while the index kept its version.

    The version is read in the search's own transaction, so a value is
    stored under the version of the data it was computed from; the version
    is part of the key, so a change to the index makes every entry stale.
    Viewer-specific filtering (vetoes) happens after, never in the cache.

    :param kind: what is cached (``page`` or ``facets``).
    :param search_key: what identifies the search (JSON-compatible).
    :param load: rebuilds the value from its JSON form.
    """
    cache = _cache()
    if cache is None or version is None:
        return compute()
    digest = hashlib.sha256(json.dumps(search_key, sort_keys=True).encode()).hexdigest()[:32]
    key = f"catalog:{kind}:{version}:{digest}"
    stored = cache.get(key)
    if stored is not None:
        try:
            return load(json.loads(stored))
        except (ValueError, KeyError, TypeError, IndexError):
            log.warning("catalog=cache_unreadable key=%s", key)
    value = compute()
    cache.set(key, json.dumps(value).encode(), SEARCH_CACHE_SECONDS)
    return value


def _facets(
    sess: Session,
    words: list[str],
    filters: Mapping[str, str],
    params: dict[str, Any],
    scan: Callable[[], list[_Match]] | None = None,
) -> tuple[dict[str, list[tuple[str, int]]], bool]:
    """Facet counts over a search's matches, and whether they count every one.

    With words, over the rows :func:`_scan` read (at most :data:`MATCH_SCAN`
    + 1); without, over the :data:`FACET_SCAN` + 1 newest entries passing
    the filters, read straight down the primary key.

    :param scan: returns the search's matches (:func:`_scan` when omitted).
    """
    values: list[tuple[str, ...]]
    if words:
        matches = scan() if scan is not None else _scan(sess, words, filters, params)
        values = [match[2:] for match in matches]
        limit = MATCH_SCAN
    else:
        entries = CatalogEntry.__table__
        limit = FACET_SCAN
        stmt = _browsed(filters, *(entries.c[name] for name in FACETS)).limit(limit + 1)
        values = [tuple(row) for row in sess.execute(stmt, params)]
    columns = list(zip(*values, strict=True)) if values else [() for _ in FACETS]
    facets: dict[str, list[tuple[str, int]]] = {}
    for name, column_values in zip(FACETS, columns, strict=True):
        counts = Counter(column_values)
        counts.pop("", None)
        facets[name] = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))[:FACET_VALUES]
    return facets, len(values) <= limit
