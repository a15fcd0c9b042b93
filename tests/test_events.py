"""Learning events: the xAPI shape, the one recording pipe, listeners and the staff API."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event as sa_event
from sqlalchemy import select

from core import db
from core import hookimpl
from core.events import InvalidObjectId
from core.events import LearningEvent
from core.events import NewEvent
from core.events import UnknownVerb
from core.events import record_event
from core.events import record_events
from core.models import Course as CourseRow
from core.models import Event
from core.models import User
from tests.conftest import Users
from tests.course_helpers import Person
from tests.course_helpers import add_staff
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import complete
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.course_helpers import problem

ADL = "http://adlnet.gov/expapi/verbs/"


class Tracker:
    """Collects every event passed to ``track_event``."""

    def __init__(self) -> None:
        self.events: list[LearningEvent] = []

    @hookimpl
    def track_event(self, event: LearningEvent) -> None:
        self.events.append(event)


class BrokenTracker:
    """A listener that crashes."""

    @hookimpl
    def track_event(self, event: LearningEvent) -> None:
        raise RuntimeError("listener down")


@pytest.fixture
def tracker(app: Flask) -> Any:
    """A temporary ``track_event`` listener."""
    host = app.extensions["trivium.plugins"]
    found = Tracker()
    host.register(found, "test-tracker")
    try:
        yield found
    finally:
        host.unregister("test-tracker")


@pytest.fixture
def owner(users: Users) -> Person:
    """The course's instructor."""
    return person(users, "owner@example.org", creator=True)


def _record(app: Flask, user_id: int, **kwargs: Any) -> LearningEvent:
    with app.app_context():
        sess = db.session()
        user = sess.get_one(User, user_id)
        course = kwargs.pop("course_id", None)
        if course is not None:
            kwargs["course"] = sess.get_one(CourseRow, course)
        event = record_event(sess, user=user, **kwargs)
        sess.commit()
        return event


def test_hook_track_event(app: Flask, users: Users, tracker: Tracker) -> None:
    user = users.create("ada@example.org")
    with app.app_context():
        sess = db.session()
        course = CourseRow(title="C", status="published")
        sess.add(course)
        sess.commit()
        course_id, course_pid = course.id, course.public_id
    event = _record(
        app,
        user.id,
        verb="completed",
        object_id="/items/abc",
        course_id=course_id,
        result={"completion": True, "score": {"scaled": 0.9}},
        context={"attempt": 2, "https://example.org/ext/x": "y"},
    )
    statement = event.to_statement()
    assert uuid.UUID(statement["id"]).hex == event.id
    assert statement["actor"] == {
        "objectType": "Agent",
        "name": "Ada",
        "account": {"homePage": "http://testserver/", "name": user.public_id},
    }
    assert statement["verb"] == {"id": ADL + "completed", "display": {"en-US": "completed"}}
    assert statement["object"] == {"objectType": "Activity", "id": "http://testserver/items/abc"}
    assert statement["result"] == {"completion": True, "score": {"scaled": 0.9}}
    assert statement["context"]["contextActivities"]["parent"] == [
        {"objectType": "Activity", "id": f"http://testserver/courses/{course_pid}"}
    ]
    assert statement["context"]["extensions"] == {
        "http://testserver/xapi/extensions/attempt": 2,
        "https://example.org/ext/x": "y",
    }
    assert statement["timestamp"].endswith("+00:00")
    # stored as-is, and handed to listeners
    with app.app_context():
        row = db.session().scalar(select(Event).where(Event.public_id == event.id))
        assert row is not None
        assert row.statement == statement
        assert (row.verb, row.object_id, row.course_id) == (
            ADL + "completed",
            "http://testserver/items/abc",
            course_id,
        )
    assert [e.id for e in tracker.events] == [event.id]


def test_course_object_is_typed_and_events_are_frozen(app: Flask, users: Users) -> None:
    user = users.create()
    event = _record(app, user.id, verb="registered", object_id="http://testserver/courses/x")
    statement = event.to_statement()
    assert statement["object"]["definition"] == {
        "type": "http://adlnet.gov/expapi/activities/course"
    }
    assert "contextActivities" not in statement["context"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.verb = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.result["completion"] = False  # type: ignore[index]
    custom = _record(
        app, user.id, verb="https://w3id.org/xapi/video/verbs/seeked", object_id="/items/v"
    )
    assert custom.to_statement()["verb"]["display"] == {"en-US": "seeked"}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"verb": "liked", "object_id": "/items/x"}, UnknownVerb),
        ({"verb": "completed", "object_id": "items/x"}, InvalidObjectId),
        ({"verb": "completed", "object_id": "ftp://elsewhere/x"}, InvalidObjectId),
    ],
)
def test_bad_events_are_refused(
    app: Flask, users: Users, tracker: Tracker, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    user = users.create()
    with pytest.raises(error):
        _record(app, user.id, **kwargs)
    with app.app_context():
        assert db.session().scalar(select(Event)) is None
    assert tracker.events == []


def test_crashing_listener_does_not_lose_the_event(
    app: Flask, users: Users, tracker: Tracker
) -> None:
    user = users.create()
    host = app.extensions["trivium.plugins"]
    host.register(BrokenTracker(), "test-broken-tracker")
    try:
        event = _record(app, user.id, verb="launched", object_id="/items/x")
    finally:
        host.unregister("test-broken-tracker")
    assert [e.id for e in tracker.events] == [event.id]
    assert any(f.plugin == "test-broken-tracker" and f.hook == "track_event" for f in host.failures)
    with app.app_context():
        assert db.session().scalar(select(Event.public_id)) == event.id


def test_learning_flow_records_events(
    app: Flask, client: FlaskClient, users: Users, owner: Person, tracker: Tracker
) -> None:
    learner = person(users)
    course = build_course(client, owner, items=2)
    tracker.events.clear()
    enrol(client, course, learner)
    ok(
        call(
            client,
            "PUT",
            f"/items/{course.items[0]}/progress",
            learner.headers,
            {"data": {"scroll": 0.5}},
        )
    )
    complete(client, course.items[0], learner)
    complete(client, course.items[1], learner)
    course_iri = f"http://testserver/courses/{course.id}"
    item_iri = [f"http://testserver/items/{i}" for i in course.items]
    assert [(e.verb_name, e.object) for e in tracker.events] == [
        ("registered", course_iri),
        ("progressed", item_iri[0]),
        ("completed", item_iri[0]),
        ("completed", item_iri[1]),
        ("completed", course_iri),
    ]
    assert {e.actor.id for e in tracker.events} == {learner.id}
    assert {e.course_id for e in tracker.events} == {course.id}
    assert tracker.events[1].result == {"completion": False}


def test_staff_read_course_events(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    ta = person(users)
    learners = [person(users) for _ in range(3)]
    course = build_course(client, owner, items=1)
    other = build_course(client, owner, items=1, title="Other")
    add_staff(client, course, owner, ta, "ta")
    for learner in learners:
        enrol(client, course, learner)
        complete(client, course.items[0], learner)
    enrol(client, other, learners[0])
    seen: list[dict[str, Any]] = []
    cursor = ""
    while True:
        body = ok(call(client, "GET", f"/courses/{course.id}/events?limit=4{cursor}", ta.headers))
        seen += body["items"]
        if body["next_cursor"] is None:
            break
        cursor = f"&cursor={body['next_cursor']}"
    # registered + item completed + course completed, per learner; newest first
    assert len(seen) == 9
    assert [e["timestamp"] for e in seen] == sorted((e["timestamp"] for e in seen), reverse=True)
    assert all(e["statement"]["id"] for e in seen)
    registered = ok(
        call(client, "GET", f"/courses/{course.id}/events?verb=registered", owner.headers)
    )
    assert len(registered["items"]) == 3
    assert {e["statement"]["actor"]["account"]["name"] for e in registered["items"]} == {
        lr.id for lr in learners
    }
    by_iri = ok(
        call(client, "GET", f"/courses/{course.id}/events?verb={ADL}completed", owner.headers)
    )
    assert len(by_iri["items"]) == 6
    problem(call(client, "GET", f"/courses/{course.id}/events?verb=liked", owner.headers), 422)
    problem(call(client, "GET", f"/courses/{course.id}/events?cursor=AAAA", owner.headers), 422)
    problem(call(client, "GET", f"/courses/{course.id}/events", learners[0].headers), 403)


def test_record_events_stores_the_same_statements_in_one_batch(
    app: Flask, users: Users, tracker: Tracker
) -> None:
    user = users.create("ada@example.org")
    with app.app_context():
        sess = db.session()
        course = CourseRow(title="C", status="published")
        sess.add(course)
        sess.commit()
        course_id = course.id
        learner = sess.get_one(User, user.id)
        course = sess.get_one(CourseRow, course_id)
        new = [
            NewEvent(learner, "answered", "/items/q/questions/1", course, {"success": True}),
            NewEvent(learner, "answered", "/items/q/questions/2", course, None, {"attempt": "a"}),
            NewEvent(learner, "completed", "http://testserver/items/q"),
        ]
        events = record_events(sess, new)
        sess.commit()
        single = record_event(
            sess,
            user=learner,
            verb="answered",
            object_id="/items/q/questions/1",
            course=course,
            result={"success": True},
        )
        sess.commit()
    assert [e.verb_name for e in events] == ["answered", "answered", "completed"]
    assert [e.id for e in tracker.events] == [*(e.id for e in events), single.id]
    first, reference = events[0].to_statement(), single.to_statement()
    for key in ("id", "timestamp"):
        first.pop(key)
        reference.pop(key)
    assert first == reference
    with app.app_context():
        rows = {r.public_id: r for r in db.session().scalars(select(Event))}
    for event in events:
        row = rows[event.id]
        assert row.statement == event.to_statement()
        assert (row.user_id, row.verb, row.object_id) == (user.id, event.verb, event.object)
    assert rows[events[0].id].course_id == course_id
    assert rows[events[2].id].course_id is None
    assert events[1].to_statement()["context"]["extensions"] == {
        "http://testserver/xapi/extensions/attempt": "a"
    }


def test_record_events_uses_one_insert(app: Flask, users: Users) -> None:
    user = users.create()
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO EVENTS"):
            statements.append(statement)

    with app.app_context():
        sess = db.session()
        learner = sess.get_one(User, user.id)
        engine = sess.get_bind()
        sa_event.listen(engine, "before_cursor_execute", count)
        try:
            record_events(
                sess, [NewEvent(learner, "answered", f"/items/q/questions/{n}") for n in range(5)]
            )
            sess.commit()
        finally:
            sa_event.remove(engine, "before_cursor_execute", count)
        assert len(list(db.session().scalars(select(Event)))) == 5
    assert len(statements) == 1


def test_record_events_with_a_bad_event_stores_none(
    app: Flask, users: Users, tracker: Tracker
) -> None:
    user = users.create()
    with app.app_context():
        sess = db.session()
        learner = sess.get_one(User, user.id)
        with pytest.raises(UnknownVerb):
            record_events(
                sess,
                [NewEvent(learner, "answered", "/items/a"), NewEvent(learner, "liked", "/items/b")],
            )
        with pytest.raises(InvalidObjectId):
            record_events(sess, [NewEvent(learner, "answered", "items/a")])
        assert record_events(sess, []) == []
        sess.commit()
        assert db.session().scalar(select(Event)) is None
    assert tracker.events == []


def test_event_ids_are_uuid7_growing_with_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    from core import db

    clock = iter([1_700_000_000_000_000_000, 1_700_000_000_001_000_000])
    monkeypatch.setattr(db.time, "time_ns", lambda: next(clock))
    first, second = db.new_time_ordered_id(), db.new_time_ordered_id()
    for value in (first, second):
        parsed = uuid.UUID(hex=value)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert len(value) == 32 and value == parsed.hex
    assert int(first[:12], 16) == 1_700_000_000_000  # the time in ms leads
    assert first < second  # a later ms sorts after, whatever the random bits
    monkeypatch.undo()
    assert len({db.new_time_ordered_id() for _ in range(1000)}) == 1000


def test_random_bytes_come_from_os_blocks_and_never_repeat_across_a_fork(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from core import db

    reads: list[int] = []
    real = os.urandom

    def counted(n: int) -> bytes:
        reads.append(n)
        return real(n)

    monkeypatch.setattr(db.os, "urandom", counted)
    pool = db._RandomPool()
    taken = [pool.take(10) for _ in range(1000)]
    assert all(len(b) == 10 for b in taken) and len(set(taken)) == 1000
    assert reads == [pool.POOL_BYTES] * -(-10_000 // pool.POOL_BYTES)  # whole blocks only
    assert len(pool.take(pool.POOL_BYTES + 1)) == pool.POOL_BYTES + 1
    monkeypatch.undo()

    # a forked child must not hand out the bytes left in the parent's block
    db.random_bytes(1)  # the parent holds a partly used block
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.close(read_end)
        os.write(write_end, db.random_bytes(16))
        os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 16)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert len(child) == 16 and child != db.random_bytes(16)


def test_json_copy_copies_json_shaped_data_all_the_way_down() -> None:
    from core.events import json_copy

    original = {"score": {"raw": 0.5}, "trail": [1, {"a": [2]}], "pair": (3, 4), "n": None}
    copied = json_copy(original)
    assert copied == {"score": {"raw": 0.5}, "trail": [1, {"a": [2]}], "pair": [3, 4], "n": None}
    copied["score"]["raw"] = 1.0
    copied["trail"][1]["a"].append(9)
    assert original["score"] == {"raw": 0.5} and original["trail"][1] == {"a": [2]}
