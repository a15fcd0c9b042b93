"""Quiz staff pages over HTTP: grading queue, gradebook, item analysis, question bank."""

from __future__ import annotations

import io

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func
from sqlalchemy import select

from core.db import get_db
from plugins.quiz.models import Answer
from plugins.quiz.models import Attempt
from plugins.quiz.models import BankQuestion
from tests.conftest import Users
from tests.conftest import snapshot
from tests.quiz.web_world import browse_as
from tests.quiz.web_world import text
from tests.quiz.world import World
from tests.quiz.world import build_world
from tests.web_helpers import BROWSER
from tests.web_helpers import Pages

GIFT = """::Capital::What is the capital of France? {=Paris ~Lyon ~Nice}

::Broken::This question never closes {=yes ~no

::Sky::The sky is blue. {T}
"""


@pytest.fixture
def world(app: Flask, client: FlaskClient, users: Users) -> World:
    return build_world(app, client, users)


def _essay_submitted(world: World, text_: str = "Three causes: a, b and c.") -> str:
    essay = world.questions["essay"]
    quiz = world.add_quiz("Essays", questions=[essay, world.questions["true_false"]])
    attempt = world.start(quiz)
    world.submit(attempt["id"], {essay: text_, world.questions["true_false"]: True})
    return str(attempt["id"])


def _mark_url(attempt: str, question: str) -> str:
    return f"/teach/quiz/attempts/{attempt}/questions/{question}/mark"


def test_instructor_marks_an_essay_from_the_queue(app: Flask, world: World) -> None:
    attempt = _essay_submitted(world, "Causes <b>one</b> and two")
    staff = browse_as(app, world.ta)
    learn_sidebar = text(staff.get(f"/courses/{world.course.id}"))
    assert "Grading queue" in learn_sidebar
    queue = text(staff.get(f"/teach/courses/{world.course.id}/quiz/grading"))
    assert "Causes &lt;b&gt;one&lt;/b&gt; and two" in queue  # the learner's text, escaped
    assert "Look for three distinct causes." in queue  # grader notes are for staff
    essay = world.questions["essay"]
    resp = staff.post(_mark_url(attempt, essay), {"points": "0.5", "feedback": "Good start."})
    assert resp.status_code == 302
    assert "No answers are waiting" in text(staff.get(resp.headers["Location"]))
    with get_db(app).session() as sess:
        row = sess.scalar(select(Attempt).where(Attempt.public_id == attempt))
        assert row is not None and row.status == "graded"
        answer = sess.scalar(
            select(Answer).where(Answer.attempt_id == row.id, Answer.question_id == essay)
        )
        assert answer is not None and answer.feedback == "Good start."
    # the learner sees the mark and the feedback
    result = text(browse_as(app, world.learner).get(f"/quiz/attempts/{attempt}/result"))
    assert "Good start." in result


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"points": "lots"}, "Enter the points as a number."),
        ({"points": "7"}, "points must be between 0 and 1"),
        ({"points": "-1"}, "points must be between 0 and 1"),
        ({"points": "0.5", "feedback": "x" * 10_001}, "The feedback is too long."),
    ],
)
def test_bad_marks_are_refused_inline(
    app: Flask, world: World, form: dict[str, str], message: str
) -> None:
    attempt = _essay_submitted(world)
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    resp = staff.post(_mark_url(attempt, world.questions["essay"]), form)
    assert resp.status_code == 422
    assert message in text(resp)
    assert snapshot(app) == before


def test_marking_an_auto_graded_question_is_refused(app: Flask, world: World) -> None:
    attempt = _essay_submitted(world)
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    resp = staff.post(_mark_url(attempt, world.questions["true_false"]), {"points": "1"})
    assert resp.status_code == 422
    assert "graded automatically" in text(resp)
    assert snapshot(app) == before


def test_learners_cannot_reach_staff_pages(app: Flask, world: World) -> None:
    attempt = _essay_submitted(world)
    quiz = world.add_quiz("Other", questions=[world.questions["true_false"]])
    learner = browse_as(app, world.learner)
    before = snapshot(app)
    course = world.course.id
    for path in (
        f"/teach/courses/{course}/quiz/grading",
        f"/teach/courses/{course}/quiz/gradebook",
        f"/teach/courses/{course}/quiz/bank",
        f"/teach/quizzes/{quiz}/analysis",
    ):
        assert learner.get(path).status_code in (403, 404), path
    resp = learner.post(_mark_url(attempt, world.questions["essay"]), {"points": "1"})
    assert resp.status_code in (403, 404)
    data = {"file": (io.BytesIO(GIFT.encode()), "q.gift"), "csrf_token": learner.csrf()}
    resp = learner.client.post(
        f"/teach/courses/{course}/quiz/bank/import", data=data, headers=BROWSER
    )
    assert resp.status_code in (403, 404)
    assert snapshot(app) == before


def test_staff_forms_need_the_csrf_token(app: Flask, world: World) -> None:
    attempt = _essay_submitted(world)
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    resp = staff.post(_mark_url(attempt, world.questions["essay"]), {"points": "1"}, csrf="x")
    assert resp.status_code == 400
    assert snapshot(app) == before


def test_gradebook_and_analysis_pages(app: Flask, world: World) -> None:
    tf = world.questions["true_false"]
    quiz = world.add_quiz("Week 1", questions=[tf])
    attempt = world.start(quiz)
    world.submit(attempt["id"], {tf: True})
    staff = browse_as(app, world.ta)
    page = text(staff.get(f"/teach/courses/{world.course.id}/quiz/gradebook"))
    assert "Week 1" in page and "Ann" in page and "100 %" in page
    assert f"/api/v1/courses/{world.course.id}/quiz/gradebook?format=csv" in page
    csv_resp = staff.get(f"/api/v1/courses/{world.course.id}/quiz/gradebook?format=csv")
    assert csv_resp.status_code == 200 and "Week 1 (best %)" in text(csv_resp)
    analysis = text(staff.get(f"/teach/quizzes/{quiz}/analysis"))
    assert "1 graded attempts." in analysis and "Secret title" in analysis


def _import(pages: Pages, course: str, content: bytes, name: str = "q.gift") -> object:
    data = {"file": (io.BytesIO(content), name), "csrf_token": pages.csrf(), "category": "Imp"}
    return pages.client.post(
        f"/teach/courses/{course}/quiz/bank/import", data=data, headers=BROWSER
    )


def _bank_size(app: Flask) -> int:
    with get_db(app).session() as sess:
        return int(sess.scalar(select(func.count(BankQuestion.id))) or 0)


def test_gift_import_lists_skipped_questions_with_lines(app: Flask, world: World) -> None:
    staff = browse_as(app, world.instructor)
    bank = text(staff.get(f"/teach/courses/{world.course.id}/quiz/bank"))
    assert "Secret title" in bank and "Export as GIFT" in bank
    size = _bank_size(app)
    resp = _import(staff, world.course.id, GIFT.encode())
    page = text(resp)  # type: ignore[arg-type]
    assert resp.status_code == 200  # type: ignore[attr-defined]
    assert "Imported 2 question(s)." in page
    assert "Line 3" in page and "Broken" in page
    assert _bank_size(app) == size + 2
    with get_db(app).session() as sess:
        categories = set(sess.scalars(select(BankQuestion.category)))
    assert "Imp" in categories
    export = staff.get(f"/api/v1/courses/{world.course.id}/quiz/export?format=gift")
    assert export.status_code == 200 and "Capital" in text(export)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xc3\x28 not UTF-8", ""),
        (b"::Open::Never closed {=yes ~no", "No question could be read"),
        (b"", "Choose a GIFT file"),
    ],
)
def test_unreadable_gift_files_store_nothing(
    app: Flask, world: World, content: bytes, message: str
) -> None:
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    if content:
        resp = _import(staff, world.course.id, content)
    else:
        data = {"csrf_token": staff.csrf()}
        resp = staff.client.post(
            f"/teach/courses/{world.course.id}/quiz/bank/import", data=data, headers=BROWSER
        )
    assert resp.status_code == 422  # type: ignore[attr-defined]
    assert message in text(resp)
    assert 'role="alert"' in text(resp)
    assert snapshot(app) == before


def test_teaching_assistants_see_the_bank_but_cannot_import(app: Flask, world: World) -> None:
    staff = browse_as(app, world.ta)
    page = text(staff.get(f"/teach/courses/{world.course.id}/quiz/bank"))
    assert "Secret title" in page and "Import a GIFT file" not in page
    before = snapshot(app)
    resp = _import(staff, world.course.id, GIFT.encode())
    assert resp.status_code == 403  # type: ignore[attr-defined]
    assert snapshot(app) == before
