"""Who may do what: site admins, per-course staff roles and enrolled learners.

Every permission check goes through :func:`can`.  Plugins vote first through
the ``permission_allowed`` hook: any ``False`` denies, otherwise any ``True``
allows, otherwise core's role table below decides.

Actions are dotted names.  Core's own:

=========================  =========================================================
``course.create``          site admins and users with ``can_create_courses``
``course.view``            see a course's outline: staff always; anyone, logged in or
                           not, for a published ``federated`` (public) course; anyone
                           logged in for a published ``instance`` course; enrolled
                           (active or pending) learners for a published ``private``
                           one; active learners for an archived one
``course.view_content``    open items: staff; active learners of a published or
                           archived (read-only) course
``course.enrol``           enrol oneself: a published course that is not private,
                           or a private one in ``invite`` mode
``course.edit``            edit the course, its modules and items: instructors
``course.publish``         publish and unpublish: instructors
``course.archive``         archive: instructors
``course.manage_staff``    add, change and remove instructors and TAs: instructors
``enrolment.manage``       approve, reject, add and remove learners: instructors
``enrolment.view``         list the course's enrolments: staff
``item.view_config``       see items' full config instead of the learner view: staff
``progress.view_all``      every learner's progress: staff
``progress.own``           report and read one's own progress: active learners of a
                           published or archived course
``events.view_all``        the course's learning events: staff
``site.plugins``           the plugin list and its failures: site admins
``site.audit``             the audit log: site admins
``site.jobs``              background jobs, their errors, and retrying failed ones:
                           site admins
``site.mail``              the outbox: every mail with its text (reset links,
                           invitation codes) and delivery, and sending failed or
                           kept mail again: site admins
=========================  =========================================================

Any other action (a plugin's own) is allowed to site admins only unless a
plugin votes.  Staff are instructors and TAs (``course_roles``); a learner
holds an ``active`` enrolment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app
from flask import has_app_context
from sqlalchemy import BindParameter
from sqlalchemy import ColumnElement
from sqlalchemy import ScalarSelect
from sqlalchemy import bindparam
from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.orm import Session

from core import db
from core import readcache
from core.errors import Forbidden
from core.errors import NotFound
from core.errors import Unauthorized
from core.models import Course
from core.models import CourseRole
from core.models import Enrolment
from core.models import User
from core.plugins import PluginHost

log = logging.getLogger(__name__)

INSTRUCTOR = "instructor"
TA = "ta"

#: Core's actions (see the module docstring); plugins may check their own.
ACTIONS = frozenset(
    {
        "course.create",
        "course.view",
        "course.view_content",
        "course.enrol",
        "course.edit",
        "course.publish",
        "course.archive",
        "course.manage_staff",
        "enrolment.manage",
        "enrolment.view",
        "item.view_config",
        "progress.view_all",
        "progress.own",
        "events.view_all",
        "site.plugins",
        "site.audit",
        "site.jobs",
        "site.mail",
    }
)

_INSTRUCTOR_ONLY = frozenset(
    {
        "course.edit",
        "course.publish",
        "course.archive",
        "course.manage_staff",
        "enrolment.manage",
    }
)
_STAFF_ONLY = frozenset(
    {"enrolment.view", "item.view_config", "progress.view_all", "events.view_all"}
)

_MEMO_KEY = "trivium.rbac.access"


@dataclass(frozen=True)
class Access:
    """A user's standing in one course."""

    staff_role: str | None
    enrolment_status: str | None

    @property
    def is_staff(self) -> bool:
        """An instructor or a TA."""
        return self.staff_role is not None

    @property
    def is_instructor(self) -> bool:
        """An instructor of the course."""
        return self.staff_role == INSTRUCTOR

    @property
    def is_learner(self) -> bool:
        """Holds an active enrolment."""
        return self.enrolment_status == "active"


def access_columns(
    user: User, course_id: ColumnElement[int] | InstrumentedAttribute[int] | int
) -> tuple[ScalarSelect[str], ScalarSelect[str]]:
    """Scalar subqueries for ``user``'s staff role and enrolment status.

    Add them to a query that loads a course (``course_id`` may be a column)
    and pass the values to :func:`remember`, to save a separate lookup.
    """
    role = (
        select(CourseRole.role)
        .where(CourseRole.course_id == course_id, CourseRole.user_id == user.id)
        .scalar_subquery()
    )
    status = (
        select(Enrolment.status)
        .where(Enrolment.course_id == course_id, Enrolment.user_id == user.id)
        .scalar_subquery()
    )
    return role, status


_COURSE_ID: BindParameter[int] = bindparam("course_id")
_USER_ID: BindParameter[int] = bindparam("user_id")
#: The ``viewer_id`` parameter of :data:`VIEWER_ROLE` and :data:`VIEWER_STATUS`.
VIEWER_ID: BindParameter[int] = bindparam("viewer_id")

#: The viewer's staff role and enrolment status in the enclosing query's
#: course, for statements built once at import: bind ``viewer_id`` when
#: executing, and pass the two values to :func:`remember`.
VIEWER_ROLE = (
    select(CourseRole.role)
    .where(CourseRole.course_id == Course.id, CourseRole.user_id == VIEWER_ID)
    .scalar_subquery()
)
VIEWER_STATUS = (
    select(Enrolment.status)
    .where(Enrolment.course_id == Course.id, Enrolment.user_id == VIEWER_ID)
    .scalar_subquery()
)

_ACCESS = select(
    select(CourseRole.role)
    .where(CourseRole.course_id == _COURSE_ID, CourseRole.user_id == _USER_ID)
    .scalar_subquery(),
    select(Enrolment.status)
    .where(Enrolment.course_id == _COURSE_ID, Enrolment.user_id == _USER_ID)
    .scalar_subquery(),
)


def remember(
    sess: Session, user: User, course: Course, role: str | None, status: str | None
) -> Access:
    """Memoise ``user``'s standing in ``course`` as loaded by the caller."""
    memo: dict[tuple[int, int], Access] = sess.info.setdefault(_MEMO_KEY, {})
    found = Access(staff_role=role, enrolment_status=status)
    memo[(user.id, course.id)] = found
    return found


def access(sess: Session, user: User, course: Course) -> Access:
    """Return ``user``'s role and enrolment status in ``course`` (one query).

    Memoised on the session until :func:`forget` is called, so one request
    asking several questions about the same course costs one lookup, and
    kept in :mod:`core.readcache` across requests.
    """
    memo: dict[tuple[int, int], Access] = sess.info.setdefault(_MEMO_KEY, {})
    found = memo.get((user.id, course.id))
    if found is not None:
        return found
    cache = readcache.current() if has_app_context() else None
    stamp: tuple[int, ...] = ()
    if cache is not None:
        cached: Access | None = cache.standing(user.id, course.id)
        if cached is not None:
            memo[(user.id, course.id)] = cached
            return cached
        stamp = cache.standing_stamp(user.id, course.id)
    row = db.read_first(sess, _ACCESS, {"course_id": course.id, "user_id": user.id})
    found = remember(sess, user, course, row[0], row[1])
    if cache is not None:
        cache.keep_standing(sess, user.id, course.id, found, stamp)
    return found


def forget(sess: Session) -> None:
    """Drop memoised roles; call after changing course roles or enrolments."""
    sess.info.pop(_MEMO_KEY, None)


def plugin_vote(user: User | None, action: str, course: Course | None) -> bool | None:
    """Ask the ``permission_allowed`` hook.

    :return: False if any plugin denies, True if none denies and one allows,
        None if every plugin abstains.
    """
    host: PluginHost = current_app.extensions["trivium.plugins"]
    votes = host.call("permission_allowed", user=user, action=action, course=course)
    if any(vote is False for vote in votes):
        return False
    if any(vote is True for vote in votes):
        return True
    return None


def role_allows(user: User, action: str, course: Course | None, standing: Access | None) -> bool:
    """Core's role table, without plugins (see the module docstring).

    :param standing: ``user``'s access in ``course``; needed when ``course`` is given.
    """
    if user.is_admin:
        return True
    if action == "course.create":
        return user.can_create_courses
    if course is None or standing is None or action not in ACTIONS:
        return False
    published = course.status == "published"
    archived = course.status == "archived"
    if action in _INSTRUCTOR_ONLY:
        return standing.is_instructor
    if action in _STAFF_ONLY:
        return standing.is_staff
    if action == "course.view":
        if standing.is_staff:
            return True
        if archived:
            return standing.is_learner
        if not published:
            return False
        return course.visibility != "private" or standing.enrolment_status in {
            "active",
            "pending",
        }
    if action == "course.view_content":
        return standing.is_staff or (standing.is_learner and (published or archived))
    if action == "course.enrol":
        return published and (course.visibility != "private" or course.enrolment_mode == "invite")
    if action == "progress.own":
        return standing.is_learner and (published or archived)
    return False  # pragma: no cover - every action in ACTIONS is handled above


def can(
    user: User | None,
    action: str,
    course: Course | None = None,
    *,
    sess: Session | None = None,
) -> bool:
    """Whether ``user`` may perform ``action`` (on ``course``).

    :param user: the acting user; None (anonymous) may only view published
        ``federated`` courses, and nothing else unless a plugin says so.
    :param action: a dotted action name, e.g. ``"course.edit"``.
    :param course: the course concerned, if any.
    :param sess: the session to look roles up in; the request's by default.
    """
    vote = plugin_vote(user, action, course)
    if vote is not None:
        return vote
    if user is None:
        return (
            action == "course.view"
            and course is not None
            and course.status == "published"
            and course.visibility == "federated"
        )
    standing = None
    if course is not None and not user.is_admin:
        standing = access(sess or db.session(), user, course)
    return role_allows(user, action, course, standing)


def require(
    user: User | None,
    action: str,
    course: Course | None = None,
    *,
    what: str = "course",
    sess: Session | None = None,
) -> None:
    """Raise unless :func:`can` allows ``action``.

    Someone who may not even see ``course`` gets a 404, so the check never
    reveals that a draft or private course exists.

    :param what: the kind of resource named in the 404 (``"item"``, ``"module"``).
    :raise Unauthorized: nobody is logged in.
    :raise NotFound: ``user`` may not see ``course``.
    :raise Forbidden: ``user`` sees the course but lacks the role for ``action``.
    """
    if can(user, action, course, sess=sess):
        return
    if user is None:
        raise Unauthorized("log in or send an API token")
    if course is not None and (
        action == "course.view" or not can(user, "course.view", course, sess=sess)
    ):
        raise NotFound(f"no such {what}")
    log.info("permission_denied user=%s action=%s", user.public_id, action)
    raise Forbidden(f"you are not allowed to do {action!r} here")


__all__ = [
    "ACTIONS",
    "VIEWER_ID",
    "VIEWER_ROLE",
    "VIEWER_STATUS",
    "Access",
    "access",
    "access_columns",
    "can",
    "forget",
    "remember",
    "require",
]
