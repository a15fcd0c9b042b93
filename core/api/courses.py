"""Course API: catalog, course detail and editing, modules, items, staff.

Views stay thin: they parse the request, check the permission with
:func:`core.rbac.require`, call :mod:`core.courses` and commit.  The schemas
shared by the other API modules (pages, users, course summaries) live here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from typing import Literal
from typing import TypeVar

from flask import jsonify
from flask import request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationInfo
from pydantic import model_validator

from core import courses as svc
from core import db
from core import rbac
from core.api import NUL_FREE
from core.api import bp
from core.api import decode_cursor
from core.api import json_response
from core.api import operation
from core.api import page
from core.api import parse_body
from core.api import parse_query
from core.auth import require_user
from core.errors import ValidationFailed
from core.models import Course
from core.models import CourseRole
from core.models import Item
from core.models import Module
from core.models import User
from core.progress import CourseListing
from core.progress import item_view

TAGS_COURSES = ("courses",)
TAGS_STRUCTURE = ("course structure",)

B = TypeVar("B", bound=BaseModel)

#: Keys are 64-bit integers; a cursor outside that range was not made by us.
MAX_KEY = 2**63

# ---------------------------------------------------------------- shared schemas


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class _NoNul(BaseModel):
    # PostgreSQL cannot store NUL in text; refuse it up front as bad input
    # instead of failing in the database.
    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any, info: ValidationInfo) -> Any:
        if info.context is not None and info.context.get(NUL_FREE):
            return data  # the raw body was checked once, not each nested model
        if _has_nul(data):
            raise ValueError("text must not contain NUL characters")
        return data


class Body(_NoNul):
    """Base of request bodies: unknown fields and wrong types are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)


class Patch(Body):
    """Base of partial updates: an omitted field is unchanged, ``null`` is refused."""

    @model_validator(mode="after")
    def _no_nulls(self) -> Patch:
        nulls = [name for name in self.model_fields_set if getattr(self, name) is None]
        if nulls:
            raise ValueError(f"{', '.join(sorted(nulls))} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields the client sent."""
        return self.model_dump(exclude_unset=True)


class PageQuery(_NoNul):
    """Cursor pagination: ``?cursor=`` from the previous page, ``limit`` 1 to 100."""

    model_config = ConfigDict(extra="forbid")
    cursor: str | None = Field(default=None, max_length=100)
    limit: int = Field(default=20, ge=1, le=100)


class UserBrief(BaseModel):
    """A user as other users see them."""

    id: str
    display_name: str


class CourseSummary(BaseModel):
    """A course in lists and the catalog."""

    id: str
    title: str
    summary: str
    language: str
    subject: str
    level: str
    status: Literal["draft", "published", "archived"]
    visibility: Literal["private", "instance", "federated"]
    enrolment_mode: Literal["open", "approval", "invite"]
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None


def user_brief(user: User) -> UserBrief:
    """Serialise a user for other users."""
    return UserBrief(id=user.public_id, display_name=user.display_name)


def course_summary_fields(course: Course | CourseListing) -> dict[str, Any]:
    """The fields of :class:`CourseSummary` (to validate as part of a larger model)."""
    return {
        "id": course.public_id,
        "title": course.title,
        "summary": course.summary,
        "language": course.language,
        "subject": course.subject,
        "level": course.level,
        "status": course.status,
        "visibility": course.visibility,
        "enrolment_mode": course.enrolment_mode,
        "created_at": course.created_at,
        "updated_at": course.updated_at,
        "published_at": course.published_at,
    }


def course_summary(course: Course | CourseListing) -> CourseSummary:
    """Serialise a course (or its listing columns) for lists."""
    return CourseSummary.model_validate(course_summary_fields(course))


def optional_body(model: type[B]) -> B:
    """Like :func:`core.api.parse_body`, but an empty body means ``{}``."""
    if not request.get_data(cache=True):
        return model()
    return parse_body(model)


def cursor_key(query: PageQuery) -> int | None:
    """The internal key a page query's cursor stands for.

    :raise ValidationFailed: the cursor was tampered with.
    """
    key = decode_cursor(query.cursor)
    if key is not None and not 0 < key < MAX_KEY:
        raise ValidationFailed("invalid cursor")
    return key


def load_course(course_id: str, action: str = "course.view") -> tuple[User, Course]:
    """The current user and the course, once ``action`` is allowed on it."""
    user = require_user()
    course = svc.get_course(db.session(), course_id, user)
    rbac.require(user, action, course)
    return user, course


# ---------------------------------------------------------------- course schemas

LANGUAGE = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"


class CourseCreate(Body):
    """A new course (it starts as a draft)."""

    title: str = Field(min_length=1, max_length=300)
    summary: str = Field(default="", max_length=1000)
    description: str = Field(default="", max_length=100_000)
    language: str = Field(default="en", max_length=35, pattern=LANGUAGE)
    subject: str = Field(default="", max_length=100)
    level: str = Field(default="", max_length=50)
    visibility: Literal["private", "instance", "federated"] = "instance"
    enrolment_mode: Literal["open", "approval", "invite"] = "open"


class CourseUpdate(Patch):
    """Changes to a course; status changes have their own endpoints."""

    title: str | None = Field(default=None, min_length=1, max_length=300)
    summary: str | None = Field(default=None, max_length=1000)
    description: str | None = Field(default=None, max_length=100_000)
    language: str | None = Field(default=None, max_length=35, pattern=LANGUAGE)
    subject: str | None = Field(default=None, max_length=100)
    level: str | None = Field(default=None, max_length=50)
    visibility: Literal["private", "instance", "federated"] | None = None
    enrolment_mode: Literal["open", "approval", "invite"] | None = None


class CatalogQuery(PageQuery):
    """Catalog search and filters."""

    q: str | None = Field(default=None, max_length=200, description="substring of title or summary")
    subject: str | None = Field(default=None, max_length=100)
    language: str | None = Field(default=None, max_length=35)
    level: str | None = Field(default=None, max_length=50)
    status: Literal["draft", "published", "archived"] | None = None


class CoursePage(BaseModel):
    """A page of courses."""

    items: list[CourseSummary]
    next_cursor: str | None


class ItemSummary(BaseModel):
    """An item in a course outline (no content)."""

    id: str
    type: str
    title: str
    required: bool
    position: int


class ModuleOut(BaseModel):
    """A module with its items in order."""

    id: str
    title: str
    position: int
    items: list[ItemSummary]


class ModuleList(BaseModel):
    """A course's modules in order."""

    items: list[ModuleOut]


class CourseDetail(CourseSummary):
    """A course with its outline and the caller's place in it."""

    description: str
    modules: list[ModuleOut]
    my_role: Literal["instructor", "ta", "learner"] | None
    my_enrolment_status: Literal["pending", "active", "withdrawn", "rejected"] | None
    has_invite_code: bool | None = Field(description="staff only; null for others")


class InviteCode(BaseModel):
    """A course's new invite code: shown once, only its hash is kept."""

    code: str


def item_summary(item: Item) -> ItemSummary:
    """Serialise an item for an outline."""
    return ItemSummary(
        id=item.public_id,
        type=item.type,
        title=item.title,
        required=item.required,
        position=item.position,
    )


def module_out(module: Module, items: list[Item] | None = None) -> ModuleOut:
    """Serialise a module (with ``items``, or its loaded items)."""
    return ModuleOut(
        id=module.public_id,
        title=module.title,
        position=module.position,
        items=[item_summary(i) for i in (module.items if items is None else items)],
    )


def course_detail(user: User, course: Course) -> CourseDetail:
    """Serialise a course with its outline for ``user``."""
    sess = db.session()
    standing = rbac.access(sess, user, course)
    role = standing.staff_role or ("learner" if standing.is_learner else None)
    staff = standing.is_staff or user.is_admin
    data = course_summary(course).model_dump()
    data.update(
        description=course.description,
        modules=[module_out(m) for m in svc.modules_with_items(sess, course)],
        my_role=role,
        my_enrolment_status=standing.enrolment_status,
        has_invite_code=(course.invite_code_hash is not None) if staff else None,
    )
    return CourseDetail.model_validate(data)


# ---------------------------------------------------------------- course views


@bp.get("/courses")
@operation(
    "Catalog: the courses you may see",
    tags=TAGS_COURSES,
    query=CatalogQuery,
    response=CoursePage,
    errors=(422,),
)
def list_courses() -> ResponseReturnValue:
    """List visible courses, newest first, with search and filters."""
    user = require_user()
    query = parse_query(CatalogQuery)
    found, next_key = svc.catalog(
        db.session(),
        user,
        q=query.q,
        subject=query.subject,
        language=query.language,
        level=query.level,
        status=query.status,
        before=cursor_key(query),
        limit=query.limit,
    )
    return jsonify(page([course_summary(c).model_dump(mode="json") for c in found], next_key))


@bp.post("/courses")
@operation(
    "Create a course (you become its instructor)",
    tags=TAGS_COURSES,
    body=CourseCreate,
    response=CourseDetail,
    status=201,
)
def create_course() -> ResponseReturnValue:
    """Create a draft course."""
    user = require_user()
    rbac.require(user, "course.create")
    data = parse_body(CourseCreate)
    sess = db.session()
    course = svc.create_course(sess, user, data.model_dump())
    detail = course_detail(user, course)
    sess.commit()
    return json_response(detail, 201)


@bp.get("/courses/<course_id>")
@operation(
    "A course with its modules and items", tags=TAGS_COURSES, response=CourseDetail, errors=(404,)
)
def get_course(course_id: str) -> ResponseReturnValue:
    """Show a course's outline (titles and types; content is per item)."""
    user, course = load_course(course_id)
    return json_response(course_detail(user, course))


@bp.patch("/courses/<course_id>")
@operation(
    "Edit a course",
    tags=TAGS_COURSES,
    body=CourseUpdate,
    response=CourseDetail,
    errors=(404,),
)
def update_course(course_id: str) -> ResponseReturnValue:
    """Change some of a course's attributes."""
    user, course = load_course(course_id, "course.edit")
    changes = parse_body(CourseUpdate).changes()
    sess = db.session()
    svc.update_course(sess, user, course, changes)
    detail = course_detail(user, course)
    sess.commit()
    return json_response(detail)


def _transition(course_id: str, action: str, transition: str) -> ResponseReturnValue:
    user, course = load_course(course_id, action)
    sess = db.session()
    svc.change_status(sess, user, course, transition)
    detail = course_detail(user, course)
    sess.commit()
    return json_response(detail)


@bp.post("/courses/<course_id>/publish")
@operation(
    "Publish a draft or archived course",
    tags=TAGS_COURSES,
    response=CourseDetail,
    errors=(404, 409),
)
def publish_course(course_id: str) -> ResponseReturnValue:
    """Publish the course."""
    return _transition(course_id, "course.publish", "publish")


@bp.post("/courses/<course_id>/unpublish")
@operation(
    "Take a published course back to draft",
    tags=TAGS_COURSES,
    response=CourseDetail,
    errors=(404, 409),
)
def unpublish_course(course_id: str) -> ResponseReturnValue:
    """Unpublish the course."""
    return _transition(course_id, "course.publish", "unpublish")


@bp.post("/courses/<course_id>/archive")
@operation(
    "Archive a course (learners keep read-only access)",
    tags=TAGS_COURSES,
    response=CourseDetail,
    errors=(404, 409),
)
def archive_course(course_id: str) -> ResponseReturnValue:
    """Archive the course."""
    return _transition(course_id, "course.archive", "archive")


@bp.post("/courses/<course_id>/invite-code")
@operation(
    "Generate a new invite code (the old one stops working)",
    tags=TAGS_COURSES,
    response=InviteCode,
    status=201,
    errors=(404,),
)
def new_invite_code(course_id: str) -> ResponseReturnValue:
    """Return a fresh invite code once."""
    user, course = load_course(course_id, "course.edit")
    sess = db.session()
    code = svc.regenerate_invite_code(sess, user, course)
    sess.commit()
    return json_response(InviteCode(code=code), 201)


# ---------------------------------------------------------------- modules


class ModuleCreate(Body):
    """A new module, at the end unless ``position`` is given."""

    title: str = Field(min_length=1, max_length=300)
    position: int | None = Field(default=None, ge=0)


class ModuleUpdate(Patch):
    """Rename a module or move it to another position."""

    title: str | None = Field(default=None, min_length=1, max_length=300)
    position: int | None = Field(default=None, ge=0)


class Reorder(Body):
    """Every child id exactly once, in the new order."""

    ids: list[str] = Field(max_length=10_000)


def load_module(module_id: str, action: str = "course.edit") -> tuple[User, Module, Course]:
    """The current user, the module and its course, once ``action`` is allowed."""
    user = require_user()
    module, course = svc.get_module(db.session(), module_id)
    rbac.require(user, action, course, what="module")
    return user, module, course


@bp.post("/courses/<course_id>/modules")
@operation(
    "Add a module",
    tags=TAGS_STRUCTURE,
    body=ModuleCreate,
    response=ModuleOut,
    status=201,
    errors=(404,),
)
def create_module(course_id: str) -> ResponseReturnValue:
    """Add a module to a course."""
    _, course = load_course(course_id, "course.edit")
    data = parse_body(ModuleCreate)
    sess = db.session()
    module = svc.add_module(sess, course, data.title, data.position)
    out = module_out(module, [])
    sess.commit()
    return json_response(out, 201)


@bp.put("/courses/<course_id>/modules/order")
@operation(
    "Reorder a course's modules",
    tags=TAGS_STRUCTURE,
    body=Reorder,
    response=ModuleList,
    errors=(404,),
)
def reorder_modules(course_id: str) -> ResponseReturnValue:
    """Put the modules in the order given (a permutation of their ids)."""
    _, course = load_course(course_id, "course.edit")
    data = parse_body(Reorder)
    sess = db.session()
    svc.reorder_modules(sess, course, data.ids)
    out = ModuleList(items=[module_out(m) for m in svc.modules_with_items(sess, course)])
    sess.commit()
    return json_response(out)


@bp.patch("/modules/<module_id>")
@operation(
    "Rename or move a module",
    tags=TAGS_STRUCTURE,
    body=ModuleUpdate,
    response=ModuleOut,
    errors=(404,),
)
def update_module(module_id: str) -> ResponseReturnValue:
    """Change a module's title or position."""
    _, module, course = load_module(module_id)
    data = parse_body(ModuleUpdate)
    sess = db.session()
    if data.title is not None:
        svc.rename_module(sess, course, module, data.title)
    if data.position is not None:
        svc.move_module(sess, course, module, data.position)
    out = module_out(module)
    sess.commit()
    return json_response(out)


@bp.delete("/modules/<module_id>")
@operation("Delete a module and its items", tags=TAGS_STRUCTURE, status=204, errors=(404,))
def delete_module(module_id: str) -> ResponseReturnValue:
    """Delete a module."""
    _, module, course = load_module(module_id)
    sess = db.session()
    svc.delete_module(sess, course, module)
    sess.commit()
    return "", 204


# ---------------------------------------------------------------- items


class ItemCreate(Body):
    """A new item; ``config`` is validated by the content type named by ``type``."""

    type: str = Field(min_length=1, max_length=50)
    title: str = Field(min_length=1, max_length=300)
    config: Any = Field(default_factory=dict)
    required: bool = True
    position: int | None = Field(default=None, ge=0)


class ItemUpdate(Patch):
    """Changes to an item (its type cannot change)."""

    title: str | None = Field(default=None, min_length=1, max_length=300)
    config: Any = None
    required: bool | None = None


class ItemMove(Body):
    """Where an item goes: a module of the same course, at ``position`` (end by default)."""

    module_id: str = Field(min_length=1, max_length=64)
    position: int | None = Field(default=None, ge=0)


class ItemOut(BaseModel):
    """An item: staff get its ``config``, learners its ``content`` (the learner view)."""

    id: str
    course_id: str
    module_id: str
    type: str
    title: str
    required: bool
    position: int
    config: dict[str, Any] | None
    content: dict[str, Any] | None


def item_out(user: User, item: Item, course: Course, module_id: str | None = None) -> ItemOut:
    """Serialise an item for ``user``: the full config for staff, else the learner view.

    :raise ContentTypeUnavailable: a learner asks and the type is not installed.
    :raise ContentTypeFailed: the content type's ``learner_view`` crashed.
    """
    if module_id is None:
        module_id = item.module.public_id
    config: dict[str, Any] | None = None
    content: dict[str, Any] | None = None
    if rbac.can(user, "item.view_config", course):
        config = dict(item.config)
    else:
        ctype = svc.content_type_for(item.type)
        try:
            content = dict(ctype.learner_view(item_view(item, course)))
        except Exception as exc:
            raise svc.content_type_failed(ctype, "learner_view", exc) from exc
    return ItemOut(
        id=item.public_id,
        course_id=course.public_id,
        module_id=module_id,
        type=item.type,
        title=item.title,
        required=item.required,
        position=item.position,
        config=config,
        content=content,
    )


def load_item(item_id: str, action: str) -> tuple[User, Item, Course]:
    """The current user, the item and its course, once ``action`` is allowed."""
    user = require_user()
    item, course = svc.get_item(db.session(), item_id, user)
    rbac.require(user, action, course, what="item")
    return user, item, course


@bp.post("/modules/<module_id>/items")
@operation(
    "Add an item to a module",
    tags=TAGS_STRUCTURE,
    body=ItemCreate,
    response=ItemOut,
    status=201,
    errors=(404,),
)
def create_item(module_id: str) -> ResponseReturnValue:
    """Create an item; unknown types and invalid configs are 422."""
    user, module, course = load_module(module_id)
    data = parse_body(ItemCreate)
    sess = db.session()
    item = svc.add_item(
        sess,
        course,
        module,
        item_type=data.type,
        title=data.title,
        config=data.config,
        required=data.required,
        position=data.position,
    )
    out = item_out(user, item, course, module.public_id)
    sess.commit()
    return json_response(out, 201)


@bp.put("/modules/<module_id>/items/order")
@operation(
    "Reorder a module's items",
    tags=TAGS_STRUCTURE,
    body=Reorder,
    response=ModuleOut,
    errors=(404,),
)
def reorder_items(module_id: str) -> ResponseReturnValue:
    """Put the items in the order given (a permutation of their ids)."""
    _, module, course = load_module(module_id)
    data = parse_body(Reorder)
    sess = db.session()
    ordered = svc.reorder_items(sess, course, module, data.ids)
    out = module_out(module, ordered)
    sess.commit()
    return json_response(out)


@bp.get("/items/<item_id>")
@operation("An item with its content", tags=TAGS_STRUCTURE, response=ItemOut, errors=(404, 409))
def get_item(item_id: str) -> ResponseReturnValue:
    """Show an item: the learner view for learners, the config for staff."""
    user = require_user(attach=False)  # read from caches; attached if it queries
    item, course = svc.view_item(db.session(), item_id, user)
    rbac.require(user, "course.view_content", course, what="item")
    return json_response(item_out(user, item, course))


@bp.patch("/items/<item_id>")
@operation(
    "Edit an item",
    tags=TAGS_STRUCTURE,
    body=ItemUpdate,
    response=ItemOut,
    errors=(404,),
)
def update_item(item_id: str) -> ResponseReturnValue:
    """Change an item's title, config or required flag."""
    user, item, course = load_item(item_id, "course.edit")
    changes = parse_body(ItemUpdate).changes()
    sess = db.session()
    svc.update_item(sess, course, item, changes)
    out = item_out(user, item, course)
    sess.commit()
    return json_response(out)


@bp.post("/items/<item_id>/move")
@operation(
    "Move an item within its course",
    tags=TAGS_STRUCTURE,
    body=ItemMove,
    response=ItemOut,
    errors=(404,),
)
def move_item(item_id: str) -> ResponseReturnValue:
    """Move an item to another module of its course, or within its module."""
    user, item, course = load_item(item_id, "course.edit")
    data = parse_body(ItemMove)
    sess = db.session()
    svc.move_item(sess, course, item, data.module_id, data.position)
    out = item_out(user, item, course, data.module_id)
    sess.commit()
    return json_response(out)


@bp.delete("/items/<item_id>")
@operation("Delete an item", tags=TAGS_STRUCTURE, status=204, errors=(404,))
def delete_item(item_id: str) -> ResponseReturnValue:
    """Delete an item and learners' progress on it."""
    _, item, course = load_item(item_id, "course.edit")
    sess = db.session()
    svc.delete_item(sess, course, item)
    sess.commit()
    return "", 204


# ---------------------------------------------------------------- content types


class ContentTypeOut(BaseModel):
    """An installed content type and the JSON Schema of its items' config."""

    name: str
    label: str
    config_schema: dict[str, Any]


class ContentTypeList(BaseModel):
    """Every installed content type."""

    items: list[ContentTypeOut]


@bp.get("/content-types")
@operation("Installed content types", tags=TAGS_STRUCTURE, response=ContentTypeList)
def list_content_types() -> ResponseReturnValue:
    """List content types for course builders."""
    require_user()
    host = svc.plugin_host()
    out = ContentTypeList(
        items=[
            ContentTypeOut(
                name=name,
                label=ctype.label or name,
                config_schema=ctype.config_model.model_json_schema(),
            )
            for name, ctype in sorted(host.content_types.items())
        ]
    )
    return json_response(out)


# ---------------------------------------------------------------- staff


class StaffSet(Body):
    """The role to give."""

    role: Literal["instructor", "ta"]


class StaffMember(BaseModel):
    """One staff member of a course."""

    user: UserBrief
    role: Literal["instructor", "ta"]
    since: datetime


class StaffList(BaseModel):
    """A course's staff."""

    items: list[StaffMember]


def staff_member(role: CourseRole, user: User) -> StaffMember:
    """Serialise a staff role."""
    return StaffMember.model_validate(
        {"user": user_brief(user), "role": role.role, "since": role.created_at}
    )


def _staff_target(user_id: str) -> User:
    found = svc.find_user(db.session(), user_id)
    if found is None:
        raise svc.UserNotFound("no such user")
    return found


@bp.get("/courses/<course_id>/staff")
@operation("A course's instructors and TAs", tags=TAGS_COURSES, response=StaffList, errors=(404,))
def list_staff(course_id: str) -> ResponseReturnValue:
    """List the course's staff."""
    _, course = load_course(course_id)
    rows = svc.list_staff(db.session(), course)
    return json_response(StaffList(items=[staff_member(r, u) for r, u in rows]))


@bp.put("/courses/<course_id>/staff/<user_id>")
@operation(
    "Make a user an instructor or TA (201), or change their role (200)",
    tags=TAGS_COURSES,
    body=StaffSet,
    response=StaffMember,
    errors=(404, 409),
)
def set_staff(course_id: str, user_id: str) -> ResponseReturnValue:
    """Add a staff member or change their role; 201 when added."""
    actor, course = load_course(course_id, "course.manage_staff")
    data = parse_body(StaffSet)
    target = _staff_target(user_id)
    sess = db.session()
    row, created = svc.set_staff_role(sess, actor, course, target, data.role)
    out = staff_member(row, target)
    sess.commit()
    return json_response(out, 201 if created else 200)


@bp.delete("/courses/<course_id>/staff/<user_id>")
@operation("Remove a staff member", tags=TAGS_COURSES, status=204, errors=(404, 409))
def remove_staff(course_id: str, user_id: str) -> ResponseReturnValue:
    """Remove a user's staff role (never the last instructor)."""
    actor, course = load_course(course_id, "course.manage_staff")
    target = _staff_target(user_id)
    sess = db.session()
    svc.remove_staff(sess, actor, course, target)
    sess.commit()
    return "", 204
