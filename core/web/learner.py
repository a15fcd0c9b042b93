"""Learner pages: the catalog, the dashboard, a course's page and the learn view.

Reads go through core's services (:mod:`core.catalog`, :mod:`core.courses`,
:mod:`core.progress`) and every course or item is checked with
:func:`core.rbac.require` like the JSON API does, so someone who may not see
a course gets the same 404.  Enrolling and marking an item complete are form
POSTs with the CSRF token; with JavaScript on, htmx posts the completion form
and swaps in the updated item status and progress sidebar.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import nh3
from flask import Blueprint
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_babel import gettext
from markupsafe import Markup
from markupsafe import escape
from sqlalchemy import BindParameter
from sqlalchemy import bindparam
from sqlalchemy import select
from werkzeug.wrappers.response import Response as BaseResponse

from core import catalog as catalog_index
from core import courses as svc
from core import db
from core import progress
from core import progress_buffer
from core import rbac
from core.auth import current_user
from core.content import ContentType
from core.content import ProgressState
from core.db import core_execute
from core.errors import Problem
from core.errors import Unauthorized
from core.models import Course
from core.models import Enrolment
from core.models import Item
from core.models import Module
from core.models import Progress
from core.models import User
from core.plugins import PluginHost
from core.plugins import UnknownContentType
from core.web.guards import login_required
from core.web.guards import login_url
from core.web.guards import user as page_user

log = logging.getLogger(__name__)

bp = Blueprint("learner", __name__)

CATALOG_PAGE = 20
DASHBOARD_PAGE = 50
MAX_QUERY = 200

Page = str | tuple[str, int] | BaseResponse


# ------------------------------------------------------------------ course outline


@dataclass(frozen=True)
class OutlineItem:
    """An item as the syllabus lists it (no config: that is loaded for the open item only)."""

    id: int
    public_id: str
    title: str
    required: bool


@dataclass(frozen=True)
class OutlineModule:
    """A module and its items, in order."""

    title: str
    items: list[OutlineItem]


@dataclass(frozen=True)
class Outline:
    """A course's modules and items in reading order, and which items a learner completed."""

    modules: list[OutlineModule]
    items: list[OutlineItem]
    done: frozenset[int]

    @property
    def counts(self) -> progress.Counts:
        """Required items and how many of them are complete."""
        required = [i for i in self.items if i.required]
        return progress.Counts(
            required=len(required), completed=sum(1 for i in required if i.id in self.done)
        )

    def resume(self) -> OutlineItem | None:
        """The first item not completed yet (the first item once all are)."""
        for item in self.items:
            if item.id not in self.done:
                return item
        return self.items[0] if self.items else None

    def neighbours(self, item_id: int) -> tuple[OutlineItem | None, OutlineItem | None]:
        """The items before and after ``item_id`` in reading order."""
        ids = [i.id for i in self.items]
        at = ids.index(item_id)
        before = self.items[at - 1] if at > 0 else None
        after = self.items[at + 1] if at + 1 < len(self.items) else None
        return before, after


_COURSE_KEY: BindParameter[int] = bindparam("course_id")
_OUTLINE_MODULES = (
    select(Module.id, Module.title)
    .where(Module.course_id == _COURSE_KEY)
    .order_by(Module.position, Module.id)
)
_OUTLINE_ITEMS = (
    select(Item.id, Item.public_id, Item.title, Item.required, Item.module_id)
    .join(Module, Module.id == Item.module_id)
    .where(Item.course_id == _COURSE_KEY)
    .order_by(Module.position, Item.position, Item.id)
)
# Completions are always written at once (only heartbeats wait in the
# progress buffer, and a heartbeat never completes an item), so the table
# alone says what is done.
_DONE = select(Progress.item_id).where(
    Progress.course_id == _COURSE_KEY,
    Progress.user_id == bindparam("user_id"),
    Progress.completed_at.is_not(None),
)


def outline(course: Course, learner: User | None) -> Outline:
    """The syllabus of ``course`` and ``learner``'s completions (three column-only queries)."""
    sess = db.session()
    params = {"course_id": course.id}
    modules = {
        row.id: OutlineModule(row.title, []) for row in core_execute(sess, _OUTLINE_MODULES, params)
    }
    items = []
    for row in core_execute(sess, _OUTLINE_ITEMS, params):
        item = OutlineItem(row.id, row.public_id, row.title, bool(row.required))
        modules[row.module_id].items.append(item)
        items.append(item)
    done: frozenset[int] = frozenset()
    if learner is not None:
        done = frozenset(core_execute(sess, _DONE, {**params, "user_id": learner.id}).scalars())
    return Outline(modules=list(modules.values()), items=items, done=done)


# ------------------------------------------------------------------ catalog


def _safe_link(url: str) -> str | None:
    """A catalog entry's link if it is a path here or an http(s) URL (peers are not trusted)."""
    if url.startswith("/") and not url.startswith("//"):
        return url
    parts = urlsplit(url)
    if parts.scheme in {"http", "https"} and parts.netloc:
        return url
    return None


@bp.get("/catalog")
def catalog() -> Page:
    """Search local and federated courses by words, subject, language, level and institution."""
    q = request.args.get("q", "").strip()[:MAX_QUERY]
    filters = {
        name: request.args.get(name, "").strip()
        for name in catalog_index.FACETS
        if request.args.get(name, "").strip()
    }
    cursor = request.args.get("cursor") or None
    result = catalog_index.search(
        db.session(),
        q or None,
        filters=filters,
        viewer=current_user(),
        cursor=cursor,
        limit=CATALOG_PAGE,
    )
    hits = [(hit, _safe_link(hit.url)) for hit in result.entries]
    params: dict[str, Any] = {"q": q or None, **filters}
    next_url = None
    if result.next_cursor:
        next_url = url_for("learner.catalog", cursor=result.next_cursor, **params)
    first_url = url_for("learner.catalog", **params) if cursor else None
    return render_template(
        "learner/catalog.html",
        q=q,
        filters=filters,
        facets=result.facets,
        hits=hits,
        next_url=next_url,
        first_url=first_url,
        local_institution=current_app.extensions["trivium.settings"].instance.name,
    )


# ------------------------------------------------------------------ dashboard


@dataclass(frozen=True)
class Resume:
    """Where a learner left off: the course and the item to open next."""

    course: Course
    item: OutlineItem | None


def _resume_item(user: User, course: Course) -> OutlineItem | None:
    """The first item of the course the learner has not completed (else the first item)."""
    return outline(course, user).resume()


_USER_KEY: BindParameter[int] = bindparam("user_id")
_LAST_TOUCHED = (
    select(Course)
    .join(Progress, Progress.course_id == Course.id)
    .join(Enrolment, (Enrolment.course_id == Course.id) & (Enrolment.user_id == _USER_KEY))
    .where(
        Progress.user_id == _USER_KEY,
        Enrolment.status == "active",
        Course.status.in_(("published", "archived")),
    )
    .order_by(Progress.updated_at.desc(), Progress.id.desc())
    .limit(1)
)


def _last_touched(user: User) -> Resume | None:
    """The course the learner last made progress in, among their active enrolments."""
    row = db.session().execute(_LAST_TOUCHED, {"user_id": user.id}).first()
    if row is None:
        return None
    course: Course = row[0]
    return Resume(course=course, item=_resume_item(user, course))


@bp.get("/dashboard")
@login_required
def dashboard() -> Page:
    """My courses with progress, and a link to continue where I left off."""
    user = page_user()
    mine, _ = progress.my_courses(db.session(), user, limit=DASHBOARD_PAGE)
    learning = [m for m in mine if m.role == "learner" or m.enrolment_status == "pending"]
    teaching = [m for m in mine if m.role in {rbac.INSTRUCTOR, rbac.TA}]
    return render_template(
        "learner/dashboard.html",
        learning=learning,
        teaching=teaching,
        resume=_last_touched(user),
    )


# ------------------------------------------------------------------ course page


def _load_course(course_id: str, action: str = "course.view") -> tuple[User | None, Course]:
    """The course if the visitor may see it (anonymous visitors: public courses).

    :raise NotFound: no such course, or not visible to this visitor.
    :raise Unauthorized: an anonymous visitor asked for a course that is not public.
    """
    user = current_user()
    sess = db.session()
    course = svc.get_course(sess, course_id[:64], user)
    rbac.require(user, action, course)
    return user, course


@bp.get("/courses/<course_id>")
def course_page(course_id: str) -> Page:
    """A course's syllabus, instructors and the enrol button for its enrolment mode."""
    if current_user() is None:
        try:
            user, course = _load_course(course_id)
        except (svc.CourseNotFound, Unauthorized):
            return redirect(login_url())
    else:
        user, course = _load_course(course_id)
    return _course_page(user, course)


def _course_page(
    user: User | None, course: Course, *, invite_error: str | None = None, status: int = 200
) -> tuple[str, int]:
    sess = db.session()
    staff = [(role.role, person) for role, person in svc.list_staff(sess, course)]
    enrolment = svc.find_enrolment(sess, user, course) if user is not None else None
    standing = rbac.access(sess, user, course) if user is not None else None
    learning = standing is not None and standing.is_learner
    syllabus = outline(course, user if learning else None)
    return (
        render_template(
            "learner/course.html",
            course=course,
            modules=syllabus.modules,
            staff=staff,
            enrolment=enrolment,
            standing=standing,
            done=syllabus.done,
            counts=syllabus.counts if learning else None,
            resume=syllabus.resume() if learning else None,
            can_enrol=user is not None and rbac.can(user, "course.enrol", course),
            can_view_content=user is not None and rbac.can(user, "course.view_content", course),
            description=Markup(_clean_html(course.description)),  # noqa: S704 - sanitised
            item_href=_item_href(),
            invite_error=invite_error,
        ),
        status,
    )


#: Descriptions up to this length are sanitised once and remembered (256 of
#: them at most, so a worker keeps a few megabytes); longer ones every time.
CLEAN_MEMO_MAX_CHARS = 20_000


def _clean_html(html: str) -> str:
    """``html`` sanitised for the page (course pages are hot, descriptions change rarely)."""
    text = html or ""
    if len(text) > CLEAN_MEMO_MAX_CHARS:
        return nh3.clean(text)
    return _clean_short_html(text)


@lru_cache(maxsize=256)
def _clean_short_html(html: str) -> str:
    return nh3.clean(html)


def _enrol_refusal(exc: Problem) -> str:
    """A translated sentence for a refused enrolment."""
    if isinstance(exc, svc.AlreadyEnrolled):
        return str(gettext("You are already enrolled in this course."))
    if isinstance(exc, svc.EnrolmentRejected):
        return str(
            gettext(
                "Your request to join was declined. "
                "Ask the course staff if you think this is a mistake."
            )
        )
    return str(gettext("You teach this course, so you cannot enrol as a learner."))


@bp.post("/courses/<course_id>/enrol")
@login_required
def enrol(course_id: str) -> Page:
    """Join the course by its enrolment mode (open, approval, invite code)."""
    _, course = _load_course(course_id, "course.enrol")
    user = page_user()
    sess = db.session()
    code = request.form.get("invite_code", "").strip()[:200] or None
    try:
        enrolment = svc.enrol_self(sess, user, course, code)
    except svc.InviteCodeInvalid:
        sess.rollback()
        _, course = _load_course(course_id)
        message = gettext("This invite code is not valid for this course.")
        if not code:
            message = gettext("Enter the invite code you received from the course staff.")
        return _course_page(user, course, invite_error=message, status=403)
    except (svc.AlreadyEnrolled, svc.EnrolmentRejected, svc.StaffCannotEnrol) as exc:
        sess.rollback()
        flash(_enrol_refusal(exc), "error")
        return redirect(url_for("learner.course_page", course_id=course_id))
    sess.commit()
    if enrolment.status == "pending":
        flash(
            gettext("Your request to join has been sent. You will get access once it is approved."),
            "success",
        )
    else:
        flash(gettext("You are enrolled. Welcome to %(title)s!", title=course.title), "success")
    return redirect(url_for("learner.course_page", course_id=course.public_id))


@bp.post("/courses/<course_id>/leave")
@login_required
def leave(course_id: str) -> Page:
    """Withdraw from the course (or cancel a pending request); progress is kept."""
    _, course = _load_course(course_id)
    user = page_user()
    sess = db.session()
    enrolment = svc.find_enrolment(sess, user, course)
    if enrolment is None or enrolment.status not in {"active", "pending"}:
        flash(gettext("You are not enrolled in this course."), "error")
        return redirect(url_for("learner.course_page", course_id=course.public_id))
    svc.withdraw(sess, user, course, enrolment)
    sess.commit()
    flash(gettext("You have left %(title)s.", title=course.title), "success")
    return redirect(url_for("learner.dashboard"))


@bp.get("/courses/<course_id>/learn")
@login_required
def resume(course_id: str) -> Page:
    """Continue where the learner left off: the first item not yet completed."""
    _, course = _load_course(course_id, "course.view_content")
    user = page_user()
    item = _resume_item(user, course)
    if item is None:
        flash(gettext("This course has no items yet."), "info")
        return redirect(url_for("learner.course_page", course_id=course.public_id))
    return redirect(url_for("learner.learn", item_id=item.public_id))


# ------------------------------------------------------------------ learn view


def _item_href() -> str:
    """The learn view's URL without the item id, for the syllabus's many links.

    One ``url_for`` per page instead of one per item; item public ids are
    hex, so appending one needs no quoting.
    """
    return url_for("learner.learn", item_id="0")[:-1]


def _host() -> PluginHost:
    host: PluginHost = current_app.extensions["trivium.plugins"]
    return host


def _render_item(item: Item, course: Course, state: ProgressState) -> Markup:
    """The item's content through its content type; a failing type gets a notice, not a 500."""
    try:
        ctype: ContentType = _host().content_type(item.type)
    except UnknownContentType:
        return Markup('<p class="notice">{}</p>').format(
            gettext("This item's content type (%(type)s) is not installed here.", type=item.type)
        )
    try:
        html = ctype.render_learner_html(progress.item_view(item, course), state)
    except Exception as exc:
        _host().record_failure(f"content:{item.type}", "render_learner_html", exc)
        return Markup('<p class="plugin-failed" role="status">{}</p>').format(
            gettext("The content type %(type)s failed to show this item.", type=item.type)
        )
    return html if isinstance(html, Markup) else escape(html)


def _learn_page(user: User, item: Item, course: Course, status: int = 200) -> tuple[str, int]:
    sess = db.session()
    syllabus = outline(course, user)
    state = progress.state_of(progress.item_progress(sess, user, item))
    previous_item, next_item = syllabus.neighbours(item.id)
    return (
        render_template(
            "learner/learn.html",
            course=course,
            item=item,
            modules=syllabus.modules,
            done=syllabus.done,
            counts=syllabus.counts,
            state=state,
            completed=item.id in syllabus.done,
            previous_item=previous_item,
            next_item=next_item,
            content=_render_item(item, course, state),
            item_href=_item_href(),
            can_report=_learner_completes(item)
            and course.status == "published"
            and rbac.can(user, "progress.own", course),
        ),
        status,
    )


def _learner_completes(item: Item) -> bool:
    """Whether the item's type lets learners mark it complete themselves."""
    try:
        return _host().content_type(item.type).learner_completes
    except UnknownContentType:
        return False


def _load_item(item_id: str, action: str) -> tuple[User, Item, Course]:
    user = page_user()
    item, course = svc.get_item(db.session(), item_id[:64], user)
    rbac.require(user, action, course, what="item")
    return user, item, course


@bp.get("/learn/<item_id>")
@login_required
def learn(item_id: str) -> Page:
    """One item with the course's navigation and the learner's progress."""
    user, item, course = _load_item(item_id, "course.view_content")
    return _learn_page(user, item, course)


@bp.post("/learn/<item_id>/complete")
@login_required
def complete(item_id: str) -> Page:
    """Mark the item complete (through the content type's progress rules)."""
    user = page_user()
    sess = db.session()
    item, course = progress.load_item_for_report(sess, item_id[:64], user)
    rbac.require(user, "progress.own", course, what="item")
    try:
        outcome = progress.report_progress(
            sess, user, item, course, {"status": "completed"}, buffer=progress_buffer.get_buffer()
        )
    except Problem:
        sess.rollback()
        raise
    sess.commit()
    progress.announce(outcome)
    if outcome.course_completed:
        flash(gettext("Congratulations, you completed %(title)s!", title=course.title), "success")
    if request.headers.get("HX-Request") == "true":
        return _learn_page(user, item, course)
    flash(gettext("“%(title)s” is marked as complete.", title=item.title), "success")
    _, after = outline(course, user).neighbours(item.id)
    return redirect(url_for("learner.learn", item_id=(after or item).public_id))
