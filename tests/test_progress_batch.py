"""Reports on several items in one request (``POST /me/progress``): in order, all or none."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import select

from core import create_app
from core import hookimpl
from core import progress_buffer
from core import readcache
from core.content import ContentType
from core.content import ItemView
from core.content import ProgressReportInvalid
from core.content import ProgressState
from core.db import get_db
from core.events import LearningEvent
from core.models import Course as CourseRow
from core.models import Event
from core.models import Item
from core.models import Progress
from core.models import User
from core.progress import MAX_BATCH
from core.progress_states import ProgressRecord
from tests.conftest import Users
from tests.conftest import base_config
from tests.conftest import reset_schema
from tests.conftest import snapshot
from tests.course_helpers import Course
from tests.course_helpers import Person
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.course_helpers import problem
from tests.test_progress_states import TallyPlugin


class Picky(ContentType):
    """Refuses a report whose data says ``bad``."""

    name = "picky-test"
    label = "Picky"

    def apply_progress(
        self, item: ItemView, previous: ProgressState, report: dict[str, Any]
    ) -> ProgressState:
        if report.get("data", {}).get("bad"):
            raise ProgressReportInvalid("not that")
        return ProgressState(status="in_progress", data={})


SPY: dict[str, Any] = {}


class Spy(ContentType):
    """On each report, plays another worker: it reads a learner's committed row and keeps it."""

    name = "spy-test"
    label = "Spy"

    def apply_progress(
        self, item: ItemView, previous: ProgressState, report: dict[str, Any]
    ) -> ProgressState:
        if SPY:
            app: Flask = SPY["app"]
            cache = readcache.for_app(app)
            assert cache is not None and cache.states is not None
            user_id, item_id = SPY["user"], SPY["item"]
            stamp = cache.progress_stamp(user_id)
            with get_db(app).engine.connect() as conn:  # committed rows only
                row = conn.execute(
                    select(Progress).where(Progress.user_id == user_id, Progress.item_id == item_id)
                ).one()
            record = ProgressRecord(
                user_id,
                item_id,
                row.course_id,
                row.status,
                row.score,
                row.data,
                row.updated_at,
                row.completed_at,
            )
            cache.states.keep(record, user_id, item_id, stamp)
        return ProgressState(status="in_progress", data={})


class Vanishing(ContentType):
    """Plays an author deleting another item while a batch is applied (VANISH["item"])."""

    name = "vanishing-test"
    label = "Vanishing"

    def apply_progress(
        self, item: ItemView, previous: ProgressState, report: dict[str, Any]
    ) -> ProgressState:
        if VANISH:
            with get_db(VANISH["app"]).engine.begin() as conn:  # another connection, committed
                conn.execute(delete(Item).where(Item.public_id == VANISH["item"]))
        return ProgressState(status="in_progress", data={})


VANISH: dict[str, Any] = {}

APPLIED: list[Any] = []


class Counted(ContentType):
    """Notes every report it is given (APPLIED)."""

    name = "counted-test"
    label = "Counted"

    def apply_progress(
        self, item: ItemView, previous: ProgressState, report: dict[str, Any]
    ) -> ProgressState:
        APPLIED.append(report.get("data"))
        return ProgressState(status="in_progress", data=dict(report.get("data", {})))


class PickyPlugin:
    @hookimpl
    def register_content_types(self) -> list[type[ContentType]]:
        return [Picky, Spy, Vanishing, Counted]


class Listener:
    """Records the events and course completions plugins hear."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.completed: list[str] = []

    @hookimpl
    def track_event(self, event: LearningEvent) -> None:
        self.events.append(event.verb.rsplit("/", 1)[-1])

    @hookimpl
    def course_completed(self, user: User, course: CourseRow) -> None:
        self.completed.append(course.public_id)


@pytest.fixture
def listener() -> Listener:
    return Listener()


@pytest.fixture
def app(config: dict[str, Any], listener: Listener) -> Iterator[Flask]:
    plugins = {"tally": TallyPlugin(), "picky": PickyPlugin(), "listener": listener}
    application = create_app(config["path"], config, extra_plugins=plugins)
    reset_schema(application)
    yield application
    progress_buffer.get_buffer(application).close()
    get_db(application).dispose()


@pytest.fixture
def owner(users: Users) -> Person:
    return person(users, "owner@example.org", creator=True)


@pytest.fixture
def learner(users: Users) -> Person:
    return person(users, "learner@example.org")


@pytest.fixture
def course(client: FlaskClient, owner: Person, learner: Person) -> Course:
    """Three required items: two pages, then a tally (counts its reports)."""
    built = build_course(client, owner, items=2)
    body = {"type": "tally-test", "title": "Tally", "config": {}}
    path = f"/modules/{built.modules[0]}/items"
    built.items.append(ok(call(client, "POST", path, owner.headers, body), 201)["id"])
    enrol(client, built, learner)
    return built


def _batch(client: FlaskClient, who: Person, reports: list[dict[str, Any]]) -> Any:
    return call(client, "POST", "/me/progress", who.headers, {"reports": reports})


def _beat(item: str, **data: Any) -> dict[str, Any]:
    return {"item_id": item, **_single(**data)}


def _single(**data: Any) -> dict[str, Any]:
    return {"status": "in_progress", "data": data}


def _rows(app: Flask) -> dict[int, tuple[str, dict[str, Any], bool]]:
    with get_db(app).session() as sess:
        return {
            p.item_id: (p.status, p.data, p.completed_at is not None)
            for p in sess.scalars(select(Progress))
        }


def _events(app: Flask) -> int:
    with get_db(app).session() as sess:
        return int(sess.scalar(select(func.count()).select_from(Event)) or 0)


def test_reports_apply_in_order_and_answer_each(
    app: Flask, client: FlaskClient, learner: Person, course: Course, listener: Listener
) -> None:
    page, other, tally = course.items
    events = _events(app)  # enrolling made some
    reports = [
        _beat(page, scroll=0.2),
        _beat(tally),
        _beat(page, scroll=0.6),
        {"item_id": other, "status": "completed"},
        _beat(tally),
        _beat(tally),
    ]
    answers = ok(_batch(client, learner, reports))["items"]
    assert [a["item_id"] for a in answers] == [page, tally, page, other, tally, tally]
    assert [a["data"].get("beats") for a in answers if a["item_id"] == tally] == [1, 2, 3]
    assert answers[2]["data"] == {"scroll": 0.6}
    assert answers[3]["item_completed"] and answers[3]["status"] == "completed"
    assert not any(a["course_completed"] for a in answers)
    # stored in the request's transaction (not waiting): the last state of each item
    stored = sorted(_rows(app).values(), key=repr)
    assert ("in_progress", {"scroll": 0.6}, False) in stored
    assert ("completed", {}, True) in stored
    assert ("in_progress", {"beats": 3, "trail": [1, 2, 3]}, False) in stored
    assert _events(app) == events + 6
    heard = ["progressed", "progressed", "progressed", "completed", "progressed", "progressed"]
    assert listener.events[-6:] == heard
    # and single reports build on what the batch stored
    one = ok(call(client, "PUT", f"/items/{tally}/progress", learner.headers, _single()))
    assert one["data"]["beats"] == 4


def test_completing_the_course_in_a_batch_is_announced_after_commit(
    app: Flask, client: FlaskClient, learner: Person, course: Course, listener: Listener
) -> None:
    page, other, tally = course.items
    reports = [
        {"item_id": page, "status": "completed"},
        {"item_id": other, "status": "completed"},
        {"item_id": tally, "data": {"done": True}},
    ]
    answers = ok(_batch(client, learner, reports))["items"]
    assert [a["item_completed"] for a in answers] == [True, True, True]
    assert [a["course_completed"] for a in answers] == [False, False, True]
    assert listener.completed == [course.id]


@pytest.mark.parametrize(
    ("bad", "status", "words"),
    [
        ({"item_id": "0" * 32, "status": "in_progress"}, 404, "no such item"),
        (
            {"item_id": "tally", "data": {"answer": 1}, "status": "nonsense"},
            422,
            "reports.2.status",
        ),
    ],
)
def test_one_bad_report_refuses_the_batch_and_stores_nothing(
    app: Flask,
    client: FlaskClient,
    learner: Person,
    course: Course,
    listener: Listener,
    bad: dict[str, Any],
    status: int,
    words: str,
) -> None:
    page, other, tally = course.items
    ok(_batch(client, learner, [_beat(tally)]))  # something stored already
    bad = {**bad, "item_id": tally if bad["item_id"] == "tally" else bad["item_id"]}
    before, heard = snapshot(app), list(listener.events)
    reports = [_beat(page, scroll=0.5), {"item_id": other, "status": "completed"}, bad]
    body = problem(_batch(client, learner, reports), status)
    assert words in str(body).lower()
    if status == 404:
        assert body["detail"].startswith("reports[2]:") and body["report"] == 2
    assert snapshot(app) == before
    assert listener.events == heard  # nobody heard of the refused reports


def test_a_content_type_refusal_refuses_the_batch(
    app: Flask, client: FlaskClient, owner: Person, learner: Person, listener: Listener
) -> None:
    built = build_course(client, owner, items=1)
    body = {"type": "picky-test", "title": "Picky", "config": {}}
    path = f"/modules/{built.modules[0]}/items"
    picky = ok(call(client, "POST", path, owner.headers, body), 201)["id"]
    enrol(client, built, learner)
    before, heard = snapshot(app), list(listener.events)
    reports = [_beat(built.items[0], scroll=0.1), _beat(picky), _beat(picky, bad=True)]
    body = problem(_batch(client, learner, reports), 422)
    assert body["detail"] == "reports[2]: not that"  # the content type's own words
    assert body["report"] == 2
    assert snapshot(app) == before
    assert listener.events == heard
    assert [a["item_id"] for a in ok(_batch(client, learner, reports[:2]))["items"]] == [
        built.items[0],
        picky,
    ]


def test_reports_on_a_course_without_enrolment_are_refused(
    app: Flask, client: FlaskClient, users: Users, owner: Person, learner: Person, course: Course
) -> None:
    elsewhere = build_course(client, owner, items=1, title="Not enrolled")
    before = snapshot(app)
    reports = [_beat(course.items[0], scroll=0.3), _beat(elsewhere.items[0], scroll=0.3)]
    body = problem(_batch(client, learner, reports), 403)
    assert body["report"] == 1
    assert snapshot(app) == before
    # staff report nothing either
    problem(_batch(client, owner, [_beat(course.items[0])]), 403)
    assert snapshot(app) == before


@pytest.mark.parametrize(
    "payload",
    [
        {"reports": []},
        {"reports": "everything"},
        {"reports": [{"status": "in_progress"}]},
        {"reports": [{"item_id": "", "status": "in_progress"}]},
        {"reports": [{"item_id": "x", "status": "in_progress", "extra": 1}]},
        {},
    ],
)
def test_malformed_batches_are_refused(
    app: Flask, client: FlaskClient, learner: Person, course: Course, payload: Any
) -> None:
    before = snapshot(app)
    resp = call(client, "POST", "/me/progress", learner.headers, payload)
    assert resp.status_code in (400, 422)
    assert resp.content_type == "application/problem+json"
    assert snapshot(app) == before


def test_a_batch_has_at_most_max_batch_reports(
    app: Flask, client: FlaskClient, learner: Person, course: Course
) -> None:
    before = snapshot(app)
    many = [_beat(course.items[0], scroll=0.1)] * (MAX_BATCH + 1)
    problem(_batch(client, learner, many), 422)
    assert snapshot(app) == before
    answers = ok(_batch(client, learner, [_beat(course.items[2])] * MAX_BATCH))["items"]
    assert answers[-1]["data"]["beats"] == MAX_BATCH


def test_callers_without_a_valid_token_are_refused(
    app: Flask, client: FlaskClient, course: Course
) -> None:
    forged = {"Authorization": "Bearer trv_not-a-token"}
    problem(
        call(client, "POST", "/me/progress", forged, {"reports": [_beat(course.items[0])]}), 401
    )


@pytest.fixture
def buffered(tmp_path: Path, backend: str, listener: Listener) -> Iterator[Flask]:
    cfg = base_config(tmp_path / "buffered", backend)
    cfg["progress"] = {"flush_ms": 10_000, "flush_rows": 100_000}
    application = create_app(cfg["path"], cfg, extra_plugins={"tally": TallyPlugin()})
    reset_schema(application)
    yield application
    progress_buffer.get_buffer(application).close()
    get_db(application).dispose()


def test_a_batch_builds_on_heartbeats_waiting_in_the_buffer(buffered: Flask) -> None:
    client = buffered.test_client()
    users = Users(buffered)
    owner = person(users, "owner@example.org", creator=True)
    learner = person(users, "learner@example.org")
    built = build_course(client, owner, items=1)
    body = {"type": "tally-test", "title": "Tally", "config": {}}
    path = f"/modules/{built.modules[0]}/items"
    tally = ok(call(client, "POST", path, owner.headers, body), 201)["id"]
    enrol(client, built, learner)
    buffer = progress_buffer.get_buffer(buffered)
    events = _events(buffered)
    single = ok(call(client, "PUT", f"/items/{tally}/progress", learner.headers, _single()))
    assert single["data"]["beats"] == 1 and buffer.waiting() == 2  # row + event, waiting
    answers = ok(_batch(client, learner, [_beat(tally), _beat(tally)]))["items"]
    assert [a["data"]["beats"] for a in answers] == [2, 3]
    # the batch waits with the heartbeat before it: the newest row, every event
    assert buffer.waiting() == 1 + 3 and _rows(buffered) == {}
    assert buffer.flush() == 4  # in one transaction
    assert next(iter(_rows(buffered).values()))[1]["beats"] == 3
    assert _events(buffered) == events + 3


def _buffered_course(app: Flask) -> tuple[FlaskClient, Person, Course]:
    """A course of two pages, and a learner enrolled in it."""
    client = app.test_client()
    users = Users(app)
    owner = person(users, "owner@example.org", creator=True)
    learner = person(users, "learner@example.org")
    built = build_course(client, owner, items=2)
    enrol(client, built, learner)
    return client, learner, built


def test_a_batch_waits_for_its_request_to_commit_and_is_dropped_on_rollback(
    buffered: Flask,
) -> None:
    from core import db
    from core import progress as svc

    _client, learner, built = _buffered_course(buffered)
    buffer = progress_buffer.get_buffer(buffered)
    for outcome in ("rolled back", "committed"):
        with buffered.test_request_context():
            sess = db.session()
            user = sess.scalars(select(User).where(User.email == learner.user.email)).one()
            reports = []
            for public_id in built.items:
                item = sess.scalars(select(Item).where(Item.public_id == public_id)).one()
                course = sess.get(CourseRow, item.course_id)
                assert course is not None
                reports.append((item, course, {"status": "in_progress", "data": {"at": 1}}))
            svc.report_many(sess, user, reports, buffer=buffer)
            assert buffer.waiting() == 0  # not before the request commits
            if outcome == "committed":
                sess.commit()
            else:
                sess.rollback()
                sess.commit()  # a later commit does not bring them back
        assert buffer.waiting() == (0 if outcome == "rolled back" else 2 + 2), outcome
    assert buffer.flush() == 4 and len(_rows(buffered)) == 2


def test_an_archived_course_refuses_the_batch_before_anything_is_heard(
    app: Flask,
    client: FlaskClient,
    owner: Person,
    learner: Person,
    course: Course,
    listener: Listener,
) -> None:
    old = build_course(client, owner, items=1, title="Last year")
    enrol(client, old, learner)
    ok(call(client, "POST", f"/courses/{old.id}/archive", owner.headers))
    before, heard = snapshot(app), list(listener.events)
    reports = [_beat(course.items[0], scroll=0.4), _beat(old.items[0], scroll=0.4)]
    body = problem(_batch(client, learner, reports), 409)
    assert "archived" in body["detail"] and body["report"] == 1
    assert snapshot(app) == before
    assert listener.events == heard


def test_a_batch_builds_on_its_own_writes_not_on_what_others_keep(
    app: Flask, client: FlaskClient, owner: Person, learner: Person, course: Course
) -> None:
    tally = course.items[2]
    path = f"/modules/{course.modules[0]}/items"
    body = {"type": "spy-test", "title": "Spy", "config": {}}
    spy = ok(call(client, "POST", path, owner.headers, body), 201)["id"]
    ok(call(client, "PUT", f"/items/{tally}/progress", learner.headers, _single()))  # beats 1
    with get_db(app).session() as sess:
        row = sess.scalars(select(Progress)).one()
        SPY.update(app=app, user=row.user_id, item=row.item_id)
    try:
        reports = [
            {"item_id": tally, "status": "in_progress", "data": {"done": True}},  # 2, completed
            _beat(spy),  # another worker keeps the committed row (beats 1) meanwhile
            _beat(tally),  # must count on the batch's own completion
        ]
        answers = ok(_batch(client, learner, reports))["items"]
    finally:
        SPY.clear()
    assert answers[0]["data"]["beats"] == 2 and answers[0]["status"] == "completed", answers
    assert answers[2]["data"]["beats"] == 3


def test_an_item_deleted_while_the_batch_is_applied_refuses_it_cleanly(
    app: Flask, client: FlaskClient, owner: Person, learner: Person, course: Course
) -> None:
    page = course.items[0]
    body = {"type": "vanishing-test", "title": "Vanishing", "config": {}}
    path = f"/modules/{course.modules[0]}/items"
    vanishing = ok(call(client, "POST", path, owner.headers, body), 201)["id"]
    events = _events(app)
    VANISH.update(app=app, item=page)
    try:
        resp = _batch(client, learner, [_beat(page, scroll=0.5), _beat(vanishing)])
    finally:
        VANISH.clear()
    body = problem(resp, 409)
    assert "send the batch again" in body["detail"]
    assert _rows(app) == {} and _events(app) == events  # nothing of the batch stored


def test_each_report_of_a_batch_is_applied_once(
    client: FlaskClient, owner: Person, learner: Person, course: Course
) -> None:
    path = f"/modules/{course.modules[0]}/items"
    body = {"type": "counted-test", "title": "Counted", "config": {}}
    counted = ok(call(client, "POST", path, owner.headers, body), 201)["id"]
    APPLIED.clear()
    answers = ok(_batch(client, learner, [_beat(counted, n=n) for n in range(3)]))["items"]
    assert [a["data"] for a in answers] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert APPLIED == [{"n": 0}, {"n": 1}, {"n": 2}]  # checked and stored, not applied twice


@pytest.mark.parametrize("met", ["same", "changed"])
def test_a_prepared_report_is_applied_again_if_the_state_it_meets_changed(
    app: Flask, learner: Person, course: Course, met: str
) -> None:
    # A batch's first pass applies each report; the second stores that result,
    # unless the state the report meets is no longer the one it was applied to.
    from core import progress as svc

    report = {"status": "in_progress", "data": {}}
    stored = ProgressState()  # the tally item was never reported on
    assumed = stored if met == "same" else ProgressState("in_progress", None, {"beats": 41})
    prepared = svc._Applied(assumed, ProgressState("in_progress", None, {"beats": 42}), False)
    with app.test_request_context():
        from core import db

        sess = db.session()
        user = sess.scalars(select(User).where(User.email == learner.user.email)).one()
        item = sess.scalars(select(Item).where(Item.public_id == course.items[2])).one()
        row = sess.get(CourseRow, item.course_id)
        assert row is not None
        for buffer in (progress_buffer.get_buffer(app), None):  # a heartbeat, then written now
            outcome = svc.report_progress(
                sess, user, item, row, report, buffer=buffer, prepared=prepared
            )
            beats = outcome.progress.data["beats"]
            assert beats == (42 if met == "same" else 1)
            sess.rollback()


def test_a_batch_with_a_completion_is_written_whole_in_its_request(buffered: Flask) -> None:
    client, learner, built = _buffered_course(buffered)
    buffer = progress_buffer.get_buffer(buffered)
    reports = [
        _beat(built.items[0], scroll=0.5),
        {"item_id": built.items[1], "status": "completed"},
    ]
    ok(_batch(client, learner, reports))
    # the completion is written in the request, so its heartbeat is too
    assert buffer.waiting() == 0
    assert sorted(status for status, _, _ in _rows(buffered).values()) == [
        "completed",
        "in_progress",
    ]
