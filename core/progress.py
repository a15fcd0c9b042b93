"""Learners' progress on items, and the course completion rule.

A learner's report goes through the item's content type
(:meth:`core.content.ContentType.apply_progress`) and is stored in one
:class:`~core.models.Progress` row per learner and item.  ``completed_at`` on
that row is set while the content type's :meth:`~core.content.ContentType.is_complete`
holds, so completion counts are plain SQL.

Completion rule: when every *required* item of a course is complete, the
enrolment's ``completed_at`` is set once, a ``completed`` event is recorded
for the course and, after the caller commits, :func:`announce` calls the
``course_completed`` hook.  Repeated reports never fire it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any
from typing import Protocol

from sqlalchemy import BindParameter
from sqlalchemy import ColumnElement
from sqlalchemy import Select
from sqlalchemy import and_
from sqlalchemy import bindparam
from sqlalchemy import event as sa_event
from sqlalchemy import func
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import union
from sqlalchemy import update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm import SessionTransaction

from core import db
from core import rbac
from core import readcache
from core.content import ItemView
from core.content import ProgressReportInvalid
from core.content import ProgressState
from core.courses import ITEM_FOR_VIEWER
from core.courses import content_type_failed
from core.courses import content_type_for
from core.courses import lookup_item
from core.courses import plugin_host
from core.courses import view_item
from core.db import LeanRead
from core.db import core_execute
from core.db import json_copy
from core.db import new_time_ordered_id
from core.db import utcnow
from core.errors import Conflict
from core.errors import Forbidden
from core.errors import Problem
from core.errors import ValidationFailed
from core.events import VERBS
from core.events import Actor
from core.events import LearningEvent
from core.events import base_url
from core.events import course_iri
from core.events import item_iri
from core.events import record_event
from core.models import PROGRESS_STATUSES
from core.models import Course
from core.models import CourseRole
from core.models import Enrolment
from core.models import Item
from core.models import Module
from core.models import Progress
from core.models import User
from core.progress_buffer import current_buffer
from core.progress_buffer import newest
from core.progress_buffer import write as write_progress
from core.progress_states import ProgressRecord

log = logging.getLogger(__name__)


class NotEnrolled(Forbidden):
    """Only learners with an active enrolment report progress."""

    type_slug = "not-enrolled"


class CourseReadOnly(Conflict):
    """The course is archived: its content can be read, progress no longer changes."""

    type_slug = "course-read-only"


class BatchOutdated(Conflict):
    """A batch of reports met a concurrent change (an item deleted meanwhile)."""

    type_slug = "batch-outdated"


class InvalidProgressReport(ValidationFailed):
    """The item's content type refused the report."""

    type_slug = "invalid-progress-report"


class ProgressLike(Protocol):
    """A learner's progress on one item: a stored row or a buffered record."""

    @property
    def item_id(self) -> int:
        """The item's key."""

    @property
    def status(self) -> str:
        """``not_started``, ``in_progress`` or ``completed``."""

    @property
    def score(self) -> float | None:
        """The content type's score, if any."""

    @property
    def data(self) -> dict[str, Any]:
        """The content type's state."""

    @property
    def updated_at(self) -> datetime:
        """When it last changed."""

    @property
    def completed_at(self) -> datetime | None:
        """When the item became complete, while it is."""


@dataclass(frozen=True)
class ProgressOutcome:
    """What one progress report changed."""

    user: User
    course: Course
    progress: ProgressLike
    item_completed: bool
    course_completed: bool


@dataclass(frozen=True)
class Counts:
    """Required items of a course and how many of them a learner completed."""

    required: int
    completed: int

    @property
    def percent(self) -> float:
        """Completed share of required items, 0 to 100 (0 when none are required)."""
        if self.required == 0:
            return 0.0
        return round(100.0 * self.completed / self.required, 1)


def state_of(row: Any) -> ProgressState:
    """The content-type view of a stored progress row (or a buffered record, or None)."""
    if row is None:
        return ProgressState()
    status: Any = row.status
    # a copy all the way down: content types may change the state they are given
    return ProgressState(status=status, score=row.score, data=json_copy(row.data or {}))


def item_view(item: Item, course: Course) -> ItemView:
    """What a content type sees of an item."""
    return ItemView(
        id=item.public_id, course_id=course.public_id, title=item.title, config=dict(item.config)
    )


_USER_ID: BindParameter[int] = bindparam("user_id")
_ITEM_ID: BindParameter[int] = bindparam("item_id")
_COURSE_ID: BindParameter[int] = bindparam("course_id")

_LOCK_ENROLMENT = (
    select(Enrolment)
    .where(Enrolment.course_id == _COURSE_ID, Enrolment.user_id == _USER_ID)
    .with_for_update()
)
_FIND = select(Progress).where(Progress.user_id == _USER_ID, Progress.item_id == _ITEM_ID)
_STATE = select(
    Progress.status, Progress.score, Progress.data, Progress.updated_at, Progress.completed_at
).where(Progress.user_id == _USER_ID, Progress.item_id == _ITEM_ID)
_STATE_READ = LeanRead(_STATE)


# The report endpoint loads the item, the caller's standing and their stored
# progress in one query; report_progress takes the progress from this memo.
_ITEM_FOR_REPORT = ITEM_FOR_VIEWER.add_columns(
    Progress.status, Progress.score, Progress.data, Progress.updated_at, Progress.completed_at
).outerjoin(Progress, and_(Progress.item_id == Item.id, Progress.user_id == rbac.VIEWER_ID))
_STATE_MEMO = "trivium.progress.state"


def load_item_for_report(sess: Session, public_id: str, user: User) -> tuple[Item, Course]:
    """Like :func:`core.courses.get_item` with a viewer, and their stored progress too.

    With the read cache on, the item, course and standing come from it
    (:func:`core.courses.view_item`: snapshots, read only) and
    :func:`report_progress` reads the state with one small query; without
    it, all of it comes from one query (the state only while no heartbeats
    wait in a buffer: then it is read after the buffer, by its own query).

    :raise ItemNotFound: there is none.
    """
    if readcache.current() is not None:
        # item and standing from the read cache; the state is read on its own
        return view_item(sess, public_id, user)
    row = lookup_item(sess, _ITEM_FOR_REPORT, public_id, user)
    item: Item = row[0]
    state = None
    if row[5] is not None:
        state = ProgressRecord(
            user_id=user.id,
            item_id=item.id,
            course_id=item.course_id,
            status=row[5],
            score=row[6],
            data=row[7],
            updated_at=row[8],
            completed_at=row[9],
        )
    buffer = current_buffer()
    if buffer is None or buffer.write_through:
        # with heartbeats waiting, the state is read after the buffer instead:
        # one written meanwhile would be missed in both (report_progress)
        sess.info.setdefault(_STATE_MEMO, {})[(user.id, item.id)] = state
    return item, row[1]


def _stored_state(sess: Session, user: User, item: Item) -> Any:
    memo: dict[tuple[int, int], ProgressRecord | None] = sess.info.get(_STATE_MEMO, {})
    key = (user.id, item.id)
    if key in memo:
        return memo.pop(key)
    cache = readcache.current()
    if cache is None:
        # outside the request's transaction if it has none (a completion
        # reads again under its lock)
        return _STATE_READ.first(sess, {"user_id": user.id, "item_id": item.id})
    cached = cache.progress(sess, user.id, item.id)
    if cached is not None:
        return cached[0]
    stamp = cache.progress_stamp(user.id)
    row = _STATE_READ.first(sess, {"user_id": user.id, "item_id": item.id})
    record = None if row is None else _record_of(user, item, row)
    cache.keep_progress(sess, user.id, item.id, record, stamp)
    return record


def _lock_enrolment(sess: Session, user: User, course: Course) -> Enrolment | None:
    # Locking the enrolment serialises one learner's reports in one course, so
    # two reports completing the last two items cannot both miss the other.
    return sess.scalar(_LOCK_ENROLMENT, {"course_id": course.id, "user_id": user.id})


def _progress_row(sess: Session, user: User, item: Item) -> Progress:
    """The learner's row for ``item``, created if missing (safe under concurrency)."""
    dialect = sess.get_bind().dialect.name
    values = {
        "user_id": user.id,
        "item_id": item.id,
        "course_id": item.course_id,
        "status": "not_started",
        "data": {},
        "updated_at": utcnow(),
    }
    if dialect == "postgresql":
        sess.execute(
            postgresql.insert(Progress)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["user_id", "item_id"])
        )
    elif dialect == "sqlite":
        sess.execute(
            sqlite.insert(Progress)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["user_id", "item_id"])
        )
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        if _find(sess, user, item) is None:
            sess.add(Progress(**values))
            sess.flush()
    row = sess.scalar(
        select(Progress)
        .where(Progress.user_id == user.id, Progress.item_id == item.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None
    return row


def _find(sess: Session, user: User, item: Item) -> Progress | None:
    return sess.scalar(_FIND, {"user_id": user.id, "item_id": item.id})


def report_progress(
    sess: Session,
    user: User,
    item: Item,
    course: Course,
    report: Mapping[str, Any],
    *,
    buffer: HeartbeatSink | None = None,
    prepared: _Applied | None = None,
) -> ProgressOutcome:
    """Apply a learner's report on ``item`` and the course completion rule.

    Flushes but does not commit; after committing, pass the outcome to
    :func:`announce`.

    A heartbeat (a report after which the item is incomplete, as it was
    before) is validated here but, given a ``buffer``, stored by it: with the
    next batch, or in ``sess``'s transaction when the buffer writes through.
    Every other report is written in ``sess`` under the enrolment lock, with
    the completion rule (see :mod:`core.progress_buffer`).

    :param report: the learner's fields (``status``, ``data``) as sent.
    :param buffer: where heartbeats may wait for a batch write; None writes
        every report in ``sess``.
    :param prepared: this report already applied to some state (a batch's
        first pass), taken instead of applying it again if that state is
        the one it meets now.
    :raise NotEnrolled: ``user`` holds no active enrolment in the course.
    :raise CourseReadOnly: the course is archived.
    :raise ContentTypeUnavailable: the item's content type is not installed.
    :raise InvalidProgressReport: the content type refused the report.
    :raise ContentTypeFailed: the content type crashed.
    """
    attempt = prepared
    if buffer is not None and buffer.has_room() and _may_report(sess, user, course):
        # the buffer first: what it no longer holds is stored by then
        waiting = buffer.get(user.id, item.id)
        current = newest(_stored_state(sess, user, item), waiting)
        previous = state_of(current)
        if attempt is None or attempt.previous != previous:
            attempt = _apply(item, course, previous, report)
        if not attempt.complete and (current is None or current.completed_at is None):
            return _heartbeat(sess, user, item, course, attempt.new, buffer)
    return _report_now(sess, user, item, course, report, buffer, attempt)


class HeartbeatSink(Protocol):
    """Where :func:`report_progress` leaves heartbeats: a :class:`ProgressBuffer` or a batch."""

    @property
    def write_through(self) -> bool: ...

    def has_room(self) -> bool: ...

    def get(self, user_id: int, item_id: int) -> ProgressRecord | None: ...

    def add(self, record: ProgressRecord, event: dict[str, Any]) -> None: ...


class HeartbeatQueue(HeartbeatSink, Protocol):
    """A sink that also takes several heartbeats at once (:class:`ProgressBuffer`)."""

    def add_many(
        self, records: Iterable[ProgressRecord], events: Iterable[dict[str, Any]]
    ) -> None: ...


#: Most reports one :func:`report_many` call (one batch request) applies.
MAX_BATCH = 100


class _Batch:
    """The heartbeats of one :func:`report_many` call, written together at its end."""

    write_through = False

    def __init__(self, buffer: HeartbeatSink | None) -> None:
        self.buffer = buffer
        self.records: dict[tuple[int, int], ProgressRecord] = {}
        self.events: list[dict[str, Any]] = []

    def has_room(self) -> bool:
        return True

    def get(self, user_id: int, item_id: int) -> ProgressRecord | None:
        mine = self.records.get((user_id, item_id))
        if mine is not None or self.buffer is None:
            return mine
        return self.buffer.get(user_id, item_id)

    def add(self, record: ProgressRecord, event: dict[str, Any]) -> None:
        self.records[(record.user_id, record.item_id)] = record
        self.events.append(event)


def report_many(
    sess: Session,
    user: User,
    reports: Sequence[tuple[Item, Course, Mapping[str, Any]]],
    *,
    buffer: HeartbeatQueue | None = None,
) -> list[ProgressOutcome]:
    """Apply one learner's reports in order, all of them or none (a player catching up).

    First each report is applied to the state it would meet (a report sees
    the ones before it on the same item) and each course is checked as
    :func:`report_progress` would, storing nothing: a report that would be
    refused stops the whole batch before any write or event.  Then each is
    stored as :func:`report_progress` does, with the state it computed (it is
    applied again only if the state it meets changed meanwhile), except that
    the heartbeats are kept together: when ``sess`` commits they go into
    ``buffer`` at once, and its next write stores them in one transaction
    (none of them if ``sess`` rolls back).  If a report of the batch was
    written in ``sess`` (a completion), or without a buffer that waits (or
    with a full one), they are written in ``sess``'s transaction at the end
    instead, a few statements for all of them, so that the batch is stored
    whole.  Flushes but does not commit; after committing, pass each outcome
    to :func:`announce`.

    :param reports: (item, its course, the learner's fields) in the order sent.
    :param buffer: the process's buffer, whose waiting heartbeats the
        reports build on.
    :raise NotEnrolled: (and the other errors of :func:`report_progress`).
    :raise BatchOutdated: an item went while the batch was applied (send it again).
    """
    states: dict[int, ProgressState] = {}
    stored: dict[int, Any] = {}
    applied: list[_Applied] = []
    for n, (item, course, report) in enumerate(reports):
        with naming_report(n):
            _check_reportable(sess, user, course)
            if item.id not in states:
                waiting = buffer.get(user.id, item.id) if buffer is not None else None
                stored[item.id] = _stored_state(sess, user, item)
                states[item.id] = state_of(newest(stored[item.id], waiting))
                if waiting is not None:
                    # written by the time of the second pass, it would be
                    # missed there in the buffer: that pass reads the row again
                    del stored[item.id]
            # the state it meets is kept apart: the content type may change
            # what it is given, and the second pass compares with this one
            met = states[item.id]
            given = ProgressState(met.status, met.score, json_copy(met.data))
            attempt = _apply(item, course, given, report)
            applied.append(_Applied(met, attempt.new, attempt.complete))
            states[item.id] = attempt.new
    batch = _Batch(buffer)
    outcomes = []
    written_here = False
    memo: dict[tuple[int, int], Any] = sess.info.setdefault(_STATE_MEMO, {})
    try:
        for n, (item, course, report) in enumerate(reports):
            if item.id in stored:
                # the stored row read above, until this batch writes the item's
                # row itself (a completion): then it is read in the session
                memo[(user.id, item.id)] = stored[item.id]
            with naming_report(n):
                outcome = report_progress(
                    sess, user, item, course, report, buffer=batch, prepared=applied[n]
                )
            if not isinstance(outcome.progress, ProgressRecord):
                stored.pop(item.id, None)
                written_here = True  # a completion, in sess's transaction
            # the state after this report: a later one may change the same row
            frozen = _frozen(outcome.progress, user, item)
            outcomes.append(dataclasses.replace(outcome, progress=frozen))
        if batch.records or batch.events:
            waits = buffer is not None and not buffer.write_through and buffer.has_room()
            if buffer is not None and waits and not written_here:
                # in the request, they would queue for the database's write
                # lock with every other request's: seconds in the tail
                _hand_on_commit(sess, buffer, list(batch.records.values()), batch.events)
            else:
                write_progress(sess.connection(), batch.records.values(), batch.events)
                readcache.touch(sess, [readcache.progress_key(user.id)])
    except IntegrityError as exc:
        # an item (or the course) went while the batch was applied
        raise BatchOutdated(
            "an item of the batch was removed while it was being applied; "
            "nothing was stored: send the batch again"
        ) from exc
    return outcomes


def _hand_on_commit(
    sess: Session,
    buffer: HeartbeatQueue,
    records: list[ProgressRecord],
    events: list[dict[str, Any]],
) -> None:
    """Give a batch's heartbeats to ``buffer`` once ``sess`` commits (never if it rolls back)."""
    pending = [True]

    def hand_on(committed: Session) -> None:
        if committed.in_nested_transaction() or not pending:
            return  # a SAVEPOINT released, or already handed on or dropped
        pending.clear()
        buffer.add_many(records, events)

    def drop(_rolled_back: Session, previous: SessionTransaction) -> None:
        if not previous.nested:
            pending.clear()

    sa_event.listen(sess, "after_commit", hand_on)
    sa_event.listen(sess, "after_soft_rollback", drop)


@contextlib.contextmanager
def naming_report(n: int) -> Iterator[None]:
    """Name report ``n`` of a batch in a problem raised meanwhile (``report``, and its detail)."""
    try:
        yield
    except Problem as exc:
        if "report" not in exc.extra:
            exc.detail = f"reports[{n}]: {exc.detail}"
            exc.extra["report"] = n
        raise


def _frozen(row: ProgressLike, user: User, item: Item) -> ProgressLike:
    if isinstance(row, ProgressRecord):
        return row
    return _record_of(user, item, row, json_copy(row.data))


def _record_of(user: User, item: Item, row: Any, data: Any = None) -> ProgressRecord:
    """``user``'s progress on ``item`` as a record, from a row with its columns."""
    return ProgressRecord(
        user_id=user.id,
        item_id=item.id,
        course_id=item.course_id,
        status=row.status,
        score=row.score,
        data=row.data if data is None else data,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
    )


def _check_reportable(sess: Session, user: User, course: Course) -> None:
    # what _report_now checks under its lock, from the cached standing
    _refuse_unless_open(rbac.access(sess, user, course).enrolment_status, course)


def _refuse_unless_open(enrolment_status: str | None, course: Course) -> None:
    """Refuse a report unless the learner's enrolment is active and the course published."""
    if enrolment_status != "active":
        raise NotEnrolled("only enrolled learners report progress")
    if course.status == "archived":
        raise CourseReadOnly("this course is archived: progress can no longer change")
    if course.status != "published":
        raise NotEnrolled("this course is not open")


class InvalidResult(ValueError):
    """A plugin passed :func:`record_result` a state that cannot be stored."""


def record_result(
    sess: Session, user: User, item: Item, course: Course, state: ProgressState
) -> ProgressOutcome:
    """Store a result computed on the server, such as a graded quiz attempt.

    Unlike :func:`report_progress`, the state is not a learner's report and
    does not go through ``ContentType.apply_progress``: the calling plugin
    computed it (scores included).  Completion still comes from the item's
    ``ContentType.is_complete``, and the course completion rule runs exactly
    as for reports; nothing is buffered.  Flushes but does not commit; after
    committing, pass the outcome to :func:`announce`.

    :param state: the item's new state (``status``, ``score``, ``data``).
    :raise InvalidResult: the status is unknown, ``data`` is not a dict, or
        the score is not a finite number between 0 and 1.
    :raise NotEnrolled: ``user`` holds no active enrolment in the course.
    :raise CourseReadOnly: the course is archived.
    :raise ContentTypeUnavailable: the item's content type is not installed.
    :raise ContentTypeFailed: the content type's ``is_complete`` crashed.

    .. versionadded:: 0.1
    """
    if state.status not in PROGRESS_STATUSES:
        raise InvalidResult(f"unknown progress status {state.status!r}")
    if not isinstance(state.data, dict):
        raise InvalidResult("data must be a dict")
    if state.score is not None and (
        not isinstance(state.score, int | float)
        or isinstance(state.score, bool)
        or not math.isfinite(state.score)
        or not 0 <= state.score <= 1
    ):
        raise InvalidResult(f"score must be a number between 0 and 1, got {state.score!r}")
    return _report_now(sess, user, item, course, {}, None, None, server_state=state)


def _judge(item: Item, previous: ProgressState, new: ProgressState) -> _Applied:
    ctype = content_type_for(item.type)
    try:
        complete = bool(ctype.is_complete(new))
    except Exception as exc:
        raise content_type_failed(ctype, "is_complete", exc) from exc
    return _Applied(previous, new, complete)


@dataclass(frozen=True)
class _Applied:
    previous: ProgressState
    new: ProgressState
    complete: bool


def _apply(
    item: Item, course: Course, previous: ProgressState, report: Mapping[str, Any]
) -> _Applied:
    ctype = content_type_for(item.type)
    view = item_view(item, course)
    try:
        new = ctype.apply_progress(view, previous, dict(report))
        complete = bool(ctype.is_complete(new))
    except ProgressReportInvalid as exc:
        raise InvalidProgressReport(str(exc) or "the report was refused") from exc
    except Exception as exc:
        raise content_type_failed(ctype, "apply_progress", exc) from exc
    if new.status not in PROGRESS_STATUSES or not isinstance(new.data, dict):
        raise content_type_failed(
            ctype, "apply_progress", TypeError(f"returned an invalid state {new!r}")
        )
    return _Applied(previous, new, complete)


def _may_report(sess: Session, user: User, course: Course) -> bool:
    # The request's permission check already loaded the enrolment status; a
    # report that fails this goes the locked way, which raises the problem.
    standing = rbac.access(sess, user, course)
    return standing.enrolment_status == "active" and course.status == "published"


def _heartbeat(
    sess: Session,
    user: User,
    item: Item,
    course: Course,
    new: ProgressState,
    buffer: HeartbeatSink,
) -> ProgressOutcome:
    now = utcnow()
    record = ProgressRecord(
        user_id=user.id,
        item_id=item.id,
        course_id=item.course_id,
        status=new.status,
        score=new.score,
        data=dict(new.data),
        updated_at=now,
    )
    event, row = _progressed_event(user, item, course, new, now)
    if buffer.write_through:
        write_progress(sess.connection(), [record], [row])
        readcache.touch(sess, [readcache.progress_key(user.id)])
    else:
        buffer.add(record, row)
    log.debug("event verb=progressed object=%s user=%s", event.object, user.public_id)
    plugin_host().call("track_event", event=event)
    return ProgressOutcome(user, course, record, False, False)


def _progressed_event(
    user: User, item: Item, course: Course, new: ProgressState, now: datetime
) -> tuple[LearningEvent, dict[str, Any]]:
    """A heartbeat's event and its ``events`` row, as :func:`record_event` makes them."""
    result: dict[str, Any] = {"completion": False}
    if new.score is not None:
        result["score"] = {"raw": new.score}
    base = base_url()
    event = LearningEvent(
        id=new_time_ordered_id(),
        actor=Actor(id=user.public_id, name=user.display_name, home_page=base + "/"),
        verb=VERBS["progressed"],
        object=item_iri(item, base),
        result=MappingProxyType(result),
        context=MappingProxyType({"status": new.status, "content-type": item.type}),
        timestamp=now,
        course_id=course.public_id,
        course_iri=course_iri(course, base),
    )
    row = {
        "public_id": event.id,
        "timestamp": now,
        "user_id": user.id,
        "course_id": course.id,
        "verb": event.verb,
        "object_id": event.object,
        "statement": event,  # its statement is made where the row is written
    }
    return event, row


def _report_now(
    sess: Session,
    user: User,
    item: Item,
    course: Course,
    report: Mapping[str, Any],
    buffer: HeartbeatSink | None,
    attempt: _Applied | None,
    *,
    server_state: ProgressState | None = None,
) -> ProgressOutcome:
    sess.info.get(_STATE_MEMO, {}).pop((user.id, item.id), None)  # read under the lock instead
    enrolment = _lock_enrolment(sess, user, course)
    _refuse_unless_open(enrolment.status if enrolment is not None else None, course)
    assert enrolment is not None  # refused above otherwise
    waiting = buffer.get(user.id, item.id) if buffer is not None else None
    existing = _find(sess, user, item)
    current = newest(existing, waiting)
    previous = state_of(current)
    if server_state is not None:
        attempt = _judge(item, previous, server_state)
    elif attempt is None or attempt.previous != previous:
        # nothing applied yet, or another report changed the state meanwhile
        attempt = _apply(item, course, previous, report)
    new, complete = attempt.new, attempt.complete
    row = existing if existing is not None else _progress_row(sess, user, item)
    was_complete = current is not None and current.completed_at is not None
    now = utcnow()
    row.status = new.status
    row.score = new.score
    row.data = dict(new.data)
    row.updated_at = now
    if complete and not was_complete:
        row.completed_at = now
    elif not complete:
        row.completed_at = None
    sess.flush()
    item_completed = complete and not was_complete
    result: dict[str, Any] = {"completion": complete}
    if new.score is not None:
        result["score"] = {"raw": new.score}
    record_event(
        sess,
        user=user,
        verb="completed" if item_completed else "progressed",
        object_id=item_iri(item),
        course=course,
        result=result,
        context={"status": new.status, "content-type": item.type},
    )
    course_completed = complete and _complete_course(sess, user, course, enrolment)
    return ProgressOutcome(user, course, row, item_completed, course_completed)


def _required_count(course_id: Any) -> Any:
    """Scalar subquery: the number of required items of ``course_id``."""
    return (
        select(func.count(Item.id))
        .where(Item.course_id == course_id, Item.required.is_(True))
        .scalar_subquery()
    )


def _completed_count(user_id: Any, course_id: Any) -> Any:
    """Scalar subquery: required items of ``course_id`` that ``user_id`` completed.

    ``user_id`` may be a column of the enclosing query (correlated).
    """
    return (
        select(func.count(Progress.id))
        .join(Item, Item.id == Progress.item_id)
        .where(
            Progress.user_id == user_id,
            Progress.course_id == course_id,
            Item.required.is_(True),
            Progress.completed_at.is_not(None),
        )
        .scalar_subquery()
    )


def counts(sess: Session, user: User, course: Course) -> Counts:
    """How many required items ``course`` has and how many ``user`` completed."""
    row = sess.execute(
        select(_required_count(course.id), _completed_count(user.id, course.id))
    ).one()
    return Counts(required=int(row[0] or 0), completed=int(row[1] or 0))


def _complete_course(sess: Session, user: User, course: Course, enrolment: Enrolment) -> bool:
    if enrolment.completed_at is not None:
        return False
    tally = counts(sess, user, course)
    if tally.required == 0 or tally.completed < tally.required:
        return False
    now = utcnow()
    # The conditional update is the "exactly once": only one report can flip it.
    result = sess.execute(
        update(Enrolment)
        .where(Enrolment.id == enrolment.id, Enrolment.completed_at.is_(None))
        .values(completed_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        return False
    readcache.touch(sess, [readcache.standing_key(user.id, course.id), readcache.user_key(user.id)])
    sess.expire(enrolment, ["completed_at"])
    record_event(
        sess,
        user=user,
        verb="completed",
        object_id=course_iri(course),
        course=course,
        result={"completion": True},
    )
    log.info("course_completed course=%s user=%s", course.public_id, user.public_id)
    return True


def complete_where_due(sess: Session, course: Course) -> list[User]:
    """Complete the course for every active learner who now meets the rule.

    After the rule changed under learners (a required item deleted or made
    optional), some may have completed every required item that is left:
    each of them is completed here as a report would, exactly once (the same
    conditional update).  Flushes but does not commit.  Learners who already
    completed the course keep their completion when items are added later.

    :return: the learners who completed the course now.
    """
    required = _required_count(course.id)
    due = sess.execute(
        select(Enrolment, User)
        .join(User, User.id == Enrolment.user_id)
        .where(
            Enrolment.course_id == course.id,
            Enrolment.status == "active",
            Enrolment.completed_at.is_(None),
            required > 0,
            _completed_count(Enrolment.user_id, course.id) >= required,
        )
        .order_by(Enrolment.id)
    ).all()
    return [user for enrolment, user in due if _complete_course(sess, user, course, enrolment)]


def announce(outcome: ProgressOutcome) -> None:
    """Call ``course_completed`` for an outcome that completed the course.

    Call it after the transaction holding the outcome has committed: the hook
    promises listeners that the completion is stored.
    """
    if outcome.course_completed:
        course = outcome.course
        if sa_inspect(course).transient:
            # a read-cache snapshot (core.readcache): listeners get the
            # session's own object, which they may relate their rows to
            course = db.session().get_one(Course, course.id)
        plugin_host().call("course_completed", user=outcome.user, course=course)


def item_progress(sess: Session, user: User, item: Item) -> ProgressLike | None:
    """``user``'s progress on ``item``, if any (with this process's buffered heartbeats)."""
    buffer = current_buffer()
    found: ProgressLike | None = newest(
        _find(sess, user, item), buffer.get(user.id, item.id) if buffer is not None else None
    )
    return found


def ordered_items(sess: Session, course: Course) -> list[Item]:
    """Every item of a course in reading order (module, then item position)."""
    return list(
        sess.scalars(
            select(Item)
            .join(Module, Module.id == Item.module_id)
            .where(Item.course_id == course.id)
            .order_by(Module.position, Item.position, Item.id)
        )
    )


def course_progress(
    sess: Session, user: User, course: Course
) -> tuple[list[tuple[Item, ProgressLike | None]], Counts]:
    """Every item of a course with ``user``'s progress on it, and the counts.

    Heartbeats buffered in this process are included.
    """
    items = ordered_items(sess, course)
    rows: dict[int, ProgressLike] = {
        p.item_id: p
        for p in sess.scalars(
            select(Progress).where(Progress.user_id == user.id, Progress.course_id == course.id)
        )
    }
    buffer = current_buffer()
    if buffer is not None:
        for record in buffer.for_course(course.id, user.id):
            rows[record.item_id] = newest(rows.get(record.item_id), record)
    tally = Counts(
        required=sum(1 for i in items if i.required),
        completed=sum(
            1 for i in items if i.required and i.id in rows and rows[i.id].completed_at is not None
        ),
    )
    return [(i, rows.get(i.id)) for i in items], tally


@dataclass(frozen=True)
class LearnerRow:
    """One learner's line in the staff progress table."""

    user: User
    enrolment: Enrolment
    progress: dict[int, ProgressLike]
    counts: Counts


def progress_table(
    sess: Session,
    course: Course,
    *,
    statuses: tuple[str, ...] = ("active",),
    after: int | None = None,
    limit: int = 20,
) -> tuple[list[Item], list[LearnerRow], int | None]:
    """A page of learners by items for the course's staff (three queries).

    :return: the items (columns), one row per learner on this page, and the
        cursor key of the next page.
    """
    items = ordered_items(sess, course)
    required = {i.id for i in items if i.required}
    stmt = (
        select(Enrolment, User)
        .join(User, User.id == Enrolment.user_id)
        .where(Enrolment.course_id == course.id, Enrolment.status.in_(statuses))
    )
    if after is not None:
        stmt = stmt.where(Enrolment.id > after)
    found = [(r[0], r[1]) for r in sess.execute(stmt.order_by(Enrolment.id).limit(limit + 1))]
    next_key = found[limit - 1][0].id if len(found) > limit else None
    found = found[:limit]
    by_user: dict[int, dict[int, ProgressLike]] = {u.id: {} for _, u in found}
    if by_user:
        for p in sess.scalars(
            select(Progress).where(
                Progress.course_id == course.id, Progress.user_id.in_(list(by_user))
            )
        ):
            by_user[p.user_id][p.item_id] = p
        buffer = current_buffer()
        if buffer is not None:
            for record in buffer.for_course(course.id):
                cells = by_user.get(record.user_id)
                if cells is not None:
                    cells[record.item_id] = newest(cells.get(record.item_id), record)
    rows = []
    for enrolment, user in found:
        cells = by_user[user.id]
        done = sum(1 for iid in required if iid in cells and cells[iid].completed_at is not None)
        rows.append(LearnerRow(user, enrolment, cells, Counts(len(required), done)))
    return items, rows, next_key


@dataclass(frozen=True)
class CourseListing:
    """A course as lists show it (its summary columns, not a loaded course)."""

    id: int
    public_id: str
    title: str
    summary: str
    language: str
    subject: str
    level: str
    status: str
    visibility: str
    enrolment_mode: str
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None


_LISTING_COLUMNS = tuple(getattr(Course, name) for name in CourseListing.__dataclass_fields__)


@dataclass(frozen=True)
class MyCourse:
    """One line of "my courses": a course and the caller's place in it."""

    course: CourseListing
    role: str | None
    enrolment_id: str | None
    enrolment_status: str | None
    completed_at: datetime | None
    counts: Counts


def _my_courses_statement(*, paged: bool) -> Select[Any]:
    required = (
        select(func.count(Item.id))
        .where(Item.course_id == Course.id, Item.required.is_(True))
        .correlate(Course)
        .scalar_subquery()
    )
    done = (
        select(func.count(Progress.id))
        .join(Item, Item.id == Progress.item_id)
        .where(
            Progress.course_id == Course.id,
            Progress.user_id == _USER_ID,
            Item.required.is_(True),
            Progress.completed_at.is_not(None),
        )
        .correlate(Course)
        .scalar_subquery()
    )
    # Only the user's own courses are candidates (index lookups by user),
    # however many courses the instance has.
    mine = union(
        select(CourseRole.course_id).where(CourseRole.user_id == _USER_ID),
        select(Enrolment.course_id).where(Enrolment.user_id == _USER_ID),
    )
    conditions: list[ColumnElement[bool]] = [
        Course.id.in_(mine),
        or_(
            CourseRole.id.is_not(None),
            and_(Enrolment.id.is_not(None), Course.status != "draft"),
        ),
    ]
    if paged:
        conditions.append(Course.id < bindparam("before"))
    return (
        select(
            *_LISTING_COLUMNS,
            CourseRole.role,
            Enrolment.public_id,
            Enrolment.status,
            Enrolment.completed_at,
            required,
            done,
        )
        .select_from(Course)
        .outerjoin(
            CourseRole, and_(CourseRole.course_id == Course.id, CourseRole.user_id == _USER_ID)
        )
        .outerjoin(Enrolment, and_(Enrolment.course_id == Course.id, Enrolment.user_id == _USER_ID))
        .where(*conditions)
        .order_by(Course.id.desc())
        .limit(bindparam("limit"))
    )


_MY_COURSES = _my_courses_statement(paged=False)
_MY_COURSES_BEFORE = _my_courses_statement(paged=True)


def my_courses(
    sess: Session, user: User, *, before: int | None = None, limit: int = 20
) -> tuple[tuple[MyCourse, ...], int | None]:
    """The courses where ``user`` is staff or has an enrolment, newest first.

    One query for the whole page: roles, enrolments and completion counts are
    joined and counted in SQL, and only the listed columns are read.  Courses
    back in draft are left out for learners (they cannot open them).

    With the read cache on, a page served from it is the very tuple kept
    there, the same object until the page changes: callers may key what they
    derive from it on its identity.
    """
    cache = readcache.current()
    page = (before, limit)
    if cache is not None:
        found: tuple[tuple[MyCourse, ...], int | None] | None = cache.my_courses(user.id, page)
        if found is not None:
            return found
        stamp = cache.my_courses_stamp(user.id, page)
    params: dict[str, Any] = {"user_id": user.id, "limit": limit + 1}
    stmt = _MY_COURSES
    if before is not None:
        params["before"] = before
        stmt = _MY_COURSES_BEFORE
    rows = core_execute(sess, stmt, params).all()
    n = len(_LISTING_COLUMNS)
    next_key = rows[limit - 1][0] if len(rows) > limit else None
    out = tuple(
        MyCourse(
            course=CourseListing(*r[:n]),
            role=r[n] or ("learner" if r[n + 2] == "active" else None),
            enrolment_id=r[n + 1],
            enrolment_status=r[n + 2],
            completed_at=r[n + 3],
            counts=Counts(required=int(r[n + 4] or 0), completed=int(r[n + 5] or 0)),
        )
        for r in rows[:limit]
    )
    if cache is not None:
        listed = [r.course.id for r in out]
        cache.keep_my_courses(sess, user.id, page, (out, next_key), listed, stamp)
    return out, next_key
