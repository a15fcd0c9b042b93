"""Write-behind buffer for progress heartbeats: many reports, one transaction.

A learner's player reports progress every few seconds.  Most of those reports
change no completion status (an ``in_progress`` item stays incomplete, only
its ``data`` moves on), and writing each in its own transaction is what limits
the progress API (MEASUREMENTS.md: SQLite ~12,000 rows/s one per commit, over
100,000/s batched).  :func:`core.progress.report_progress` validates such a
heartbeat in its request, answers from the new state, and hands the row and
its ``progressed`` event to this buffer; a background thread per process
writes everything waiting every ``[progress] flush_ms`` (100 ms by default),
or sooner once ``flush_rows`` wait, in one transaction.

Guarantees:

* **Completions are never buffered.**  A report that completes an item (or
  un-completes it) is written in its request, under the enrolment lock, with
  the course completion rule, exactly as before.
* **What a hard crash can lose:** the heartbeats of at most one flush interval
  (plus, while the database refuses writes, those waiting for the retry) of
  the crashed process.  A clean stop (gunicorn's graceful shutdown, interpreter
  exit) writes what is waiting first.
* **Newer state wins.**  A buffered row is written only while the stored row is
  not complete and not newer than it (``updated_at``), so a heartbeat that
  waited in one process never overwrites a completion or a later report
  written meanwhile by another.
* **Read-your-writes in the same process:** reads of progress merge what is
  waiting here (:meth:`ProgressBuffer.get` and friends); a learner whose
  requests land on another process sees a heartbeat at most one flush
  interval late.  Staff's event list flushes first.
* **A failed write loses nothing and blocks no request.**  The rows go back in
  the buffer (newer reports for the same item win) and the thread retries
  with a back-off; requests only ever take a short in-memory lock.  A row the
  database refuses on its own (its item was deleted meanwhile) is dropped and
  logged instead of holding back the rest.  Past ``max_buffered_rows``,
  reports are written in their request again.

Repeated heartbeats for one learner and item coalesce into one row per batch;
every event is kept.  Event ids follow write order, so a heartbeat's
``progressed`` event may get a larger id than a completion recorded just after
it; timestamps are the reports' own.

With ``flush_ms = 0`` (test suites) nothing waits: the same statements run in
the request's own transaction.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from typing import cast

from flask import Flask
from flask import current_app
from flask import has_app_context
from sqlalchemy import Connection
from sqlalchemy import Engine
from sqlalchemy import Insert
from sqlalchemy import Table
from sqlalchemy import and_
from sqlalchemy import bindparam
from sqlalchemy import insert
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError

from core import process
from core import readcache
from core.config import ProgressSection
from core.db import get_db
from core.events import LearningEvent
from core.models import Event
from core.models import Progress
from core.progress_states import ProgressRecord

log = logging.getLogger(__name__)

EXTENSION = "trivium.progress_buffer"

_PROGRESS = cast(Table, Progress.__table__)
_EVENTS = cast(Table, Event.__table__)

#: Longest pause between retries while the database refuses writes (seconds).
MAX_BACKOFF = 5.0


def upserted(stored: Any, record: ProgressRecord) -> Any:
    """The stored row after the batch upsert wrote ``record`` over ``stored`` (None: no row).

    The rule of the upsert's condition: a complete row, or one updated later
    than the record, stays as it was.
    """
    if stored is None:
        return record
    if stored.completed_at is None and stored.updated_at <= record.updated_at:
        return record
    return stored


def newest(stored: Any, buffered: ProgressRecord | None) -> Any:
    """The current state of one learner's item: the stored row or a buffered record.

    A buffered heartbeat wins only over an incomplete, older stored row: the
    same rule the batch write applies, so reads agree with what will be stored.

    :param stored: the ``progress`` row (a :class:`~core.models.Progress` or
        anything with its attributes), or None.
    """
    if buffered is None:
        return stored
    if stored is None:
        return buffered
    if stored.completed_at is not None or stored.updated_at >= buffered.updated_at:
        return stored
    return buffered


_PROGRESS_COLUMNS = (
    "user_id",
    "item_id",
    "course_id",
    "status",
    "score",
    "data",
    "updated_at",
    "completed_at",
)
_EVENT_COLUMNS = (
    "public_id",
    "timestamp",
    "user_id",
    "course_id",
    "verb",
    "object_id",
    "statement",
)


class UnsupportedDatabase(Exception):
    """The database backend is neither SQLite nor PostgreSQL (the two supported)."""


def _upsert(dialect: str, rows: int | None = None) -> Insert:
    """The batch upsert; with ``rows``, one statement for that many rows (``<column>_<n>``)."""
    ins: Any
    if dialect == "postgresql":
        ins = postgresql.insert(_PROGRESS)
    elif dialect == "sqlite":
        ins = sqlite.insert(_PROGRESS)
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise UnsupportedDatabase(f"progress batches need SQLite or PostgreSQL, not {dialect!r}")
    if rows is not None:
        ins = ins.values(_bind_rows(_PROGRESS, _PROGRESS_COLUMNS, rows))
    excluded = ins.excluded
    stmt: Insert = ins.on_conflict_do_update(
        index_elements=[_PROGRESS.c.user_id, _PROGRESS.c.item_id],
        set_={
            "status": excluded.status,
            "score": excluded.score,
            "data": excluded.data,
            "updated_at": excluded.updated_at,
        },
        where=and_(
            _PROGRESS.c.completed_at.is_(None),
            _PROGRESS.c.updated_at <= excluded.updated_at,
        ),
    )
    return stmt


def _bind_rows(table: Table, columns: tuple[str, ...], rows: int) -> list[dict[str, Any]]:
    return [
        {name: bindparam(f"{name}_{n}", type_=table.c[name].type) for name in columns}
        for n in range(rows)
    ]


_UPSERTS = {name: _upsert(name) for name in ("sqlite", "postgresql")}
_INSERT_EVENT = insert(_EVENTS)

#: Rows per SQLite statement: a batch goes out as a few multi-row statements
#: of these sizes (64 + 64 + 16 + 4 + 1 ... rows), each compiled once.  The
#: sqlite3 driver drops and retakes the GIL for every row of an
#: ``executemany``; under load each retake competes with the request threads
#: while the batch holds the database's write lock.  A few statements per
#: batch cost a quarter less CPU than one per row.  (PostgreSQL's driver
#: pipelines ``executemany``, and its locks are per row, so it keeps that.)
CHUNK_SIZES = (64, 16, 4, 1)


@dataclass(frozen=True)
class _Rendered:
    """A multi-row statement compiled once: its SQL, and where each value goes."""

    sql: str
    slots: tuple[tuple[int, str], ...]
    processors: dict[str, Any]


_rendered: dict[tuple[str, int], _Rendered] = {}


def _render(conn: Connection, kind: str, rows: int) -> _Rendered:
    key = (kind, rows)
    found = _rendered.get(key)
    if found is not None:
        return found
    dialect = conn.dialect
    columns: tuple[str, ...]
    if kind == "progress":
        table, columns, stmt = _PROGRESS, _PROGRESS_COLUMNS, _upsert(dialect.name, rows)
    else:
        table, columns = _EVENTS, _EVENT_COLUMNS
        stmt = insert(_EVENTS).values(_bind_rows(_EVENTS, _EVENT_COLUMNS, rows))
    compiled: Any = stmt.compile(dialect=dialect)
    slots = []
    for name in compiled.positiontup:
        column, _, n = name.rpartition("_")
        slots.append((int(n), column))
    processors = {
        name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
    }
    found = _Rendered(str(compiled), tuple(slots), processors)
    _rendered[key] = found
    return found


def _write_sqlite(conn: Connection, kind: str, rows: list[dict[str, Any]]) -> None:
    start = 0
    for size in CHUNK_SIZES:
        while len(rows) - start >= size:
            chunk = rows[start : start + size]
            start += size
            rendered = _render(conn, kind, size)
            procs = rendered.processors
            params = []
            for n, column in rendered.slots:
                value = chunk[n][column]
                process = procs[column]
                params.append(value if process is None else process(value))
            conn.exec_driver_sql(rendered.sql, tuple(params))


def write(
    conn: Connection, records: Iterable[ProgressRecord], events: Iterable[dict[str, Any]]
) -> None:
    """Upsert ``records`` and insert ``events`` in ``conn``'s transaction (not committed).

    :param records: at most one record per learner and item.
    :param events: ``events`` rows; a row's ``statement`` may still be its
        :class:`~core.events.LearningEvent`, turned into the statement here,
        so that a heartbeat's request does not build what only the write needs.
    """
    rows = [r.values() for r in records]
    event_rows = [_with_statement(row) for row in events]
    if conn.dialect.name == "sqlite":
        _write_sqlite(conn, "progress", rows)
        _write_sqlite(conn, "events", event_rows)
        return
    if rows:
        conn.execute(_UPSERTS[conn.dialect.name], rows)
    if event_rows:
        conn.execute(_INSERT_EVENT, event_rows)


def _with_statement(row: dict[str, Any]) -> dict[str, Any]:
    statement = row["statement"]
    if isinstance(statement, LearningEvent):
        return {**row, "statement": statement.to_statement()}
    return row


class ProgressBuffer:
    """Heartbeats waiting to be written and the thread writing them (per app and process)."""

    def __init__(
        self,
        engine: Engine,
        settings: ProgressSection,
        written: Callable[[dict[tuple[int, int], ProgressRecord]], None] | None = None,
    ) -> None:
        """
        :param written: called after each commit with the records it wrote (by
            user and item id), such as :meth:`core.readcache.ReadCache.progress_written`.
        """
        self.engine = engine
        self._written = written
        self.flush_ms = settings.flush_ms
        self.flush_rows = settings.flush_rows
        self.max_rows = settings.max_buffered_rows
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: dict[tuple[int, int], ProgressRecord] = {}
        self._inflight: dict[tuple[int, int], ProgressRecord] = {}
        self._events: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None
        self._pid = process.pid()
        self._stopping = False
        self.failures = 0
        _live.add(self)

    @property
    def write_through(self) -> bool:
        """True when reports are written in their request (``flush_ms = 0``)."""
        return self.flush_ms == 0

    def waiting(self) -> int:
        """Rows waiting for the next write (progress rows and events).

        Read without the lock (every heartbeat asks, through
        :meth:`has_room`): a count taken while another thread adds may be a
        report short, which the soft limit it serves does not mind.
        """
        return len(self._pending) + len(self._events)

    def has_room(self) -> bool:
        """False once ``max_buffered_rows`` wait: write in the request instead."""
        return self.waiting() < self.max_rows

    # ------------------------------------------------------------ requests

    def add(self, record: ProgressRecord, event: dict[str, Any]) -> None:
        """Queue a heartbeat's row and its event for the next batch."""
        self.add_many((record,), (event,))

    def add_many(self, records: Iterable[ProgressRecord], events: Iterable[dict[str, Any]]) -> None:
        """Queue several heartbeats at once: they go out in the same write.

        A batch request's heartbeats, so that they are stored together, as
        :meth:`flush` writes all it takes in one transaction (but for a row
        the database refuses on its own, its item deleted meanwhile, which is
        dropped alone).  As with :meth:`add`, a record older than the one
        waiting for the same item does not replace it.
        """
        with self._lock:
            self._check_fork()
            for record in records:
                self._keep_newer(record)
            self._events.extend(events)
            full = len(self._pending) + len(self._events) >= self.flush_rows
            if self._thread is None and not self._stopping:
                self._start()
        if full:
            self._wake.set()

    def _keep_newer(self, record: ProgressRecord) -> None:
        # Call with _lock held.  A record handed on late (a batch's, once its
        # request committed) must not replace a newer report's waiting here,
        # nor hide a newer one being written (get() reads _pending first).
        key = (record.user_id, record.item_id)
        waiting = self._pending.get(key) or self._inflight.get(key)
        if waiting is None or waiting.updated_at <= record.updated_at:
            self._pending[key] = record

    def get(self, user_id: int, item_id: int) -> ProgressRecord | None:
        """The newest waiting record of one learner's item (also while being written).

        Read the buffer *before* the stored row: a record this misses has
        been written and announced by then (:meth:`flush`).

        Takes no lock.  Every heartbeat asks, and with a lock here the
        request threads of a busy process queued for it, and for the GIL, in
        turn (a lock taken while its holder lost the GIL stops every other
        thread that reaches it).  Dictionary reads are atomic, and
        :meth:`flush` makes a batch the one in flight *before* it empties the
        waiting table, and drops it only once it is written, so a record is
        always found in one of the two.
        """
        key = (user_id, item_id)
        found = self._pending.get(key)
        return found if found is not None else self._inflight.get(key)

    def for_course(self, course_id: int, user_id: int | None = None) -> list[ProgressRecord]:
        """Waiting records of a course (of one learner), newest per item."""
        with self._lock:
            merged = {**self._inflight, **self._pending}
        return [
            r
            for r in merged.values()
            if r.course_id == course_id and (user_id is None or r.user_id == user_id)
        ]

    # ------------------------------------------------------------ writing

    def flush(self) -> int:
        """Write everything waiting now, in one transaction; return the rows written.

        One flush runs at a time.  On failure the rows go back in the buffer
        (newer records for the same item win) and the error is raised.
        """
        with self._flush_lock:
            with self._lock:
                self._check_fork()
                batch, events = self._pending, self._events
                self._inflight = batch  # first: get() reads without the lock
                self._pending, self._events = {}, []
            if not batch and not events:
                return 0
            try:
                written = self._write(batch, events)
            except BaseException:
                with self._lock:
                    for record in batch.values():
                        self._keep_newer(record)  # a newer report since stays
                    self._events[:0] = events
                # _inflight keeps the batch until the next flush replaces it:
                # a lock-free get() may have missed the records in _pending
                # just before they went back and must still find them there
                raise
            with self._lock:
                self._inflight = {}
            return written

    def _write(
        self, batch: dict[tuple[int, int], ProgressRecord], events: list[dict[str, Any]]
    ) -> int:
        count = len(batch) + len(events)
        try:
            with self.engine.begin() as conn:
                write(conn, batch.values(), events)
            self._announce(batch)
            batch.clear()
            events.clear()
            return count
        except IntegrityError:
            log.warning("progress_buffer=batch_refused rows=%d retry=one_by_one", count)
        # One row the database refuses (its item, course or learner was deleted
        # since the report) must not hold back the others: write them one by
        # one, dropping only the refused ones.  Rows written are removed from
        # the batch, so an error here puts back only the rest.
        for key in list(batch):
            try:
                with self.engine.begin() as conn:
                    write(conn, [batch[key]], ())
                self._announce({key: batch[key]})
            except IntegrityError as exc:
                log.warning("progress_buffer=row_dropped key=%s error=%s", key, exc.orig)
            del batch[key]
        while events:
            try:
                with self.engine.begin() as conn:
                    write(conn, (), events[:1])
            except IntegrityError as exc:
                log.warning("progress_buffer=event_dropped error=%s", exc.orig)
            del events[0]
        return count

    def _announce(self, written: dict[tuple[int, int], ProgressRecord]) -> None:
        if self._written is None or not written:
            return
        try:
            self._written(written)
        except Exception:  # the rows are committed: never write them again
            log.exception("progress_buffer=announce_failed rows=%d", len(written))

    # ------------------------------------------------------------ the thread

    def _check_fork(self) -> None:
        # After a fork (gunicorn workers) the child has no thread and must not
        # write its parent's rows a second time.  Call with _lock held.
        if self._pid != process.pid():
            self._pid = process.pid()
            self._pending, self._inflight, self._events = {}, {}, []
            self._thread = None
            self._flush_lock = threading.Lock()

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="trivium-progress-flush", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        interval = self.flush_ms / 1000
        delay = interval
        while not self._stopping:
            self._wake.wait(delay)
            self._wake.clear()
            if self._stopping:
                break
            try:
                written = self.flush()
            except Exception:
                self.failures += 1
                delay = min(MAX_BACKOFF, max(delay * 2, interval))
                log.exception(
                    "progress_buffer=flush_failed waiting=%d retry_in=%.2fs",
                    self.waiting(),
                    delay,
                )
                continue
            delay = interval
            if written:
                log.debug("progress_buffer=flushed rows=%d", written)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is waiting (at shutdown)."""
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None
        deadline = time.monotonic() + timeout
        while self.waiting() and time.monotonic() < deadline:
            try:
                self.flush()
            except Exception:
                log.exception("progress_buffer=final_flush_failed waiting=%d", self.waiting())
                time.sleep(0.2)
        if self.waiting():
            log.error("progress_buffer=rows_lost_at_shutdown rows=%d", self.waiting())


_live: weakref.WeakSet[ProgressBuffer] = weakref.WeakSet()
_create_lock = threading.Lock()


def close_buffer(app: Flask, timeout: float = 5.0) -> None:
    """Write ``app``'s waiting heartbeats and stop its writer, if this process has one.

    For a server worker that is about to exit: called before anything that
    may take long (stopping the job worker), so a master that loses patience
    and kills the process finds nothing left unwritten.
    """
    buffer: ProgressBuffer | None = app.extensions.get(EXTENSION)
    if buffer is not None and buffer._pid == process.pid():
        buffer.close(timeout=timeout)


@atexit.register
def _flush_at_exit() -> None:
    for buffer in list(_live):
        if buffer._pid == process.pid():
            buffer.close(timeout=5.0)


def get_buffer(app: Flask | None = None) -> ProgressBuffer:
    """The progress buffer of ``app`` (the current app by default), created on first use."""
    target = app or current_app
    buffer: ProgressBuffer | None = target.extensions.get(EXTENSION)
    if buffer is None:
        with _create_lock:
            buffer = target.extensions.get(EXTENSION)
            if buffer is None:
                settings = target.extensions["trivium.settings"]
                cache = readcache.for_app(target)
                buffer = ProgressBuffer(
                    get_db(target).engine,
                    settings.progress,
                    written=(
                        None
                        if cache is None
                        else functools.partial(cache.progress_written, merge=upserted)
                    ),
                )
                target.extensions[EXTENSION] = buffer
    return buffer


def current_buffer() -> ProgressBuffer | None:
    """The current app's buffer if anything was ever buffered in this app, else None."""
    if not has_app_context():
        return None
    buffer: ProgressBuffer | None = current_app.extensions.get(EXTENSION)
    return buffer


def flush_before_reading() -> None:
    """Write what waits in this process's buffer now, for a reader that wants it stored.

    Best effort: on failure the rows stay buffered (and are written later),
    the failure is logged, and the reader sees what is stored.  Heartbeats
    waiting in *other* processes are not reached (at most one flush interval
    late).
    """
    buffer = current_buffer()
    if buffer is None or buffer.write_through or not buffer.waiting():
        return
    try:
        buffer.flush()
    except Exception:
        log.exception("progress_buffer=flush_before_read_failed")
