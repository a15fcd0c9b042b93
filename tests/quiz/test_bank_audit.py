"""Changes to a course's question bank are in the audit log, by API and by page alike."""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.db import get_db
from core.models import AuditLog
from core.models import User
from tests.conftest import Users
from tests.course_helpers import call
from tests.course_helpers import ok
from tests.course_helpers import problem
from tests.quiz.web_world import browse_as
from tests.quiz.world import World
from tests.quiz.world import build_world
from tests.web_helpers import BROWSER

TRUE_FALSE = {"type": "true_false", "title": "Sky", "text": "The sky is blue.", "correct": True}


@pytest.fixture
def world(app: Flask, client: FlaskClient, users: Users) -> World:
    return build_world(app, client, users)


def _entries(app: Flask, prefix: str = "quiz.question.") -> list[tuple[str, str, str, Any]]:
    """(action, actor's email, target, detail) of the bank's audit entries, oldest first."""
    with get_db(app).session() as sess:
        rows = sess.execute(
            select(AuditLog.action, User.email, AuditLog.target, AuditLog.detail)
            .join(User, User.id == AuditLog.actor_id)
            .where(AuditLog.action.startswith(prefix))
            .order_by(AuditLog.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_creating_editing_and_deleting_a_question_by_api_is_audited(
    app: Flask, world: World
) -> None:
    qid = world.add_question(TRUE_FALSE)
    path = f"/quiz/questions/{qid}"
    changed = {"question": {**TRUE_FALSE, "correct": False}}
    ok(call(world.client, "PUT", path, world.instructor.headers, changed))
    assert call(world.client, "DELETE", path, world.instructor.headers).status_code == 204
    email, target = world.instructor.user.email, f"quiz_question:{qid}"
    course = world.course.id
    assert _entries(app)[-3:] == [
        (
            "quiz.question.create",
            email,
            target,
            {"course": course, "type": "true_false", "version": 1},
        ),
        (
            "quiz.question.edit",
            email,
            target,
            {"course": course, "type": "true_false", "version": 2},
        ),
        (
            "quiz.question.delete",
            email,
            target,
            {"course": course, "type": "true_false", "version": 2},
        ),
    ]


def test_refused_bank_changes_leave_no_audit_entry(app: Flask, world: World) -> None:
    before = _entries(app)
    bad = {"question": {**TRUE_FALSE, "correct": "maybe"}}
    url = f"/courses/{world.course.id}/quiz/questions"
    assert call(world.client, "POST", url, world.instructor.headers, bad).status_code == 422
    used = world.questions["true_false"]
    world.add_quiz("Uses it", questions=[used])
    problem(call(world.client, "DELETE", f"/quiz/questions/{used}", world.instructor.headers), 409)
    learner_try = call(world.client, "POST", url, world.learner.headers, {"question": TRUE_FALSE})
    assert learner_try.status_code in (403, 404)
    assert _entries(app) == before


def test_an_import_is_one_audit_entry(app: Flask, world: World) -> None:
    gift = "::A:: Two and two make four. {T}\n\n::B:: Snow is black. {F}\n"
    url = f"/courses/{world.course.id}/quiz/import"
    body = ok(call(world.client, "POST", url, world.instructor.headers, {"gift": gift}), 201)
    assert len(body["imported"]) == 2
    assert _entries(app, "quiz.question.import") == [
        (
            "quiz.question.import",
            world.instructor.user.email,
            f"course:{world.course.id}",
            {"questions": 2},
        )
    ]


def test_the_bank_pages_audit_like_the_api(app: Flask, world: World) -> None:
    staff = browse_as(app, world.instructor)
    qid = world.questions["true_false"]
    before = len(_entries(app))
    resp = staff.post(f"/teach/quiz/questions/{qid}/delete")
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    data = {
        "file": (io.BytesIO(b"::C:: Water is wet. {T}\n"), "q.gift"),
        "csrf_token": staff.csrf(),
        "category": "Imported",
    }
    resp = staff.client.post(
        f"/teach/courses/{world.course.id}/quiz/bank/import", data=data, headers=BROWSER
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    actions = [(a, who) for a, who, _, _ in _entries(app)[before:]]
    email = world.instructor.user.email
    assert actions == [("quiz.question.delete", email), ("quiz.question.import", email)]
