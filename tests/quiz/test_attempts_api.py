"""Taking quizzes through the API: start, autosave, submit, review, history, progress, events."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.db import get_db
from plugins.quiz.models import Answer
from plugins.quiz.models import Attempt
from tests.conftest import Users
from tests.course_helpers import call
from tests.course_helpers import ok
from tests.course_helpers import problem
from tests.quiz.world import World
from tests.quiz.world import build_world
from tests.quiz.world import right_answers

AUTO = [
    "single_choice",
    "multiple_response",
    "true_false",
    "numeric",
    "short_answer",
    "cloze",
    "matching",
    "ordering",
]


@pytest.fixture
def world(app: Flask, client: FlaskClient, users: Users) -> World:
    return build_world(app, client, users)


def verbs(world: World) -> list[str]:
    body = ok(
        call(
            world.client,
            "GET",
            f"/courses/{world.course.id}/events?limit=100",
            world.instructor.headers,
        )
    )
    return [e["verb"].rsplit("/", 1)[-1] for e in body["items"]]


def test_a_learner_takes_a_quiz_and_passes(world: World) -> None:
    quiz = world.add_quiz(questions=[world.questions[n] for n in AUTO], passing_score=0.8)
    attempt = world.start(quiz)
    assert attempt["status"] == "in_progress"
    assert [q["id"] for q in attempt["questions"]] == [world.questions[n] for n in AUTO]
    assert attempt["max_score"] == 8
    assert attempt["score"] is None

    answers = right_answers(world)
    first = {k: v for k, v in list(answers.items())[:4]}
    saved = ok(
        call(
            world.client,
            "PUT",
            f"/quiz/attempts/{attempt['id']}/answers",
            world.learner.headers,
            {"answers": first},
        )
    )
    assert sorted(saved["saved"]) == sorted(first)
    assert saved["graded"] == {}
    resumed = world.start(quiz, status=200)
    assert resumed["id"] == attempt["id"]
    assert resumed["questions"] == attempt["questions"]
    assert resumed["answers"] == first

    result = world.submit(attempt["id"], {k: v for k, v in list(answers.items())[4:]})
    assert result["status"] == "graded"
    assert result["score"] == 8
    assert result["passed"] is True
    assert result["review_available"] is True

    again = world.submit(attempt["id"], {world.questions["true_false"]: False})
    assert again == result

    progress = ok(call(world.client, "GET", f"/items/{quiz}/progress", world.learner.headers))
    assert progress["status"] == "completed"
    assert progress["score"] == 1.0

    history = ok(call(world.client, "GET", f"/items/{quiz}/quiz/attempts", world.learner.headers))
    assert [a["id"] for a in history["items"]] == [attempt["id"]]
    assert history["attempts_used"] == 1

    review = ok(
        call(world.client, "GET", f"/quiz/attempts/{attempt['id']}/review", world.learner.headers)
    )
    by_id = {q["question"]["id"]: q for q in review["questions"]}
    single = by_id[world.questions["single_choice"]]
    assert single["score"] == 1.0
    assert single["correct_response"] == "c-paris"
    assert "Right, Paris." in single["feedback"]

    seen = verbs(world)
    for verb in ("attempted", "answered", "completed", "scored", "passed"):
        assert verb in seen, verb


def test_failing_and_a_second_attempt_keep_the_best_score(world: World) -> None:
    tf = world.questions["true_false"]
    single = world.questions["single_choice"]
    quiz = world.add_quiz(questions=[tf, single], attempts_allowed=2, passing_score=1.0)
    first = world.start(quiz)
    result = world.submit(first["id"], {tf: True, single: "c-nice"})
    assert result["score"] == 1 and result["passed"] is False
    assert "failed" in verbs(world)
    progress = ok(call(world.client, "GET", f"/items/{quiz}/progress", world.learner.headers))
    assert progress["status"] == "in_progress" and progress["score"] == 0.5

    second = world.start(quiz)
    assert second["id"] != first["id"]
    world.submit(second["id"], {tf: False})
    progress = ok(call(world.client, "GET", f"/items/{quiz}/progress", world.learner.headers))
    assert progress["score"] == 0.5

    body = problem(
        call(world.client, "POST", f"/items/{quiz}/quiz/attempts", world.learner.headers), 409
    )
    assert "attempt" in body["detail"]


def test_essays_wait_for_a_grader_and_the_mark_updates_the_attempt(world: World) -> None:
    essay = world.questions["essay"]
    tf = world.questions["true_false"]
    quiz = world.add_quiz(questions=[tf, essay], passing_score=0.75)
    attempt = world.start(quiz)
    result = world.submit(attempt["id"], {tf: True, essay: "Three causes: a, b and c."})
    assert result["status"] == "awaiting_grading"
    assert result["passed"] is None
    progress = ok(call(world.client, "GET", f"/items/{quiz}/progress", world.learner.headers))
    assert progress["status"] != "completed"

    queue = ok(
        call(world.client, "GET", f"/courses/{world.course.id}/quiz/grading", world.ta.headers)
    )
    assert [(e["attempt_id"], e["question_id"]) for e in queue["items"]] == [(attempt["id"], essay)]
    assert queue["items"][0]["grader_info"] == "Look for three distinct causes."

    marked = ok(
        call(
            world.client,
            "PUT",
            f"/quiz/attempts/{attempt['id']}/answers/{essay}/mark",
            world.ta.headers,
            {"points": 0.5, "feedback": "Name the third."},
        )
    )
    assert marked["status"] == "graded"
    assert marked["score"] == 1.5
    assert marked["passed"] is True
    queue = ok(
        call(world.client, "GET", f"/courses/{world.course.id}/quiz/grading", world.ta.headers)
    )
    assert queue["items"] == []
    progress = ok(call(world.client, "GET", f"/items/{quiz}/progress", world.learner.headers))
    assert progress["status"] == "completed"
    assert progress["score"] == 0.75
    review = ok(
        call(world.client, "GET", f"/quiz/attempts/{attempt['id']}/review", world.learner.headers)
    )
    essay_review = next(q for q in review["questions"] if q["question"]["id"] == essay)
    assert "Name the third." in essay_review["feedback"]
    assert "passed" in verbs(world)


def test_pools_draw_reproducibly_per_attempt_and_differently_between_attempts(
    world: World,
) -> None:
    ids = [
        world.add_question(
            {"type": "true_false", "text": f"Claim {n}", "correct": True, "tags": ["pool"]}
        )
        for n in range(8)
    ]
    quiz = world.add_quiz(
        pools=[{"tag": "pool", "count": 3}], attempts_allowed=0, shuffle_questions=True
    )
    draws = []
    for _ in range(6):
        attempt = world.start(quiz)
        drawn = [q["id"] for q in attempt["questions"]]
        assert len(drawn) == 3 and set(drawn) <= set(ids)
        again = ok(
            call(world.client, "GET", f"/quiz/attempts/{attempt['id']}", world.learner.headers)
        )
        assert [q["id"] for q in again["questions"]] == drawn
        world.submit(attempt["id"])
        draws.append(tuple(drawn))
    assert len(set(draws)) > 1


def test_the_seed_is_secret_and_stable(app: Flask) -> None:
    from plugins.quiz.attempts import attempt_seed

    with app.app_context():
        seed = attempt_seed("a" * 32)
        assert seed == attempt_seed("a" * 32)
        assert seed != attempt_seed("b" * 32)
        app.config["SECRET_KEY"] = "another secret"
        assert seed != attempt_seed("a" * 32)


def test_immediate_review_grades_and_locks_each_saved_answer(world: World) -> None:
    tf = world.questions["true_false"]
    single = world.questions["single_choice"]
    quiz = world.add_quiz(questions=[tf, single], review="immediately")
    attempt = world.start(quiz)
    saved = ok(
        call(
            world.client,
            "PUT",
            f"/quiz/attempts/{attempt['id']}/answers",
            world.learner.headers,
            {"answers": {tf: False}},
        )
    )
    assert saved["graded"][tf]["score"] == 0
    assert saved["graded"][tf]["correct_response"] is True
    problem(
        call(
            world.client,
            "PUT",
            f"/quiz/attempts/{attempt['id']}/answers",
            world.learner.headers,
            {"answers": {tf: True}},
        ),
        409,
    )
    resumed = world.start(quiz, status=200)
    assert list(resumed["graded"]) == [tf]


def test_review_after_close_waits_for_the_last_attempt(world: World) -> None:
    tf = world.questions["true_false"]
    quiz = world.add_quiz(questions=[tf], review="after_close", attempts_allowed=2)
    first = world.start(quiz)
    world.submit(first["id"], {tf: True})
    problem(
        call(world.client, "GET", f"/quiz/attempts/{first['id']}/review", world.learner.headers),
        409,
    )
    second = world.start(quiz)
    result = world.submit(second["id"], {tf: True})
    assert result["review_available"] is True
    ok(call(world.client, "GET", f"/quiz/attempts/{first['id']}/review", world.learner.headers))


def test_an_overdue_attempt_is_graded_from_what_was_saved_in_time(world: World) -> None:
    tf = world.questions["true_false"]
    single = world.questions["single_choice"]
    quiz = world.add_quiz(questions=[tf, single], time_limit_seconds=600)
    attempt = world.start(quiz)
    assert attempt["deadline"] is not None
    ok(
        call(
            world.client,
            "PUT",
            f"/quiz/attempts/{attempt['id']}/answers",
            world.learner.headers,
            {"answers": {tf: True}},
        )
    )
    world.expire(attempt["id"])
    out = ok(call(world.client, "GET", f"/quiz/attempts/{attempt['id']}", world.learner.headers))
    assert out["status"] == "graded"
    assert out["score"] == 1


def test_closed_and_not_yet_open_quizzes_refuse_attempts(world: World) -> None:
    tf = world.questions["true_false"]
    later = world.add_quiz(questions=[tf], open_at="2999-01-01T00:00:00Z")
    over = world.add_quiz(questions=[tf], close_at="2001-01-01T00:00:00Z")
    for quiz in (later, over):
        problem(
            call(world.client, "POST", f"/items/{quiz}/quiz/attempts", world.learner.headers), 409
        )
    with get_db(world.app).session() as sess:
        assert sess.scalars(select(Attempt)).all() == []


def test_staff_review_any_submitted_attempt_in_full(world: World) -> None:
    tf = world.questions["true_false"]
    quiz = world.add_quiz(questions=[tf], review="after_close", show_correct_answers=False)
    attempt = world.start(quiz)
    world.submit(attempt["id"], {tf: False})
    review = ok(
        call(world.client, "GET", f"/quiz/attempts/{attempt['id']}/review", world.ta.headers)
    )
    assert review["learner"]["id"] == world.learner.id
    assert review["questions"][0]["correct_response"] is True


def answer_for(world: World, name: str) -> Any:
    return right_answers(world)[world.questions[name]]


def test_concurrent_submits_grade_the_attempt_once(world: World) -> None:
    tf = world.questions["true_false"]
    single = world.questions["single_choice"]
    quiz = world.add_quiz(questions=[tf, single])
    attempt = world.start(quiz)
    url = f"/api/v1/quiz/attempts/{attempt['id']}/submit"
    barrier = threading.Barrier(4)
    results: list[tuple[int, Any]] = []

    def submit() -> None:
        client = world.app.test_client()
        barrier.wait()
        resp = client.post(url, headers=world.learner.headers, json={"answers": {tf: True}})
        results.append((resp.status_code, resp.get_json()))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = [body for status, body in results if status == 200]
    assert done, results
    assert all(status in (200, 409) for status, _ in results), results
    assert all(body == done[0] for body in done)
    with get_db(world.app).session() as sess:
        stored = sess.scalars(select(Answer)).all()
    assert sorted(a.question_id for a in stored) == sorted([tf, single])
    assert [v for v in verbs(world) if v in ("scored", "passed", "failed")] == ["passed", "scored"]


def test_an_abandoned_timed_attempt_is_graded_by_a_job(world: World) -> None:
    from core import tasks
    from plugins.quiz.jobs import close_overdue

    tf = world.questions["true_false"]
    quiz = world.add_quiz(questions=[tf], time_limit_seconds=60)
    attempt = world.start(quiz)
    ok(
        call(
            world.client,
            "PUT",
            f"/quiz/attempts/{attempt['id']}/answers",
            world.learner.headers,
            {"answers": {tf: True}},
        )
    )
    queued = [j for j in tasks.get_jobs(world.app).list_jobs() if j.actor == "quiz.close_overdue"]
    assert len(queued) == 1
    with world.app.app_context():
        close_overdue(attempt["id"])  # not due yet: nothing happens
    assert world.start(quiz, status=200)["status"] == "in_progress"
    world.expire(attempt["id"])
    with world.app.app_context():
        close_overdue(attempt["id"])
        close_overdue(attempt["id"])
    history = ok(call(world.client, "GET", f"/items/{quiz}/quiz/attempts", world.learner.headers))
    assert [(a["status"], a["score"]) for a in history["items"]] == [("graded", 1.0)]
    progress = ok(call(world.client, "GET", f"/items/{quiz}/progress", world.learner.headers))
    assert progress["status"] == "completed"


def test_the_close_date_cuts_the_time_limit_short(world: World) -> None:
    from datetime import UTC
    from datetime import datetime
    from datetime import timedelta

    closes = (datetime.now(UTC) + timedelta(minutes=5)).replace(microsecond=0)
    quiz = world.add_quiz(
        questions=[world.questions["true_false"]],
        time_limit_seconds=3600,
        close_at=closes.isoformat(),
    )
    attempt = world.start(quiz)
    assert datetime.fromisoformat(attempt["deadline"]) == closes
    content = ok(call(world.client, "GET", f"/items/{quiz}", world.learner.headers))["content"]
    assert content["time_limit_seconds"] == 3600
    assert content["question_count"] == 1


def test_the_learn_view_shows_the_rules_and_the_learners_standing(world: World) -> None:
    from core.content import ItemView
    from core.content import ProgressState
    from plugins.quiz.content import QuizType

    config = {"questions": ["q1", "q2"], "passing_score": 0.7, "time_limit_seconds": 600}
    view = ItemView(id="i", course_id="c", title="<Quiz>", config=config)
    with world.app.test_request_context():
        html = str(QuizType().render_learner_html(view, ProgressState()))
        assert "70 %" in html and "10 min" in html and "best score" not in html
        done = ProgressState("completed", 0.8, {"passed": True})
        html = str(QuizType().render_learner_html(view, done))
    assert "80 %" in html and "Passed" in html
    assert "q1" not in html


def test_the_learn_page_of_a_quiz_shows_the_standing_and_no_answer_key(
    world: World, users: Users
) -> None:
    from tests.auth_helpers import PASSWORD
    from tests.course_helpers import enrol
    from tests.course_helpers import person
    from tests.web_helpers import Pages

    tf = world.questions["true_false"]
    quiz = world.add_quiz(questions=[tf, world.questions["single_choice"]], passing_score=0.75)
    learner = person(users, "web@example.org", password=PASSWORD)
    enrol(world.client, world.course, learner)
    attempt = world.start(quiz, learner)
    world.submit(attempt["id"], {tf: True}, learner)
    pages = Pages(world.client)
    assert pages.post("/login", {"email": "web@example.org", "password": PASSWORD}).status_code
    page = pages.get(f"/learn/{quiz}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "quiz-summary" in text
    assert "<dd>75 %</dd>" in text
    assert "Your best score</dt><dd>50 %</dd>" in text
    for secret in ("Yes, in the east.", "Right, Paris.", "c-paris", "Secret title"):
        assert secret not in text
