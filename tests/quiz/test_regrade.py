"""Regrading a question after its answer key changed: API, rights, idempotence, progress."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event
from sqlalchemy import select

from core.db import get_db
from core.models import AuditLog
from core.models import Item
from core.models import Progress
from plugins.quiz.models import Answer
from plugins.quiz.models import Attempt
from tests.conftest import Users
from tests.conftest import snapshot
from tests.course_helpers import Person
from tests.course_helpers import call
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.course_helpers import problem
from tests.quiz.web_world import browse_as
from tests.quiz.web_world import text
from tests.quiz.world import World
from tests.quiz.world import build_world


@pytest.fixture
def world(app: Flask, client: FlaskClient, users: Users) -> World:
    return build_world(app, client, users)


def _question(world: World, qid: str) -> dict[str, Any]:
    body: dict[str, Any] = ok(
        call(world.client, "GET", f"/quiz/questions/{qid}", world.instructor.headers)
    )["question"]
    return body


def _put(world: World, qid: str, body: dict[str, Any]) -> None:
    ok(
        call(
            world.client,
            "PUT",
            f"/quiz/questions/{qid}",
            world.instructor.headers,
            {"question": body},
        )
    )


def _regrade(world: World, qid: str, who: Person | None = None, status: int = 200) -> Any:
    resp = call(
        world.client, "POST", f"/quiz/questions/{qid}/regrade", (who or world.instructor).headers
    )
    if status == 200:
        return ok(resp)
    return problem(resp, status)


def _attempt(app: Flask, public_id: str) -> Attempt:
    with get_db(app).session() as sess:
        row = sess.scalar(select(Attempt).where(Attempt.public_id == public_id))
        assert row is not None
        sess.expunge(row)
        return row


def _progress(app: Flask, world: World, quiz: str, who: Person) -> Progress:
    with get_db(app).session() as sess:
        item = sess.scalar(select(Item).where(Item.public_id == quiz))
        assert item is not None
        row = sess.scalar(
            select(Progress).where(Progress.item_id == item.id, Progress.user_id == who.user.id)
        )
        assert row is not None
        sess.expunge(row)
        return row


def _swap_key(world: World, qid: str) -> None:
    """Make Lyon the right answer and Paris worth a quarter."""
    body = _question(world, qid)
    for choice in body["choices"]:
        choice["weight"] = {"c-paris": 0.25, "c-lyon": 1.0}.get(choice["id"], 0.0)
    _put(world, qid, body)


def test_regrade_applies_the_current_key_and_follows_through(app: Flask, world: World) -> None:
    sc, tf = world.questions["single_choice"], world.questions["true_false"]
    quiz = world.add_quiz("Capitals", questions=[sc, tf], passing_score=0.9)
    first = world.start(quiz)
    world.submit(first["id"], {sc: "c-lyon", tf: True})
    second = world.start(quiz, world.other)
    world.submit(second["id"], {sc: "c-paris", tf: True}, who=world.other)
    assert _attempt(app, first["id"]).score == 1.25
    assert _progress(app, world, quiz, world.learner).status == "in_progress"

    _swap_key(world, sc)
    # editing the bank alone changes no graded attempt
    assert _attempt(app, first["id"]).score == 1.25

    report = _regrade(world, sc)
    assert report["attempts_checked"] == 2
    assert report["attempts_changed"] == 2
    assert report["skipped"] == []
    ann = _attempt(app, first["id"])
    assert ann.score == 2.0 and ann.passed is True and ann.status == "graded"
    assert ann.snapshot[sc]["choices"][1]["weight"] == 1.0  # the review shows the key used
    bob = _attempt(app, second["id"])
    assert bob.score == 1.25 and bob.passed is False
    progress = _progress(app, world, quiz, world.learner)
    assert progress.status == "completed" and progress.score == 1.0
    assert _progress(app, world, quiz, world.other).score == 0.625
    with get_db(app).session() as sess:
        entries = list(
            sess.scalars(select(AuditLog).where(AuditLog.action == "quiz.question.regrade"))
        )
    assert len(entries) == 1
    assert entries[0].target == f"quiz_question:{sc}"
    assert entries[0].detail["changed"] == 2

    # a second regrade changes nothing but its own audit entry
    before = snapshot(app)
    again = _regrade(world, sc)
    assert again["attempts_checked"] == 2 and again["attempts_changed"] == 0
    after = snapshot(app)
    assert {k: v for k, v in after.items() if k != "audit_log"} == {
        k: v for k, v in before.items() if k != "audit_log"
    }


def test_regrade_keeps_manual_essay_marks(app: Flask, world: World) -> None:
    sc, essay = world.questions["single_choice"], world.questions["essay"]
    quiz = world.add_quiz("Mixed", questions=[sc, essay])
    attempt = world.start(quiz)
    world.submit(attempt["id"], {sc: "c-lyon", essay: "Three causes."})
    ok(
        call(
            world.client,
            "PUT",
            f"/quiz/attempts/{attempt['id']}/answers/{essay}/mark",
            world.ta.headers,
            {"points": 0.5, "feedback": "Half."},
        )
    )
    assert _attempt(app, attempt["id"]).score == 0.75
    _swap_key(world, sc)
    report = _regrade(world, sc)
    assert report["attempts_changed"] == 1
    row = _attempt(app, attempt["id"])
    assert row.score == 1.5 and row.status == "graded"
    with get_db(app).session() as sess:
        mark = sess.scalar(
            select(Answer).where(Answer.attempt_id == row.id, Answer.question_id == essay)
        )
        assert mark is not None and mark.score == 0.5 and mark.feedback == "Half."


def test_points_change_updates_the_maximum(app: Flask, world: World) -> None:
    tf = world.questions["true_false"]
    quiz = world.add_quiz("TF", questions=[tf])
    attempt = world.start(quiz)
    world.submit(attempt["id"], {tf: True})
    body = _question(world, tf)
    body["points"] = 4
    _put(world, tf, body)
    assert _regrade(world, tf)["attempts_changed"] == 1
    row = _attempt(app, attempt["id"])
    assert row.score == 4.0 and row.max_score == 4.0


def test_attempts_in_progress_are_left_alone(app: Flask, world: World) -> None:
    sc = world.questions["single_choice"]
    quiz = world.add_quiz("Open", questions=[sc])
    attempt = world.start(quiz)
    _swap_key(world, sc)
    before = _attempt(app, attempt["id"])
    report = _regrade(world, sc)
    assert report["attempts_checked"] == 0 and report["attempts_changed"] == 0
    after = _attempt(app, attempt["id"])
    assert after.snapshot == before.snapshot and after.status == "in_progress"


def test_a_response_that_no_longer_fits_is_skipped(app: Flask, world: World) -> None:
    sc = world.questions["single_choice"]
    quiz = world.add_quiz("Removed", questions=[sc])
    attempt = world.start(quiz)
    world.submit(attempt["id"], {sc: "c-nice"})
    body = _question(world, sc)
    body["choices"] = [c for c in body["choices"] if c["id"] != "c-nice"]
    _put(world, sc, body)
    before = snapshot(app)
    report = _regrade(world, sc)
    assert report["attempts_changed"] == 0
    assert [s["attempt_id"] for s in report["skipped"]] == [attempt["id"]]
    assert "does not fit" in report["skipped"][0]["reason"]
    after = snapshot(app)
    assert {k: v for k, v in after.items() if k != "audit_log"} == {
        k: v for k, v in before.items() if k != "audit_log"
    }


def test_essays_cannot_be_regraded(app: Flask, world: World) -> None:
    before = snapshot(app)
    body = _regrade(world, world.questions["essay"], status=409)
    assert body["type"].endswith("quiz-not-regradable")
    assert snapshot(app) == before


@pytest.mark.parametrize("who", ["learner", "ta", "outsider", "stranger"])
def test_only_the_course_instructors_may_regrade(
    app: Flask, world: World, users: Users, who: str
) -> None:
    sc = world.questions["single_choice"]
    quiz = world.add_quiz("Capitals", questions=[sc])
    attempt = world.start(quiz)
    world.submit(attempt["id"], {sc: "c-lyon"})
    _swap_key(world, sc)
    if who == "stranger":
        # an instructor of another course
        caller = person(users, "prof2@example.org", creator=True)
        ok(call(world.client, "POST", "/courses", caller.headers, {"title": "Other"}), 201)
    else:
        caller = getattr(world, who)
    before = snapshot(app)
    resp = call(world.client, "POST", f"/quiz/questions/{sc}/regrade", caller.headers)
    assert resp.status_code in (403, 404), resp.get_data(as_text=True)
    assert snapshot(app) == before
    assert _attempt(app, attempt["id"]).score == 0.25


def test_unknown_question_is_a_404(app: Flask, world: World) -> None:
    before = snapshot(app)
    _regrade(world, "nope", status=404)
    assert snapshot(app) == before


def test_an_attempt_awaiting_a_grader_is_regraded_but_stays_waiting(
    app: Flask, world: World
) -> None:
    sc, essay = world.questions["single_choice"], world.questions["essay"]
    quiz = world.add_quiz("Pending", questions=[sc, essay])
    attempt = world.start(quiz)
    world.submit(attempt["id"], {sc: "c-lyon", essay: "Unmarked."})
    _swap_key(world, sc)
    assert _regrade(world, sc)["attempts_changed"] == 1
    row = _attempt(app, attempt["id"])
    assert row.status == "awaiting_grading" and row.score == 1.0 and row.passed is None
    with get_db(app).session() as sess:
        item = sess.scalar(select(Item).where(Item.public_id == quiz))
        assert item is not None
        progress = sess.scalar(
            select(Progress).where(
                Progress.item_id == item.id, Progress.user_id == world.learner.user.id
            )
        )
        assert progress is None or progress.score is None


def _review(world: World, attempt: str, who: Person | None = None) -> dict[str, Any]:
    body: dict[str, Any] = ok(
        call(
            world.client,
            "GET",
            f"/quiz/attempts/{attempt}/review",
            (who or world.learner).headers,
        )
    )
    return body


def test_the_review_shows_the_version_the_attempt_was_regraded_with(
    app: Flask, world: World
) -> None:
    sc = world.questions["single_choice"]
    quiz = world.add_quiz("Capitals", questions=[sc], shuffle_choices=True)
    attempt = world.start(quiz)
    seen = [c["id"] for c in attempt["questions"][0]["choices"]]
    world.submit(attempt["id"], {sc: "c-lyon"})

    # reworded, worth 3 points, and a new choice is now the only right one
    body = _question(world, sc)
    body["text"] = "Which city hosted the royal court?"
    body["points"] = 3
    for choice in body["choices"]:
        choice["weight"] = 0.0
    body["choices"].append({"id": "c-versailles", "text": "Versailles", "weight": 1.0})
    _put(world, sc, body)
    assert _regrade(world, sc)["attempts_changed"] == 1

    review = _review(world, attempt["id"])
    entry = review["questions"][0]
    shown = entry["question"]
    assert shown["text"] == "Which city hosted the royal court?"
    assert shown["points"] == 3
    # the learner's order kept, the new choice after it
    assert [c["id"] for c in shown["choices"]] == [*seen, "c-versailles"]
    assert {c["id"]: c["text"] for c in shown["choices"]}["c-versailles"] == "Versailles"
    assert entry["correct_response"] == "c-versailles"
    assert entry["points"] == 0.0
    # no answer key in the learner's view
    assert all(set(c) == {"id", "text"} for c in shown["choices"])

    pages = browse_as(app, world.learner)
    page = text(pages.get(f"/quiz/attempts/{attempt['id']}/result"))
    assert "Which city hosted the royal court?" in page
    assert "Capital of France?" not in page
    assert re.search(r"Correct answer:</strong>\s*Versailles", page), page
    assert "c-versailles" not in page
    assert re.search(r"Points:</strong>\s*0 / 3", page)


def test_a_regrade_counts_the_attempts_in_progress(app: Flask, world: World) -> None:
    sc = world.questions["single_choice"]
    quiz = world.add_quiz("Open", questions=[sc])
    other_quiz = world.add_quiz("Other", questions=[world.questions["true_false"]])
    running = world.start(quiz)
    world.start(other_quiz, world.other)  # does not contain the question
    done = world.start(quiz, world.other)
    world.submit(done["id"], {sc: "c-lyon"}, who=world.other)
    _swap_key(world, sc)
    report = _regrade(world, sc)
    assert report["in_progress"] == 1
    assert report["attempts_checked"] == 1 and report["attempts_changed"] == 1
    # the attempt in progress keeps the version it started with
    assert _attempt(app, running["id"]).snapshot[sc]["choices"][0]["weight"] == 1.0
    with get_db(app).session() as sess:
        entry = sess.scalar(select(AuditLog).where(AuditLog.action == "quiz.question.regrade"))
        assert entry is not None and entry.detail["in_progress"] == 1

    staff = browse_as(app, world.instructor)
    resp = staff.post(f"/teach/quiz/questions/{sc}/regrade")
    assert resp.status_code == 302
    page = text(staff.get(resp.headers["Location"]))
    assert "1 attempt(s) in progress contain the question" in page


def test_a_regrade_below_the_pass_mark_keeps_the_course_completion(
    app: Flask, world: World
) -> None:
    """The item goes back to not passed; core never withdraws a recorded course completion."""
    sc = world.questions["single_choice"]
    quiz = world.add_quiz("Only quiz", questions=[sc], passing_score=0.5)
    attempt = world.start(quiz)
    world.submit(attempt["id"], {sc: "c-paris"})
    mine = f"/courses/{world.course.id}/progress/me"
    before = ok(call(world.client, "GET", mine, world.learner.headers))
    assert before["completed_at"] is not None
    assert before["items"][0]["status"] == "completed"

    _swap_key(world, sc)  # Paris is worth a quarter now: below the pass mark
    assert _regrade(world, sc)["attempts_changed"] == 1

    after = ok(call(world.client, "GET", mine, world.learner.headers))
    assert after["completed_at"] == before["completed_at"]
    item = after["items"][0]
    assert item["status"] == "in_progress" and item["completed_at"] is None
    assert item["score"] == 0.25 and item["data"]["passed"] is False
    assert after["progress"]["completed"] == 0
    book = ok(
        call(world.client, "GET", f"/courses/{world.course.id}/quiz/gradebook", world.ta.headers)
    )
    cells = {r["learner"]["id"]: r["cells"][quiz] for r in book["rows"]}
    assert cells[world.learner.id]["best"] == 0.25
    assert cells[world.learner.id]["passed"] is False


def test_a_regrade_loads_only_the_attempts_containing_the_question(
    app: Flask, world: World
) -> None:
    """Attempts are picked by id first; the matching ones and their answers load in one go."""
    sc, tf = world.questions["single_choice"], world.questions["true_false"]
    quiz = world.add_quiz("Capitals", questions=[sc], attempts_allowed=0)
    unrelated = world.add_quiz("Other", questions=[tf], attempts_allowed=0)
    for who in (world.learner, world.other):
        for _ in range(3):
            attempt = world.start(quiz, who)
            world.submit(attempt["id"], {sc: "c-lyon"}, who=who)
        attempt = world.start(unrelated, who)
        world.submit(attempt["id"], {tf: True}, who=who)
    _swap_key(world, sc)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()))

    engine = get_db(app).engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        report = _regrade(world, sc)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert report["attempts_checked"] == 6 and report["attempts_changed"] == 6
    answer_reads = [s for s in statements if s.startswith("SELECT") and "FROM quiz_answers" in s]
    assert len(answer_reads) == 1, answer_reads
    full_reads = [
        s
        for s in statements
        if s.startswith("SELECT") and "quiz_attempts.snapshot" in s and "quiz_attempts.id IN" in s
    ]
    assert len(full_reads) == 1, statements
