"""Enrolment API: joining and leaving a course, and staff managing its learners.

``/courses/<id>/enrolment`` is the caller's own enrolment; ``/courses/<id>/enrolments``
(with ``/bulk`` for a class list of e-mail addresses) and ``/enrolments/<id>`` are the
staff side.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from flask import jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel
from pydantic import Field

from core import courses as svc
from core import db
from core import rbac
from core.api import bp
from core.api import json_response
from core.api import operation
from core.api import page
from core.api import parse_body
from core.api import parse_query
from core.api.courses import Body
from core.api.courses import PageQuery
from core.api.courses import UserBrief
from core.api.courses import cursor_key
from core.api.courses import load_course
from core.api.courses import optional_body
from core.api.courses import user_brief
from core.auth import require_user
from core.errors import NotFound
from core.models import Course
from core.models import Enrolment
from core.models import User

TAGS = ("enrolments",)

EnrolmentStatus = Literal["pending", "active", "withdrawn", "rejected"]


class EnrolRequest(Body):
    """Join a course; ``invite_code`` is needed for invite-only courses."""

    invite_code: str | None = Field(default=None, max_length=200)


class AddLearner(Body):
    """Staff enrol a user directly."""

    user_id: str = Field(min_length=1, max_length=64)


class BulkEnrol(Body):
    """Staff enrol a class list by e-mail address.

    Addresses are trimmed and compared in lower case; repeats count once.
    """

    emails: list[str] = Field(
        description=f"at most {svc.MAX_BULK_ADDRESSES:,} e-mail addresses, one per entry"
    )
    dry_run: bool = Field(default=False, description="only say what would happen; store nothing")


class BulkEnrolled(BaseModel):
    """An address whose account was (or would be) enrolled."""

    email: str
    user_id: str
    enrolment_id: str | None = Field(description="the active enrolment; null in a dry run")


class BulkEnrolmentOut(BaseModel):
    """What a bulk enrolment did with each address, in the order sent."""

    dry_run: bool
    enrolled: list[BulkEnrolled] = Field(
        description="new learners, and those whose enrolment was withdrawn, rejected or pending"
    )
    already: list[str] = Field(description="already active learners")
    staff: list[str] = Field(description="the course's staff, who cannot be its learners")
    unknown: list[str] = Field(description="no active account has the address")


class EnrolmentQuery(PageQuery):
    """Filter the course's enrolments by status."""

    status: EnrolmentStatus | None = None


class EnrolmentOut(BaseModel):
    """One learner's enrolment in one course."""

    id: str
    course_id: str
    user: UserBrief
    status: EnrolmentStatus
    created_at: datetime
    completed_at: datetime | None


class EnrolmentPage(BaseModel):
    """A page of enrolments."""

    items: list[EnrolmentOut]
    next_cursor: str | None


def enrolment_out(enrolment: Enrolment, course: Course, user: User) -> EnrolmentOut:
    """Serialise an enrolment."""
    return EnrolmentOut.model_validate(
        {
            "id": enrolment.public_id,
            "course_id": course.public_id,
            "user": user_brief(user),
            "status": enrolment.status,
            "created_at": enrolment.created_at,
            "completed_at": enrolment.completed_at,
        }
    )


class NotEnrolledHere(NotFound):
    """The caller has no enrolment in this course."""

    type_slug = "not-enrolled-here"


# ---------------------------------------------------------------- the caller's own


@bp.get("/courses/<course_id>/enrolment")
@operation("Your enrolment in a course", tags=TAGS, response=EnrolmentOut, errors=(404,))
def my_enrolment(course_id: str) -> ResponseReturnValue:
    """Show the caller's enrolment (404 when there is none)."""
    user, course = load_course(course_id)
    enrolment = svc.find_enrolment(db.session(), user, course)
    if enrolment is None:
        raise NotEnrolledHere("you are not enrolled in this course")
    return json_response(enrolment_out(enrolment, course, user))


@bp.post("/courses/<course_id>/enrolment")
@operation(
    "Enrol yourself (active, or pending where staff approve)",
    tags=TAGS,
    body=EnrolRequest,
    response=EnrolmentOut,
    status=201,
    errors=(404, 409),
)
def enrol(course_id: str) -> ResponseReturnValue:
    """Join a course by its enrolment mode; an empty body is allowed."""
    user, course = load_course(course_id, "course.enrol")
    data = optional_body(EnrolRequest)
    sess = db.session()
    enrolment = svc.enrol_self(sess, user, course, data.invite_code)
    out = enrolment_out(enrolment, course, user)
    sess.commit()
    return json_response(out, 201)


@bp.delete("/courses/<course_id>/enrolment")
@operation("Leave a course (progress is kept)", tags=TAGS, status=204, errors=(404, 409))
def leave(course_id: str) -> ResponseReturnValue:
    """Withdraw the caller's active or pending enrolment."""
    user, course = load_course(course_id)
    sess = db.session()
    enrolment = svc.find_enrolment(sess, user, course)
    if enrolment is None:
        raise NotEnrolledHere("you are not enrolled in this course")
    svc.withdraw(sess, user, course, enrolment)
    sess.commit()
    return "", 204


# ---------------------------------------------------------------- staff


def _load_enrolment(enrolment_id: str, action: str) -> tuple[User, Enrolment, Course, User]:
    actor = require_user()
    enrolment, course, learner = svc.get_enrolment(db.session(), enrolment_id)
    rbac.require(actor, action, course, what="enrolment")
    return actor, enrolment, course, learner


@bp.get("/courses/<course_id>/enrolments")
@operation(
    "A course's enrolments (staff)",
    tags=TAGS,
    query=EnrolmentQuery,
    response=EnrolmentPage,
    errors=(404, 422),
)
def list_enrolments(course_id: str) -> ResponseReturnValue:
    """List enrolments, oldest first, optionally by status."""
    _, course = load_course(course_id, "enrolment.view")
    query = parse_query(EnrolmentQuery)
    rows, next_key = svc.list_enrolments(
        db.session(), course, status=query.status, after=cursor_key(query), limit=query.limit
    )
    items = [enrolment_out(e, course, u).model_dump(mode="json") for e, u in rows]
    return jsonify(page(items, next_key))


@bp.post("/courses/<course_id>/enrolments")
@operation(
    "Enrol a user (staff; any enrolment mode)",
    tags=TAGS,
    body=AddLearner,
    response=EnrolmentOut,
    status=201,
    errors=(404, 409),
)
def add_learner(course_id: str) -> ResponseReturnValue:
    """Enrol a user by public id."""
    actor, course = load_course(course_id, "enrolment.manage")
    data = parse_body(AddLearner)
    sess = db.session()
    learner = svc.find_user(sess, data.user_id)
    if learner is None:
        raise svc.UnknownUser(f"no user {data.user_id!r}")
    enrolment = svc.add_learner(sess, actor, course, learner)
    out = enrolment_out(enrolment, course, learner)
    sess.commit()
    return json_response(out, 201)


@bp.post("/courses/<course_id>/enrolments/bulk")
@operation(
    "Enrol a class list by e-mail address (instructors; any enrolment mode)",
    tags=TAGS,
    body=BulkEnrol,
    response=BulkEnrolmentOut,
    errors=(404, 409),
)
def enrol_class_list(course_id: str) -> ResponseReturnValue:
    """Enrol every address with an active account; say what became of each.

    A malformed entry (by position and value) or more than 1,000 entries
    refuse the whole list with a 422; unknown addresses are only reported.
    """
    actor, course = load_course(course_id, "enrolment.manage")
    data = parse_body(BulkEnrol)
    sess = db.session()
    result = svc.enrol_many(sess, actor, course, data.emails, dry_run=data.dry_run)
    out = BulkEnrolmentOut(
        dry_run=result.dry_run,
        enrolled=[
            BulkEnrolled(
                email=row.address,
                user_id=row.user.public_id,
                enrolment_id=row.enrolment.public_id if row.enrolment is not None else None,
            )
            for row in result.enrolled
        ],
        already=result.already,
        staff=result.staff,
        unknown=result.unknown,
    )
    if not result.dry_run:
        sess.commit()
    return json_response(out)


def _decide(enrolment_id: str, approve: bool) -> ResponseReturnValue:
    actor, enrolment, course, learner = _load_enrolment(enrolment_id, "enrolment.manage")
    sess = db.session()
    svc.decide_enrolment(sess, actor, course, enrolment, learner, approve)
    out = enrolment_out(enrolment, course, learner)
    sess.commit()
    return json_response(out)


@bp.post("/enrolments/<enrolment_id>/approve")
@operation("Approve a pending enrolment", tags=TAGS, response=EnrolmentOut, errors=(404, 409))
def approve(enrolment_id: str) -> ResponseReturnValue:
    """Make a pending enrolment active."""
    return _decide(enrolment_id, approve=True)


@bp.post("/enrolments/<enrolment_id>/reject")
@operation("Reject a pending enrolment", tags=TAGS, response=EnrolmentOut, errors=(404, 409))
def reject(enrolment_id: str) -> ResponseReturnValue:
    """Reject a pending enrolment."""
    return _decide(enrolment_id, approve=False)


@bp.delete("/enrolments/<enrolment_id>")
@operation("Remove a learner from a course (staff)", tags=TAGS, status=204, errors=(404, 409))
def remove_learner(enrolment_id: str) -> ResponseReturnValue:
    """Withdraw a learner's enrolment (their progress is kept)."""
    actor, enrolment, course, _ = _load_enrolment(enrolment_id, "enrolment.manage")
    sess = db.session()
    svc.withdraw(sess, actor, course, enrolment)
    sess.commit()
    return "", 204
