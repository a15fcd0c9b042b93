"""Batched heartbeat writes: coalescing, flushing, failures, reads and completions.

The rest of the suite writes heartbeats in their request (``flush_ms = 0``);
here batching is on, with a flush interval long enough that only the test
decides when a batch is written (one test lets the thread do it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from core import hookimpl
from core import progress_buffer
from core.db import get_db
from core.db import new_public_id
from core.db import utcnow
from core.models import Course as CourseRow
from core.models import Event
from core.models import Item
from core.models import Progress
from core.models import User
from core.progress_buffer import ProgressBuffer
from core.progress_states import ProgressRecord
from core.tasks import get_jobs
from tests.conftest import Users
from tests.conftest import base_config
from tests.course_helpers import Course
from tests.course_helpers import Person
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import complete
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person

PROGRESSED = "http://adlnet.gov/expapi/verbs/progressed"


@pytest.fixture
def config(tmp_path: Path, backend: str) -> dict[str, Any]:
    """Batching on; the background thread would wait 10 s, so tests flush."""
    cfg = base_config(tmp_path, backend)
    cfg["progress"] = {"flush_ms": 10_000, "flush_rows": 100_000}
    return cfg


@pytest.fixture
def buffer(app: Flask) -> Iterator[ProgressBuffer]:
    """The app's buffer, closed (and so flushed) after the test."""
    buf = progress_buffer.get_buffer(app)
    yield buf
    buf.close()


@pytest.fixture
def owner(users: Users) -> Person:
    """The course's instructor."""
    return person(users, "owner@example.org", creator=True)


@pytest.fixture
def learner(users: Users) -> Person:
    """An enrolled learner (see ``course``)."""
    return person(users, "learner@example.org")


@pytest.fixture
def course(client: FlaskClient, owner: Person, learner: Person) -> Course:
    """A published course of two required pages, ``learner`` enrolled."""
    built = build_course(client, owner, items=2)
    enrol(client, built, learner)
    return built


def _beat(client: FlaskClient, learner: Person, item: str, **data: Any) -> dict[str, Any]:
    body = {"status": "in_progress", "data": data}
    result: dict[str, Any] = ok(
        call(client, "PUT", f"/items/{item}/progress", learner.headers, body)
    )
    return result


def _stored(app: Flask) -> list[tuple[str, dict[str, Any], bool]]:
    """Stored progress rows: (status, data, completed?), by item id."""
    with get_db(app).session() as sess:
        rows = sess.execute(
            select(Progress.status, Progress.data, Progress.completed_at).order_by(Progress.item_id)
        )
        return [(r[0], r[1], r[2] is not None) for r in rows]


def _events(app: Flask, verb: str = PROGRESSED) -> int:
    with get_db(app).session() as sess:
        return int(sess.scalar(select(func.count()).select_from(Event).where(Event.verb == verb)))


def test_heartbeats_wait_coalesce_and_flush_in_one_batch(
    app: Flask, client: FlaskClient, buffer: ProgressBuffer, learner: Person, course: Course
) -> None:
    answers = [_beat(client, learner, course.items[0], scroll=n / 10) for n in range(1, 6)]
    # each answer is the new state, although nothing is stored yet
    assert [a["data"] for a in answers] == [{"scroll": n / 10} for n in range(1, 6)]
    assert {(a["status"], a["item_completed"], a["course_completed"]) for a in answers} == {
        ("in_progress", False, False)
    }
    assert answers[-1]["updated_at"] is not None
    assert _stored(app) == []
    assert _events(app) == 0
    assert buffer.waiting() == 1 + 5  # one row for the item, every event

    assert buffer.flush() == 6
    assert _stored(app) == [("in_progress", {"scroll": 0.5}, False)]
    assert _events(app) == 5
    assert buffer.waiting() == 0
    assert buffer.flush() == 0
    # the statement, made when the row is written, is the whole xAPI statement
    with get_db(app).session() as sess:
        row = sess.scalars(select(Event).order_by(Event.id.desc()).limit(1)).one()
    statement = row.statement
    assert statement["id"].replace("-", "") == row.public_id
    assert statement["verb"]["id"] == PROGRESSED
    assert statement["object"]["id"].endswith("/items/" + course.items[0])
    assert statement["actor"]["account"]["name"] == learner.id
    assert statement["result"] == {"completion": False}
    extensions = statement["context"]["extensions"]
    assert {k.rsplit("/", 1)[-1]: v for k, v in extensions.items()} == {
        "status": "in_progress",
        "content-type": "page",
    }


def test_reads_see_buffered_heartbeats(
    app: Flask,
    client: FlaskClient,
    users: Users,
    buffer: ProgressBuffer,
    owner: Person,
    learner: Person,
    course: Course,
) -> None:
    item = course.items[1]
    _beat(client, learner, item, scroll=0.3)
    _beat(client, learner, item, page=2)
    assert _stored(app) == []

    mine = ok(call(client, "GET", f"/items/{item}/progress", learner.headers))
    assert (mine["status"], mine["data"]) == ("in_progress", {"scroll": 0.3, "page": 2})
    outline = ok(call(client, "GET", f"/courses/{course.id}/progress/me", learner.headers))
    assert [i["status"] for i in outline["items"]] == ["not_started", "in_progress"]
    assert outline["progress"] == {"required": 2, "completed": 0, "percent": 0.0}
    table = ok(call(client, "GET", f"/courses/{course.id}/progress", owner.headers))
    assert table["items"][0]["cells"][item]["status"] == "in_progress"
    # another learner's reads are their own
    other = person(users)
    enrol(client, course, other)
    theirs = ok(call(client, "GET", f"/items/{item}/progress", other.headers))
    assert (theirs["status"], theirs["data"]) == ("not_started", {})

    # staff reading the event list get the waiting events written first
    events = ok(call(client, "GET", f"/courses/{course.id}/events?verb=progressed", owner.headers))
    assert len(events["items"]) == 2
    assert buffer.waiting() == 0
    assert _stored(app) == [("in_progress", {"scroll": 0.3, "page": 2}, False)]


def test_completion_is_written_at_once_and_announced_once(
    app: Flask, client: FlaskClient, buffer: ProgressBuffer, learner: Person, course: Course
) -> None:
    calls: list[str] = []

    class Listener:
        @hookimpl
        def course_completed(self, user: User, course: CourseRow) -> None:
            calls.append(user.public_id)

    host = app.extensions["trivium.plugins"]
    host.register(Listener(), "test-completion")
    try:
        first, last = course.items
        _beat(client, learner, first, scroll=0.9)
        done = complete(client, first, learner)
        # the completion built on the waiting heartbeat and is stored now
        assert (done["status"], done["data"], done["item_completed"]) == (
            "completed",
            {"scroll": 0.9},
            True,
        )
        assert _stored(app) == [("completed", {"scroll": 0.9}, True)]
        _beat(client, learner, last, scroll=0.2)
        assert complete(client, last, learner)["course_completed"] is True
        assert calls == [learner.id]
        # the heartbeats still waiting are older than the completions: no change
        buffer.flush()
        assert _stored(app) == [
            ("completed", {"scroll": 0.9}, True),
            ("completed", {"scroll": 0.2}, True),
        ]
        # reports on a completed item go the direct way and never announce again
        again = _beat(client, learner, first, scroll=1.0)
        assert (again["status"], again["item_completed"], again["course_completed"]) == (
            "completed",
            False,
            False,
        )
        assert buffer.waiting() == 0
        assert calls == [learner.id]
    finally:
        host.unregister("test-completion")


def test_a_waiting_heartbeat_never_overwrites_a_newer_or_completed_row(
    app: Flask, client: FlaskClient, buffer: ProgressBuffer, learner: Person, course: Course
) -> None:
    first, second = course.items
    with get_db(app).session() as sess:
        ids = {r[0]: r[1] for r in sess.execute(select(Item.public_id, Item.id))}
        course_id = sess.scalar(select(Item.course_id).where(Item.id == ids[first]))
    assert course_id is not None
    # As if another process wrote these after this process buffered its
    # heartbeats: a completion of the first item, a later heartbeat on the second.
    complete(client, first, learner)
    _beat(client, learner, second, scroll=0.7)
    buffer.flush()
    stale = utcnow() - timedelta(seconds=5)
    for item, data in ((first, {"scroll": 0.1}), (second, {"scroll": 0.1})):
        record = ProgressRecord(
            user_id=learner.user.id,
            item_id=ids[item],
            course_id=course_id,
            status="in_progress",
            score=None,
            data=data,
            updated_at=stale,
        )
        buffer.add(record, _event(record))
    # reads already prefer the stored rows, and the write leaves them alone
    mine = ok(call(client, "GET", f"/items/{second}/progress", learner.headers))
    assert mine["data"] == {"scroll": 0.7}
    buffer.flush()
    assert _stored(app) == [("completed", {}, True), ("in_progress", {"scroll": 0.7}, False)]


def _event(record: ProgressRecord) -> dict[str, Any]:
    return {
        "public_id": new_public_id(),
        "timestamp": record.updated_at,
        "user_id": record.user_id,
        "course_id": record.course_id,
        "verb": PROGRESSED,
        "object_id": "http://testserver/items/x",
        "statement": {},
    }


def test_a_failed_flush_keeps_every_row_and_blocks_no_request(
    app: Flask,
    client: FlaskClient,
    buffer: ProgressBuffer,
    learner: Person,
    course: Course,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    item = course.items[0]
    _beat(client, learner, item, scroll=0.1)
    entered = threading.Event()
    release = threading.Event()
    real_write = progress_buffer.write

    def failing_write(*args: Any) -> None:
        entered.set()
        release.wait(10)
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(progress_buffer, "write", failing_write)
    errors: list[BaseException] = []

    def flush() -> None:
        try:
            buffer.flush()
        except BaseException as exc:
            errors.append(exc)

    flusher = threading.Thread(target=flush)
    flusher.start()
    assert entered.wait(10)
    # while the batch is being written (and failing), requests go on
    started = time.monotonic()
    answer = _beat(client, learner, item, scroll=0.2)
    assert time.monotonic() - started < 5
    assert answer["data"] == {"scroll": 0.2}
    # and still read the rows being written
    assert ok(call(client, "GET", f"/items/{item}/progress", learner.headers))["data"] == {
        "scroll": 0.2
    }
    release.set()
    flusher.join(10)
    assert len(errors) == 1 and isinstance(errors[0], OperationalError)
    assert _stored(app) == []
    assert buffer.waiting() == 1 + 2  # the newer heartbeat won, both events kept
    assert ok(call(client, "GET", f"/items/{item}/progress", learner.headers))["data"] == {
        "scroll": 0.2
    }

    monkeypatch.setattr(progress_buffer, "write", real_write)
    assert buffer.flush() == 3
    assert _stored(app) == [("in_progress", {"scroll": 0.2}, False)]
    assert _events(app) == 2


def test_a_row_the_database_refuses_is_dropped_alone(
    app: Flask,
    client: FlaskClient,
    buffer: ProgressBuffer,
    owner: Person,
    learner: Person,
    course: Course,
) -> None:
    kept, deleted = course.items
    _beat(client, learner, kept, scroll=0.4)
    _beat(client, learner, deleted, scroll=0.6)
    ok(call(client, "DELETE", f"/items/{deleted}", owner.headers), 204)
    assert buffer.flush() == 4
    assert _stored(app) == [("in_progress", {"scroll": 0.4}, False)]
    assert _events(app) == 2
    assert buffer.waiting() == 0


def test_the_thread_flushes_on_its_own(tmp_path: Path, backend: str) -> None:
    from core import create_app
    from tests.conftest import reset_schema

    cfg = base_config(tmp_path, backend)
    cfg["progress"] = {"flush_ms": 20}
    app = create_app(cfg["path"], cfg)
    reset_schema(app)
    try:
        client = app.test_client()
        staff = Users(app)
        owner = person(staff, "owner@example.org", creator=True)
        learner = person(staff, "learner@example.org")
        built = build_course(client, owner, items=1)
        enrol(client, built, learner)
        _beat(client, learner, built.items[0], scroll=0.5)
        deadline = time.monotonic() + 10
        while not _stored(app) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _stored(app) == [("in_progress", {"scroll": 0.5}, False)]
        assert _events(app) == 1
    finally:
        progress_buffer.get_buffer(app).close()
        get_db(app).dispose()


def test_a_full_buffer_writes_in_the_request(
    app: Flask, client: FlaskClient, learner: Person, course: Course
) -> None:
    buf = progress_buffer.get_buffer(app)
    try:
        buf.max_rows = 2
        _beat(client, learner, course.items[0], scroll=0.1)
        assert buf.waiting() == 2
        _beat(client, learner, course.items[1], scroll=0.2)
        # past the limit the report was written directly, the waiting one not yet
        assert _stored(app) == [("in_progress", {"scroll": 0.2}, False)]
        assert buf.waiting() == 2
    finally:
        buf.close()
    assert _stored(app) == [
        ("in_progress", {"scroll": 0.1}, False),
        ("in_progress", {"scroll": 0.2}, False),
    ]


def test_close_writes_what_waits(
    app: Flask, client: FlaskClient, learner: Person, course: Course
) -> None:
    buf = progress_buffer.get_buffer(app)
    _beat(client, learner, course.items[0], scroll=0.8)
    buf.close()
    assert _stored(app) == [("in_progress", {"scroll": 0.8}, False)]
    assert buf.waiting() == 0


def test_a_server_worker_exiting_writes_heartbeats_before_stopping_jobs(
    app: Flask, client: FlaskClient, learner: Person, course: Course, monkeypatch: Any
) -> None:
    from core import serve

    buf = progress_buffer.get_buffer(app)
    _beat(client, learner, course.items[0], scroll=0.3)
    order: list[str] = []
    jobs = get_jobs(app)
    monkeypatch.setattr(jobs, "stop_worker", lambda *a, **k: order.append(f"jobs {buf.waiting()}"))
    options = serve.gunicorn_options(app)

    options["worker_exit"](None, None)

    assert order == ["jobs 0"]  # the heartbeat was written before the jobs were stopped
    assert _stored(app) == [("in_progress", {"scroll": 0.3}, False)]


def test_a_large_batch_stores_every_value(
    app: Flask, client: FlaskClient, buffer: ProgressBuffer, learner: Person, course: Course
) -> None:
    with get_db(app).session() as sess:
        first = sess.scalars(select(Item).where(Item.public_id == course.items[0])).one()
        # 90 more items of the course, straight in the database
        items = [
            Item(
                module_id=first.module_id,
                course_id=first.course_id,
                type="page",
                title=f"Extra {n}",
                position=10 + n,
                config={},
            )
            for n in range(90)
        ]
        sess.add_all(items)
        sess.flush()
        keys = [(i.id, i.course_id) for i in items]
    base = utcnow()
    records = [
        ProgressRecord(
            user_id=learner.user.id,
            item_id=item_id,
            course_id=course_id,
            status="in_progress",
            score=n / 4 if n % 2 else None,
            data={"scroll": n / 100, "note": f"n{n} é '\""},
            updated_at=base + timedelta(microseconds=n),
        )
        for n, (item_id, course_id) in enumerate(keys)
    ]
    for record in records:
        buffer.add(record, _event(record))
    assert buffer.flush() == 180
    with get_db(app).session() as sess:
        stored = {
            p.item_id: p
            for p in sess.scalars(select(Progress).where(Progress.user_id == learner.user.id))
        }
        assert _events(app) == 90
        statements = sess.scalars(select(Event.statement).where(Event.verb == PROGRESSED)).all()
    assert statements == [{}] * 90
    assert len(stored) == 90
    for record in records:
        row = stored[record.item_id]
        assert (row.status, row.score, row.data, row.updated_at, row.completed_at) == (
            record.status,
            record.score,
            record.data,
            record.updated_at,
            None,
        )
    # the next batch updates the same rows in place
    newer = [
        ProgressRecord(**{**r.values(), "data": {"scroll": 1.0}, "updated_at": utcnow()})
        for r in records
    ]
    for record in newer:
        buffer.add(record, _event(record))
    assert buffer.flush() == 180
    assert len(_stored(app)) == 90
    assert {str(d) for _, d, _ in _stored(app)} == {str({"scroll": 1.0})}


def _record(scroll: float, at: Any) -> ProgressRecord:
    """A made-up learner's record on a made-up item (never written)."""
    return ProgressRecord(
        user_id=1,
        item_id=1,
        course_id=1,
        status="in_progress",
        score=None,
        data={"scroll": scroll},
        updated_at=at,
    )


def test_a_record_handed_on_late_never_replaces_a_newer_one_waiting(buffer: ProgressBuffer) -> None:
    # A batch's records reach the buffer when its request commits, which may
    # be after a single report on the same item was queued.
    now = utcnow()
    newer = _record(0.5, now)
    buffer.add(newer, {})
    buffer.add_many([_record(0.2, now - timedelta(seconds=1))], [])
    assert buffer.get(1, 1) is newer
    buffer.add(_record(0.1, now - timedelta(seconds=2)), {})
    assert buffer.get(1, 1) is newer
    later = _record(0.7, now + timedelta(seconds=1))
    buffer.add_many([later], [])
    assert buffer.get(1, 1) is later
    buffer._pending.clear()  # made-up ids: nothing to write
    buffer._events.clear()


def test_a_record_handed_on_late_never_hides_a_newer_one_being_written(
    buffer: ProgressBuffer, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    newer = _record(0.5, now)
    buffer.add(newer, {})
    late = _record(0.2, now - timedelta(seconds=1))

    def write_fails_after_a_late_hand_on(*_args: Any) -> None:
        # while the newer record is being written, an older one arrives
        buffer.add_many([late], [])
        assert buffer.get(1, 1) is newer
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(progress_buffer, "write", write_fails_after_a_late_hand_on)
    with pytest.raises(OperationalError):
        buffer.flush()
    # the failed batch goes back; the older record never replaced it
    assert buffer.get(1, 1) is newer and buffer._pending[(1, 1)] is newer
    buffer._pending.clear()  # made-up ids: nothing to write
    buffer._events.clear()


def test_a_reader_without_the_lock_never_misses_a_record_not_yet_written(
    buffer: ProgressBuffer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # get() takes no lock, so another thread may read between any two steps
    # of a flush: a record added before must then be found (waiting, or in
    # flight while being written) unless it was written and announced
    written: list[ProgressRecord] = []
    monkeypatch.setattr(progress_buffer, "write", lambda conn, records, events: None)
    monkeypatch.setattr(buffer, "_written", lambda rows: written.extend(rows.values()))
    reads: list[tuple[str, bool, bool]] = []
    plain_setattr = ProgressBuffer.__setattr__

    def read_after_each_step(self: ProgressBuffer, name: str, value: Any) -> None:
        plain_setattr(self, name, value)
        if name in {"_pending", "_inflight", "_events"} and "_inflight" in self.__dict__:
            reads.append((name, self.get(1, 1) is not None, bool(written)))

    monkeypatch.setattr(ProgressBuffer, "__setattr__", read_after_each_step)
    record = ProgressRecord(
        user_id=1,
        item_id=1,
        course_id=1,
        status="in_progress",
        score=None,
        data={},
        updated_at=utcnow(),
    )
    buffer.add(record, {"statement": {}})
    assert buffer.flush() == 2 and written == [record]
    assert reads  # the flush's steps were watched
    assert all(found or announced for _name, found, announced in reads), reads
    assert buffer.get(1, 1) is None


def test_a_learners_export_holds_heartbeats_still_waiting(
    app: Flask, client: FlaskClient, buffer: ProgressBuffer, learner: Person, course: Course
) -> None:
    _beat(client, learner, course.items[0], scroll=0.7)
    assert buffer.waiting() == 2 and _stored(app) == []

    resp = client.get("/api/v1/me/export", headers=learner.headers)

    assert resp.status_code == 200
    document = resp.get_json()
    assert [(p["item"]["id"], p["data"]) for p in document["progress"]] == [
        (course.items[0], {"scroll": 0.7})
    ]
    verbs = [e["verb"]["id"] for e in document["learning_events"]]
    assert verbs.count(PROGRESSED) == 1
    assert buffer.waiting() == 0
