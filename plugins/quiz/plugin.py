"""The quiz plugin's hook implementations: how it plugs into core, like any plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint
from markupsafe import Markup

from core import db
from core import hookimpl
from core import rbac
from core.content import ContentType
from core.models import Course
from core.models import User
from core.tasks import ActorSpec
from plugins.quiz import api
from plugins.quiz import jobs
from plugins.quiz import models  # noqa: F401  (declares the quiz tables on core.db.Base)
from plugins.quiz import privacy
from plugins.quiz import transfer
from plugins.quiz import web
from plugins.quiz.content import QuizType

__all__ = [
    "export_course_data",
    "export_user_data",
    "import_course_data",
    "permission_allowed",
    "register_actors",
    "register_blueprints",
    "register_content_types",
    "register_migrations",
    "template_slot",
]

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"

_INSTRUCTOR_ACTIONS = frozenset({"quiz.bank.edit"})
_STAFF_ACTIONS = frozenset({"quiz.bank.view", "quiz.grade", "quiz.gradebook", "quiz.analysis"})


@hookimpl
def register_migrations() -> list[str]:
    """The ``quiz`` Alembic branch: question bank, attempts, answers."""
    return [str(MIGRATIONS)]


@hookimpl
def register_content_types() -> list[type[ContentType]]:
    """The ``quiz`` content type."""
    return [QuizType]


@hookimpl
def register_blueprints() -> list[Blueprint]:
    """The quiz API under ``/api/v1`` and the quiz pages."""
    return [api.bp, web.bp]


@hookimpl
def template_slot(slot: str, context: dict[str, Any]) -> Markup | None:
    """Start or resume a quiz and its attempt history after a quiz in the learn view;
    links to the grading, gradebook and question bank pages in a course's sidebar (staff)."""
    if slot == "item_after":
        return web.quiz_links(context.get("user"), context.get("item"), context.get("course"))
    if slot == "course_sidebar":
        return web.staff_links(context.get("user"), context.get("course"))
    return None


@hookimpl
def register_actors() -> list[ActorSpec]:
    """Grading attempts whose time ran out."""
    return [jobs.close_overdue]


@hookimpl
def permission_allowed(user: User | None, action: str, course: Course | None) -> bool | None:
    """Decide the ``quiz.*`` actions (listed in :mod:`plugins.quiz.api`); abstain on others."""
    if not action.startswith("quiz.") or user is None or course is None:
        return None
    if user.is_admin:
        return True
    standing = rbac.access(db.session(), user, course)
    if action in _INSTRUCTOR_ACTIONS:
        return standing.is_instructor
    if action in _STAFF_ACTIONS:
        return standing.is_staff
    if action == "quiz.attempt":
        return rbac.can(user, "progress.own", course)
    return False


@hookimpl
def export_user_data(user: User) -> dict[str, Any] | None:
    """The person's attempts and answers (grades as the review policy shows them), and
    the answers they graded (see :mod:`plugins.quiz.privacy`)."""
    return privacy.export_user_data(user)


@hookimpl
def withhold_from_export(user: User, statements: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per-question scores of attempts whose review is still closed stay out of the export."""
    return privacy.withhold_from_export(user, statements)


@hookimpl
def export_course_data(course: Course) -> dict[str, Any] | None:
    """The course's question bank (see :mod:`plugins.quiz.transfer`)."""
    return transfer.export_course_data(course)


@hookimpl
def import_course_data(course: Course, data: dict[str, Any]) -> dict[str, Any] | None:
    """The exported question bank in the new course; ``{"questions": {old: new}}``."""
    return transfer.import_course_data(course, data)
