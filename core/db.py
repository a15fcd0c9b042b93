"""Database engines and sessions, one set per app.

SQLite (WAL, foreign keys on) is the embedded default; PostgreSQL when scaled
out, with an optional read replica for read-only work.  A request gets one
session, closed at the end of the request.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from datetime import date
from datetime import datetime
from typing import Any
from typing import TypeVar
from typing import cast

import orjson
from flask import Flask
from flask import current_app
from flask import g
from sqlalchemy import JSON
from sqlalchemy import CursorResult
from sqlalchemy import DateTime
from sqlalchemy import Dialect
from sqlalchemy import Engine
from sqlalchemy import Executable
from sqlalchemy import MetaData
from sqlalchemy import Select
from sqlalchemy import create_engine
from sqlalchemy import event
from sqlalchemy import inspect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Session
from sqlalchemy.orm import SessionTransaction
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm import sessionmaker
from sqlalchemy.orm.attributes import instance_dict
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Timezone-aware now in UTC."""
    return datetime.now(UTC)


def rowcount(result: Any) -> int:
    """How many rows an executed UPDATE or DELETE matched (0 when the driver cannot say)."""
    return int(getattr(result, "rowcount", 0) or 0)


def json_dumps(value: Any) -> str:
    """JSON text of ``value``, compact, as stored in JSON columns.

    orjson writes the statements and states the progress path stores many
    times faster than the standard library; what orjson refuses (an integer
    beyond 64 bits) is written by :func:`json.dumps` instead, so a learner's
    odd value never blocks a batch.  Keys that are not strings become
    strings, as :func:`json.dumps` makes them.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


def json_loads(text: str | bytes) -> Any:
    """The value of JSON text (the inverse of :func:`json_dumps`).

    The standard library's: orjson would read an integer beyond 64 bits as
    a float, losing digits a learner's data may hold.
    """
    return json.loads(text)


def json_copy(value: Any) -> Any:
    """A copy of JSON-shaped data all the way down (dicts, lists; tuples become lists).

    Several times faster than :func:`copy.deepcopy` on the small values of
    JSON columns and statements; anything else is handed on as is (it must
    be JSON anyway).
    """
    if isinstance(value, dict):
        return {key: json_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_copy(item) for item in value]
    return value


def plain_json(value: Any) -> Any:
    """``value`` as plain JSON data (a plugin's answer, say); datetimes and dates become ISO 8601.

    :raise TypeError: something in it is not JSON.
    :raise ValueError: it holds a circular reference.
    """

    def default(obj: Any) -> Any:
        if isinstance(obj, datetime | date):
            return obj.isoformat()
        raise TypeError(f"{type(obj).__name__} is not JSON")

    return json.loads(json.dumps(value, default=default))


def new_public_id() -> str:
    """An opaque identifier for URLs (a random UUID, hex form)."""
    return uuid.uuid4().hex


class _RandomPool(threading.local):
    """Bytes from the operating system's CSPRNG, read in blocks of :data:`POOL_BYTES`.

    ``os.urandom`` is a system call that releases the GIL: on a heartbeat
    request, one per event id made the thread queue for the GIL again behind
    the other request threads.  Reading a block at a time gives the same
    bytes at a fraction of the calls.  Each thread has a block of its own,
    so taking bytes needs no lock (a lock here made busy request threads
    queue for it), and a forked child starts afresh (:func:`_new_random_pool`),
    so no two processes ever hand out the same bytes.
    """

    POOL_BYTES = 4096

    def __init__(self) -> None:
        self.block = b""
        self.at = 0

    def take(self, n: int) -> bytes:
        """``n`` fresh random bytes."""
        if self.at + n > len(self.block):
            self.block = os.urandom(max(self.POOL_BYTES, n))
            self.at = 0
        start = self.at
        self.at = start + n
        return self.block[start : start + n]


_random_pool = _RandomPool()


def _new_random_pool() -> None:
    # after a fork: the parent may still hand out what is left of its blocks
    global _random_pool
    _random_pool = _RandomPool()


os.register_at_fork(after_in_child=_new_random_pool)


def random_bytes(n: int) -> bytes:
    """``n`` random bytes from the OS's CSPRNG, as ``os.urandom`` (see :class:`_RandomPool`)."""
    return _random_pool.take(n)


def new_time_ordered_id() -> str:
    """A UUID version 7 (RFC 9562), hex form: the time in ms, then 74 random bits.

    For rows written at a high rate and never looked up by age through their
    id, such as learning events: ids that grow with time are appended to the
    end of their unique index instead of landing on a random page of it,
    which made a batch of heartbeat events a quarter cheaper to write.  Still
    unguessable; the time it shows is the row's own timestamp anyway.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(random_bytes(10))
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & 0x3FFF_FFFF_FFFF_FFFF
    return f"{value:032x}"


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always returns them aware.

    SQLite has no time zones; without this, values read back are naive.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base for core's and plugins' models (one metadata)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


T = TypeVar("T", bound=Base)


def detached(cls: type[T], values: dict[str, Any]) -> T:
    """A row the caller already has, as a detached ORM object (no SQL, in no session).

    Like an object loaded by a session that has since closed: attributes
    missing from ``values`` are unloaded, and :func:`adopt` (or
    ``Session.add``) makes it persistent again.

    :param values: column values, the primary key (``id``) included.
    """
    # Filling the state's dict directly skips the constructor's per-attribute
    # change events (the values are what the database holds, not changes),
    # which was half the cost of building one.
    obj = cast(T, inspect(cls).class_manager.new_instance())
    instance_dict(obj).update(values)
    make_transient_to_detached(obj)
    return obj


def attach(sess: Session, cls: type[T], values: dict[str, Any]) -> T:
    """Put a row the caller already has into ``sess`` as a loaded object, without SQL.

    For hot paths that read a few columns with a lean query (or from a cache)
    but must hand on an ordinary ORM object.  The object is persistent in
    ``sess``: attributes missing from ``values`` load from the database on
    first access, and changes flush as an ``UPDATE`` like any loaded object's.
    If ``sess`` already holds this row, that object is returned unchanged.

    :param values: column values, the primary key (``id``) included.
    """
    mapper = inspect(cls)
    key = mapper.identity_key_from_primary_key((values["id"],))
    existing = sess.identity_map.get(key)
    if existing is not None:
        return cast(T, existing)
    obj = detached(cls, values)
    sess.add(obj)
    return obj


_ADOPT = "trivium.db.adopt"


def adopt(sess: Session, obj: Base) -> None:
    """Make a detached object persistent in ``sess`` now.

    An object in a session (this one or another) or never stored is left as it is.
    """
    sess.info.pop(_ADOPT, None)
    if inspect(obj).detached:
        sess.add(obj)


def adopt_on_begin(sess: Session, obj: Base) -> None:
    """Make a detached object persistent in ``sess`` once ``sess`` begins a transaction.

    Attaching an object begins the session's transaction, and a request
    that reads only cached state needs neither: this leaves both for the
    first query or flush, which attaches ``obj`` before it runs.  Until then
    ``obj`` is detached: read only attributes it was built with.  An object
    that is not detached is left as it is.
    """
    if not inspect(obj).detached:
        return
    if sess.in_transaction():
        sess.add(obj)
    else:
        sess.info[_ADOPT] = obj


def _adopt_pending(sess: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        obj = sess.info.pop(_ADOPT, None)
        if obj is not None and inspect(obj).detached:
            sess.add(obj)


def core_execute(
    sess: Session, statement: Executable, params: dict[str, Any] | None = None
) -> CursorResult[*tuple[Any, ...]]:
    """Run a Core statement (built once, with bind parameters) in ``sess``'s transaction.

    Skips the ORM's per-statement work, which hot paths that read plain
    columns do not need; pending ORM changes are flushed first, as
    ``sess.execute`` would (unless autoflush is off).
    """
    if sess.autoflush:
        sess.flush()
    return sess.connection().execute(statement, params)


_CONNECTED = "trivium.db.connected"


def _connected(sess: Session, _transaction: Any, _connection: Any) -> None:
    sess.info[_CONNECTED] = True


def _transaction_ended(sess: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        sess.info.pop(_CONNECTED, None)


def has_connection(sess: Session) -> bool:
    """Whether ``sess``'s transaction holds a database connection (it ran SQL)."""
    return bool(sess.info.get(_CONNECTED))


def read_first(sess: Session, statement: Executable, params: dict[str, Any]) -> Any:
    """The first row of a read, outside ``sess``'s transaction when it has none yet.

    A request that only reads cached state need not start its session's
    transaction for one lookup: a pooled connection of its own costs less.
    Once the session holds a connection (or has changes pending), the read
    runs in its transaction, so it sees the session's own writes.
    """
    engine = _apart(sess)
    if engine is None:
        return core_execute(sess, statement, params).first()
    with engine.connect() as conn:
        return conn.execute(statement, params).first()


def _apart(sess: Session) -> Engine | None:
    """The engine to read from apart from ``sess``, or None if the read belongs in it.

    A session that holds no connection and has nothing to flush has no
    writes of its own a read could miss.
    """
    bind = sess.get_bind()
    if not isinstance(bind, Engine) or has_connection(sess):
        return None
    if sess.new or sess.dirty or sess.deleted:
        return None
    return bind


class LeanRead:
    """A small SELECT that a hot path runs on a raw pooled connection.

    For reads made on every request before anything else touches the
    database (see :func:`read_first`): the statement is compiled once per
    dialect and run with the driver's cursor, and each column goes through
    its type's own result processing (JSON, UTC datetimes), so rows look
    like SQLAlchemy's — without its per-execution machinery, which costs
    several times the query itself.  In a session that holds a connection
    it runs there like any statement.
    """

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._prepared: dict[str, tuple[str, list[str] | None, type[Any]]] = {}
        #: Result processors per dialect, made from the first cursor's
        #: description (some drivers' types need the column's type code).
        self._processors: dict[str, list[Any]] = {}

    def _prepare(self, dialect: Dialect) -> tuple[str, list[str] | None, type[Any]]:
        compiled = self.statement.compile(dialect=dialect)
        order = list(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        names = [str(column.key) for column in self.statement.selected_columns]
        row_type = namedtuple("LeanRow", names)  # type: ignore[misc]
        prepared = (compiled.string, order, row_type)
        self._prepared[dialect.name] = prepared
        return prepared

    def _processors_for(self, dialect: Dialect, description: Any) -> list[Any]:
        processors = self._processors.get(dialect.name)
        if processors is None:
            processors = [
                column.type.dialect_impl(dialect).result_processor(dialect, described[1])
                for column, described in zip(
                    self.statement.selected_columns, description, strict=True
                )
            ]
            self._processors[dialect.name] = processors
        return processors

    def first(self, sess: Session, params: dict[str, Any]) -> Any:
        """The first row (or None), outside ``sess``'s transaction if it has none yet."""
        bind = _apart(sess)
        if bind is None:
            return core_execute(sess, self.statement, params).first()
        dialect = bind.dialect
        sql, order, row_type = self._prepared.get(dialect.name) or self._prepare(dialect)
        args: Any = [params[name] for name in order] if order is not None else params
        raw = bind.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(sql, args)
                row = cursor.fetchone()
                processors = self._processors_for(dialect, cursor.description)
            finally:
                cursor.close()
        finally:
            raw.close()  # back to the pool, rolled back
        if row is None:
            return None
        return row_type(
            *(value if p is None else p(value) for p, value in zip(processors, row, strict=True))
        )


def _sqlite_pragmas(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine with the right settings for its backend."""
    if url.startswith("sqlite"):
        # Every serving thread, job-worker thread and the progress flusher may
        # hold a connection at once; connections beyond pool_size are closed
        # on return, and opening one (with its PRAGMAs) costs more than most
        # requests, so keep enough of them.
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False},
            pool_size=32,
            max_overflow=32,
            json_serializer=json_dumps,
            json_deserializer=json_loads,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        json_serializer=json_dumps,
        json_deserializer=json_loads,
    )


class Database:
    """The engines and session factories of one app."""

    def __init__(self, url: str, replica_url: str = "", *, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo)
        self.replica = make_engine(replica_url, echo=echo) if replica_url else self.engine
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessions = sessionmaker(self.replica, expire_on_commit=False)
        for factory in (self.sessions, self.read_sessions):
            event.listen(factory, "after_transaction_create", _adopt_pending)
            event.listen(factory, "after_begin", _connected)
            event.listen(factory, "after_transaction_end", _transaction_ended)

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite backend."""
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session outside a request (jobs, CLI); committed on success."""
        with self.sessions() as sess, sess.begin():
            yield sess

    def dispose(self) -> None:
        """Close every pooled connection (after fork, at shutdown)."""
        self.engine.dispose()
        if self.replica is not self.engine:
            self.replica.dispose()


def get_db(app: Flask | None = None) -> Database:
    """The :class:`Database` of ``app`` (the current app by default)."""
    target = app or current_app
    db: Database = target.extensions["trivium.db"]
    return db


def session() -> Session:
    """The request's session (created on first use, closed at teardown)."""
    sess: Session | None = g.get("db_session")
    if sess is None:
        sess = g.db_session = get_db().sessions()
    return sess


def init_app(app: Flask, url: str, replica_url: str = "", *, echo: bool = False) -> Database:
    """Create the app's :class:`Database` and close request sessions at teardown."""
    db = Database(url, replica_url, echo=echo)
    app.extensions["trivium.db"] = db

    @app.teardown_appcontext
    def _close(exc: BaseException | None) -> None:
        sess = g.pop("db_session", None)
        # a session that never began a transaction and holds no object has
        # nothing to release (requests served from caches alone)
        if sess is not None and (sess.in_transaction() or len(sess.identity_map)):
            if exc is not None:
                sess.rollback()
            sess.close()

    return db
