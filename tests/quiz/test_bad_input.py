"""Bad input on the quiz API: a clear 4xx, and stored attempts, answers and grades unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Users
from tests.conftest import snapshot
from tests.course_helpers import Person
from tests.course_helpers import call
from tests.course_helpers import ok
from tests.course_helpers import problem
from tests.quiz.samples import SAMPLES
from tests.quiz.world import World
from tests.quiz.world import build_world
from tests.quiz.world import right_answers

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "gift"


@pytest.fixture
def world(app: Flask, client: FlaskClient, users: Users) -> World:
    return build_world(app, client, users)


@pytest.fixture
def running(world: World) -> tuple[str, dict[str, Any]]:
    """A quiz of every auto-graded sample and the learner's attempt in progress."""
    names = ["single_choice", "multiple_response", "matching", "ordering", "essay", "true_false"]
    quiz = world.add_quiz(questions=[world.questions[n] for n in names], time_limit_seconds=600)
    attempt = world.start(quiz)
    tf = world.questions["true_false"]
    ok(
        call(
            world.client,
            "PUT",
            f"/quiz/attempts/{attempt['id']}/answers",
            world.learner.headers,
            {"answers": {tf: True}},
        )
    )
    return quiz, attempt


def put_answers(world: World, attempt: str, answers: Any, who: Person | None = None) -> Any:
    who = who or world.learner
    return call(
        world.client, "PUT", f"/quiz/attempts/{attempt}/answers", who.headers, {"answers": answers}
    )


def test_an_answer_to_a_question_outside_the_attempt_is_refused(
    world: World, running: tuple[str, dict[str, Any]]
) -> None:
    _, attempt = running
    before = snapshot(world.app)
    outside = world.questions["numeric"]
    body = problem(
        put_answers(world, attempt["id"], {outside: "1.5", world.questions["true_false"]: False}),
        422,
    )
    assert body["errors"][0]["loc"] == f"answers.{outside}"
    assert snapshot(world.app) == before


@pytest.mark.parametrize(
    ("name", "response"),
    [
        ("single_choice", "c-forged"),
        ("multiple_response", ["m-2", "m-forged"]),
        ("matching", {"p-ca": "a-forged"}),
        ("matching", {"p-forged": "a-rome"}),
        ("ordering", ["o-atom", "o-cell"]),
        ("single_choice", ["c-paris"]),
        ("true_false", "yes"),
    ],
)
def test_a_tampered_or_malformed_response_is_refused(
    world: World, running: tuple[str, dict[str, Any]], name: str, response: Any
) -> None:
    _, attempt = running
    before = snapshot(world.app)
    problem(put_answers(world, attempt["id"], {world.questions[name]: response}), 422)
    problem(
        call(
            world.client,
            "POST",
            f"/quiz/attempts/{attempt['id']}/submit",
            world.learner.headers,
            {"answers": {world.questions[name]: response}},
        ),
        422,
    )
    assert snapshot(world.app) == before


def test_oversized_answers_are_refused(world: World, running: tuple[str, dict[str, Any]]) -> None:
    _, attempt = running
    essay = world.questions["essay"]
    before = snapshot(world.app)
    problem(put_answers(world, attempt["id"], {essay: "x" * 201}), 422)
    huge = call(
        world.client,
        "PUT",
        f"/quiz/attempts/{attempt['id']}/answers",
        world.learner.headers,
        data=json.dumps({"answers": {essay: "x" * 2_000_000}}),
        content_type="application/json",
    )
    problem(huge, 413)
    assert snapshot(world.app) == before


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"{not json", 400),
        (b'{"answers": []}', 422),
        (b'{"answers": {}, "extra": 1}', 422),
        (b'{"answers": {"x": "a\\u0000b"}}', 422),
    ],
)
def test_malformed_bodies_are_refused(
    world: World, running: tuple[str, dict[str, Any]], payload: bytes, status: int
) -> None:
    _, attempt = running
    before = snapshot(world.app)
    resp = call(
        world.client,
        "PUT",
        f"/quiz/attempts/{attempt['id']}/answers",
        world.learner.headers,
        data=payload,
        content_type="application/json",
    )
    problem(resp, status)
    assert snapshot(world.app) == before


def test_another_learners_attempt_is_not_found(
    world: World, running: tuple[str, dict[str, Any]]
) -> None:
    _, attempt = running
    aid = attempt["id"]
    before = snapshot(world.app)
    tf = world.questions["true_false"]
    for who in (world.other, world.outsider):
        problem(call(world.client, "GET", f"/quiz/attempts/{aid}", who.headers), 404)
        problem(put_answers(world, aid, {tf: False}, who), 404)
        problem(
            call(
                world.client, "POST", f"/quiz/attempts/{aid}/submit", who.headers, {"answers": {}}
            ),
            404,
        )
        problem(call(world.client, "GET", f"/quiz/attempts/{aid}/review", who.headers), 404)
    problem(call(world.client, "GET", "/quiz/attempts/" + "0" * 32, world.learner.headers), 404)
    assert snapshot(world.app) == before


def test_answers_after_the_time_limit_are_refused(
    world: World, running: tuple[str, dict[str, Any]]
) -> None:
    _, attempt = running
    world.expire(attempt["id"])
    before = snapshot(world.app)
    tf = world.questions["true_false"]
    problem(put_answers(world, attempt["id"], {tf: False}), 409)
    body = problem(
        call(
            world.client,
            "POST",
            f"/quiz/attempts/{attempt['id']}/submit",
            world.learner.headers,
            {"answers": {tf: False}},
        ),
        409,
    )
    assert "time is up" in body["detail"]
    assert snapshot(world.app) == before


def test_answers_within_the_grace_period_are_accepted(
    world: World, running: tuple[str, dict[str, Any]]
) -> None:
    _, attempt = running
    world.expire(attempt["id"], seconds=5)
    result = world.submit(attempt["id"], {world.questions["single_choice"]: "c-paris"})
    assert result["status"] == "graded"
    assert result["score"] == 2


def test_a_second_submit_changes_nothing(world: World) -> None:
    tf = world.questions["true_false"]
    quiz = world.add_quiz(questions=[tf, world.questions["single_choice"]])
    attempt = world.start(quiz)
    first = world.submit(attempt["id"], {tf: True})
    before = snapshot(world.app)
    second = world.submit(attempt["id"], {tf: False, world.questions["single_choice"]: "c-paris"})
    assert second == first
    problem(put_answers(world, attempt["id"], {tf: False}), 409)
    assert snapshot(world.app) == before


def test_learners_cannot_report_quiz_progress(world: World) -> None:
    quiz = world.add_quiz(questions=[world.questions["true_false"]])
    before = snapshot(world.app)
    for report in ({"status": "completed"}, {"data": {"passed": True}}):
        problem(
            call(world.client, "PUT", f"/items/{quiz}/progress", world.learner.headers, report), 422
        )
    assert snapshot(world.app) == before
    opened = ok(
        call(
            world.client,
            "PUT",
            f"/items/{quiz}/progress",
            world.learner.headers,
            {"status": "in_progress"},
        )
    )
    assert opened["status"] == "in_progress"


@pytest.mark.parametrize(
    "quiz_config",
    [
        {"questions": ["0" * 32]},
        {"pools": [{"tag": "secret-tag", "count": 99}]},
        {"pools": [{"tag": "nope", "count": 1}]},
        {"questions": []},
        {"questions": ["x"], "passing_score": 2},
        {"pools": [{"tag": "a", "category": "b", "count": 1}]},
        {"questions": ["x"], "open_at": "2030-01-02T00:00:00Z", "close_at": "2030-01-01T00:00:00Z"},
        {"questions": ["x"], "open_at": "2030-01-02T00:00:00"},
        {"questions": ["x"], "surprise": True},
    ],
)
def test_invalid_quiz_configs_are_refused(world: World, quiz_config: dict[str, Any]) -> None:
    before = snapshot(world.app)
    problem(
        call(
            world.client,
            "POST",
            f"/modules/{world.module}/items",
            world.instructor.headers,
            {"type": "quiz", "title": "Q", "config": quiz_config},
        ),
        422,
    )
    assert snapshot(world.app) == before


def test_a_question_of_another_course_cannot_be_used(world: World) -> None:
    other = ok(
        call(world.client, "POST", "/courses", world.instructor.headers, {"title": "Other"}), 201
    )["id"]
    foreign = ok(
        call(
            world.client,
            "POST",
            f"/courses/{other}/quiz/questions",
            world.instructor.headers,
            {"question": {"type": "true_false", "text": "x", "correct": True}},
        ),
        201,
    )
    before = snapshot(world.app)
    body = problem(
        call(
            world.client,
            "POST",
            f"/modules/{world.module}/items",
            world.instructor.headers,
            {"type": "quiz", "title": "Q", "config": {"questions": [foreign["id"]]}},
        ),
        422,
    )
    assert body["errors"][0]["loc"] == "questions.0"
    assert snapshot(world.app) == before


def test_invalid_questions_are_refused(world: World) -> None:
    before = snapshot(world.app)
    bad = [
        {"type": "single_choice", "text": "x", "choices": [{"text": "a"}, {"text": "b"}]},
        {"type": "nonsense", "text": "x"},
        {"type": "true_false"},
    ]
    for question in bad:
        problem(
            call(
                world.client,
                "POST",
                f"/courses/{world.course.id}/quiz/questions",
                world.instructor.headers,
                {"question": question},
            ),
            422,
        )
    qid = world.questions["true_false"]
    problem(
        call(
            world.client,
            "PUT",
            f"/quiz/questions/{qid}",
            world.instructor.headers,
            {"question": bad[0]},
        ),
        422,
    )
    assert snapshot(world.app) == before


def test_malformed_gift_stores_nothing(world: World) -> None:
    before = snapshot(world.app)
    url = f"/courses/{world.course.id}/quiz/import"
    body = problem(
        call(
            world.client,
            "POST",
            url,
            world.instructor.headers,
            {"gift": "::t:: What? {~a ~b\n\n::u:: {=x ->}"},
        ),
        422,
    )
    assert all("line" in e for e in body["errors"])
    problem(call(world.client, "POST", url, world.instructor.headers, {"gift": ""}), 422)
    problem(call(world.client, "POST", url, world.instructor.headers, {"gift": 5}), 422)
    assert snapshot(world.app) == before


def test_a_marked_essay_cannot_be_marked_out_of_range(world: World) -> None:
    essay = world.questions["essay"]
    tf = world.questions["true_false"]
    quiz = world.add_quiz(questions=[essay, tf])
    attempt = world.start(quiz)
    url = f"/quiz/attempts/{attempt['id']}/answers/{essay}/mark"
    problem(call(world.client, "PUT", url, world.ta.headers, {"points": 1}), 409)
    world.submit(attempt["id"], {essay: "words"})
    before = snapshot(world.app)
    problem(call(world.client, "PUT", url, world.ta.headers, {"points": 5}), 422)
    problem(call(world.client, "PUT", url, world.ta.headers, {"points": -1}), 422)
    problem(
        call(
            world.client,
            "PUT",
            f"/quiz/attempts/{attempt['id']}/answers/{tf}/mark",
            world.ta.headers,
            {"points": 1},
        ),
        422,
    )
    assert snapshot(world.app) == before


# ---------------------------------------------------------------- roles


def staff_endpoints(world: World, quiz: str, attempt: str) -> list[tuple[str, str, Any, str]]:
    """(method, path, body, least role) for every staff endpoint."""
    course = world.course.id
    qid = world.questions["true_false"]
    essay = world.questions["essay"]
    tf = {"question": {"type": "true_false", "text": "x", "correct": True}}
    return [
        ("GET", f"/courses/{course}/quiz/questions", None, "ta"),
        ("POST", f"/courses/{course}/quiz/questions", tf, "instructor"),
        ("GET", f"/quiz/questions/{qid}", None, "ta"),
        ("PUT", f"/quiz/questions/{qid}", tf, "instructor"),
        ("DELETE", f"/quiz/questions/{world.questions['numeric']}", None, "instructor"),
        ("POST", f"/courses/{course}/quiz/import", {"gift": "Q? {T}"}, "instructor"),
        ("GET", f"/courses/{course}/quiz/export", None, "ta"),
        ("GET", f"/courses/{course}/quiz/grading", None, "ta"),
        ("PUT", f"/quiz/attempts/{attempt}/answers/{essay}/mark", {"points": 1}, "ta"),
        ("GET", f"/courses/{course}/quiz/gradebook", None, "ta"),
        ("GET", f"/courses/{course}/quiz/gradebook?format=csv", None, "ta"),
        ("GET", f"/items/{quiz}/quiz/analysis", None, "ta"),
    ]


def test_wrong_roles_are_refused_on_every_staff_endpoint(world: World) -> None:
    quiz = world.add_quiz(questions=[world.questions["essay"], world.questions["true_false"]])
    attempt = world.start(quiz)["id"]
    world.submit(attempt, {world.questions["essay"]: "text"})
    before = snapshot(world.app)
    for method, path, body, least in staff_endpoints(world, quiz, attempt):
        # The course is published to the instance: outsiders see it, so 403 rather than 404.
        refused = [(world.learner, 403), (world.outsider, 403)]
        if least == "instructor":
            refused.append((world.ta, 403))
        for who, status in refused:
            resp = call(world.client, method, path, who.headers, body)
            problem(resp, status)
        # Without credentials: 401, or the CSRF check's 400 for unsafe methods.
        problem(call(world.client, method, path, {}, body), 401 if method == "GET" else 400)
    assert snapshot(world.app) == before


def test_staff_cannot_take_quizzes_and_outsiders_cannot_see_them(world: World) -> None:
    quiz = world.add_quiz(questions=[world.questions["true_false"]])
    before = snapshot(world.app)
    problem(call(world.client, "POST", f"/items/{quiz}/quiz/attempts", world.ta.headers), 403)
    problem(call(world.client, "POST", f"/items/{quiz}/quiz/attempts", world.outsider.headers), 403)
    page_item = ok(
        call(
            world.client,
            "POST",
            f"/modules/{world.module}/items",
            world.instructor.headers,
            {"type": "page", "title": "P", "config": {"body": "<p>x</p>"}},
        ),
        201,
    )
    snap = snapshot(world.app)
    problem(
        call(
            world.client, "POST", f"/items/{page_item['id']}/quiz/attempts", world.learner.headers
        ),
        404,
    )
    assert snapshot(world.app) == snap
    assert before["quiz_attempts"] == snap["quiz_attempts"]


# ---------------------------------------------------------------- answer keys


KEY_FIELDS = {
    "weight",
    "correct",
    "answer_id",
    "tolerance",
    "low",
    "high",
    "value",
    "feedback",
    "feedback_true",
    "feedback_false",
    "general_feedback",
    "wrong_feedback",
    "grader_info",
    "correct_response",
    "title",
    "category",
    "tags",
    "case_sensitive",
    "wrong_pick_penalty",
}


def secrets_of(question: dict[str, Any]) -> set[str]:
    """Every text of an answer key: feedback, accepted answers, grader notes, titles, tags."""
    found: set[str] = set()

    def walk(value: Any, key: str = "", parent_type: str = "") -> None:
        if isinstance(value, dict):
            kind = value.get("type", parent_type)
            for k, v in value.items():
                walk(v, k, kind)
        elif isinstance(value, list):
            for v in value:
                walk(v, key, parent_type)
        elif isinstance(value, str) and value and key in KEY_FIELDS - {"answer_id"}:
            found.add(value)

    walk(question)
    for answer in question.get("answers", []):
        if question["type"] == "short_answer":
            found.add(answer["text"])
    for gap in question.get("gaps", []):
        if gap["type"] == "short_answer":
            found.update(a["text"] for a in gap["answers"])
    return found


def keys_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        out = set(value)
        for v in value.values():
            out |= keys_in(v)
        return out
    if isinstance(value, list):
        out = set()
        for v in value:
            out |= keys_in(v)
        return out
    return set()


def test_no_answer_key_reaches_a_learner_before_review(world: World) -> None:
    names = [n for n in SAMPLES]
    ids = [world.questions[n] for n in names]
    quiz = world.add_quiz(questions=ids, review="after_close", attempts_allowed=2)
    secrets: set[str] = set()
    texts = []
    for qid in ids:
        stored = ok(call(world.client, "GET", f"/quiz/questions/{qid}", world.instructor.headers))
        secrets |= secrets_of(stored["question"])
        texts.append(stored["question"]["text"])
    # A key word that the questions' own texts show ("France") is no secret.
    secrets = {s for s in secrets if not any(s in t for t in texts)}
    assert {"Right, Paris.", "no one", "Look for three distinct causes.", "Secret title"} <= secrets

    seen = []
    started = call(world.client, "POST", f"/items/{quiz}/quiz/attempts", world.learner.headers)
    seen.append(started)
    aid = started.get_json()["id"]
    answers = right_answers(world)
    seen.append(
        call(
            world.client,
            "PUT",
            f"/quiz/attempts/{aid}/answers",
            world.learner.headers,
            {"answers": answers},
        )
    )
    seen.append(call(world.client, "GET", f"/quiz/attempts/{aid}", world.learner.headers))
    seen.append(call(world.client, "POST", f"/items/{quiz}/quiz/attempts", world.learner.headers))
    seen.append(
        call(
            world.client,
            "POST",
            f"/quiz/attempts/{aid}/submit",
            world.learner.headers,
            {"answers": {}},
        )
    )
    seen.append(call(world.client, "GET", f"/quiz/attempts/{aid}", world.learner.headers))
    seen.append(call(world.client, "GET", f"/items/{quiz}/quiz/attempts", world.learner.headers))
    seen.append(call(world.client, "GET", f"/items/{quiz}", world.learner.headers))
    seen.append(call(world.client, "GET", f"/quiz/attempts/{aid}/review", world.learner.headers))
    seen.append(call(world.client, "GET", f"/courses/{world.course.id}", world.learner.headers))
    assert seen[-2].status_code == 409
    for resp in seen:
        assert resp.status_code < 500
        text = resp.get_data(as_text=True)
        for secret in secrets:
            assert secret not in text, (resp.request.path, secret)
        # Items and courses have titles of their own; the question titles are checked above.
        leaked = keys_in(resp.get_json()) & (KEY_FIELDS - {"title"})
        assert not leaked, (resp.request.path, leaked)
    questions = seen[0].get_json()["questions"]
    ordering = next(q for q in questions if q["type"] == "ordering")
    assert [i["id"] for i in ordering["items"]] != answers[world.questions["ordering"]]


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="GIFT fixtures not present")
def test_moodle_files_import_and_report_what_they_skip(world: World) -> None:
    url = f"/courses/{world.course.id}/quiz/import"
    imported = []
    for name in ("moodle-examples.gift.txt", "moodle-questions-in-category.gift.txt"):
        text = (FIXTURES / name).read_text()
        result = ok(call(world.client, "POST", url, world.instructor.headers, {"gift": text}), 201)
        assert len(result["imported"]) >= 3
        assert all(s["line"] >= 1 and s["message"] for s in result["skipped"])
        imported += [q["id"] for q in result["imported"]]
    listed = ok(
        call(
            world.client,
            "GET",
            f"/courses/{world.course.id}/quiz/questions?limit=100",
            world.ta.headers,
        )
    )
    assert set(imported) <= {q["id"] for q in listed["items"]}


def test_a_partly_unsupported_file_imports_the_rest_and_lists_each_skipped_question(
    world: World,
) -> None:
    gift = (
        "// first\n::Good:: Is water wet? {T}\n\n"
        "::Bad:: The sun is {T} hot.\n\n"
        "::Broken:: Pick {=a ~b ~c\n\n"
        "::Also good:: 2+2? {#4}\n"
    )
    url = f"/courses/{world.course.id}/quiz/import"
    result = ok(
        call(
            world.client,
            "POST",
            url,
            world.instructor.headers,
            {"gift": gift, "category": "Imported"},
        ),
        201,
    )
    assert [q["title"] for q in result["imported"]] == ["Good", "Also good"]
    assert all(q["category"] == "Imported" for q in result["imported"])
    assert [s["line"] for s in result["skipped"]] == [4, 6]


def test_a_gift_file_upload_that_is_not_text_stores_nothing(world: World) -> None:
    url = f"/api/v1/courses/{world.course.id}/quiz/import"
    before = snapshot(world.app)
    for data in (b"\xff\xfe\x00Q? {T}\x80\x81", b"", b"// only a comment\n"):
        resp = world.client.post(
            url, data=data, content_type="text/plain", headers=world.instructor.headers
        )
        problem(resp, 422)
    assert snapshot(world.app) == before


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="GIFT fixtures not present")
def test_a_gift_file_can_be_uploaded_as_it_is(world: World) -> None:
    data = (FIXTURES / "moodle-questions-in-category.gift.txt").read_bytes()
    resp = world.client.post(
        f"/api/v1/courses/{world.course.id}/quiz/import?category=Uploaded",
        data=data,
        content_type="text/plain; charset=utf-8",
        headers=world.instructor.headers,
    )
    body = ok(resp, 201)
    assert body["imported"]
