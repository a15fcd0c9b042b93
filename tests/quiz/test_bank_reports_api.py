"""Question bank CRUD, GIFT round trip, gradebook and item analysis through the API."""

from __future__ import annotations

import csv
import io

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Users
from tests.conftest import snapshot
from tests.course_helpers import call
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.course_helpers import problem
from tests.quiz.world import World
from tests.quiz.world import build_world


@pytest.fixture
def world(app: Flask, client: FlaskClient, users: Users) -> World:
    return build_world(app, client, users)


def test_bank_crud_with_filters(world: World) -> None:
    base = f"/courses/{world.course.id}/quiz/questions"
    a = world.add_question(
        {
            "type": "true_false",
            "text": "A",
            "correct": True,
            "title": "Alpha",
            "category": "Algebra/Linear",
            "tags": ["t1"],
        }
    )
    b = world.add_question(
        {
            "type": "true_false",
            "text": "B",
            "correct": False,
            "title": "Beta",
            "category": "Algebra",
            "tags": ["t1", "t2"],
        }
    )
    world.add_question(
        {
            "type": "true_false",
            "text": "C",
            "correct": False,
            "category": "Algebraic",
            "tags": ["t2"],
        }
    )

    def ids(query: str) -> list[str]:
        body = ok(call(world.client, "GET", base + query, world.ta.headers))
        return [q["id"] for q in body["items"]]

    assert ids("?tag=t1") == [a, b]
    assert ids("?category=Algebra") == [a, b]
    assert ids("?q=alph") == [a]
    assert len(ids("?type=true_false")) == 4
    first = ok(call(world.client, "GET", base + "?limit=2", world.ta.headers))
    rest = ok(
        call(
            world.client,
            "GET",
            base + f"?limit=100&cursor={first['next_cursor']}",
            world.ta.headers,
        )
    )
    assert len(first["items"]) + len(rest["items"]) == 13
    assert not {q["id"] for q in first["items"]} & {q["id"] for q in rest["items"]}

    got = ok(call(world.client, "GET", f"/quiz/questions/{a}", world.ta.headers))
    assert got["version"] == 1 and got["question"]["id"] == a
    changed = ok(
        call(
            world.client,
            "PUT",
            f"/quiz/questions/{a}",
            world.instructor.headers,
            {"question": {**got["question"], "text": "A2", "id": "ignored"}},
        )
    )
    assert changed["version"] == 2
    assert changed["question"]["text"] == "A2" and changed["question"]["id"] == a

    quiz = world.add_quiz(questions=[b])
    before = snapshot(world.app)
    problem(call(world.client, "DELETE", f"/quiz/questions/{b}", world.instructor.headers), 409)
    assert snapshot(world.app) == before
    resp = call(world.client, "DELETE", f"/quiz/questions/{a}", world.instructor.headers)
    assert resp.status_code == 204
    problem(call(world.client, "GET", f"/quiz/questions/{a}", world.ta.headers), 404)
    assert quiz


def test_running_attempts_keep_the_question_as_it_was(world: World) -> None:
    tf = world.questions["true_false"]
    quiz = world.add_quiz(questions=[tf])
    attempt = world.start(quiz)
    stored = ok(call(world.client, "GET", f"/quiz/questions/{tf}", world.ta.headers))["question"]
    ok(
        call(
            world.client,
            "PUT",
            f"/quiz/questions/{tf}",
            world.instructor.headers,
            {"question": {**stored, "correct": False}},
        )
    )
    assert world.submit(attempt["id"], {tf: True})["score"] == 1


def test_gift_export_round_trips_through_import(world: World) -> None:
    course = world.course.id
    body = ok(call(world.client, "GET", f"/courses/{course}/quiz/export", world.ta.headers))
    skipped = {s["question_id"] for s in body["skipped"]}
    assert world.questions["ordering"] in skipped
    raw = call(world.client, "GET", f"/courses/{course}/quiz/export?format=gift", world.ta.headers)
    assert raw.mimetype == "text/plain"
    assert raw.get_data(as_text=True) == body["gift"]

    other = ok(
        call(world.client, "POST", "/courses", world.instructor.headers, {"title": "Copy"}), 201
    )["id"]
    imported = ok(
        call(
            world.client,
            "POST",
            f"/courses/{other}/quiz/import",
            world.instructor.headers,
            {"gift": body["gift"]},
        ),
        201,
    )
    assert imported["skipped"] == []
    again = ok(call(world.client, "GET", f"/courses/{other}/quiz/export", world.instructor.headers))
    assert again["gift"] == body["gift"]


def test_gradebook_lists_best_and_last_scores_as_json_and_csv(world: World, users: Users) -> None:
    tf = world.questions["true_false"]
    single = world.questions["single_choice"]
    quiz = world.add_quiz("Week =1", questions=[tf, single], attempts_allowed=3)
    a1 = world.start(quiz)
    world.submit(a1["id"], {tf: True, single: "c-paris"})
    a2 = world.start(quiz)
    world.submit(a2["id"], {tf: True})
    b1 = world.start(quiz, world.other)
    world.submit(b1["id"], {tf: False}, world.other)
    late = person(users, "=zed@example.org")
    enrol(world.client, world.course, late)

    book = ok(
        call(world.client, "GET", f"/courses/{world.course.id}/quiz/gradebook", world.ta.headers)
    )
    assert [c["item_id"] for c in book["columns"]] == [quiz]
    rows = {r["learner"]["id"]: r["cells"][quiz] for r in book["rows"]}
    assert rows[world.learner.id] == {"best": 1.0, "last": 0.5, "attempts": 2, "passed": True}
    assert rows[world.other.id] == {"best": 0.0, "last": 0.0, "attempts": 1, "passed": False}
    assert rows[late.id] == {"best": None, "last": None, "attempts": 0, "passed": False}

    resp = call(
        world.client,
        "GET",
        f"/courses/{world.course.id}/quiz/gradebook?format=csv",
        world.instructor.headers,
    )
    assert resp.mimetype == "text/csv"
    table = list(csv.reader(io.StringIO(resp.get_data(as_text=True))))
    assert table[0][2] == "Week =1 (best %)"
    by_id = {r[0]: r for r in table[1:]}
    assert by_id[world.learner.id][2:] == ["100.0", "50.0", "2"]
    assert by_id[late.id][1:] == ["'=Zed", "", "", "0"]


def test_item_analysis_flags_a_question_everyone_gets_right(world: World, users: Users) -> None:
    tf = world.questions["true_false"]
    single = world.questions["single_choice"]
    multi = world.questions["multiple_response"]
    quiz = world.add_quiz(questions=[tf, single, multi])
    learners = [world.learner, world.other]
    for n in range(4):
        extra = person(users, f"l{n}@example.org")
        enrol(world.client, world.course, extra)
        learners.append(extra)
    for n, who in enumerate(learners):
        attempt = world.start(quiz, who)
        strong = n % 2 == 0
        answers = {
            tf: True,
            single: "c-paris" if strong else "c-nice",
            multi: ["m-2", "m-3"] if strong else ["m-4"],
        }
        world.submit(attempt["id"], answers, who)
    out = ok(call(world.client, "GET", f"/items/{quiz}/quiz/analysis", world.ta.headers))
    assert out["attempts"] == 6
    stats = {s["question_id"]: s for s in out["questions"]}
    assert stats[tf]["difficulty"] == 1.0
    assert stats[tf]["flagged"] is True
    assert stats[tf]["note"] == "no_item_variance"
    assert stats[single]["discrimination"] is not None and stats[single]["discrimination"] > 0.5
    assert stats[single]["flagged"] is False
