"""The caller's own account and courses: ``/me`` and ``/me/courses``."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from typing import Literal

from flask.typing import ResponseReturnValue
from pydantic import BaseModel

from core import db
from core import progress
from core.api import bp
from core.api import encode_cursor
from core.api import json_response
from core.api import operation
from core.api import parse_query
from core.api.courses import CourseSummary
from core.api.courses import PageQuery
from core.api.courses import course_summary_fields
from core.api.courses import cursor_key
from core.api.progress import Completion
from core.auth import require_user

TAGS = ("me",)


class CurrentUser(BaseModel):
    """The logged-in user's own account."""

    id: str
    email: str
    display_name: str
    is_admin: bool
    can_create_courses: bool
    created_at: datetime


class MyEnrolment(BaseModel):
    """The caller's enrolment in a course."""

    id: str
    status: Literal["pending", "active", "withdrawn", "rejected"]
    completed_at: datetime | None


class MyCourseOut(BaseModel):
    """A course where the caller is staff or has an enrolment.

    ``progress`` is the caller's completion as a learner (null for staff).
    """

    course: CourseSummary
    role: Literal["instructor", "ta", "learner"] | None
    enrolment: MyEnrolment | None
    progress: Completion | None


class MyCoursePage(BaseModel):
    """A page of the caller's courses, newest first."""

    items: list[MyCourseOut]
    next_cursor: str | None


@bp.get("/me")
@operation("Your account", tags=TAGS, response=CurrentUser)
def me() -> ResponseReturnValue:
    """Show the logged-in user."""
    user = require_user()
    return json_response(
        CurrentUser(
            id=user.public_id,
            email=user.email,
            display_name=user.display_name,
            is_admin=user.is_admin,
            can_create_courses=user.can_create_courses,
            created_at=user.created_at,
        )
    )


def _my_course(row: progress.MyCourse) -> dict[str, Any]:
    # Plain data: the whole page is validated as one MyCoursePage.
    enrolment = None
    counts = None
    if row.enrolment_id is not None and row.enrolment_status is not None:
        enrolment = {
            "id": row.enrolment_id,
            "status": row.enrolment_status,
            "completed_at": row.completed_at,
        }
        counts = {
            "required": row.counts.required,
            "completed": row.counts.completed,
            "percent": row.counts.percent,
        }
    return {
        "course": course_summary_fields(row.course),
        "role": row.role,
        "enrolment": enrolment,
        "progress": counts,
    }


@bp.get("/me/courses")
@operation(
    "Your courses: enrolments and staff roles, with progress",
    tags=TAGS,
    query=PageQuery,
    response=MyCoursePage,
    errors=(422,),
)
def my_courses() -> ResponseReturnValue:
    """List the caller's courses (one query per page)."""
    user = require_user(attach=False)  # read from caches; attached if it queries
    query = parse_query(PageQuery)
    rows, next_key = progress.my_courses(
        db.session(), user, before=cursor_key(query), limit=query.limit
    )
    page = MyCoursePage.model_validate(
        {
            "items": [_my_course(r) for r in rows],
            "next_cursor": encode_cursor(next_key) if next_key else None,
        }
    )
    return json_response(page)
