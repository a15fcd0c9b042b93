"""Reports for course staff: the courses they teach, the progress table as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import Course
from core.models import CourseRole
from core.models import Enrolment
from core.models import Item
from core.models import User
from core.progress import LearnerRow
from core.progress import progress_table

#: Learners read per query when exporting the whole table.
BATCH = 200

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class TaughtCourse:
    """A course on someone's teaching list, with what needs their attention."""

    course: Course
    role: str
    learners: int
    pending: int


def taught_courses(sess: Session, user: User) -> list[TaughtCourse]:
    """The courses where ``user`` is an instructor or TA, most recently changed first.

    One query: active learners and pending requests are counted in SQL.
    """
    learners = (
        select(func.count(Enrolment.id))
        .where(Enrolment.course_id == Course.id, Enrolment.status == "active")
        .correlate(Course)
        .scalar_subquery()
    )
    pending = (
        select(func.count(Enrolment.id))
        .where(Enrolment.course_id == Course.id, Enrolment.status == "pending")
        .correlate(Course)
        .scalar_subquery()
    )
    rows = sess.execute(
        select(Course, CourseRole.role, learners, pending)
        .join(CourseRole, CourseRole.course_id == Course.id)
        .where(CourseRole.user_id == user.id)
        .order_by(Course.updated_at.desc(), Course.id.desc())
    )
    return [TaughtCourse(r[0], r[1], int(r[2] or 0), int(r[3] or 0)) for r in rows]


def csv_cell(value: object) -> str:
    """A CSV cell that a spreadsheet will not run as a formula.

    Text starting with ``=``, ``+``, ``-``, ``@`` or a control character is
    prefixed with ``'`` (OWASP "CSV injection"); numbers are written as is.
    """
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _line(cells: list[object]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow([csv_cell(c) for c in cells])
    return out.getvalue()


def _row(items: list[Item], row: LearnerRow) -> list[object]:
    completed = row.enrolment.completed_at
    cells: list[object] = [
        row.user.display_name,
        row.user.public_id,
        row.enrolment.status,
        row.counts.completed,
        row.counts.required,
        round(row.counts.percent, 1),
        completed.isoformat() if completed is not None else "",
    ]
    for item in items:
        progress = row.progress.get(item.id)
        cells.append(progress.status if progress is not None else "not_started")
    return cells


def progress_csv(
    sess: Session, course: Course, statuses: tuple[str, ...] = ("active",)
) -> Iterator[str]:
    """Every learner of ``course`` by every item, as CSV lines (a header first).

    Learners are read :data:`BATCH` at a time, so a large course streams.

    :param statuses: which enrolments to include.
    """
    items, rows, next_key = progress_table(sess, course, statuses=statuses, limit=BATCH)
    header: list[object] = [
        "learner",
        "learner_id",
        "enrolment",
        "completed_required",
        "required",
        "percent",
        "course_completed_at",
    ]
    yield _line(header + [f"{i.title} [{i.public_id}]" for i in items])
    while True:
        for row in rows:
            yield _line(_row(items, row))
        if next_key is None:
            return
        _, rows, next_key = progress_table(
            sess, course, statuses=statuses, after=next_key, limit=BATCH
        )


__all__ = ["BATCH", "TaughtCourse", "csv_cell", "progress_csv", "taught_courses"]
