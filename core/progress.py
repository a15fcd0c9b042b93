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

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy import and_
from sqlalchemy import func
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from core.content import ItemView
from core.content import ProgressReportInvalid
from core.content import ProgressState
from core.courses import content_type_failed
from core.courses import content_type_for
from core.courses import plugin_host
from core.db import utcnow
from core.errors import Conflict
from core.errors import Forbidden
from core.errors import ValidationFailed
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

log = logging.getLogger(__name__)


class NotEnrolled(Forbidden):
    """Only learners with an active enrolment report progress."""

    type_slug = "not-enrolled"


class CourseReadOnly(Conflict):
    """The course is archived: its content can be read, progress no longer changes."""

    type_slug = "course-read-only"


class InvalidProgressReport(ValidationFailed):
    """The item's content type refused the report."""

    type_slug = "invalid-progress-report"


@dataclass(frozen=True)
class ProgressOutcome:
    """What one progress report changed."""

    user: User
    course: Course
    progress: Progress
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


def state_of(row: Progress | None) -> ProgressState:
    """The content-type view of a stored progress row."""
    if row is None:
        return ProgressState()
    status: Any = row.status
    return ProgressState(status=status, score=row.score, data=dict(row.data or {}))


def item_view(item: Item, course: Course) -> ItemView:
    """What a content type sees of an item."""
    return ItemView(
        id=item.public_id, course_id=course.public_id, title=item.title, config=dict(item.config)
    )


def _lock_enrolment(sess: Session, user: User, course: Course) -> Enrolment | None:
    # Locking the enrolment serialises one learner's reports in one course, so
    # two reports completing the last two items cannot both miss the other.
    return sess.scalar(
        select(Enrolment)
        .where(Enrolment.course_id == course.id, Enrolment.user_id == user.id)
        .with_for_update()
    )


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
    return sess.scalar(
        select(Progress).where(Progress.user_id == user.id, Progress.item_id == item.id)
    )


def report_progress(
    sess: Session, user: User, item: Item, course: Course, report: Mapping[str, Any]
) -> ProgressOutcome:
    """Apply a learner's report on ``item`` and the course completion rule.

    Flushes but does not commit; after committing, pass the outcome to
    :func:`announce`.

    :param report: the learner's fields (``status``, ``data``) as sent.
    :raise NotEnrolled: ``user`` holds no active enrolment in the course.
    :raise CourseReadOnly: the course is archived.
    :raise ContentTypeUnavailable: the item's content type is not installed.
    :raise InvalidProgressReport: the content type refused the report.
    :raise ContentTypeFailed: the content type crashed.
    """
    enrolment = _lock_enrolment(sess, user, course)
    if enrolment is None or enrolment.status != "active":
        raise NotEnrolled("only enrolled learners report progress")
    if course.status == "archived":
        raise CourseReadOnly("this course is archived: progress can no longer change")
    if course.status != "published":
        raise NotEnrolled("this course is not open")
    ctype = content_type_for(item.type)
    view = item_view(item, course)
    existing = _find(sess, user, item)
    previous = state_of(existing)
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
    row = existing if existing is not None else _progress_row(sess, user, item)
    was_complete = row.completed_at is not None
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


def counts(sess: Session, user: User, course: Course) -> Counts:
    """How many required items ``course`` has and how many ``user`` completed."""
    required = (
        select(func.count(Item.id))
        .where(Item.course_id == course.id, Item.required.is_(True))
        .scalar_subquery()
    )
    done = (
        select(func.count(Progress.id))
        .join(Item, Item.id == Progress.item_id)
        .where(
            Progress.user_id == user.id,
            Progress.course_id == course.id,
            Item.required.is_(True),
            Progress.completed_at.is_not(None),
        )
        .scalar_subquery()
    )
    row = sess.execute(select(required, done)).one()
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


def announce(outcome: ProgressOutcome) -> None:
    """Call ``course_completed`` for an outcome that completed the course.

    Call it after the transaction holding the outcome has committed: the hook
    promises listeners that the completion is stored.
    """
    if outcome.course_completed:
        plugin_host().call("course_completed", user=outcome.user, course=outcome.course)


def item_progress(sess: Session, user: User, item: Item) -> Progress | None:
    """``user``'s stored progress on ``item``, if any."""
    return _find(sess, user, item)


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
) -> tuple[list[tuple[Item, Progress | None]], Counts]:
    """Every item of a course with ``user``'s progress on it, and the counts."""
    items = ordered_items(sess, course)
    rows = {
        p.item_id: p
        for p in sess.scalars(
            select(Progress).where(Progress.user_id == user.id, Progress.course_id == course.id)
        )
    }
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
    progress: dict[int, Progress]
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
    by_user: dict[int, dict[int, Progress]] = {u.id: {} for _, u in found}
    if by_user:
        for p in sess.scalars(
            select(Progress).where(
                Progress.course_id == course.id, Progress.user_id.in_(list(by_user))
            )
        ):
            by_user[p.user_id][p.item_id] = p
    rows = []
    for enrolment, user in found:
        cells = by_user[user.id]
        done = sum(1 for iid in required if iid in cells and cells[iid].completed_at is not None)
        rows.append(LearnerRow(user, enrolment, cells, Counts(len(required), done)))
    return items, rows, next_key


@dataclass(frozen=True)
class MyCourse:
    """One line of "my courses": a course and the caller's place in it."""

    course: Course
    role: str | None
    enrolment_id: str | None
    enrolment_status: str | None
    completed_at: datetime | None
    counts: Counts


def my_courses(
    sess: Session, user: User, *, before: int | None = None, limit: int = 20
) -> tuple[list[MyCourse], int | None]:
    """The courses where ``user`` is staff or has an enrolment, newest first.

    One query for the whole page: roles, enrolments and completion counts are
    joined and counted in SQL.  Courses back in draft are left out for
    learners (they cannot open them).
    """
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
            Progress.user_id == user.id,
            Item.required.is_(True),
            Progress.completed_at.is_not(None),
        )
        .correlate(Course)
        .scalar_subquery()
    )
    conditions: list[ColumnElement[bool]] = [
        or_(
            CourseRole.id.is_not(None),
            and_(Enrolment.id.is_not(None), Course.status != "draft"),
        )
    ]
    if before is not None:
        conditions.append(Course.id < before)
    stmt = (
        select(
            Course,
            CourseRole.role,
            Enrolment.public_id,
            Enrolment.status,
            Enrolment.completed_at,
            required,
            done,
        )
        .outerjoin(
            CourseRole, and_(CourseRole.course_id == Course.id, CourseRole.user_id == user.id)
        )
        .outerjoin(Enrolment, and_(Enrolment.course_id == Course.id, Enrolment.user_id == user.id))
        .where(*conditions)
        .order_by(Course.id.desc())
        .limit(limit + 1)
    )
    rows = sess.execute(stmt).all()
    next_key = rows[limit - 1][0].id if len(rows) > limit else None
    out = [
        MyCourse(
            course=r[0],
            role=r[1] or ("learner" if r[3] == "active" else None),
            enrolment_id=r[2],
            enrolment_status=r[3],
            completed_at=r[4],
            counts=Counts(required=int(r[5] or 0), completed=int(r[6] or 0)),
        )
        for r in rows[:limit]
    ]
    return out, next_key
