"""Courses, their modules and items, staff and enrolments: the service layer.

Functions here work on a :class:`~sqlalchemy.orm.Session` and raise
:mod:`core.errors` problems; they flush but never commit, so the caller (an
API view, a job) commits once and a refused change leaves nothing behind.
Permission checks are the caller's job (:func:`core.rbac.require`); these
functions enforce the rules that hold whoever asks (state transitions, the
last instructor, dense positions).

Positions of modules in a course and items in a module are dense: ``0..n-1``
after every change.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import logging
import re
import secrets
import unicodedata
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Protocol
from typing import TypeVar

import nh3
from flask import current_app
from sqlalchemy import Select
from sqlalchemy import and_
from sqlalchemy import bindparam
from sqlalchemy import exists
from sqlalchemy import func
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm import class_mapper as sa_mapper
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from core import catalog as catalog_index
from core import rbac
from core import readcache
from core.auth import audit as audit_log
from core.content import ContentType
from core.content import CourseRef
from core.content import ItemConfigInvalid
from core.db import attach
from core.db import core_execute
from core.db import read_first
from core.db import utcnow
from core.errors import Conflict
from core.errors import Forbidden
from core.errors import NotFound
from core.errors import Problem
from core.errors import ValidationFailed
from core.events import course_iri
from core.events import record_event
from core.models import Course
from core.models import CourseRole
from core.models import Enrolment
from core.models import Item
from core.models import Module
from core.models import User
from core.plugins import PluginHost
from core.plugins import UnknownContentType

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- errors


class CourseNotFound(NotFound):
    """No course with this id, or the caller may not know it exists."""

    type_slug = "course-not-found"


class ModuleNotFound(NotFound):
    """No module with this id, or the caller may not know it exists."""

    type_slug = "module-not-found"


class ItemNotFound(NotFound):
    """No item with this id, or the caller may not know it exists."""

    type_slug = "item-not-found"


class EnrolmentNotFound(NotFound):
    """No enrolment with this id, or the caller may not know it exists."""

    type_slug = "enrolment-not-found"


class UserNotFound(NotFound):
    """No user with the public id given in the URL."""

    type_slug = "user-not-found"


class UnknownUser(ValidationFailed):
    """A request body names a user that does not exist."""

    type_slug = "unknown-user"


class UnknownItemType(ValidationFailed):
    """An item names a content type that is not installed."""

    type_slug = "unknown-content-type"


class InvalidItemConfig(ValidationFailed):
    """The content type rejected an item's config; ``errors`` lists why."""

    type_slug = "invalid-item-config"


class NotAPermutation(ValidationFailed):
    """A reorder request is not exactly the current children in a new order."""

    type_slug = "not-a-permutation"


class InvalidMoveTarget(ValidationFailed):
    """An item was to move to a module that is not in its course."""

    type_slug = "invalid-move-target"


class InvalidTransition(Conflict):
    """A course cannot go from its current status to the requested one."""

    type_slug = "invalid-transition"


class LastInstructor(Conflict):
    """The change would leave a course without an instructor."""

    type_slug = "last-instructor"


class NotStaff(NotFound):
    """The user holds no staff role in this course."""

    type_slug = "not-staff"


class AlreadyEnrolled(Conflict):
    """The user already holds an active or pending enrolment."""

    type_slug = "already-enrolled"


class EnrolmentRejected(Conflict):
    """Staff rejected this user's earlier request; only staff can enrol them now."""

    type_slug = "enrolment-rejected"


class StaffCannotEnrol(Conflict):
    """Staff of a course cannot also be its learners."""

    type_slug = "staff-cannot-enrol"


class InviteCodeInvalid(Forbidden):
    """The invite code is missing or wrong (or the course has none)."""

    type_slug = "invite-code-invalid"


class EnrolmentStateInvalid(Conflict):
    """The enrolment is not in a state that allows this change."""

    type_slug = "enrolment-state-invalid"


class ContentTypeUnavailable(Conflict):
    """The item's content type is no longer installed on this instance."""

    type_slug = "content-type-unavailable"


class ContentTypeFailed(Problem):
    """A content type's code raised; the failure is logged against it."""

    status = 500
    title = "Content type failed"
    type_slug = "content-type-failed"


# ---------------------------------------------------------------- helpers


def plugin_host() -> PluginHost:
    """The app's plugin host."""
    host: PluginHost = current_app.extensions["trivium.plugins"]
    return host


def content_type_for(item_type: str) -> ContentType:
    """The installed content type an existing item needs.

    :raise ContentTypeUnavailable: it is not installed any more.
    """
    try:
        return plugin_host().content_type(item_type)
    except UnknownContentType:
        raise ContentTypeUnavailable(
            f"content type {item_type!r} is not installed on this instance"
        ) from None


def content_type_failed(ctype: ContentType, method: str, exc: Exception) -> ContentTypeFailed:
    """Record a content type's crash and return the problem to raise."""
    plugin_host().record_failure(f"content-type:{ctype.name}", method, exc)
    return ContentTypeFailed(f"content type {ctype.name!r} failed in {method}")


def audit(sess: Session, actor: User | None, action: str, course: Course, **detail: Any) -> None:
    """Audit an action on ``course`` (stored with the caller's commit)."""
    audit_log.audit(sess, actor, action, f"course:{course.public_id}", detail)


def _touch(course: Course) -> None:
    course.updated_at = utcnow()


def _rule_relaxed(sess: Session, course: Course) -> None:
    """A required item goes away: learners may now meet the completion rule.

    The check runs as a job once this transaction commits (a course may have
    many learners); see :func:`core.progress.complete_where_due`.
    """
    from core.tasks import get_jobs

    get_jobs().enqueue_on_commit(sess, "core.complete_where_due", (course.id,))


def _lock(sess: Session, course: Course) -> None:
    """Serialise structural changes of one course (row lock; a no-op on SQLite)."""
    sess.execute(select(Course.id).where(Course.id == course.id).with_for_update())


class _Positioned(Protocol):
    position: int
    public_id: str


P = TypeVar("P", bound=_Positioned)


def _renumber(rows: Iterable[_Positioned]) -> None:
    for index, row in enumerate(rows):
        if row.position != index:
            row.position = index


def _insert_at(rows: list[P], row: P, position: int | None) -> list[P]:
    rest = [r for r in rows if r is not row]
    at = len(rest) if position is None else max(0, min(position, len(rest)))
    rest.insert(at, row)
    _renumber(rest)
    return rest


def _permute(rows: Sequence[P], ids: Sequence[str], what: str) -> list[P]:
    """Reorder ``rows`` to the order of ``ids``.

    :raise NotAPermutation: ``ids`` is not exactly the ids of ``rows``.
    """
    by_id = {r.public_id: r for r in rows}
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    unknown = sorted(set(ids) - set(by_id))
    missing = sorted(set(by_id) - set(ids))
    if duplicates or unknown or missing:
        raise NotAPermutation(
            f"send every {what} id of this parent exactly once",
            duplicates=duplicates,
            unknown=unknown,
            missing=missing,
        )
    ordered = [by_id[i] for i in ids]
    _renumber(ordered)
    return ordered


# ---------------------------------------------------------------- lookups

_PUBLIC_ID = re.compile(r"[0-9A-Za-z_-]{1,32}")


def _plausible(public_id: str) -> bool:
    # Anything else cannot match, and some input (NUL bytes) would make
    # PostgreSQL fail rather than find nothing.
    return _PUBLIC_ID.fullmatch(public_id) is not None


# Lookups on every request are built once; SQLAlchemy caches their compiled form.
_COURSE = select(Course).where(Course.public_id == bindparam("public_id"))
_COURSE_FOR_VIEWER = _COURSE.add_columns(rbac.VIEWER_ROLE, rbac.VIEWER_STATUS)
# Items are read with a Core statement and handed on as ordinary ORM objects
# (core.db.attach): on the learner's hot paths the ORM's per-row loading of
# three entities cost more than the query itself.
_ITEM_PARTS = tuple((model, tuple(model.__table__.columns)) for model in (Item, Course, Module))
_ITEM_COLUMNS = tuple(c for _, columns in _ITEM_PARTS for c in columns)
_ITEM_KEYS = tuple(
    (model, tuple(sa_mapper(model).get_property_by_column(c).key for c in columns))
    for model, columns in _ITEM_PARTS
)
_ITEM = (
    select(*_ITEM_COLUMNS)
    .select_from(
        Item.__table__.join(Course.__table__, Course.id == Item.course_id).join(
            Module.__table__, Module.id == Item.module_id
        )
    )
    .where(Item.public_id == bindparam("public_id"))
)
#: An item's, its course's and module's columns, and the viewer's role and
#: enrolment status in the course (bind ``public_id`` and ``viewer_id``); add
#: columns and run it with :func:`lookup_item`.
ITEM_FOR_VIEWER = _ITEM.add_columns(rbac.VIEWER_ROLE, rbac.VIEWER_STATUS)


def get_course(sess: Session, public_id: str, viewer: User | None = None) -> Course:
    """The course with this public id.

    :param viewer: also load this user's role in the course (see :func:`core.rbac.remember`).
    :raise CourseNotFound: there is none.
    """
    row: Any = None
    if _plausible(public_id):
        if viewer is None:
            row = sess.execute(_COURSE, {"public_id": public_id}).first()
        else:
            params = {"public_id": public_id, "viewer_id": viewer.id}
            row = sess.execute(_COURSE_FOR_VIEWER, params).first()
    if row is None:
        raise CourseNotFound("no such course")
    course: Course = row[0]
    if viewer is not None:
        rbac.remember(sess, viewer, course, row[1], row[2])
    return course


def get_module(sess: Session, public_id: str) -> tuple[Module, Course]:
    """The module with this public id and its course.

    :raise ModuleNotFound: there is none.
    """
    row = None
    if _plausible(public_id):
        row = sess.execute(
            select(Module, Course)
            .join(Course, Course.id == Module.course_id)
            .where(Module.public_id == public_id)
        ).first()
    if row is None:
        raise ModuleNotFound("no such module")
    return row[0], row[1]


def get_item(sess: Session, public_id: str, viewer: User | None = None) -> tuple[Item, Course]:
    """The item with this public id (its module loaded too) and its course.

    :param viewer: also load this user's role in the course (see :func:`core.rbac.remember`).
    :raise ItemNotFound: there is none.
    """
    if viewer is None:
        row = lookup_item(sess, _ITEM, public_id)
    else:
        row = lookup_item(sess, ITEM_FOR_VIEWER, public_id, viewer)
    return row[0], row[1]


def _item_parts(row: Any) -> list[dict[str, Any]]:
    """The item's, course's and module's column values of an :data:`_ITEM` row."""
    parts: list[dict[str, Any]] = []
    start = 0
    for _model, keys in _ITEM_KEYS:
        parts.append(dict(zip(keys, row[start : start + len(keys)], strict=True)))
        start += len(keys)
    return parts


def view_item(sess: Session, public_id: str, viewer: User) -> tuple[Item, Course]:
    """Like :func:`get_item` with a viewer, for reading: served from :mod:`core.readcache`.

    The item (its module set) and the course are snapshots that belong to no
    session: read them, never change them.  The viewer's standing is then
    known to :func:`core.rbac.access` (cached too).

    :raise ItemNotFound: there is none.
    """
    cache = readcache.current()
    if cache is None:
        return get_item(sess, public_id, viewer)
    row = cache.item(public_id)
    if row is None:
        if not _plausible(public_id):
            raise ItemNotFound("no such item")
        stamp = cache.item_stamp(public_id)
        found = read_first(sess, _ITEM, {"public_id": public_id})
        if found is None:
            raise ItemNotFound("no such item")
        parts = _item_parts(found)
        row = readcache.ItemRow(item=parts[0], course=parts[1], module=parts[2])
        cache.keep_item(sess, public_id, row, stamp)
    item, _module, course = row.objects()
    return item, course


def lookup_item(
    sess: Session, statement: Select[*tuple[Any, ...]], public_id: str, viewer: User | None = None
) -> tuple[Any, ...]:
    """Run an item lookup built on :data:`ITEM_FOR_VIEWER` (with more columns).

    Like :func:`get_item`; returns the item, course and module objects (the
    module also set as ``item.module``), then the role and enrolment status
    when ``viewer`` is given, then the statement's own extra columns.

    :raise ItemNotFound: there is none.
    """
    row: Any = None
    if _plausible(public_id):
        params: dict[str, Any] = {"public_id": public_id}
        if viewer is not None:
            params["viewer_id"] = viewer.id
        row = core_execute(sess, statement, params).first()
    if row is None:
        raise ItemNotFound("no such item")
    parts = _item_parts(row)
    item = attach(sess, Item, parts[0])
    course = attach(sess, Course, parts[1])
    module = attach(sess, Module, parts[2])
    set_committed_value(item, "module", module)
    start = len(_ITEM_COLUMNS)
    if viewer is not None:
        rbac.remember(sess, viewer, course, row[start], row[start + 1])
    return (item, course, module, *row[start:])


def get_enrolment(sess: Session, public_id: str) -> tuple[Enrolment, Course, User]:
    """The enrolment with this public id, its course and learner.

    :raise EnrolmentNotFound: there is none.
    """
    row = None
    if _plausible(public_id):
        row = sess.execute(
            select(Enrolment, Course, User)
            .join(Course, Course.id == Enrolment.course_id)
            .join(User, User.id == Enrolment.user_id)
            .where(Enrolment.public_id == public_id)
        ).first()
    if row is None:
        raise EnrolmentNotFound("no such enrolment")
    return row[0], row[1], row[2]


def find_user(sess: Session, public_id: str) -> User | None:
    """The active user with this public id, if any."""
    if not _plausible(public_id):
        return None
    return sess.scalar(select(User).where(User.public_id == public_id, User.is_active))


def modules_with_items(sess: Session, course: Course) -> list[Module]:
    """The course's modules in order, each with its items loaded in order."""
    return list(
        sess.scalars(
            select(Module)
            .where(Module.course_id == course.id)
            .order_by(Module.position, Module.id)
            .options(selectinload(Module.items))
        )
    )


# ---------------------------------------------------------------- courses


def _clean_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    if "description" in out:
        out["description"] = nh3.clean(out["description"])
    return out


def create_course(
    sess: Session, creator: User, fields: Mapping[str, Any], *, via_cli: bool = False
) -> Course:
    """Create a draft course; its creator becomes its first instructor.

    :param fields: validated course attributes (title, summary, …).
    :param via_cli: the operator's command line created it for ``creator``:
        audited with no actor, ``"via": "cli"`` and the owner, as other
        command-line changes are.
    """
    course = Course(**_clean_fields(fields), status="draft", created_by_id=creator.id)
    sess.add(course)
    sess.flush()
    sess.add(CourseRole(course_id=course.id, user_id=creator.id, role=rbac.INSTRUCTOR))
    rbac.forget(sess)
    if via_cli:
        audit(
            sess,
            None,
            "course.create",
            course,
            title=course.title,
            via="cli",
            owner=creator.public_id,
        )
    else:
        audit(sess, creator, "course.create", course, title=course.title)
    sess.flush()
    catalog_index.index_course(sess, course)
    return course


def update_course(sess: Session, actor: User, course: Course, changes: Mapping[str, Any]) -> Course:
    """Apply validated partial changes to a course's attributes."""
    for key, value in _clean_fields(changes).items():
        setattr(course, key, value)
    if changes:
        _touch(course)
        audit(sess, actor, "course.edit", course, fields=sorted(changes))
    sess.flush()
    catalog_index.index_course(sess, course)
    return course


_TRANSITIONS: dict[str, tuple[set[str], str]] = {
    "publish": ({"draft", "archived"}, "published"),
    "unpublish": ({"published"}, "draft"),
    "archive": ({"draft", "published"}, "archived"),
}


def change_status(sess: Session, actor: User, course: Course, transition: str) -> Course:
    """Publish, unpublish or archive a course.

    :param transition: ``"publish"``, ``"unpublish"`` or ``"archive"``.
    :raise InvalidTransition: the course's status does not allow it.
    """
    sources, target = _TRANSITIONS[transition]
    if course.status not in sources:
        raise InvalidTransition(f"cannot {transition} a {course.status} course")
    course.status = target
    if target == "published" and course.published_at is None:
        course.published_at = utcnow()
    _touch(course)
    audit(sess, actor, f"course.{transition}", course)
    sess.flush()
    catalog_index.index_course(sess, course)
    return course


def hash_invite_code(code: str) -> str:
    """The stored form of an invite code."""
    return hashlib.sha256(code.encode()).hexdigest()


def regenerate_invite_code(sess: Session, actor: User, course: Course) -> str:
    """Give the course a new invite code; the old one stops working.

    :return: the plaintext code (only its hash is stored).
    """
    code = secrets.token_urlsafe(12)
    course.invite_code_hash = hash_invite_code(code)
    audit(sess, actor, "course.invite_code", course)
    sess.flush()
    return code


def catalog(
    sess: Session,
    user: User,
    *,
    q: str | None = None,
    subject: str | None = None,
    language: str | None = None,
    level: str | None = None,
    status: str | None = None,
    before: int | None = None,
    limit: int = 20,
) -> tuple[list[Course], int | None]:
    """The courses ``user`` may see, newest first, one page at a time.

    Mirrors the ``course.view`` rule of :mod:`core.rbac` in SQL; a plugin's
    ``permission_allowed`` veto removes a course from the page afterwards.

    :param before: the cursor: only courses with a smaller internal id.
    :return: the page and the cursor key of the next page (None at the end).
    """
    stmt = select(Course)
    if not user.is_admin:
        staff = exists().where(CourseRole.course_id == Course.id, CourseRole.user_id == user.id)

        def enrolled(*statuses: str) -> Any:
            return exists().where(
                Enrolment.course_id == Course.id,
                Enrolment.user_id == user.id,
                Enrolment.status.in_(statuses),
            )

        stmt = stmt.where(
            or_(
                staff,
                and_(
                    Course.status == "published",
                    or_(Course.visibility != "private", enrolled("active", "pending")),
                ),
                and_(Course.status == "archived", enrolled("active")),
            )
        )
    if q:
        stmt = stmt.where(
            or_(
                Course.title.icontains(q, autoescape=True),
                Course.summary.icontains(q, autoescape=True),
            )
        )
    if subject:
        stmt = stmt.where(func.lower(Course.subject) == subject.lower())
    if language:
        stmt = stmt.where(func.lower(Course.language) == language.lower())
    if level:
        stmt = stmt.where(func.lower(Course.level) == level.lower())
    if status:
        stmt = stmt.where(Course.status == status)
    if before is not None:
        stmt = stmt.where(Course.id < before)
    rows = list(sess.scalars(stmt.order_by(Course.id.desc()).limit(limit + 1)))
    next_key = rows[limit - 1].id if len(rows) > limit else None
    page = [c for c in rows[:limit] if rbac.plugin_vote(user, "course.view", c) is not False]
    return page, next_key


# ---------------------------------------------------------------- modules


def add_module(sess: Session, course: Course, title: str, position: int | None = None) -> Module:
    """Add a module at ``position`` (the end by default)."""
    _lock(sess, course)
    siblings = list(
        sess.scalars(select(Module).where(Module.course_id == course.id).order_by(Module.position))
    )
    module = Module(course_id=course.id, title=title, position=len(siblings))
    sess.add(module)
    _insert_at(siblings, module, position)
    _touch(course)
    sess.flush()
    return module


def rename_module(sess: Session, course: Course, module: Module, title: str) -> Module:
    """Give a module a new title."""
    module.title = title
    _touch(course)
    sess.flush()
    return module


def move_module(sess: Session, course: Course, module: Module, position: int) -> Module:
    """Move one module to ``position`` among its siblings."""
    _lock(sess, course)
    siblings = list(
        sess.scalars(select(Module).where(Module.course_id == course.id).order_by(Module.position))
    )
    _insert_at(siblings, module, position)
    _touch(course)
    sess.flush()
    return module


def reorder_modules(sess: Session, course: Course, ids: Sequence[str]) -> list[Module]:
    """Put the course's modules in the order of ``ids``.

    :raise NotAPermutation: ``ids`` is not every module id exactly once.
    """
    _lock(sess, course)
    modules = list(
        sess.scalars(select(Module).where(Module.course_id == course.id).order_by(Module.position))
    )
    ordered = _permute(modules, ids, "module")
    _touch(course)
    sess.flush()
    return ordered


def delete_module(sess: Session, course: Course, module: Module) -> None:
    """Delete a module with its items (and learners' progress on them)."""
    _lock(sess, course)
    if sess.scalar(select(exists().where(Item.module_id == module.id, Item.required.is_(True)))):
        _rule_relaxed(sess, course)
    sess.delete(module)
    sess.flush()
    rest = sess.scalars(
        select(Module).where(Module.course_id == course.id).order_by(Module.position)
    )
    _renumber(rest)
    _touch(course)
    sess.flush()


# ---------------------------------------------------------------- items


def validate_item_config(item_type: str, config: Any, course: Course) -> dict[str, Any]:
    """Validate ``config`` for an item of ``course`` with the type called ``item_type``.

    :raise UnknownItemType: no such content type is installed.
    :raise InvalidItemConfig: the content type rejects the config.
    :raise ContentTypeFailed: the content type crashed.
    """
    try:
        ctype = plugin_host().content_type(item_type)
    except UnknownContentType:
        raise UnknownItemType(f"unknown content type {item_type!r}") from None
    try:
        return ctype.validate_for_course(config, CourseRef(id=course.public_id, key=course.id))
    except ItemConfigInvalid as exc:
        raise InvalidItemConfig(str(exc), errors=exc.errors) from exc
    except Exception as exc:
        raise content_type_failed(ctype, "validate_config", exc) from exc


def _items_of(sess: Session, module: Module) -> list[Item]:
    return list(
        sess.scalars(select(Item).where(Item.module_id == module.id).order_by(Item.position))
    )


def add_item(
    sess: Session,
    course: Course,
    module: Module,
    *,
    item_type: str,
    title: str,
    config: Any,
    required: bool = True,
    position: int | None = None,
) -> Item:
    """Add an item of ``item_type`` with a config its content type accepts.

    :raise UnknownItemType: no such content type is installed.
    :raise InvalidItemConfig: the content type rejects the config.
    """
    clean = validate_item_config(item_type, config, course)
    _lock(sess, course)
    siblings = _items_of(sess, module)
    item = Item(
        module_id=module.id,
        course_id=course.id,
        type=item_type,
        title=title,
        config=clean,
        required=required,
        position=len(siblings),
    )
    sess.add(item)
    _insert_at(siblings, item, position)
    _touch(course)
    sess.flush()
    return item


def update_item(sess: Session, course: Course, item: Item, changes: Mapping[str, Any]) -> Item:
    """Apply validated partial changes (``title``, ``config``, ``required``).

    :raise InvalidItemConfig: the content type rejects a new config.
    :raise UnknownItemType: the item's content type is not installed.
    """
    if "config" in changes:
        item.config = validate_item_config(item.type, changes["config"], course)
    if "title" in changes:
        item.title = changes["title"]
    if "required" in changes:
        if item.required and not changes["required"]:
            _rule_relaxed(sess, course)
        item.required = changes["required"]
    if changes:
        _touch(course)
    sess.flush()
    return item


def reorder_items(sess: Session, course: Course, module: Module, ids: Sequence[str]) -> list[Item]:
    """Put a module's items in the order of ``ids``.

    :raise NotAPermutation: ``ids`` is not every item id of the module exactly once.
    """
    _lock(sess, course)
    ordered = _permute(_items_of(sess, module), ids, "item")
    _touch(course)
    sess.flush()
    return ordered


def move_item(
    sess: Session,
    course: Course,
    item: Item,
    target_module_id: str,
    position: int | None = None,
) -> Item:
    """Move an item to ``position`` in a module of the same course.

    :param target_module_id: the public id of the destination module (may be
        the item's own module, to move it within it).
    :raise InvalidMoveTarget: the module does not exist in this course.
    """
    _lock(sess, course)
    target = sess.scalar(
        select(Module).where(Module.public_id == target_module_id, Module.course_id == course.id)
    )
    if target is None:
        raise InvalidMoveTarget(f"no module {target_module_id!r} in this course")
    if target.id != item.module_id:
        source = sess.get_one(Module, item.module_id)
        item.module_id = target.id
        sess.flush()
        _renumber(_items_of(sess, source))
    _insert_at(_items_of(sess, target), item, position)
    _touch(course)
    sess.flush()
    return item


def delete_item(sess: Session, course: Course, item: Item) -> None:
    """Delete an item (and learners' progress on it)."""
    _lock(sess, course)
    if item.required:
        _rule_relaxed(sess, course)
    module = sess.get_one(Module, item.module_id)
    sess.delete(item)
    sess.flush()
    _renumber(_items_of(sess, module))
    _touch(course)
    sess.flush()


# ---------------------------------------------------------------- staff


def list_staff(sess: Session, course: Course) -> list[tuple[CourseRole, User]]:
    """The course's instructors and TAs, oldest first."""
    rows = sess.execute(
        select(CourseRole, User)
        .join(User, User.id == CourseRole.user_id)
        .where(CourseRole.course_id == course.id)
        .order_by(CourseRole.id)
    )
    return [(r[0], r[1]) for r in rows]


def _instructor_count(sess: Session, course: Course) -> int:
    return (
        sess.scalar(
            select(func.count())
            .select_from(CourseRole)
            .where(CourseRole.course_id == course.id, CourseRole.role == rbac.INSTRUCTOR)
        )
        or 0
    )


def set_staff_role(
    sess: Session, actor: User, course: Course, user: User, role: str
) -> tuple[CourseRole, bool]:
    """Make ``user`` an instructor or TA of ``course`` (or change their role).

    :return: the role row and whether it was created.
    :raise LastInstructor: the course's only instructor would become a TA.
    """
    _lock(sess, course)
    row = sess.scalar(
        select(CourseRole).where(CourseRole.course_id == course.id, CourseRole.user_id == user.id)
    )
    created = row is None
    if row is None:
        row = CourseRole(course_id=course.id, user_id=user.id, role=role)
        sess.add(row)
    elif row.role != role:
        if row.role == rbac.INSTRUCTOR and _instructor_count(sess, course) <= 1:
            raise LastInstructor("a course needs at least one instructor")
        row.role = role
    rbac.forget(sess)
    audit(sess, actor, "course.staff_set", course, user=user.public_id, role=role)
    sess.flush()
    return row, created


def remove_staff(sess: Session, actor: User, course: Course, user: User) -> None:
    """Take ``user``'s staff role in ``course`` away.

    :raise NotStaff: they hold none.
    :raise LastInstructor: they are the course's only instructor.
    """
    _lock(sess, course)
    row = sess.scalar(
        select(CourseRole).where(CourseRole.course_id == course.id, CourseRole.user_id == user.id)
    )
    if row is None:
        raise NotStaff("this user is not on the course's staff")
    if row.role == rbac.INSTRUCTOR and _instructor_count(sess, course) <= 1:
        raise LastInstructor("a course needs at least one instructor")
    sess.delete(row)
    rbac.forget(sess)
    audit(sess, actor, "course.staff_remove", course, user=user.public_id)
    sess.flush()


# ---------------------------------------------------------------- enrolments


def find_enrolment(sess: Session, user: User, course: Course) -> Enrolment | None:
    """``user``'s enrolment row in ``course`` (any status), if any."""
    return sess.scalar(
        select(Enrolment).where(Enrolment.course_id == course.id, Enrolment.user_id == user.id)
    )


def _is_staff(sess: Session, user: User, course: Course) -> bool:
    return rbac.access(sess, user, course).is_staff


def _activated(sess: Session, user: User, course: Course) -> None:
    record_event(
        sess,
        user=user,
        verb="registered",
        object_id=course_iri(course),
        course=course,
    )
    log.info("enrolled course=%s user=%s", course.public_id, user.public_id)


def _save_new_enrolment(sess: Session, enrolment: Enrolment) -> None:
    # Two concurrent requests may both find no row; the unique constraint
    # decides, and the loser's transaction is abandoned with the request.
    sess.add(enrolment)
    try:
        sess.flush()
    except IntegrityError:
        raise AlreadyEnrolled("already enrolled in this course") from None


def enrol_self(
    sess: Session, user: User, course: Course, invite_code: str | None = None
) -> Enrolment:
    """Enrol ``user`` by the course's enrolment mode.

    ``open`` enrols at once, ``approval`` leaves a ``pending`` request for
    staff, ``invite`` needs the course's current invite code.

    :raise StaffCannotEnrol: the user is staff of the course.
    :raise AlreadyEnrolled: an active or pending enrolment exists.
    :raise EnrolmentRejected: staff rejected an earlier request.
    :raise InviteCodeInvalid: invite mode and the code is missing or wrong.
    """
    if _is_staff(sess, user, course):
        raise StaffCannotEnrol("course staff cannot enrol as learners")
    existing = find_enrolment(sess, user, course)
    if existing is not None and existing.status in {"active", "pending"}:
        raise AlreadyEnrolled(f"already enrolled in this course ({existing.status})")
    if existing is not None and existing.status == "rejected":
        raise EnrolmentRejected("your request to join was rejected; ask the course staff")
    if course.enrolment_mode == "invite":
        expected = course.invite_code_hash
        given = hash_invite_code(invite_code or "")
        if not invite_code or expected is None or not hmac.compare_digest(expected, given):
            raise InviteCodeInvalid("a valid invite code is needed to join this course")
    status = "pending" if course.enrolment_mode == "approval" else "active"
    if existing is None:
        enrolment = Enrolment(course_id=course.id, user_id=user.id, status=status)
        _save_new_enrolment(sess, enrolment)
    else:
        enrolment = existing
        enrolment.status = status
    rbac.forget(sess)
    if status == "active":
        _activated(sess, user, course)
    sess.flush()
    return enrolment


def add_learner(sess: Session, actor: User, course: Course, user: User) -> Enrolment:
    """Staff enrol ``user`` directly (any mode; overrides a rejection).

    :raise StaffCannotEnrol: the user is staff of the course.
    :raise AlreadyEnrolled: the user is already an active learner.
    """
    if _is_staff(sess, user, course):
        raise StaffCannotEnrol("course staff cannot enrol as learners")
    enrolment = find_enrolment(sess, user, course)
    if enrolment is not None and enrolment.status == "active":
        raise AlreadyEnrolled("this user is already enrolled")
    enrolment = _enrol_by_staff(sess, actor, course, user, enrolment)
    sess.flush()
    return enrolment


def _enrol_by_staff(
    sess: Session,
    actor: User | None,
    course: Course,
    user: User,
    enrolment: Enrolment | None,
    **detail: Any,
) -> Enrolment:
    """Make ``user`` an active learner, audited as ``enrolment.add`` with ``detail``.

    :param enrolment: the user's existing row in the course (withdrawn,
        rejected or pending), or None to add one.
    :raise AlreadyEnrolled: a concurrent request enrolled them first.
    """
    if enrolment is None:
        enrolment = Enrolment(course_id=course.id, user_id=user.id, status="active")
        _save_new_enrolment(sess, enrolment)
    else:
        enrolment.status = "active"
    rbac.forget(sess)
    audit(sess, actor, "enrolment.add", course, user=user.public_id, **detail)
    _activated(sess, user, course)
    return enrolment


def decide_enrolment(
    sess: Session, actor: User, course: Course, enrolment: Enrolment, learner: User, approve: bool
) -> Enrolment:
    """Approve or reject a pending enrolment.

    :raise EnrolmentStateInvalid: it is not pending.
    """
    if enrolment.status != "pending":
        raise EnrolmentStateInvalid(f"the enrolment is {enrolment.status}, not pending")
    enrolment.status = "active" if approve else "rejected"
    rbac.forget(sess)
    action = "enrolment.approve" if approve else "enrolment.reject"
    audit(sess, actor, action, course, user=learner.public_id)
    if approve:
        _activated(sess, learner, course)
    sess.flush()
    return enrolment


def withdraw(sess: Session, actor: User, course: Course, enrolment: Enrolment) -> Enrolment:
    """End an active or pending enrolment (the learner's progress is kept).

    :raise EnrolmentStateInvalid: it is already withdrawn or rejected.
    """
    if enrolment.status not in {"active", "pending"}:
        raise EnrolmentStateInvalid(f"the enrolment is already {enrolment.status}")
    enrolment.status = "withdrawn"
    rbac.forget(sess)
    if actor.id != enrolment.user_id:
        learner = sess.get(User, enrolment.user_id)
        audit(
            sess,
            actor,
            "enrolment.remove",
            course,
            enrolment=enrolment.public_id,
            user=learner.public_id if learner is not None else None,
        )
    sess.flush()
    return enrolment


def list_enrolments(
    sess: Session,
    course: Course,
    *,
    status: str | None = None,
    after: int | None = None,
    limit: int = 20,
) -> tuple[list[tuple[Enrolment, User]], int | None]:
    """A page of the course's enrolments with their users, oldest first."""
    stmt = (
        select(Enrolment, User)
        .join(User, User.id == Enrolment.user_id)
        .where(Enrolment.course_id == course.id)
    )
    if status:
        stmt = stmt.where(Enrolment.status == status)
    if after is not None:
        stmt = stmt.where(Enrolment.id > after)
    rows = [(r[0], r[1]) for r in sess.execute(stmt.order_by(Enrolment.id).limit(limit + 1))]
    next_key = rows[limit - 1][0].id if len(rows) > limit else None
    return rows[:limit], next_key


# ---------------------------------------------------------------- bulk enrolment

#: The most entries one bulk enrolment takes (a large lecture's class list).
MAX_BULK_ADDRESSES = 1000
#: The largest class list file read; 1,000 addresses in a CSV with other columns fit easily.
MAX_CLASS_LIST_BYTES = 512 * 1024
#: The longest address an account can have (``users.email``).
MAX_ADDRESS_LENGTH = 320

_SEPARATORS = re.compile(r"[,;\s]+")
_ADDRESS = re.compile(r"[^@\s,;<>\"\x00-\x1f\x7f]+@[^@\s,;<>\"\x00-\x1f\x7f]+")
_EMAIL_HEADERS = frozenset({"email", "e-mail", "email address", "e-mail address", "mail"})


class NoAddresses(ValidationFailed):
    """A class list holds no e-mail address at all."""

    type_slug = "no-addresses"


class TooManyAddresses(ValidationFailed):
    """A class list has more entries than :data:`MAX_BULK_ADDRESSES`."""

    type_slug = "too-many-addresses"


class InvalidAddresses(ValidationFailed):
    """Entries of a class list are not e-mail addresses.

    ``errors`` names each: its ``position`` (from 1, among the entries
    given), its ``value`` (shortened) and what is wrong (``msg``).
    """

    type_slug = "invalid-addresses"


class ClassListUnreadable(ValidationFailed):
    """A class list file is too large, not UTF-8 text, or not readable as CSV."""

    type_slug = "class-list-unreadable"


@dataclass(frozen=True)
class BulkEnrolled:
    """An address whose account was (or, in a dry run, would be) enrolled."""

    address: str
    user: User
    enrolment: Enrolment | None
    """The active enrolment; None in a dry run."""


@dataclass
class BulkEnrolment:
    """What :func:`enrol_many` did with each address of a class list, in the list's order."""

    dry_run: bool
    enrolled: list[BulkEnrolled] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    """Active learners already."""
    staff: list[str] = field(default_factory=list)
    """The course's instructors and TAs, who cannot be its learners."""
    unknown: list[str] = field(default_factory=list)
    """No active account has the address."""


def split_addresses(text: str) -> list[str]:
    """The entries of pasted text: one per line, or separated by commas, semicolons or spaces."""
    return [part for part in _SEPARATORS.split(text) if part]


def read_class_list(data: bytes) -> list[str]:
    """The entries of a class list file: UTF-8 text or CSV.

    In a CSV whose first row names an ``email`` column, that column's cells
    are the entries (so a cell without an address is reported, not
    skipped); otherwise every word containing ``@`` in any cell is one.
    Check the entries with :func:`normalise_addresses` (or
    :func:`enrol_many`).

    :raise ClassListUnreadable: larger than :data:`MAX_CLASS_LIST_BYTES`,
        not UTF-8, or broken CSV.
    """
    if len(data) > MAX_CLASS_LIST_BYTES:
        raise ClassListUnreadable(
            f"the file is larger than {MAX_CLASS_LIST_BYTES // 1024} KB; "
            f"a class list of {MAX_BULK_ADDRESSES:,} addresses is far smaller"
        )
    try:
        text = data.decode("utf-8-sig")  # spreadsheets often start UTF-8 with a BOM
    except UnicodeDecodeError as exc:
        raise ClassListUnreadable(
            f"the file is not UTF-8 text (byte {exc.start + 1}); "
            "save it as UTF-8 (spreadsheets: CSV UTF-8)"
        ) from None
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    delimiter = max(",;\t", key=first.count)
    try:
        rows = [row for row in csv.reader(lines, delimiter=delimiter) if any(map(str.strip, row))]
    except csv.Error as exc:
        raise ClassListUnreadable(f"the file is not readable as CSV: {exc}") from None
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    column = next((n for n, name in enumerate(header) if name in _EMAIL_HEADERS), None)
    if column is None:  # "Student e-mail", "University email address"
        column = next(
            (n for n, name in enumerate(header) if "email" in name or "e-mail" in name), None
        )
    if column is not None:
        cells = [row[column] for row in rows[1:] if column < len(row)]
        return [word for cell in cells for word in split_addresses(cell)]
    return [
        word
        for row in rows
        for cell in row
        if "@" in cell
        for word in split_addresses(cell)
        if "@" in word
    ]


def _address_problem(address: str) -> str | None:
    if len(address) > MAX_ADDRESS_LENGTH:
        return f"is longer than {MAX_ADDRESS_LENGTH} characters"
    if any(c.isspace() for c in address):
        return "contains a space"
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in address):
        return "contains an invisible or control character"
    if "@" not in address:
        return "has no @"
    if _ADDRESS.fullmatch(address) is None:
        return "is not an e-mail address"
    return None


def _shown(entry: str, limit: int = 80) -> str:
    """An entry as an error message quotes it: short, without control characters."""
    text = "".join(
        "\ufffd" if unicodedata.category(c) in ("Cc", "Cf") else c for c in entry[: limit + 1]
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


def normalise_addresses(entries: Iterable[str]) -> list[str]:
    """A class list's addresses: trimmed, lower-case, each once, in first-seen order.

    Blank entries are skipped; every other entry must be one e-mail address
    (split pasted text with :func:`split_addresses` first).

    :raise NoAddresses: there is none.
    :raise TooManyAddresses: more than :data:`MAX_BULK_ADDRESSES` entries.
    :raise InvalidAddresses: some entries are not e-mail addresses.
    """
    given = [(position, entry.strip()) for position, entry in enumerate(entries, 1)]
    given = [(position, entry) for position, entry in given if entry]
    if not given:
        raise NoAddresses("the class list holds no e-mail address")
    if len(given) > MAX_BULK_ADDRESSES:
        raise TooManyAddresses(
            f"the class list has {len(given):,} entries; at most "
            f"{MAX_BULK_ADDRESSES:,} are enrolled at once, so split it",
            limit=MAX_BULK_ADDRESSES,
            count=len(given),
        )
    addresses: dict[str, None] = {}
    errors: list[dict[str, Any]] = []
    for position, entry in given:
        address = entry.lower()
        reason = _address_problem(address)
        if reason is None:
            addresses.setdefault(address, None)
        else:
            errors.append({"position": position, "value": _shown(entry), "msg": reason})
    if errors:
        named = "; ".join(f"entry {e['position']} {e['value']!r} {e['msg']}" for e in errors[:5])
        more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
        count = (
            "1 entry is not an e-mail address"
            if len(errors) == 1
            else f"{len(errors)} entries are not e-mail addresses"
        )
        raise InvalidAddresses(f"{count} (nothing was stored): {named}{more}", errors=errors)
    return list(addresses)


def enrol_many(
    sess: Session,
    actor: User | None,
    course: Course,
    addresses: Iterable[str],
    *,
    dry_run: bool = False,
    via: str | None = None,
) -> BulkEnrolment:
    """Staff enrol a class list by e-mail address (any mode; overrides rejections).

    Each address is either ``enrolled`` (a new learner, or one whose
    enrolment was withdrawn, rejected or pending), ``already`` (an active
    learner), ``staff`` (the course's staff cannot be its learners) or
    ``unknown``: no active account has it, which is all a deactivated or
    erased account's address tells.  Every learner is enrolled as by
    :func:`add_learner`, audited as ``enrolment.add`` with ``"bulk": true``.

    :param actor: who enrols them; None for the operator's command line.
    :param addresses: the entries, as :func:`normalise_addresses` takes them.
    :param dry_run: only classify the addresses; nothing is written.
    :param via: also recorded in each audit entry (``"cli"``).
    :raise NoAddresses: there is no address; nothing was written.
    :raise TooManyAddresses: nothing was written.
    :raise InvalidAddresses: nothing was written.
    :raise AlreadyEnrolled: a concurrent request enrolled one of them first.
    """
    wanted = normalise_addresses(addresses)
    if not dry_run:
        # one class list of a course at a time: overlapping lists would lock
        # the same enrolments in different orders (a deadlock), and the later
        # one now sees the earlier one's learners as enrolled already
        _lock(sess, course)
    accounts = {
        user.email: user
        for user in sess.scalars(
            select(User).where(
                User.email.in_(wanted), User.is_active.is_(True), User.erased_at.is_(None)
            )
        )
    }
    ids = [user.id for user in accounts.values()]
    staff_ids = set(
        sess.scalars(
            select(CourseRole.user_id).where(
                CourseRole.course_id == course.id, CourseRole.user_id.in_(ids)
            )
        )
    )
    enrolments = {
        row.user_id: row
        for row in sess.scalars(
            select(Enrolment).where(Enrolment.course_id == course.id, Enrolment.user_id.in_(ids))
        )
    }
    detail: dict[str, Any] = {"bulk": True} if via is None else {"bulk": True, "via": via}
    result = BulkEnrolment(dry_run=dry_run)
    chosen: list[tuple[str, User]] = []
    for address in wanted:
        user = accounts.get(address)
        existing = enrolments.get(user.id) if user is not None else None
        if user is None:
            result.unknown.append(address)
        elif user.id in staff_ids:
            result.staff.append(address)
        elif existing is not None and existing.status == "active":
            result.already.append(address)
        else:
            chosen.append((address, user))
    made: dict[str, Enrolment | None] = {}
    # rows written in one order whatever the list's, as any other writer would meet them
    for address, user in sorted(chosen, key=lambda pair: pair[1].id):
        if dry_run:
            made[address] = None
            continue
        try:
            made[address] = _enrol_by_staff(
                sess, actor, course, user, enrolments.get(user.id), **detail
            )
        except AlreadyEnrolled:
            raise AlreadyEnrolled(
                f"{address} was enrolled in this course by someone else meanwhile; "
                "nothing was stored: send the list again",
                email=address,
            ) from None
    result.enrolled = [BulkEnrolled(address, user, made[address]) for address, user in chosen]
    sess.flush()
    log.info(
        "bulk_enrolment course=%s by=%s dry_run=%s enrolled=%d already=%d staff=%d unknown=%d",
        course.public_id,
        actor.public_id if actor is not None else "cli",
        dry_run,
        len(result.enrolled),
        len(result.already),
        len(result.staff),
        len(result.unknown),
    )
    return result
