"""Plugins store server-computed results (graded attempts) through core.progress.record_result."""

from __future__ import annotations

import math
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core import db
from core import hookimpl
from core.content import ContentType
from core.content import ProgressState
from core.models import Course as CourseRow
from core.models import Item
from core.models import User
from core.progress import CourseReadOnly
from core.progress import InvalidResult
from core.progress import NotEnrolled
from core.progress import announce
from core.progress import record_result
from tests.conftest import Users
from tests.conftest import snapshot
from tests.course_helpers import Course
from tests.course_helpers import Person
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person


def _record(app: Flask, learner: Person, item_id: str, state: ProgressState) -> Any:
    with app.test_request_context():
        sess = db.session()
        item = sess.scalars(select(Item).where(Item.public_id == item_id)).one()
        course = sess.get_one(CourseRow, item.course_id)
        user = sess.get_one(User, learner.user.id)
        outcome = record_result(sess, user, item, course, state)
        sess.commit()
        announce(outcome)
        return outcome


@pytest.fixture
def setup(client: FlaskClient, users: Users) -> tuple[Course, Person, Person]:
    owner = person(users, creator=True)
    learner = person(users)
    course = build_course(client, owner, items=2)
    enrol(client, course, learner)
    return course, owner, learner


def test_result_is_stored_and_completes_the_course_once(
    app: Flask, client: FlaskClient, setup: tuple[Course, Person, Person]
) -> None:
    course, _, learner = setup
    completions: list[str] = []

    class Listener:
        @hookimpl
        def course_completed(self, user: User) -> None:
            completions.append(user.email)

    host = app.extensions["trivium.plugins"]
    host.register(Listener(), "test-listener")
    try:
        first = _record(app, learner, course.items[0], ProgressState("completed", 0.8, {"a": 1}))
        assert (first.item_completed, first.course_completed) == (True, False)
        second = _record(app, learner, course.items[1], ProgressState("completed", 1.0))
        assert second.course_completed is True
        again = _record(app, learner, course.items[1], ProgressState("completed", 0.9))
        assert again.course_completed is False
    finally:
        host.unregister("test-listener")
    assert completions == [learner.user.email]
    mine = ok(call(client, "GET", f"/items/{course.items[0]}/progress", learner.headers))
    assert (mine["status"], mine["score"], mine["data"]) == ("completed", 0.8, {"a": 1})


@pytest.mark.parametrize(
    "state",
    [
        ProgressState("finished", 1.0),
        ProgressState("completed", 1.5),
        ProgressState("completed", -0.1),
        ProgressState("completed", math.nan),
        ProgressState("completed", True),  # type: ignore[arg-type]
        ProgressState("completed", 1.0, ["not", "a", "dict"]),  # type: ignore[arg-type]
    ],
)
def test_impossible_results_are_refused_and_nothing_is_stored(
    app: Flask, setup: tuple[Course, Person, Person], state: ProgressState
) -> None:
    course, _, learner = setup
    before = snapshot(app)
    with pytest.raises(InvalidResult):
        _record(app, learner, course.items[0], state)
    assert snapshot(app) == before


def test_only_enrolled_learners_of_open_courses_get_results(
    app: Flask, client: FlaskClient, users: Users, setup: tuple[Course, Person, Person]
) -> None:
    course, owner, learner = setup
    stranger = person(users)
    before = snapshot(app)
    with pytest.raises(NotEnrolled):
        _record(app, stranger, course.items[0], ProgressState("completed", 1.0))
    ok(call(client, "POST", f"/courses/{course.id}/archive", owner.headers))
    archived = snapshot(app)
    with pytest.raises(CourseReadOnly):
        _record(app, learner, course.items[0], ProgressState("completed", 1.0))
    assert snapshot(app) == archived
    assert before["progress"] == archived["progress"] == []


def test_completion_is_decided_by_the_content_type(
    app: Flask, client: FlaskClient, users: Users
) -> None:
    class Graded(ContentType):
        name = "graded-test"
        label = "Graded"

        def is_complete(self, state: ProgressState) -> bool:
            return state.score is not None and state.score >= 0.5

    class Types:
        @hookimpl
        def register_content_types(self) -> list[type[ContentType]]:
            return [Graded]

    host = app.extensions["trivium.plugins"]
    host.register(Types(), "test-graded")
    host.collect_content_types()
    try:
        owner = person(users, creator=True)
        learner = person(users)
        course = build_course(client, owner, items=0, publish=False)
        item = ok(
            call(
                client,
                "POST",
                f"/modules/{course.modules[0]}/items",
                owner.headers,
                {"type": "graded-test", "title": "Quiz", "config": {}},
            ),
            201,
        )["id"]
        ok(call(client, "POST", f"/courses/{course.id}/publish", owner.headers))
        enrol(client, course, learner)
        failed = _record(app, learner, item, ProgressState("completed", 0.3))
        assert (failed.item_completed, failed.course_completed) == (False, False)
        passed = _record(app, learner, item, ProgressState("completed", 0.7))
        assert (passed.item_completed, passed.course_completed) == (True, True)
    finally:
        host.unregister("test-graded")
