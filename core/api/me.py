"""The caller's own account, courses and data: ``/me``, ``/me/courses`` and ``/me/export``."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from typing import Literal

from flask import current_app
from flask.typing import ResponseReturnValue
from pydantic import BaseModel
from pydantic import ConfigDict

from core import db
from core import privacy
from core import progress
from core import readcache
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

#: "My courses" pages as sent, by learner and page, with the page they were
#: made from: a page served from the read cache is the same object until it
#: changes (:func:`core.progress.my_courses`), so its JSON is made once, not
#: on every request of a learner's app polling the list.  Per process (apps
#: sharing one cannot mix: a page is only ever its own cache's object).
_rendered_pages: dict[tuple[int, int | None, int], tuple[object, str]] = {}
MAX_RENDERED_PAGES = 10_000


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


class ExportInstance(BaseModel):
    """The instance that made an export."""

    name: str
    base_url: str


class PersonalDataExport(BaseModel):
    """Everything this instance stores about the caller (see :mod:`core.privacy`).

    Ids are public ids; times are ISO 8601 in UTC.  ``plugins`` holds each
    plugin's own section by plugin name; a plugin that failed to export has
    ``{"failed": true, "detail": ...}`` there and is listed in ``plugins_failed``.
    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["trivium.personal-data"]
    format_version: int
    generated_at: datetime
    instance: ExportInstance
    account: dict[str, Any]
    identities: list[dict[str, Any]]
    api_tokens: list[dict[str, Any]]
    invitations: dict[str, list[dict[str, Any]]]
    mail: list[dict[str, Any]]
    courses_created: list[dict[str, Any]]
    course_roles: list[dict[str, Any]]
    enrolments: list[dict[str, Any]]
    progress: list[dict[str, Any]]
    learning_events: list[dict[str, Any]]
    audit_log: list[dict[str, Any]]
    plugins: dict[str, dict[str, Any]]
    plugins_failed: list[str]


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
    before = cursor_key(query)
    rows, next_key = progress.my_courses(db.session(), user, before=before, limit=query.limit)
    key = (user.id, before, query.limit)
    kept = _rendered_pages.get(key)
    if kept is not None and kept[0] is rows:
        body = kept[1]  # the read cache still holds this very page
    else:
        page = MyCoursePage.model_validate(
            {
                "items": [_my_course(r) for r in rows],
                "next_cursor": encode_cursor(next_key) if next_key else None,
            }
        )
        body = page.model_dump_json()
        if readcache.current() is not None:  # else every page is a new object
            if len(_rendered_pages) >= MAX_RENDERED_PAGES:
                _rendered_pages.clear()
            _rendered_pages[key] = (rows, body)
    return current_app.response_class(body, mimetype="application/json")


@bp.get("/me/export")
@operation(
    "Download everything this instance stores about you, as one JSON file",
    tags=TAGS,
    response=PersonalDataExport,
    errors=(429,),
)
def export_my_data() -> ResponseReturnValue:
    """Your personal data (GDPR access and portability), as an attachment no cache keeps.

    At most :data:`core.privacy.EXPORTS_PER_WINDOW` exports per account within
    ``[accounts] login_window_seconds``; each is audited as ``account.export``.
    """
    user = require_user()
    privacy.check_rate(user)
    sess = db.session()
    document = privacy.export_user(sess, user)
    privacy.record_export(sess, user, user, "api")
    sess.commit()
    return privacy.download(document)
