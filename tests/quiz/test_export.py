"""The quiz plugin's section of a person's data export (``export_user_data``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Users
from tests.course_helpers import Person
from tests.course_helpers import call
from tests.course_helpers import ok
from tests.quiz.samples import SAMPLES
from tests.quiz.test_bad_input import KEY_FIELDS
from tests.quiz.test_bad_input import keys_in
from tests.quiz.test_bad_input import secrets_of
from tests.quiz.world import World
from tests.quiz.world import build_world
from tests.quiz.world import right_answers

ESSAY_BY_ANN = "Ann thinks the causes were three: trade, weather and luck."
ESSAY_BY_BOB = "Bob's essay names one cause only."


@pytest.fixture
def world(app: Flask, client: FlaskClient, users: Users) -> World:
    return build_world(app, client, users)


def exported(world: World, who: Person) -> tuple[dict[str, Any], str]:
    resp = call(world.client, "GET", "/me/export", who.headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json(), resp.get_data(as_text=True)


def question_secrets(world: World) -> set[str]:
    """Every answer-key text of the bank, less words the questions' own texts show."""
    secrets: set[str] = set()
    texts = []
    for qid in world.questions.values():
        stored = ok(call(world.client, "GET", f"/quiz/questions/{qid}", world.instructor.headers))
        secrets |= secrets_of(stored["question"])
        texts.append(stored["question"]["text"])
    return {s for s in secrets if not any(s in t for t in texts)}


def test_attempts_and_responses_without_keys_or_grades_before_review(world: World) -> None:
    ids = [world.questions[name] for name in SAMPLES]
    quiz = world.add_quiz(questions=ids, review="after_close", attempts_allowed=2)
    attempt = world.start(quiz)
    answers = right_answers(world)
    world.submit(attempt["id"], answers)

    doc, raw = exported(world, world.learner)
    section = doc["plugins"]["quiz"]
    assert section["graded_answers"] == []
    [mine] = section["attempts"]
    assert mine["id"] == attempt["id"]
    assert mine["quiz"] == {"id": quiz, "title": "Quiz"}
    assert mine["course"] == world.course.id
    assert mine["number"] == 1 and mine["status"] in {"graded", "awaiting_grading"}
    assert mine["submitted_at"] is not None and mine["score"] is not None
    assert mine["review_available"] is False
    by_question = {a["question_id"]: a for a in mine["answers"]}
    assert list(by_question) == [q["id"] for q in attempt["questions"]]
    for qid, response in answers.items():
        assert by_question[qid]["response"] == response
        assert by_question[qid]["question"] == next(
            q for q in attempt["questions"] if q["id"] == qid
        )
        assert "score" not in by_question[qid] and "feedback" not in by_question[qid]
    for secret in question_secrets(world):
        assert secret not in raw, secret
    assert not keys_in(section) & (KEY_FIELDS - {"title"})
    assert "snapshot" not in raw


def test_grades_and_the_graders_comment_once_the_review_shows_them(world: World) -> None:
    essay = world.questions["essay"]
    single = world.questions["single_choice"]
    quiz = world.add_quiz(questions=[single, essay], review="after_submit")
    mine = world.start(quiz)
    world.submit(mine["id"], {single: "c-paris", essay: ESSAY_BY_ANN})
    theirs = world.start(quiz, world.other)
    world.submit(theirs["id"], {single: "c-nice", essay: ESSAY_BY_BOB}, world.other)
    ok(
        call(
            world.client,
            "PUT",
            f"/quiz/attempts/{mine['id']}/answers/{essay}/mark",
            world.ta.headers,
            {"points": 1, "feedback": "Well argued, Ann."},
        )
    )

    doc, raw = exported(world, world.learner)
    [attempt] = doc["plugins"]["quiz"]["attempts"]
    assert attempt["review_available"] is True and attempt["status"] == "graded"
    answers = {a["question_id"]: a for a in attempt["answers"]}
    assert answers[single]["score"] == 1.0 and answers[single]["feedback"] == ""
    assert answers[essay]["response"] == ESSAY_BY_ANN
    assert answers[essay]["feedback"] == "Well argued, Ann."
    assert answers[essay]["graded_at"] is not None and answers[essay]["needs_grading"] is False
    assert "correct_response" not in raw
    # nothing of the other learner's attempt, nor who graded
    for foreign in (theirs["id"], ESSAY_BY_BOB, world.other.id, world.ta.id, "ta@example.org"):
        assert foreign not in raw, foreign

    grader, grader_raw = exported(world, world.ta)
    assert grader["plugins"]["quiz"] == {
        "attempts": [],
        "graded_answers": [
            {
                "quiz": quiz,
                "course": world.course.id,
                "question_id": essay,
                "graded_at": answers[essay]["graded_at"],
            }
        ],
    }
    for foreign in (mine["id"], ESSAY_BY_ANN, "Well argued", world.learner.id):
        assert foreign not in grader_raw, foreign


def answered_results(doc: dict[str, Any], attempt: str) -> list[Any]:
    """The ``result`` (None: withheld) of each ``answered`` statement of one attempt."""
    return [
        e.get("result")
        for e in doc["learning_events"]
        if e["verb"]["id"].endswith("/answered")
        and attempt in (e.get("context", {}).get("extensions") or {}).values()
    ]


def test_per_question_scores_stay_out_of_the_events_until_the_review_opens(
    world: World,
) -> None:
    single = world.questions["single_choice"]
    quiz = world.add_quiz(questions=[single], review="after_close", attempts_allowed=2)
    first = world.start(quiz)
    world.submit(first["id"], {single: "c-nice"})  # wrong

    doc, _ = exported(world, world.learner)
    assert answered_results(doc, first["id"]) == [None]  # which answer was wrong stays hidden
    assert any(e.get("result") for e in doc["learning_events"])  # the rest keeps its results

    second = world.start(quiz)
    world.submit(second["id"], {single: "c-paris"})  # the last attempt: the review opens

    doc, _ = exported(world, world.learner)
    [first_result] = answered_results(doc, first["id"])
    [second_result] = answered_results(doc, second["id"])
    assert first_result is not None and first_result["score"]["scaled"] == 0.0
    assert second_result is not None and second_result["score"]["scaled"] == 1.0


def test_the_graders_comment_only_where_the_quiz_shows_feedback(world: World) -> None:
    essay = world.questions["essay"]
    quiz = world.add_quiz(questions=[essay], review="after_submit", show_feedback=False)
    mine = world.start(quiz)
    world.submit(mine["id"], {essay: ESSAY_BY_ANN})
    path = f"/quiz/attempts/{mine['id']}/answers/{essay}/mark"
    ok(call(world.client, "PUT", path, world.ta.headers, {"points": 1, "feedback": "Meh."}))

    doc, raw = exported(world, world.learner)

    [attempt] = doc["plugins"]["quiz"]["attempts"]
    [answer] = attempt["answers"]
    assert answer["score"] == 1.0 and "feedback" not in answer
    assert "Meh." not in raw


def test_an_attempt_in_progress_is_exported_with_its_saved_responses(world: World) -> None:
    single = world.questions["single_choice"]
    quiz = world.add_quiz(questions=[single], review="after_submit")
    attempt = world.start(quiz)
    ok(
        call(
            world.client,
            "PUT",
            f"/quiz/attempts/{attempt['id']}/answers",
            world.learner.headers,
            {"answers": {single: "c-lyon"}},
        )
    )
    doc, _ = exported(world, world.learner)
    [mine] = doc["plugins"]["quiz"]["attempts"]
    assert mine["status"] == "in_progress" and mine["score"] is None and mine["passed"] is None
    [answer] = mine["answers"]
    assert answer["response"] == "c-lyon" and answer["saved_at"] is not None
    assert "score" not in answer


def test_someone_without_quiz_data_gets_no_quiz_section(world: World) -> None:
    doc, _ = exported(world, world.outsider)
    assert "quiz" not in doc["plugins"]
    assert doc["plugins_failed"] == []
    json.dumps(doc)
