"""What learners' requests read most, kept in each process and exact on one machine.

Every learner request needs the item it names, with its module and course,
and the learner's standing in that course (staff role, enrolment status).
Those change rarely (an instructor edits, a learner enrols) and are read on
every request, so each process keeps them here instead of asking the
database each time:

* :meth:`ReadCache.item` — an item's, its module's and its course's columns,
  by the item's public id;
* :meth:`ReadCache.standing` — a user's :class:`core.rbac.Access` in a course;
* :meth:`ReadCache.progress` — a learner's stored progress on an item, which
  every heartbeat reads before applying the next report.  These live in a
  table shared by the machine's processes (:mod:`core.progress_states`),
  since a learner's heartbeats go to any of them.

**Exactness.**  Each entry records the change counters
(:mod:`core.generations`) of what it was built from: the course for items,
the (user, course) pair for standings.  Core's session listeners add one to
those counters whenever a flush writes a course, module, item, enrolment or
course role, and again once the transaction commits, so every process of the
instance on this machine drops the entry at its next read: a request that
starts after a change committed never sees the old value.  Code that writes
those tables with Core statements instead of ORM objects calls :func:`touch`.

**Other machines.**  Processes on other hosts of a scaled-out deployment
have their own counters; with a Redis cache the moves are relayed to them
through Redis pub/sub (:class:`core.generations.RedisRelay`).  Whatever
happens to those messages, an entry lives at most ``[cache] read_seconds``
(30 by default; 0 turns the cache off).

**What callers get.**  Entries hand out fresh ORM objects filled with the
cached columns but belonging to no session (see :func:`snapshot`): read
them, never change them — changes would not be saved.  Write paths load
their rows through the session as before.

Entries are only stored from sessions that have written nothing to those
tables in their transaction, so an uncommitted (or rolled back) change never
reaches the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import TypeVar
from typing import cast

from flask import Flask
from flask import current_app
from sqlalchemy import event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session
from sqlalchemy.orm import SessionTransaction
from sqlalchemy.orm import attributes

from core.db import Base
from core.db import Database
from core.db import json_copy
from core.generations import FILE_NAME as generations_file
from core.generations import Generations
from core.generations import Key
from core.generations import RedisRelay
from core.generations import slot_of
from core.models import Course
from core.models import CourseRole
from core.models import Enrolment
from core.models import Item
from core.models import Module
from core.models import Progress
from core.models import User
from core.progress_states import FILE_NAME as progress_states_file
from core.progress_states import ProgressRecord
from core.progress_states import ProgressStates

T = TypeVar("T", bound=Base)

_EXTENSION = "trivium.readcache"
_PENDING = "trivium.readcache.pending"

#: Most entries a process keeps of each kind (the oldest go first past it):
#: items hold their config (a page's text), pages of "my courses" up to 20
#: courses, standings two short strings — a few hundred MB at most.
MAX_ITEMS = 50_000
MAX_LISTS = 20_000
MAX_ENTRIES = 200_000


def course_key(course_id: int) -> Key:
    """The counter of a course's own row, its modules and items."""
    return ("course", course_id)


def standing_key(user_id: int, course_id: int) -> Key:
    """The counter of one user's role and enrolment in one course."""
    return ("standing", user_id, course_id)


def user_key(user_id: int) -> Key:
    """The counter of everything about one user's courses (enrolments, roles)."""
    return ("user", user_id)


def progress_key(user_id: int) -> Key:
    """The counter of a user's stored progress, on any item."""
    return ("progress", user_id)


#: Moves when progress rows go without their learners' counters moving (an
#: item, module, course or user deleted: the database removes their rows),
#: and when the relay to other machines (re)connects.  See
#: :class:`core.progress_states.ProgressStates`.
PROGRESS_EPOCH: Key = ("progress-epoch", 0)

#: Moves when any course is created, deleted or changes status: lists that
#: filter on status depend on courses they do not show.
PUBLICATION: Key = ("publication", 0)


def snapshot(cls: type[T], values: dict[str, Any]) -> T:
    """A new ``cls`` object holding ``values``, in no session.

    Cheaper than loading or attaching one; attributes not in ``values`` read
    as None and relationships are not loaded, so give every column.
    """
    obj = cast(T, sa_inspect(cls).class_manager.new_instance())
    attributes.instance_dict(obj).update(values)
    return obj


@dataclass(frozen=True)
class ItemRow:
    """The cached columns of an item, its module and its course."""

    item: dict[str, Any]
    module: dict[str, Any]
    course: dict[str, Any]

    def objects(self) -> tuple[Item, Module, Course]:
        """Fresh snapshot objects (``item.module`` set); JSON columns are copies."""
        item_values = dict(self.item)
        item_values["config"] = json_copy(item_values["config"])
        item = snapshot(Item, item_values)
        module = snapshot(Module, dict(self.module))
        course = snapshot(Course, dict(self.course))
        attributes.set_committed_value(item, "module", module)
        return item, module, course


@dataclass(frozen=True)
class _Entry:
    value: Any
    slots: tuple[int, ...]
    stamps: tuple[int, ...]
    expires: float


class ReadCache:
    """The per-process cache; one per app (``app.extensions``)."""

    def __init__(self, generations: Generations, ttl: float, states: ProgressStates) -> None:
        self.generations = generations
        self.ttl = ttl
        self.states = states
        self._items: dict[str, _Entry] = {}
        self._course_of: dict[str, int] = {}
        self._standings: dict[tuple[int, int], _Entry] = {}
        self._lists: dict[tuple[int, tuple[Any, ...]], _Entry] = {}
        self._list_courses: dict[tuple[int, tuple[Any, ...]], tuple[int, ...]] = {}

    @property
    def enabled(self) -> bool:
        """False when ``[cache] read_seconds`` is 0."""
        return self.ttl > 0

    def _stamps(self, slots: tuple[int, ...]) -> tuple[int, ...]:
        read = self.generations.read
        return tuple(read(s) for s in slots)

    def _valid(self, entry: _Entry | None) -> bool:
        return (
            entry is not None
            and entry.expires > time.monotonic()
            and self._stamps(entry.slots) == entry.stamps
        )

    def _entry(self, value: Any, keys: Iterable[Key], stamps: tuple[int, ...]) -> _Entry:
        slots = tuple(slot_of(k) for k in keys)
        return _Entry(value, slots, stamps, time.monotonic() + self.ttl)

    @staticmethod
    def _bounded(table: dict[Any, Any], limit: int = MAX_ENTRIES) -> None:
        # Other threads insert meanwhile: iterating may fail, which only
        # means this eviction waits for the next insert.
        while len(table) >= limit:
            try:
                del table[next(iter(table))]
            except (RuntimeError, StopIteration, KeyError):
                return

    # -------------------------------------------------------------- items

    def item(self, public_id: str) -> ItemRow | None:
        """The cached item row, if current."""
        entry = self._items.get(public_id)
        if entry is not None and self._valid(entry):
            row: ItemRow = entry.value
            return row
        return None

    def item_stamp(self, public_id: str) -> tuple[int, tuple[int, ...]] | None:
        """Read the counter of the item's course *before* loading the item.

        The course is the one this process saw the item in last time; None
        the first time (the row is then not kept, only its course noted).
        """
        course_id = self._course_of.get(public_id)
        if course_id is None:
            return None
        return course_id, self._stamps((slot_of(course_key(course_id)),))

    def keep_item(
        self,
        sess: Session,
        public_id: str,
        row: ItemRow,
        stamp: tuple[int, tuple[int, ...]] | None,
    ) -> None:
        """Store ``row`` as loaded by ``sess`` after :meth:`item_stamp` gave ``stamp``."""
        if not self.enabled or sess.info.get(_PENDING):
            return
        course_id: int = row.course["id"]
        if stamp is None or stamp[0] != course_id:
            # A counter read after the load could already include a change
            # the load did not see; keep the row once a stamp was read first.
            if len(self._course_of) >= MAX_ENTRIES:
                self._course_of.clear()
            self._course_of[public_id] = course_id
            return
        self._bounded(self._items, MAX_ITEMS)
        self._items[public_id] = self._entry(row, [course_key(course_id)], stamp[1])

    # ---------------------------------------------------------- standings

    def standing(self, user_id: int, course_id: int) -> Any:
        """The cached :class:`core.rbac.Access`, if current, else None."""
        entry = self._standings.get((user_id, course_id))
        if entry is not None and self._valid(entry):
            return entry.value
        return None

    def standing_stamp(self, user_id: int, course_id: int) -> tuple[int, ...]:
        """Read the pair's counter *before* loading the standing."""
        return self._stamps((slot_of(standing_key(user_id, course_id)),))

    def keep_standing(
        self, sess: Session, user_id: int, course_id: int, value: Any, stamp: tuple[int, ...]
    ) -> None:
        """Store a standing loaded by ``sess`` after reading ``stamp``."""
        if not self.enabled or sess.info.get(_PENDING):
            return
        self._bounded(self._standings)
        self._standings[(user_id, course_id)] = self._entry(
            value, [standing_key(user_id, course_id)], stamp
        )

    # ------------------------------------------------------------ my courses

    def my_courses(self, user_id: int, page: tuple[Any, ...]) -> Any:
        """A user's cached page of "my courses" (see :func:`core.progress.my_courses`)."""
        entry = self._lists.get((user_id, page))
        if entry is not None and self._valid(entry):
            return entry.value
        return None

    def my_courses_stamp(self, user_id: int, page: tuple[Any, ...]) -> tuple[Any, ...]:
        """Read the counters of a page *before* loading it (pass to :meth:`keep_my_courses`).

        Those are the user's, the publication's and those of the courses the
        page listed when this process last loaded it.
        """
        courses: tuple[int, ...] = self._list_courses.get((user_id, page), ())
        keys = [user_key(user_id), PUBLICATION, *(course_key(c) for c in courses)]
        slots = tuple(slot_of(k) for k in keys)
        return courses, slots, self._stamps(slots)

    def keep_my_courses(
        self,
        sess: Session,
        user_id: int,
        page: tuple[Any, ...],
        value: Any,
        course_ids: Iterable[int],
        stamp: tuple[Any, ...],
    ) -> None:
        """Store a page loaded by ``sess`` after :meth:`my_courses_stamp` gave ``stamp``.

        Kept only if it lists no course whose counter was not read before the
        load; otherwise its courses are noted for the next load.
        """
        if not self.enabled or sess.info.get(_PENDING):
            return
        courses, slots, stamps = stamp
        listed = tuple(course_ids)
        if not set(listed) <= set(courses):
            if len(self._list_courses) >= MAX_ENTRIES:
                self._list_courses.clear()
            self._list_courses[(user_id, page)] = listed
            return
        self._bounded(self._lists, MAX_LISTS)
        self._lists[(user_id, page)] = _Entry(value, slots, stamps, time.monotonic() + self.ttl)

    # ------------------------------------------------------------ progress

    def progress(
        self, sess: Session, user_id: int, item_id: int
    ) -> tuple[ProgressRecord | None] | None:
        """``(row,)``: the learner's stored progress on the item (None: none), if known.

        From the machine's table (:mod:`core.progress_states`); a fresh copy.
        Never for a session that wrote progress: it must read its own rows.
        """
        if not self.enabled or sess.info.get(_PENDING):
            return None
        return self.states.get(user_id, item_id)

    def progress_stamp(self, user_id: int) -> tuple[int, int]:
        """Read the counters an entry depends on *before* reading a stored row."""
        return self.states.stamp(user_id)

    def keep_progress(
        self,
        sess: Session,
        user_id: int,
        item_id: int,
        row: ProgressRecord | None,
        stamp: tuple[int, int],
    ) -> None:
        """Keep a row (or None) read by ``sess`` after :meth:`progress_stamp` gave ``stamp``.

        Not from a session that wrote progress: its rows may be rolled back.
        """
        if not self.enabled or sess.info.get(_PENDING):
            return
        self.states.keep(row, user_id, item_id, stamp)

    def progress_written(
        self,
        rows: Mapping[tuple[int, int], ProgressRecord],
        merge: Callable[[ProgressRecord | None, ProgressRecord], ProgressRecord | None],
    ) -> None:
        """Move the counters of learners whose ``rows`` (by user and item id) were just committed.

        See :meth:`core.progress_states.ProgressStates.written`.
        """
        self.states.written(rows, merge)


def for_app(app: Flask) -> ReadCache | None:
    """``app``'s cache (also when turned off), for code running outside a request."""
    cache: ReadCache | None = app.extensions.get(_EXTENSION)
    return cache


def current() -> ReadCache | None:
    """The current app's cache, or None outside an app or when turned off."""
    cache: ReadCache | None = current_app.extensions.get(_EXTENSION)
    if cache is None or not cache.enabled:
        return None
    relay = cache.generations.relay
    if relay is not None:
        relay.ensure_listening()  # once per process: other machines' changes
    return cache


# ------------------------------------------------------------ invalidation


def _keys_of(sess: Session, obj: object) -> list[Key]:
    if obj in sess.deleted and isinstance(obj, Course | Module | Item | User):
        return [*_row_keys(sess, obj), PROGRESS_EPOCH]
    return _row_keys(sess, obj)


def _row_keys(sess: Session, obj: object) -> list[Key]:
    if isinstance(obj, Course):
        if obj.id is None:
            return []
        state = sa_inspect(obj)
        if obj in sess.new or obj in sess.deleted or state.attrs.status.history.has_changes():
            return [course_key(obj.id), PUBLICATION]
        return [course_key(obj.id)]
    if isinstance(obj, Module | Item):
        return [course_key(obj.course_id)] if obj.course_id is not None else []
    if isinstance(obj, Enrolment | CourseRole):
        if obj.user_id is None or obj.course_id is None:
            return []
        return [standing_key(obj.user_id, obj.course_id), user_key(obj.user_id)]
    if isinstance(obj, Progress):  # completions change "my courses" counts
        if obj.user_id is None:
            return []
        return [user_key(obj.user_id), progress_key(obj.user_id)]
    if isinstance(obj, User):  # rights and activity of cached token owners
        return [user_key(obj.id)] if obj.id is not None else []
    return []


def touch(sess: Session, keys: Iterable[Key]) -> None:
    """Record a change made with a Core statement (see the module docstring).

    The counters move now and again when ``sess`` commits.
    """
    keys = list(keys)
    if not keys:
        return
    sess.info.setdefault(_PENDING, set()).update(keys)
    generations: Generations | None = sess.info.get(_EXTENSION)
    if generations is not None:
        generations.bump(slot_of(k) for k in keys)


def _after_flush(sess: Session, _context: Any) -> None:
    keys: list[Key] = []
    for obj in (*sess.new, *sess.dirty, *sess.deleted):
        keys.extend(_keys_of(sess, obj))
    touch(sess, keys)


def _after_commit(sess: Session) -> None:
    pending: set[Key] | None = sess.info.pop(_PENDING, None)
    generations: Generations | None = sess.info.get(_EXTENSION)
    if pending and generations is not None:
        generations.bump(slot_of(k) for k in pending)


def _after_transaction_end(sess: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost transaction: committed or not
        sess.info.pop(_PENDING, None)


def listen(database: Database, generations: Generations) -> None:
    """Move the counters on every commit of ``database``'s sessions."""
    for factory in {database.sessions, database.read_sessions}:
        factory.kw.setdefault("info", {})[_EXTENSION] = generations
        event.listen(factory, "after_flush", _after_flush)
        event.listen(factory, "after_commit", _after_commit)
        event.listen(factory, "after_transaction_end", _after_transaction_end)


#: The shared files of earlier layouts, removed at start-up (the progress
#: table alone took 32 MiB).
_OLD_RUN_FILES = ("generations", "progress-states")


def init_app(
    app: Flask,
    database: Database,
    instance_path: str,
    ttl: float,
    *,
    redis_url: str = "",
    channel: str = "",
) -> ReadCache:
    """Create the app's cache and hook it to ``database``'s sessions.

    :param redis_url: the instance's Redis cache, if any: counter moves are
        then relayed between machines on ``channel`` (see :mod:`core.generations`).
    """
    run = Path(instance_path) / "run"
    for old in _OLD_RUN_FILES:
        # an earlier release's layout (a process of it still running keeps its
        # mapping; the names are never used again)
        (run / old).unlink(missing_ok=True)
    generations = Generations(run / generations_file)
    relay = RedisRelay(redis_url, channel, generations) if redis_url else None
    epoch = slot_of(PROGRESS_EPOCH)
    if relay is not None:

        def reconnected() -> None:  # moves may have been lost while it was away
            generations.bump_here([epoch])

        relay.on_connect = reconnected
    states = ProgressStates(
        run / progress_states_file,
        generations,
        lambda user_id: slot_of(progress_key(user_id)),
        ttl,
        epoch_slot=epoch,
        connected=relay.connected if relay is not None else None,
    )
    cache = ReadCache(generations, ttl, states)
    app.extensions[_EXTENSION] = cache
    listen(database, generations)
    return cache
