"""Course export, import and copy (see :mod:`core.course_transfer`).

Who may do what: exporting a course and copying it take ``course.edit`` on
it (its instructors and site administrators: the document is the whole
course, answer keys included, so it goes to those who may change it, not to
teaching assistants); importing and copying take ``course.create``.
"""

from __future__ import annotations

import orjson
from flask import request
from flask.typing import ResponseReturnValue

from core import course_transfer as transfer
from core import db
from core import rbac
from core.api import bp
from core.api import json_response
from core.api import operation
from core.api.courses import CourseDetail
from core.api.courses import course_detail
from core.api.courses import load_course
from core.auth import require_user
from core.errors import BadRequest
from core.errors import UnsupportedMediaType

TAGS = ("course transfer",)


@bp.get("/courses/<course_id>/export")
@operation(
    "Download the course (structure, item settings, plugins' course data) as one JSON file",
    tags=TAGS,
    response=transfer.CourseDocument,
    errors=(404, 409, 500),
)
def export_course(course_id: str) -> ResponseReturnValue:
    """The course as a portable document, an attachment no cache keeps; audited as course.export.

    No learner data: no enrolments, progress or events.  Refused (500, naming
    it) when a content type or plugin fails to export its part.
    """
    user, course = load_course(course_id, "course.edit")
    sess = db.session()
    document = transfer.export_course(sess, course)
    transfer.record_export(sess, user, course, "api")
    sess.commit()
    return transfer.download(course, document)


@bp.post("/courses/import")
@operation(
    "Create a new draft course from a course export (you become its instructor)",
    tags=TAGS,
    body=transfer.CourseDocument,
    response=CourseDetail,
    status=201,
    errors=(413,),
)
def import_course() -> ResponseReturnValue:
    """Import a course document as a new draft, all or nothing.

    An unsupported format or version, an unknown content type, an item config
    its type refuses or a plugin section that fails → 422 naming it, and
    nothing is stored; more than the instance's body limit, or than
    :data:`core.course_transfer.MAX_MODULES` modules or
    :data:`core.course_transfer.MAX_ITEMS` items → 413.
    """
    user = require_user()
    rbac.require(user, "course.create")
    if not request.is_json:
        raise UnsupportedMediaType("send the course export as application/json")
    try:
        raw = orjson.loads(request.get_data(cache=True) or b"null")
    except orjson.JSONDecodeError as exc:
        raise BadRequest("the body is not valid JSON") from exc
    sess = db.session()
    course = transfer.import_course(sess, user, raw, via="api")
    detail = course_detail(user, course)
    sess.commit()
    return json_response(detail, 201)


@bp.post("/courses/<course_id>/copy")
@operation(
    "Copy the course into a new draft course (you become its instructor)",
    tags=TAGS,
    response=CourseDetail,
    status=201,
    errors=(404, 409, 500),
)
def copy_course(course_id: str) -> ResponseReturnValue:
    """Export and import in one step; the copy's title ends in " (copy)".

    Audited as course.copy on the source and course.import on the copy.
    """
    user, course = load_course(course_id, "course.edit")
    rbac.require(user, "course.create")
    sess = db.session()
    new = transfer.copy_course(sess, user, course, via="api")
    detail = course_detail(user, new)
    sess.commit()
    return json_response(detail, 201)
