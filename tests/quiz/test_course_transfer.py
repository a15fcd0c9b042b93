"""A course's question bank and quizzes through course export, import and copy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func
from sqlalchemy import select

from core import create_app
from core.db import get_db
from core.models import Course as CourseRow
from core.models import Item
from plugins.quiz.models import Attempt
from plugins.quiz.models import BankQuestion
from tests.conftest import Users
from tests.conftest import base_config
from tests.conftest import reset_schema
from tests.conftest import snapshot
from tests.course_helpers import call
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.course_helpers import problem
from tests.quiz.world import World
from tests.quiz.world import build_world

Doc = dict[str, Any]


@pytest.fixture
def world(app: Flask, client: FlaskClient, users: Users) -> World:
    return build_world(app, client, users)


def _quiz(world: World) -> str:
    q = world.questions
    return world.add_quiz(
        "Week 1",
        questions=[q["numeric"], q["single_choice"]],
        pools=[{"category": "Secret", "count": 1}],
        attempts_allowed=3,
        open_at="2020-01-01T09:00:00Z",
        close_at="2099-02-01T09:00:00Z",
        review="immediately",
    )


def _export(world: World) -> Doc:
    resp = call(world.client, "GET", f"/courses/{world.course.id}/export", world.instructor.headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    doc: Doc = json.loads(resp.get_data())
    return doc


def _bank(app: Flask, course_id: str) -> dict[str, dict[str, Any]]:
    """The course's bank questions by id."""
    with get_db(app).session() as sess:
        key = sess.scalar(select(CourseRow.id).where(CourseRow.public_id == course_id))
        rows = sess.scalars(
            select(BankQuestion).where(BankQuestion.course_id == key).order_by(BankQuestion.id)
        )
        return {r.public_id: dict(r.body) for r in rows}


def _quiz_configs(app: Flask, course_id: str) -> list[dict[str, Any]]:
    with get_db(app).session() as sess:
        key = sess.scalar(select(CourseRow.id).where(CourseRow.public_id == course_id))
        return list(
            sess.scalars(
                select(Item.config)
                .where(Item.course_id == key, Item.type == "quiz")
                .order_by(Item.id)
            )
        )


def _same_bank(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Assert the banks hold the same questions under new ids; return old id → new id."""
    assert len(old) == len(new) and not set(old) & set(new)
    mapping = {}
    for (old_id, old_body), (new_id, new_body) in zip(old.items(), new.items(), strict=True):
        assert new_body == {**old_body, "id": new_id}
        mapping[old_id] = new_id
    return mapping


def test_round_trip_recreates_the_bank_and_points_quizzes_at_it(world: World, users: Users) -> None:
    quiz = _quiz(world)
    attempt = world.start(quiz)  # learner data, never exported
    world.submit(attempt["id"], {world.questions["numeric"]: "150 cm"})
    doc = _export(world)

    section = doc["plugins"]["quiz"]
    assert [q["id"] for q in section["questions"]] == list(_bank(world.app, world.course.id))
    (item,) = doc["modules"][0]["items"]
    assert "open_at" not in item["config"] and "close_at" not in item["config"]
    raw = json.dumps(doc)
    assert attempt["id"] not in raw and world.learner.id not in raw

    owner = person(users, "next@example.org", creator=True)
    made = ok(call(world.client, "POST", "/courses/import", owner.headers, doc), 201)

    mapping = _same_bank(_bank(world.app, world.course.id), _bank(world.app, made["id"]))
    (old_config,) = _quiz_configs(world.app, world.course.id)
    (new_config,) = _quiz_configs(world.app, made["id"])
    expected = {**old_config, "open_at": None, "close_at": None}
    expected["questions"] = [mapping[q] for q in old_config["questions"]]
    assert new_config == expected  # equal after the remap, without this run's dates
    assert set(new_config["questions"]).isdisjoint(old_config["questions"])
    with get_db(world.app).session() as sess:
        key = sess.scalar(select(CourseRow.id).where(CourseRow.public_id == made["id"]))
        assert sess.scalar(select(func.count(Attempt.id)).where(Attempt.course_id == key)) == 0


def test_copy_carries_the_bank(world: World) -> None:
    _quiz(world)
    made = ok(
        call(world.client, "POST", f"/courses/{world.course.id}/copy", world.instructor.headers),
        201,
    )
    mapping = _same_bank(_bank(world.app, world.course.id), _bank(world.app, made["id"]))
    (old_config,) = _quiz_configs(world.app, world.course.id)
    (new_config,) = _quiz_configs(world.app, made["id"])
    assert new_config["questions"] == [mapping[q] for q in old_config["questions"]]
    # the copy's quiz works: the bank page of the copy lists the questions
    listed = ok(
        call(world.client, "GET", f"/courses/{made['id']}/quiz/questions", world.instructor.headers)
    )
    assert {q["id"] for q in listed["items"]} == set(mapping.values())


def test_import_into_another_instance(world: World, tmp_path: Path) -> None:
    _quiz(world)
    doc = _export(world)
    path = tmp_path / "other"
    path.mkdir()
    second = create_app(str(path), base_config(path))
    reset_schema(second)
    try:
        there = person(Users(second), "them@other.example", creator=True)
        made = ok(call(second.test_client(), "POST", "/courses/import", there.headers, doc), 201)
        mapping = _same_bank(_bank(world.app, world.course.id), _bank(second, made["id"]))
        (config,) = _quiz_configs(second, made["id"])
        assert set(config["questions"]) <= set(mapping.values())
    finally:
        get_db(second).dispose()


def _bad_question(doc: Doc) -> None:
    doc["plugins"]["quiz"]["questions"][1]["points"] = -1


def _no_such_question(doc: Doc) -> None:
    doc["modules"][0]["items"][0]["config"]["questions"].append("gone")


def _no_bank(doc: Doc) -> None:
    del doc["plugins"]["quiz"]


def _bank_not_a_list(doc: Doc) -> None:
    doc["plugins"]["quiz"] = {"questions": "all of them"}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_bad_question, "plugin 'quiz' refused its part of the course"),
        (_bank_not_a_list, "needs a list of questions"),
        (_no_such_question, "module 1, item 1 ('Week 1'): the quiz refers to questions"),
        (_no_bank, "module 1, item 1 ('Week 1')"),
    ],
)
def test_a_refused_bank_or_quiz_stores_nothing(world: World, change: Any, says: str) -> None:
    _quiz(world)
    doc = _export(world)
    change(doc)
    before = snapshot(world.app)

    body = problem(
        call(world.client, "POST", "/courses/import", world.instructor.headers, doc), 422
    )

    assert says in body["detail"]
    assert snapshot(world.app) == before


def test_a_refused_question_is_located(world: World) -> None:
    _quiz(world)
    doc = _export(world)
    _bad_question(doc)
    body = problem(
        call(world.client, "POST", "/courses/import", world.instructor.headers, doc), 422
    )
    assert body["plugin"] == "quiz"
    assert any(e["loc"].startswith("questions.1.") for e in body["errors"])


def test_an_empty_bank_adds_no_section(world: World, users: Users) -> None:
    prof = person(users, "empty@example.org", creator=True)
    made = ok(call(world.client, "POST", "/courses", prof.headers, {"title": "Empty"}), 201)
    resp = call(world.client, "GET", f"/courses/{made['id']}/export", prof.headers)
    assert json.loads(resp.get_data())["plugins"] == {}
