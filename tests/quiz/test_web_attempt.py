"""Taking a quiz in the browser without JavaScript: start, answer, save, submit, result."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.db import get_db
from plugins.quiz.models import Answer
from plugins.quiz.models import Attempt
from tests.conftest import Users
from tests.conftest import snapshot
from tests.quiz.samples import ORDER
from tests.quiz.web_world import attempt_id_of
from tests.quiz.web_world import browse_as
from tests.quiz.web_world import hidden_value
from tests.quiz.web_world import text
from tests.quiz.world import World
from tests.quiz.world import build_world
from tests.quiz.world import right_answers
from tests.web_helpers import Pages


@pytest.fixture
def world(app: Flask, client: FlaskClient, users: Users) -> World:
    return build_world(app, client, users)


def _start(pages: Pages, quiz: str) -> str:
    resp = pages.post(f"/learn/{quiz}/quiz/start")
    assert resp.status_code == 302, text(resp)[:500]
    return attempt_id_of(resp.headers["Location"])


def _form(world: World) -> dict[str, Any]:
    """The attempt form filled with every right answer (field names as the page prints them)."""
    q = world.questions
    right = right_answers(world)
    form: dict[str, Any] = {
        f"q-{q['single_choice']}": right[q["single_choice"]],
        f"q-{q['multiple_response']}": right[q["multiple_response"]],
        f"q-{q['true_false']}": "true",
        f"q-{q['numeric']}": right[q["numeric"]],
        f"q-{q['short_answer']}": right[q["short_answer"]],
        f"q-{q['ordering']}": right[q["ordering"]],
    }
    for gap, value in right[q["cloze"]].items():
        form[f"q-{q['cloze']}-{gap}"] = value
    for prompt, value in right[q["matching"]].items():
        form[f"q-{q['matching']}-{prompt}"] = value
    return form


def _stored(app: Flask, attempt: str) -> dict[str, Any]:
    with get_db(app).session() as sess:
        row = sess.scalar(select(Attempt).where(Attempt.public_id == attempt))
        assert row is not None
        return {
            a.question_id: a.response
            for a in sess.scalars(select(Answer).where(Answer.attempt_id == row.id))
        }


def _keys_absent(page: str) -> None:
    """No answer key or feedback of the samples is in the page."""
    assert "Correct answer" not in page
    for secret in ("Right, Paris.", "Exactly.", "Right: no one.", "Yes, Paris.", "Secret"):
        assert secret not in page, secret


def test_learner_takes_a_quiz_without_javascript(app: Flask, world: World) -> None:
    auto = list(right_answers(world))
    quiz = world.add_quiz(questions=auto, review="after_submit")
    pages = browse_as(app, world.learner)
    learn = text(pages.get(f"/learn/{quiz}"))
    assert "Start the quiz" in learn
    assert "Mark as complete" not in learn  # only a graded attempt completes a quiz
    attempt = _start(pages, quiz)
    page = text(pages.get(f"/quiz/attempts/{attempt}"))
    _keys_absent(page)
    # every input is labelled
    ids = set(re.findall(r'<(?:input|select|textarea) id="([^"]+)"', page))
    labels = set(re.findall(r'<label[^>]* for="([^"]+)"', page))
    assert ids and ids <= labels
    # resuming from the learn view goes back to the same attempt
    assert "Resume attempt 1" in text(pages.get(f"/learn/{quiz}"))
    assert _start(pages, quiz) == attempt
    # save
    resp = pages.post(f"/quiz/attempts/{attempt}", {**_form(world), "action": "save"})
    assert resp.status_code == 302
    stored = _stored(app, attempt)
    right = right_answers(world)
    assert stored[world.questions["true_false"]] is True
    assert stored[world.questions["cloze"]] == right[world.questions["cloze"]]
    assert stored[world.questions["ordering"]] == right[world.questions["ordering"]]
    # the page shows the saved answers again
    again = text(pages.get(f"/quiz/attempts/{attempt}"))
    assert 'value="No One"' in again
    assert hidden_value(again, f"q-{world.questions['ordering']}") == [f"o-{n}" for n in ORDER]
    # submit asks first
    resp = pages.post(f"/quiz/attempts/{attempt}", {**_form(world), "action": "submit"})
    assert resp.headers["Location"].endswith(f"/quiz/attempts/{attempt}/submit")
    confirm = text(pages.get(f"/quiz/attempts/{attempt}/submit"))
    assert "You answered 8 of 8 questions." in confirm
    resp = pages.post(f"/quiz/attempts/{attempt}/submit")
    assert resp.headers["Location"].endswith(f"/quiz/attempts/{attempt}/result")
    result = text(pages.get(f"/quiz/attempts/{attempt}/result"))
    assert "Passed" in result and "8 / 8" in result
    assert "Correct answer:" in result and "Paris" in result
    # history
    history = text(pages.get(f"/learn/{quiz}/quiz/attempts"))
    assert "Result of attempt 1" in history and "100.0 %" in history
    # the attempt page of a submitted attempt leads to its result
    assert pages.get(f"/quiz/attempts/{attempt}").headers["Location"].endswith("/result")


def test_review_policy_hides_answers_until_close(app: Flask, world: World) -> None:
    quiz = world.add_quiz(
        questions=[world.questions["short_answer"]],
        review="after_close",
        attempts_allowed=2,
    )
    pages = browse_as(app, world.learner)
    attempt = _start(pages, quiz)
    name = f"q-{world.questions['short_answer']}"
    pages.post(f"/quiz/attempts/{attempt}", {name: "wrong", "action": "save"})
    pages.post(f"/quiz/attempts/{attempt}/submit")
    result = text(pages.get(f"/quiz/attempts/{attempt}/result"))
    assert "review policy allows" in result
    assert "no one" not in result and "wrong" not in result
    # after the last allowed attempt the review opens
    second = _start(pages, quiz)
    pages.post(f"/quiz/attempts/{second}/submit")
    result = text(pages.get(f"/quiz/attempts/{attempt}/result"))
    assert "no one" in result and "wrong" in result


def test_immediate_feedback_locks_graded_answers(app: Flask, world: World) -> None:
    qid = world.questions["true_false"]
    quiz = world.add_quiz(questions=[qid], review="immediately")
    pages = browse_as(app, world.learner)
    attempt = _start(pages, quiz)
    assert "Correct answer" not in text(pages.get(f"/quiz/attempts/{attempt}"))
    pages.post(f"/quiz/attempts/{attempt}", {f"q-{qid}": "false", "action": "save"})
    page = text(pages.get(f"/quiz/attempts/{attempt}"))
    assert "Correct answer:" in page and " disabled>" in page
    # a locked answer sent again is ignored, not changed
    pages.post(f"/quiz/attempts/{attempt}", {f"q-{qid}": "true", "action": "save"})
    assert _stored(app, attempt)[qid] is False


def test_ordering_moves_without_javascript(app: Flask, world: World) -> None:
    qid = world.questions["ordering"]
    quiz = world.add_quiz(questions=[qid])
    pages = browse_as(app, world.learner)
    attempt = _start(pages, quiz)
    page = text(pages.get(f"/quiz/attempts/{attempt}"))
    order = hidden_value(page, f"q-{qid}")
    resp = pages.post(f"/quiz/attempts/{attempt}", {f"q-{qid}": order, "move": f"{qid}:1:up"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"#q-{qid}")
    moved = [order[1], order[0], *order[2:]]
    assert _stored(app, attempt)[qid] == moved
    assert hidden_value(text(pages.get(f"/quiz/attempts/{attempt}")), f"q-{qid}") == moved


def test_autosave_answers_json_for_the_script(app: Flask, world: World) -> None:
    qid = world.questions["short_answer"]
    quiz = world.add_quiz(questions=[qid])
    pages = browse_as(app, world.learner)
    attempt = _start(pages, quiz)
    resp = pages.client.post(
        f"/quiz/attempts/{attempt}",
        data={f"q-{qid}": "Nobody", "csrf_token": pages.csrf(), "action": "save"},
        headers={"Accept": "application/json"},
    )
    assert resp.status_code == 200
    assert resp.get_json()["saved"] is True and resp.get_json()["questions"] == [qid]
    assert _stored(app, attempt)[qid] == "Nobody"


def test_timed_attempt_shows_the_server_countdown(app: Flask, world: World) -> None:
    quiz = world.add_quiz(questions=[world.questions["true_false"]], time_limit_seconds=600)
    pages = browse_as(app, world.learner)
    attempt = _start(pages, quiz)
    page = text(pages.get(f"/quiz/attempts/{attempt}"))
    found = re.search(r'data-remaining="(\d+)"', page)
    assert found and 590 <= int(found.group(1)) <= 600
    assert 'role="timer"' in page


def test_answers_after_the_deadline_are_refused_and_shown(app: Flask, world: World) -> None:
    qid = world.questions["short_answer"]
    quiz = world.add_quiz(questions=[qid], time_limit_seconds=600)
    pages = browse_as(app, world.learner)
    attempt = _start(pages, quiz)
    world.expire(attempt)
    before = snapshot(app)
    resp = pages.post(f"/quiz/attempts/{attempt}", {f"q-{qid}": "Late answer", "action": "save"})
    assert resp.status_code == 409
    page = text(resp)
    assert "Time is up: these answers were not saved" in page
    assert 'value="Late answer"' in page
    assert snapshot(app) == before
    # submitting nothing new sends the learner on to the attempt, which is graded
    # from what was saved in time
    resp = pages.post(f"/quiz/attempts/{attempt}", {"action": "submit"})
    assert resp.headers["Location"].endswith(f"/quiz/attempts/{attempt}")
    resp = pages.get(f"/quiz/attempts/{attempt}")
    assert resp.headers["Location"].endswith("/result")
    assert "Not passed" in text(pages.get(resp.headers["Location"]))


def test_invalid_answer_is_refused_with_the_input_shown(app: Flask, world: World) -> None:
    qid = world.questions["single_choice"]
    other = world.questions["short_answer"]
    quiz = world.add_quiz(questions=[qid, other])
    pages = browse_as(app, world.learner)
    attempt = _start(pages, quiz)
    before = snapshot(app)
    resp = pages.post(
        f"/quiz/attempts/{attempt}",
        {f"q-{qid}": "c-forged", f"q-{other}": "kept", "action": "save"},
    )
    assert resp.status_code == 422
    page = text(resp)
    assert f'<p class="field-error" id="q-{qid}-error">' in page
    assert 'value="kept"' in page
    assert snapshot(app) == before


def test_another_learners_attempt_is_not_found(app: Flask, world: World) -> None:
    qid = world.questions["short_answer"]
    quiz = world.add_quiz(questions=[qid])
    attempt = _start(browse_as(app, world.learner), quiz)
    other = browse_as(app, world.other)
    before = snapshot(app)
    for path in ("", "/submit", "/result"):
        assert other.get(f"/quiz/attempts/{attempt}{path}").status_code == 404
    assert other.post(f"/quiz/attempts/{attempt}", {f"q-{qid}": "x"}).status_code == 404
    assert other.post(f"/quiz/attempts/{attempt}/submit").status_code == 404
    assert snapshot(app) == before


def test_forms_need_the_csrf_token(app: Flask, world: World) -> None:
    qid = world.questions["short_answer"]
    quiz = world.add_quiz(questions=[qid])
    pages = browse_as(app, world.learner)
    before = snapshot(app)
    assert pages.post(f"/learn/{quiz}/quiz/start", csrf="forged").status_code == 400
    assert snapshot(app) == before
    attempt = _start(pages, quiz)
    before = snapshot(app)
    resp = pages.post(f"/quiz/attempts/{attempt}", {f"q-{qid}": "x"}, csrf="forged")
    assert resp.status_code == 400
    assert pages.post(f"/quiz/attempts/{attempt}/submit", csrf="").status_code == 400
    assert snapshot(app) == before


def test_who_may_take_a_quiz(app: Flask, world: World) -> None:
    quiz = world.add_quiz(questions=[world.questions["true_false"]])
    outsider = browse_as(app, world.outsider)
    before = snapshot(app)
    assert outsider.post(f"/learn/{quiz}/quiz/start").status_code in (403, 404)
    assert outsider.get(f"/learn/{quiz}/quiz/attempts").status_code in (403, 404)
    anonymous = Pages(app.test_client())
    resp = anonymous.post(f"/learn/{quiz}/quiz/start")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert snapshot(app) == before


def test_no_attempts_left_is_explained(app: Flask, world: World) -> None:
    quiz = world.add_quiz(questions=[world.questions["true_false"]], attempts_allowed=1)
    pages = browse_as(app, world.learner)
    attempt = _start(pages, quiz)
    pages.post(f"/quiz/attempts/{attempt}/submit")
    before = snapshot(app)
    resp = pages.post(f"/learn/{quiz}/quiz/start")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/learn/{quiz}")
    assert "used all 1 attempt" in text(pages.get(f"/learn/{quiz}"))
    assert snapshot(app) == before
    # and saving into the submitted attempt is refused
    resp = pages.post(f"/quiz/attempts/{attempt}", {"action": "save"})
    assert resp.headers["Location"].endswith("/result")


def test_answer_keys_never_reach_the_attempt_page(app: Flask, world: World) -> None:
    """Every sample question's key stays on the server until the review."""
    quiz = world.add_quiz(questions=list(world.questions.values()), review="after_close")
    pages = browse_as(app, world.learner)
    attempt = _start(pages, quiz)
    with get_db(app).session() as sess:
        row = sess.scalar(select(Attempt).where(Attempt.public_id == attempt))
        assert row is not None
        snapshot_bodies = json.dumps(row.snapshot)
    page = text(pages.get(f"/quiz/attempts/{attempt}"))
    script = text(pages.get(re.search(r'src="(/quiz/static/attempt\.js[^"]*)"', page).group(1)))  # type: ignore[union-attr]
    secrets = (
        "Paris has been the capital",  # general feedback
        "Right, Paris.",  # choice feedback
        "Measure again.",  # numeric feedback
        "Entombed, not buried.",  # a short answer's accepted text feedback
        "*Grant*",  # an accepted pattern
        "Look for three distinct causes.",  # grader notes
        "Secret title",
        "Secret/Category",
        "secret-tag",
        '"weight"',
    )
    for needle in secrets:
        assert needle in snapshot_bodies, needle
        assert needle not in page, needle
        assert needle not in script, needle
