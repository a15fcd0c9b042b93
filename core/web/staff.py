"""Teaching pages: my courses, the course builder, learners, staff and the progress table.

Views are thin like the JSON API's: they load the course, check the
permission with :func:`core.rbac.require` (someone who may not see a course
gets a 404, staff without the role a 403), call :mod:`core.courses`, commit,
and redirect (post/redirect/get).  A refused form is shown again with the
input kept and the errors next to their fields (status 422); nothing is
stored.  Reorder requests sent by the page's script get JSON back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from flask import Blueprint
from flask import Response
from flask import flash
from flask import jsonify
from flask import redirect
from flask import render_template
from flask import request
from flask import stream_with_context
from flask import url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext
from flask_babel import ngettext
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from werkzeug.wrappers.response import Response as BaseResponse

from core import course_transfer as transfer
from core import courses as svc
from core import db
from core import rbac
from core import reports
from core.api.courses import CourseCreate
from core.api.courses import load_course
from core.api.courses import load_item
from core.api.courses import load_module
from core.auth import require_user
from core.content import ContentType
from core.content import ItemConfigInvalid
from core.editor import FORM_PREFIX
from core.editor import EditorField
from core.editor import field_errors
from core.errors import Problem
from core.errors import ValidationFailed
from core.models import Course
from core.models import Item
from core.models import Module
from core.models import User
from core.operator import find_active_user_by_email
from core.plugins import UnknownContentType
from core.progress import progress_table
from core.web.forms import FormState
from core.web.staff_util import cursor_arg
from core.web.staff_util import cursor_for
from core.web.staff_util import label_helpers
from core.web.staff_util import login_redirect
from core.web.staff_util import validate_form
from core.web.staff_util import wants_json

log = logging.getLogger(__name__)

bp = Blueprint("staff", __name__, url_prefix="/teach")
bp.before_request(login_redirect)
bp.context_processor(label_helpers)

COURSE_FIELDS = (
    "title",
    "summary",
    "description",
    "language",
    "subject",
    "level",
    "visibility",
    "enrolment_mode",
)

#: Learners per page of the progress table and the learner list.
PAGE_SIZE = 50

#: Course-level permissions the course pages show or hide controls by.
COURSE_ACTIONS = (
    "course.edit",
    "course.publish",
    "course.archive",
    "course.manage_staff",
    "enrolment.manage",
    "enrolment.view",
    "progress.view_all",
)


class UnknownDirection(ValidationFailed):
    """A move request named neither ``up`` nor ``down``."""

    type_slug = "unknown-direction"


class ModuleForm(BaseModel):
    """A module's title from a form."""

    model_config = ConfigDict(str_strip_whitespace=True)
    title: str = Field(min_length=1, max_length=300)


class ItemForm(BaseModel):
    """The parts of the item editor that every content type shares."""

    model_config = ConfigDict(str_strip_whitespace=True)
    title: str = Field(min_length=1, max_length=300)
    required: bool = False


class PersonForm(BaseModel):
    """An e-mail address naming an existing account."""

    model_config = ConfigDict(str_strip_whitespace=True)
    email: str = Field(min_length=3, max_length=320)


# ---------------------------------------------------------------- helpers


def _perms(user: User, course: Course) -> dict[str, bool]:
    return {action: rbac.can(user, action, course) for action in COURSE_ACTIONS}


def _choices() -> dict[str, list[tuple[str, str]]]:
    return {
        "visibility": [
            (
                "instance",
                gettext("Instance: listed in the catalog; open to people with an account here"),
            ),
            (
                "federated",
                gettext("Public: syllabus open to everyone, also listed on peer instances"),
            ),
            ("private", gettext("Private: only people you enrol or invite")),
        ],
        "enrolment_mode": [
            ("open", gettext("Open: anyone who can see it may join")),
            ("approval", gettext("Approval: staff approve each request")),
            ("invite", gettext("Invite code: learners need the course's code")),
        ],
    }


def _course_values(course: Course) -> dict[str, str]:
    return {name: str(getattr(course, name) or "") for name in COURSE_FIELDS}


def _course_form() -> tuple[FormState, CourseCreate | None]:
    state = FormState.of(request.form, COURSE_FIELDS)
    data = {name: request.form.get(name, "") for name in COURSE_FIELDS}
    model = validate_form(CourseCreate, data, state)
    return state, model if isinstance(model, CourseCreate) else None


def _redirect_builder(course: Course, anchor: str = "") -> BaseResponse:
    target = url_for("staff.builder", course_id=course.public_id)
    return redirect(f"{target}#{anchor}" if anchor else target, code=303)


def _direction() -> int:
    direction = request.form.get("direction", "")
    if direction not in {"up", "down"}:
        raise UnknownDirection(gettext("Choose to move up or down."))
    return -1 if direction == "up" else 1


def _moved(ids: Iterable[str]) -> Response:
    return jsonify({"ids": list(ids)})


def _stale_order(course: Course, exc: svc.NotAPermutation) -> BaseResponse:
    """A reorder sent from a page that no longer matches the course: nothing moved.

    Script requests get the problem document; a form post goes back to the builder.

    :raise NotAPermutation: for script requests.
    """
    db.session().rollback()
    if wants_json():
        raise exc
    flash(
        gettext("The order changed meanwhile (someone else edited it); nothing was moved."),
        "error",
    )
    return _redirect_builder(course, "modules")


# ---------------------------------------------------------------- teaching list and new course


@bp.get("/")
def index() -> ResponseReturnValue:
    """The courses I teach, with pending requests to act on."""
    user = require_user()
    return _render_index(user)


def _render_index(
    user: User, import_error: Problem | None = None, status: int = 200
) -> ResponseReturnValue:
    rows = reports.taught_courses(db.session(), user)
    page = render_template(
        "staff/index.html",
        rows=rows,
        can_create=rbac.can(user, "course.create"),
        import_error=import_error,
        import_errors=(import_error.extra.get("errors") or [])[:20] if import_error else [],
    )
    return page, status


@bp.post("/import")
def import_course() -> ResponseReturnValue:
    """Create a new draft course from an uploaded course export (all or nothing)."""
    user = require_user()
    rbac.require(user, "course.create")
    upload = request.files.get("document")
    sess = db.session()
    try:
        if upload is None or not upload.filename:
            raise transfer.InvalidCourseDocument(gettext("Choose a course export file."))
        document = transfer.parse_bytes(upload.read())
        course = transfer.import_course(sess, user, document, via="web")
    except Problem as exc:
        sess.rollback()
        log.info("course_import=refused user=%s reason=%s", user.public_id, exc.type_slug)
        return _render_index(user, import_error=exc, status=exc.status)
    sess.commit()
    flash(gettext("Course imported as a draft. Check it, then publish it."), "success")
    return _redirect_builder(course)


@bp.route("/new", methods=["GET", "POST"])
def new_course() -> ResponseReturnValue:
    """Create a draft course; its creator becomes its instructor."""
    user = require_user()
    rbac.require(user, "course.create")
    if request.method == "GET":
        state = FormState(
            values={"language": "en", "visibility": "instance", "enrolment_mode": "open"}
        )
        return render_template("staff/new_course.html", form=state, choices=_choices())
    state, data = _course_form()
    if data is None:
        return render_template("staff/new_course.html", form=state, choices=_choices()), 422
    sess = db.session()
    course = svc.create_course(sess, user, data.model_dump())
    sess.commit()
    flash(gettext("Course created. Add modules and items, then publish it."), "success")
    return _redirect_builder(course)


# ---------------------------------------------------------------- builder


def _render_builder(
    user: User,
    course: Course,
    *,
    settings_form: FormState | None = None,
    module_form: FormState | None = None,
    rename_forms: Mapping[str, FormState] | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    sess = db.session()
    host = svc.plugin_host()
    types = sorted(
        ((name, ctype.label or name) for name, ctype in host.content_types.items()),
        key=lambda pair: pair[1].lower(),
    )
    modules = svc.modules_with_items(sess, course)
    labels = dict(types)
    page = render_template(
        "staff/builder.html",
        course=course,
        modules=modules,
        types=types,
        type_labels=labels,
        perms=_perms(user, course),
        can_create=rbac.can(user, "course.create"),
        settings_form=settings_form or FormState(values=_course_values(course)),
        module_form=module_form or FormState(),
        rename_forms=rename_forms or {},
        choices=_choices(),
    )
    return page, status


@bp.get("/courses/<course_id>")
def course(course_id: str) -> ResponseReturnValue:
    """A course's management entry point: the builder, or the progress table for TAs."""
    user, found = load_course(course_id, "enrolment.view")
    if rbac.can(user, "course.edit", found):
        return _redirect_builder(found)
    return redirect(url_for("staff.progress", course_id=found.public_id), code=303)


@bp.get("/courses/<course_id>/")
def builder(course_id: str) -> ResponseReturnValue:
    """The course builder: settings, status, modules and their items."""
    user, course = load_course(course_id, "course.edit")
    return _render_builder(user, course)


@bp.get("/courses/<course_id>/export")
def export_course(course_id: str) -> ResponseReturnValue:
    """Download the course as a course export (no learner data)."""
    user, course = load_course(course_id, "course.edit")
    sess = db.session()
    document = transfer.export_course(sess, course)
    transfer.record_export(sess, user, course, "web")
    sess.commit()
    return transfer.download(course, document)


@bp.post("/courses/<course_id>/copy")
def copy_course(course_id: str) -> ResponseReturnValue:
    """Copy the course into a new draft course of mine."""
    user, course = load_course(course_id, "course.edit")
    rbac.require(user, "course.create")
    sess = db.session()
    try:
        new = transfer.copy_course(sess, user, course, via="web")
    except Problem as exc:
        sess.rollback()
        flash(gettext("The course could not be copied: %(reason)s", reason=exc.detail), "error")
        return _redirect_builder(course, "reuse")
    sess.commit()
    flash(gettext("Course copied. This is the copy, a draft."), "success")
    return _redirect_builder(new)


@bp.post("/courses/<course_id>/settings")
def update_course(course_id: str) -> ResponseReturnValue:
    """Save the course's settings."""
    user, course = load_course(course_id, "course.edit")
    state, data = _course_form()
    if data is None:
        return _render_builder(user, course, settings_form=state, status=422)
    current = _course_values(course)
    changes = {
        name: value
        for name, value in data.model_dump().items()
        if str(value) != current.get(name, "")
    }
    sess = db.session()
    svc.update_course(sess, user, course, changes)
    sess.commit()
    flash(gettext("Settings saved."), "success")
    return _redirect_builder(course, "settings")


@bp.post("/courses/<course_id>/status")
def change_status(course_id: str) -> ResponseReturnValue:
    """Publish, unpublish or archive the course."""
    transition = request.form.get("transition", "")
    actions = {
        "publish": "course.publish",
        "unpublish": "course.publish",
        "archive": "course.archive",
    }
    if transition not in actions:
        raise ValidationFailed(gettext("Unknown status change."))
    user, course = load_course(course_id, actions[transition])
    sess = db.session()
    try:
        svc.change_status(sess, user, course, transition)
    except svc.InvalidTransition:
        sess.rollback()
        flash(gettext("The course's status has changed meanwhile; nothing was done."), "error")
        return _redirect_builder(course, "status")
    sess.commit()
    messages = {
        "publish": gettext("The course is published."),
        "unpublish": gettext("The course is back in draft; learners cannot open it."),
        "archive": gettext("The course is archived; learners keep read-only access."),
    }
    flash(messages[transition], "success")
    return _redirect_builder(course, "status")


# ---------------------------------------------------------------- modules


@bp.post("/courses/<course_id>/modules")
def add_module(course_id: str) -> ResponseReturnValue:
    """Add a module at the end."""
    user, course = load_course(course_id, "course.edit")
    state = FormState.of(request.form, ["module_title"])
    data = validate_form(ModuleForm, {"title": state.get("module_title")}, state)
    if not isinstance(data, ModuleForm):
        state.errors = {"module_title": state.errors.pop("title", [])}
        return _render_builder(user, course, module_form=state, status=422)
    sess = db.session()
    module = svc.add_module(sess, course, data.title)
    sess.commit()
    flash(gettext("Module added."), "success")
    return _redirect_builder(course, f"module-{module.public_id}")


@bp.post("/modules/<module_id>/rename")
def rename_module(module_id: str) -> ResponseReturnValue:
    """Give a module a new title."""
    user, module, course = load_module(module_id)
    state = FormState.of(request.form, ["title"])
    data = validate_form(ModuleForm, state.values, state)
    if not isinstance(data, ModuleForm):
        return _render_builder(user, course, rename_forms={module.public_id: state}, status=422)
    sess = db.session()
    svc.rename_module(sess, course, module, data.title)
    sess.commit()
    flash(gettext("Module renamed."), "success")
    return _redirect_builder(course, f"module-{module.public_id}")


@bp.route("/modules/<module_id>/delete", methods=["GET", "POST"])
def delete_module(module_id: str) -> ResponseReturnValue:
    """Ask, then delete a module with its items."""
    _, module, course = load_module(module_id)
    sess = db.session()
    if request.method == "GET":
        count = len(module.items)
        return render_template(
            "staff/confirm_delete.html",
            course=course,
            what=gettext("module"),
            title=module.title,
            consequence=gettext(
                "Its %(count)s item(s) and every learner's progress on them are deleted too.",
                count=count,
            ),
            action=url_for("staff.delete_module", module_id=module.public_id),
        )
    svc.delete_module(sess, course, module)
    sess.commit()
    flash(gettext("Module deleted."), "success")
    return _redirect_builder(course, "modules")


@bp.post("/modules/<module_id>/move")
def move_module(module_id: str) -> ResponseReturnValue:
    """Move a module one place up or down (the keyboard and no-script path)."""
    _, module, course = load_module(module_id)
    step = _direction()
    sess = db.session()
    count = len(svc.modules_with_items(sess, course))
    target = module.position + step
    if 0 <= target < count:
        svc.move_module(sess, course, module, target)
        sess.commit()
    if wants_json():
        return _moved(m.public_id for m in svc.modules_with_items(sess, course))
    return _redirect_builder(course, f"module-{module.public_id}")


@bp.post("/courses/<course_id>/modules/order")
def reorder_modules(course_id: str) -> ResponseReturnValue:
    """Put the modules in the order sent (drag and drop): every module id exactly once."""
    _, course = load_course(course_id, "course.edit")
    sess = db.session()
    try:
        ordered = svc.reorder_modules(sess, course, request.form.getlist("ids"))
    except svc.NotAPermutation as exc:
        return _stale_order(course, exc)
    sess.commit()
    if wants_json():
        return _moved(m.public_id for m in ordered)
    flash(gettext("Modules reordered."), "success")
    return _redirect_builder(course, "modules")


# ---------------------------------------------------------------- items


def _editor_fields(ctype: ContentType, config: dict[str, Any] | None) -> list[EditorField]:
    """The type's editor fields; a type whose own editor crashes gets the default one."""
    try:
        return list(ctype.editor_fields(config))
    except Exception as exc:
        svc.plugin_host().record_failure(f"content-type:{ctype.name}", "editor_fields", exc)
        log.warning("editor_fields failed type=%s, using the default form", ctype.name)
        return ContentType.editor_fields(ctype, config)


def _config_form() -> dict[str, str]:
    return {
        key.removeprefix(FORM_PREFIX): value
        for key, value in request.form.items()
        if key.startswith(FORM_PREFIX)
    }


def _item_state(
    title: str, required: bool, fields: list[EditorField], config: dict[str, Any] | None
) -> FormState:
    values = {"title": title, "required": "1" if required else ""}
    for f in fields:
        shown = f.display(config)
        values[FORM_PREFIX + f.name] = ("1" if shown else "") if f.kind == "checkbox" else shown
    return FormState(values=values)


def _submitted_item_state() -> FormState:
    values = {
        key: value.replace("\r\n", "\n")
        for key, value in request.form.items()
        if key == "title" or key.startswith(FORM_PREFIX)
    }
    values["title"] = values.get("title", "").strip()
    values["required"] = "1" if request.form.get("required") else ""
    return FormState(values=values)


def _read_item_form(ctype: ContentType, state: FormState) -> tuple[ItemForm | None, Any]:
    """The shared fields and the type's config from the submitted form.

    Errors are recorded on ``state``; the config is None when unreadable.
    """
    data = validate_form(
        ItemForm,
        {"title": request.form.get("title", ""), "required": bool(request.form.get("required"))},
        state,
    )
    config: Any = None
    try:
        config = ctype.config_from_form(_config_form())
    except ItemConfigInvalid as exc:
        _config_errors(state, exc.errors)
    except Exception as exc:
        raise svc.content_type_failed(ctype, "config_from_form", exc) from exc
    return (data if isinstance(data, ItemForm) else None), config


def _config_errors(state: FormState, errors: list[dict[str, Any]]) -> None:
    known = {key.removeprefix(FORM_PREFIX) for key in state.values if key.startswith(FORM_PREFIX)}
    for name, messages in field_errors(errors).items():
        for message in messages:
            state.add(FORM_PREFIX + name if name in known else None, message)


def _content_type(name: str) -> ContentType:
    try:
        return svc.plugin_host().content_type(name)
    except UnknownContentType:
        raise svc.UnknownItemType(gettext("This content type is not installed.")) from None


def _render_item_form(
    course: Course,
    module: Module,
    ctype: ContentType,
    fields: list[EditorField],
    state: FormState,
    *,
    item: Item | None = None,
    modules: list[Module] | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    label = ctype.label or ctype.name
    if item is None:
        heading = gettext("New %(type)s in %(module)s", type=label, module=module.title)
        action = url_for("staff.new_item", module_id=module.public_id)
    else:
        heading = gettext("Edit %(type)s: %(title)s", type=label, title=item.title)
        action = url_for("staff.edit_item", item_id=item.public_id)
    return (
        render_template(
            "staff/item_form.html",
            course=course,
            module=module,
            ctype=ctype,
            fields=fields,
            form=state,
            item=item,
            heading=heading,
            action=action,
            module_options=[(m.public_id, m.title) for m in modules or []],
            prefix=FORM_PREFIX,
        ),
        status,
    )


@bp.route("/modules/<module_id>/items/new", methods=["GET", "POST"])
def new_item(module_id: str) -> ResponseReturnValue:
    """Add an item of any installed content type through that type's form."""
    user, module, course = load_module(module_id)
    type_name = (request.form.get("type") or request.args.get("type") or "")[:50]
    ctype = _content_type(type_name)
    fields = _editor_fields(ctype, None)
    if request.method == "GET":
        state = _item_state("", True, fields, None)
        return _render_item_form(course, module, ctype, fields, state)
    state = _submitted_item_state()
    data, config = _read_item_form(ctype, state)
    if data is None or not state.ok:
        return _render_item_form(course, module, ctype, fields, state, status=422)
    sess = db.session()
    try:
        item = svc.add_item(
            sess,
            course,
            module,
            item_type=ctype.name,
            title=data.title,
            config=config,
            required=data.required,
        )
    except svc.InvalidItemConfig as exc:
        sess.rollback()
        _config_errors(state, exc.extra.get("errors") or [])
        if state.ok:
            state.add(None, exc.detail)
        return _render_item_form(course, module, ctype, fields, state, status=422)
    sess.commit()
    log.info(
        "item_added course=%s item=%s user=%s", course.public_id, item.public_id, user.public_id
    )
    flash(gettext("Item added."), "success")
    return _redirect_builder(course, f"item-{item.public_id}")


@bp.route("/items/<item_id>/edit", methods=["GET", "POST"])
def edit_item(item_id: str) -> ResponseReturnValue:
    """Edit an item's title, required flag, module and config."""
    _, item, course = load_item(item_id, "course.edit")
    module = item.module
    ctype = svc.content_type_for(item.type)
    fields = _editor_fields(ctype, dict(item.config))
    sess = db.session()
    modules = svc.modules_with_items(sess, course)
    if request.method == "GET":
        state = _item_state(item.title, item.required, fields, dict(item.config))
        state.values["module"] = module.public_id
        return _render_item_form(course, module, ctype, fields, state, item=item, modules=modules)
    state = _submitted_item_state()
    target = request.form.get("module", module.public_id)
    state.values["module"] = target
    data, config = _read_item_form(ctype, state)
    if target not in {m.public_id for m in modules}:
        state.add("module", gettext("Choose one of this course's modules."))
    if data is None or not state.ok:
        return _render_item_form(
            course, module, ctype, fields, state, item=item, modules=modules, status=422
        )
    try:
        svc.update_item(
            sess, course, item, {"title": data.title, "required": data.required, "config": config}
        )
    except svc.InvalidItemConfig as exc:
        sess.rollback()
        _config_errors(state, exc.extra.get("errors") or [])
        if state.ok:
            state.add(None, exc.detail)
        return _render_item_form(
            course, module, ctype, fields, state, item=item, modules=modules, status=422
        )
    if target != module.public_id:
        svc.move_item(sess, course, item, target)
    sess.commit()
    flash(gettext("Item saved."), "success")
    return _redirect_builder(course, f"item-{item.public_id}")


@bp.route("/items/<item_id>/delete", methods=["GET", "POST"])
def delete_item(item_id: str) -> ResponseReturnValue:
    """Ask, then delete an item and learners' progress on it."""
    _, item, course = load_item(item_id, "course.edit")
    if request.method == "GET":
        return render_template(
            "staff/confirm_delete.html",
            course=course,
            what=gettext("item"),
            title=item.title,
            consequence=gettext("Every learner's progress on it is deleted too."),
            action=url_for("staff.delete_item", item_id=item.public_id),
        )
    sess = db.session()
    module_id = item.module.public_id
    svc.delete_item(sess, course, item)
    sess.commit()
    flash(gettext("Item deleted."), "success")
    return _redirect_builder(course, f"module-{module_id}")


@bp.post("/items/<item_id>/move")
def move_item(item_id: str) -> ResponseReturnValue:
    """Move an item one place up or down in its module (the keyboard and no-script path)."""
    _, item, course = load_item(item_id, "course.edit")
    step = _direction()
    sess = db.session()
    module = item.module
    siblings = svc.modules_with_items(sess, course)
    count = next(len(m.items) for m in siblings if m.id == module.id)
    target = item.position + step
    if 0 <= target < count:
        svc.move_item(sess, course, item, module.public_id, target)
        sess.commit()
    if wants_json():
        sess.expire_all()
        order = next(m for m in svc.modules_with_items(sess, course) if m.id == module.id)
        return _moved(i.public_id for i in order.items)
    return _redirect_builder(course, f"item-{item.public_id}")


@bp.post("/modules/<module_id>/items/order")
def reorder_items(module_id: str) -> ResponseReturnValue:
    """Put a module's items in the order sent (drag and drop): every item id exactly once."""
    _, module, course = load_module(module_id)
    sess = db.session()
    try:
        ordered = svc.reorder_items(sess, course, module, request.form.getlist("ids"))
    except svc.NotAPermutation as exc:
        return _stale_order(course, exc)
    sess.commit()
    if wants_json():
        return _moved(i.public_id for i in ordered)
    flash(gettext("Items reordered."), "success")
    return _redirect_builder(course, f"module-{module.public_id}")


# ---------------------------------------------------------------- learners


def _render_learners(
    user: User,
    course: Course,
    *,
    add_form: FormState | None = None,
    bulk_form: FormState | None = None,
    invite_code: str | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    sess = db.session()
    shown = request.args.get("status", "active")
    if shown not in {"active", "withdrawn", "rejected"}:
        shown = "active"
    pending, _ = svc.list_enrolments(sess, course, status="pending", limit=200)
    rows, next_key = svc.list_enrolments(
        sess, course, status=shown, after=cursor_arg(), limit=PAGE_SIZE
    )
    return (
        render_template(
            "staff/learners.html",
            course=course,
            perms=_perms(user, course),
            pending=pending,
            rows=rows,
            shown=shown,
            next_cursor=cursor_for(next_key),
            add_form=add_form or FormState(),
            bulk_form=bulk_form or FormState(),
            max_addresses=svc.MAX_BULK_ADDRESSES,
            max_file_kb=svc.MAX_CLASS_LIST_BYTES // 1024,
            invite_code=invite_code,
        ),
        status,
    )


@bp.get("/courses/<course_id>/learners")
def learners(course_id: str) -> ResponseReturnValue:
    """Pending requests, the course's learners and the invite code."""
    user, course = load_course(course_id, "enrolment.view")
    return _render_learners(user, course)


def _redirect_learners(course: Course) -> BaseResponse:
    return redirect(url_for("staff.learners", course_id=course.public_id), code=303)


@bp.post("/courses/<course_id>/learners")
def add_learner(course_id: str) -> ResponseReturnValue:
    """Enrol an existing account by e-mail address (any enrolment mode)."""
    user, course = load_course(course_id, "enrolment.manage")
    state = FormState.of(request.form, ["email"])
    data = validate_form(PersonForm, state.values, state)
    sess = db.session()
    learner = None
    if isinstance(data, PersonForm):
        learner = find_active_user_by_email(sess, data.email)
        if learner is None:
            state.add("email", gettext("No active account has this e-mail address."))
    if learner is None:
        return _render_learners(user, course, add_form=state, status=422)
    try:
        svc.add_learner(sess, user, course, learner)
    except (svc.AlreadyEnrolled, svc.StaffCannotEnrol) as exc:
        sess.rollback()
        state.add("email", exc.detail)
        return _render_learners(user, course, add_form=state, status=409)
    sess.commit()
    flash(gettext("%(name)s is enrolled.", name=learner.display_name), "success")
    return _redirect_learners(course)


#: A refused class list: the page shows the problem on the text area.
_CLASS_LIST_REFUSED = (svc.NoAddresses, svc.TooManyAddresses, svc.InvalidAddresses)

#: Unknown addresses listed in the summary at most (it travels in the session cookie).
_LISTED_ADDRESSES = 20
_LISTED_CHARACTERS = 1000


def _class_list(state: FormState) -> list[str]:
    """The entries of the pasted text, then of the uploaded file (its problems on ``state``)."""
    entries = svc.split_addresses(state.get("addresses"))
    upload = request.files.get("file")
    if upload is not None and upload.filename:
        try:
            entries += svc.read_class_list(upload.stream.read(svc.MAX_CLASS_LIST_BYTES + 1))
        except svc.ClassListUnreadable as exc:
            state.add("file", exc.detail)
    return entries


def _listed(addresses: list[str]) -> str:
    shown: list[str] = []
    length = 0
    for address in addresses[:_LISTED_ADDRESSES]:
        length += len(json.dumps(address))  # as the session cookie holds it
        if shown and length > _LISTED_CHARACTERS:
            break
        shown.append(address)
    text = ", ".join(shown)
    rest = len(addresses) - len(shown)
    if rest:
        text += " " + gettext("and %(num)d more", num=rest)
    return text


def _bulk_summary(result: svc.BulkEnrolment) -> str:
    parts = [
        ngettext("%(num)d learner enrolled.", "%(num)d learners enrolled.", len(result.enrolled))
    ]
    if result.already:
        parts.append(
            ngettext(
                "%(num)d was already enrolled.",
                "%(num)d were already enrolled.",
                len(result.already),
            )
        )
    if result.staff:
        parts.append(
            ngettext(
                "%(num)d is on the course's staff and was not enrolled.",
                "%(num)d are on the course's staff and were not enrolled.",
                len(result.staff),
            )
        )
    if result.unknown:
        parts.append(
            ngettext(
                "%(num)d address has no active account: %(addresses)s.",
                "%(num)d addresses have no active account: %(addresses)s.",
                len(result.unknown),
                addresses=_listed(result.unknown),
            )
        )
    return " ".join(parts)


@bp.post("/courses/<course_id>/learners/bulk")
def bulk_preview(course_id: str) -> ResponseReturnValue:
    """Check a pasted or uploaded class list and show what enrolling it would do.

    Nothing is stored: the page lists who would be enrolled, who already is,
    who is staff and which addresses have no active account, with a button
    that sends the checked list to :func:`bulk_enrol`.
    """
    user, course = load_course(course_id, "enrolment.manage")
    state = FormState.of(request.form, ["addresses"])
    entries = _class_list(state)
    if not state.ok:
        return _render_learners(user, course, bulk_form=state, status=422)
    try:
        addresses = svc.normalise_addresses(entries)
        result = svc.enrol_many(db.session(), user, course, addresses, dry_run=True)
    except _CLASS_LIST_REFUSED as exc:
        state.add("addresses", exc.detail)
        return _render_learners(user, course, bulk_form=state, status=exc.status)
    return render_template(
        "staff/bulk_enrol.html",
        course=course,
        perms=_perms(user, course),
        result=result,
        # only those the page says it will enrol: the confirmation checks them again
        addresses=" ".join(row.address for row in result.enrolled),
    )


@bp.post("/courses/<course_id>/learners/bulk/confirm")
def bulk_enrol(course_id: str) -> ResponseReturnValue:
    """Enrol a checked class list; the summary names the addresses without an account."""
    user, course = load_course(course_id, "enrolment.manage")
    state = FormState.of(request.form, ["addresses"])
    sess = db.session()
    try:
        result = svc.enrol_many(sess, user, course, svc.split_addresses(state.get("addresses")))
    except _CLASS_LIST_REFUSED as exc:
        sess.rollback()
        state.add("addresses", exc.detail)
        return _render_learners(user, course, bulk_form=state, status=exc.status)
    except svc.AlreadyEnrolled as exc:
        sess.rollback()
        flash(
            gettext(
                "Someone enrolled %(email)s meanwhile; nothing was stored. Send the list again.",
                email=exc.extra.get("email", ""),
            ),
            "error",
        )
        return _redirect_learners(course)
    sess.commit()
    flash(_bulk_summary(result), "warning" if result.unknown else "success")
    return _redirect_learners(course)


def _decide(enrolment_id: str, approve: bool) -> ResponseReturnValue:
    actor = require_user()
    sess = db.session()
    enrolment, course, learner = svc.get_enrolment(sess, enrolment_id)
    rbac.require(actor, "enrolment.manage", course, what="enrolment")
    try:
        svc.decide_enrolment(sess, actor, course, enrolment, learner, approve)
    except svc.EnrolmentStateInvalid as exc:
        sess.rollback()
        flash(exc.detail, "error")
        return _redirect_learners(course)
    sess.commit()
    if approve:
        flash(gettext("%(name)s is enrolled.", name=learner.display_name), "success")
    else:
        flash(gettext("%(name)s's request was rejected.", name=learner.display_name), "success")
    return _redirect_learners(course)


@bp.post("/enrolments/<enrolment_id>/approve")
def approve(enrolment_id: str) -> ResponseReturnValue:
    """Approve a pending request to join."""
    return _decide(enrolment_id, approve=True)


@bp.post("/enrolments/<enrolment_id>/reject")
def reject(enrolment_id: str) -> ResponseReturnValue:
    """Reject a pending request to join."""
    return _decide(enrolment_id, approve=False)


@bp.post("/enrolments/<enrolment_id>/remove")
def remove_learner(enrolment_id: str) -> ResponseReturnValue:
    """Withdraw a learner (their progress is kept)."""
    actor = require_user()
    sess = db.session()
    enrolment, course, learner = svc.get_enrolment(sess, enrolment_id)
    rbac.require(actor, "enrolment.manage", course, what="enrolment")
    try:
        svc.withdraw(sess, actor, course, enrolment)
    except svc.EnrolmentStateInvalid as exc:
        sess.rollback()
        flash(exc.detail, "error")
        return _redirect_learners(course)
    sess.commit()
    flash(gettext("%(name)s was removed from the course.", name=learner.display_name), "success")
    return _redirect_learners(course)


@bp.post("/courses/<course_id>/invite-code")
def invite_code(course_id: str) -> ResponseReturnValue:
    """Make a new invite code and show it this once (only its hash is kept)."""
    user, course = load_course(course_id, "course.edit")
    sess = db.session()
    code = svc.regenerate_invite_code(sess, user, course)
    sess.commit()
    response = _render_learners(user, course, invite_code=code)
    return response


# ---------------------------------------------------------------- staff


def _render_staff(
    user: User, course: Course, *, form: FormState | None = None, status: int = 200
) -> ResponseReturnValue:
    rows = svc.list_staff(db.session(), course)
    return (
        render_template(
            "staff/staff.html",
            course=course,
            perms=_perms(user, course),
            rows=rows,
            form=form or FormState(values={"role": "ta"}),
            me=user,
        ),
        status,
    )


@bp.get("/courses/<course_id>/staff")
def staff(course_id: str) -> ResponseReturnValue:
    """The course's instructors and TAs."""
    user, course = load_course(course_id, "enrolment.view")
    return _render_staff(user, course)


def _role() -> str | None:
    role = request.form.get("role", "")
    return role if role in {rbac.INSTRUCTOR, rbac.TA} else None


@bp.post("/courses/<course_id>/staff")
def add_staff(course_id: str) -> ResponseReturnValue:
    """Make an existing account an instructor or TA, by e-mail address."""
    user, course = load_course(course_id, "course.manage_staff")
    state = FormState.of(request.form, ["email", "role"])
    data = validate_form(PersonForm, state.values, state)
    role = _role()
    if role is None:
        state.add("role", gettext("Choose instructor or teaching assistant."))
    sess = db.session()
    target = None
    if isinstance(data, PersonForm):
        target = find_active_user_by_email(sess, data.email)
        if target is None:
            state.add("email", gettext("No active account has this e-mail address."))
    if target is None or role is None:
        return _render_staff(user, course, form=state, status=422)
    try:
        svc.set_staff_role(sess, user, course, target, role)
    except svc.LastInstructor as exc:
        sess.rollback()
        state.add(None, exc.detail)
        return _render_staff(user, course, form=state, status=409)
    sess.commit()
    flash(gettext("%(name)s is now on the staff.", name=target.display_name), "success")
    return redirect(url_for("staff.staff", course_id=course.public_id), code=303)


@bp.post("/courses/<course_id>/staff/<user_id>/remove")
def remove_staff(course_id: str, user_id: str) -> ResponseReturnValue:
    """Take someone's staff role away (never the last instructor's)."""
    user, course = load_course(course_id, "course.manage_staff")
    sess = db.session()
    target = svc.find_user(sess, user_id)
    if target is None:
        raise svc.UserNotFound(gettext("No such user."))
    try:
        svc.remove_staff(sess, user, course, target)
    except (svc.LastInstructor, svc.NotStaff) as exc:
        sess.rollback()
        state = FormState(values={"role": "ta"})
        state.add(None, exc.detail)
        return _render_staff(user, course, form=state, status=exc.status)
    sess.commit()
    flash(gettext("%(name)s was removed from the staff.", name=target.display_name), "success")
    if target.id == user.id:
        return redirect(url_for("staff.index"), code=303)
    return redirect(url_for("staff.staff", course_id=course.public_id), code=303)


# ---------------------------------------------------------------- progress


@bp.get("/courses/<course_id>/progress")
def progress(course_id: str) -> ResponseReturnValue:
    """Learners by items: each cell's status, each learner's completion."""
    _, course = load_course(course_id, "progress.view_all")
    shown = "all" if request.args.get("status") == "all" else "active"
    statuses = ("active", "withdrawn") if shown == "all" else ("active",)
    sess = db.session()
    items, rows, next_key = progress_table(
        sess, course, statuses=statuses, after=cursor_arg(), limit=PAGE_SIZE
    )
    modules = {m.id: m for m in svc.modules_with_items(sess, course)}
    return render_template(
        "staff/progress.html",
        course=course,
        perms=_perms(require_user(), course),
        items=items,
        modules=modules,
        rows=rows,
        shown=shown,
        next_cursor=cursor_for(next_key),
    )


@bp.get("/courses/<course_id>/progress.csv")
def progress_csv(course_id: str) -> ResponseReturnValue:
    """The whole progress table as a CSV download."""
    _, course = load_course(course_id, "progress.view_all")
    shown = ("active", "withdrawn") if request.args.get("status") == "all" else ("active",)
    lines = reports.progress_csv(db.session(), course, shown)
    filename = f"progress-{course.public_id}.csv"
    return Response(
        stream_with_context(lines),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


__all__ = ["bp"]
