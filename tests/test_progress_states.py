"""Learners' stored progress, shared by an instance's processes on one machine.

Heartbeats read the stored row from the machine's table (core.progress_states)
instead of the database.  "Another process" is a second app on the same
instance folder: it shares the database, the counters and the table, and
nothing in memory.  The content type here counts beats from the stored state,
so a stale read anywhere shows as a wrong count.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core import create_app
from core import hookimpl
from core import progress_buffer
from core import readcache
from core.content import ContentType
from core.content import ItemView
from core.content import ProgressState
from core.db import get_db
from core.db import utcnow
from core.generations import Generations
from core.models import Item
from core.models import Progress
from core.models import User
from core.progress_buffer import upserted
from core.progress_states import _ROW_AT
from core.progress_states import ENTRY_BYTES
from core.progress_states import ProgressRecord
from core.progress_states import ProgressStates
from core.progress_states import _place
from tests.conftest import Users
from tests.conftest import base_config
from tests.conftest import reset_schema
from tests.course_helpers import Course
from tests.course_helpers import Person
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person


class Tally(ContentType):
    """Counts heartbeats in ``data.beats`` from the stored state; ``done`` completes it."""

    name = "tally-test"
    label = "Tally"

    def apply_progress(
        self, item: ItemView, previous: ProgressState, report: dict[str, Any]
    ) -> ProgressState:
        beats = int(previous.data.get("beats", 0)) + 1
        data = {"beats": beats, "trail": [*previous.data.get("trail", []), beats][-3:]}
        if report.get("data", {}).get("done"):
            return ProgressState(status="completed", score=1.0, data=data)
        return ProgressState(status="in_progress", data=data)

    def is_complete(self, state: ProgressState) -> bool:
        return state.status == "completed"


class TallyPlugin:
    @hookimpl
    def register_content_types(self) -> list[type[ContentType]]:
        return [Tally]


def _new_app(config: dict[str, Any]) -> Flask:
    return create_app(config["path"], config, extra_plugins={"tally": TallyPlugin()})


def _close(app: Flask) -> None:
    progress_buffer.get_buffer(app).close()
    get_db(app).dispose()


@pytest.fixture
def config(tmp_path: Path, backend: str) -> dict[str, Any]:
    """Batching on, flushed only when a test says so."""
    cfg = base_config(tmp_path, backend)
    cfg["progress"] = {"flush_ms": 10_000, "flush_rows": 100_000}
    return cfg


@pytest.fixture
def app(config: dict[str, Any]) -> Iterator[Flask]:
    application = _new_app(config)
    reset_schema(application)
    yield application
    _close(application)


@pytest.fixture
def other(config: dict[str, Any], app: Flask) -> Iterator[Flask]:
    """A second "process" of the same instance."""
    second = _new_app(config)
    yield second
    _close(second)


@pytest.fixture
def authored(client: FlaskClient, users: Users) -> tuple[Person, Person, Course, str]:
    """The course's author, an enrolled learner, the course and its tally item."""
    owner = person(users, "owner@example.org", creator=True)
    learner = person(users, "learner@example.org")
    course = build_course(client, owner, items=1)
    body = {"type": "tally-test", "title": "Tally", "config": {}}
    item = ok(call(client, "POST", f"/modules/{course.modules[0]}/items", owner.headers, body), 201)
    enrol(client, course, learner)
    return owner, learner, course, item["id"]


@pytest.fixture
def setup(authored: tuple[Person, Person, Course, str]) -> tuple[Person, Course, str]:
    return authored[1:]


def _beat(app: Flask, learner: Person, item: str, **data: Any) -> dict[str, Any]:
    body = {"status": "in_progress", "data": data}
    answer: dict[str, Any] = ok(
        call(app.test_client(), "PUT", f"/items/{item}/progress", learner.headers, body)
    )
    return answer


def _flush(app: Flask) -> None:
    progress_buffer.get_buffer(app).flush()


def _keys(app: Flask, item: str) -> tuple[int, int]:
    with get_db(app).session() as sess:
        user_id = sess.scalar(select(User.id).where(User.email == "learner@example.org"))
        item_id = sess.scalar(select(Item.id).where(Item.public_id == item))
    assert user_id is not None and item_id is not None
    return user_id, item_id


def _shared(app: Flask, user_id: int, item_id: int) -> Any:
    cache = readcache.for_app(app)
    assert cache is not None and cache.states is not None
    return cache.states.get(user_id, item_id)


def _stored(app: Flask) -> list[tuple[str, dict[str, Any]]]:
    with get_db(app).session() as sess:
        return [(p.status, p.data) for p in sess.scalars(select(Progress))]


def test_beats_on_alternating_processes_count_every_one(
    app: Flask, other: Flask, setup: tuple[Person, Course, str]
) -> None:
    learner, _, item = setup
    user_id, item_id = _keys(app, item)
    for n in range(1, 13):
        here = app if n % 2 else other
        answer = _beat(here, learner, item)
        assert answer["data"]["beats"] == n
        _flush(here)
        # the writer's entry stays current for every process of the machine
        there = other if n % 2 else app
        shared = _shared(there, user_id, item_id)
        assert shared is not None and shared[0].data["beats"] == n
    assert _stored(app) == [("in_progress", {"beats": 12, "trail": [10, 11, 12]})]


def test_a_write_by_another_process_drops_the_entry(
    app: Flask, other: Flask, setup: tuple[Person, Course, str]
) -> None:
    learner, _, item = setup
    user_id, item_id = _keys(app, item)
    _beat(app, learner, item)
    _flush(app)
    assert _shared(app, user_id, item_id) is not None
    # a completion: written in its request through the ORM, never buffered
    done = _beat(other, learner, item, done=True)
    assert done["status"] == "completed" and done["item_completed"]
    assert _shared(app, user_id, item_id) is None
    # read from the database: counted on the completed row (a stale entry would give 2)
    after = _beat(app, learner, item)
    assert after["data"]["beats"] == 3
    _flush(app)
    assert _stored(app) == [(after["status"], {"beats": 3, "trail": [1, 2, 3]})]


def test_a_batch_waiting_in_one_process_does_not_hide_another_processs_write(
    app: Flask, other: Flask, setup: tuple[Person, Course, str]
) -> None:
    learner, _, item = setup
    user_id, item_id = _keys(app, item)
    _beat(app, learner, item)
    _flush(app)
    _beat(other, learner, item)  # waits in other's buffer
    _beat(app, learner, item)  # app cannot know: beats 2 too (last writer wins)
    _flush(other)
    _flush(app)
    # each flush re-stamped only if nobody else moved the counter in between
    shared = _shared(app, user_id, item_id)
    stored = _stored(app)
    assert stored[0][1]["beats"] == 2
    if shared is not None:
        assert shared[0].data == stored[0][1]
    assert _beat(other, learner, item)["data"]["beats"] == 3


def test_an_uncommitted_write_is_never_shared(
    app: Flask, setup: tuple[Person, Course, str]
) -> None:
    learner, _, item = setup
    user_id, item_id = _keys(app, item)
    cache = readcache.for_app(app)
    assert cache is not None
    with app.app_context(), get_db(app).sessions() as sess:
        sess.add(
            Progress(
                user_id=user_id,
                item_id=item_id,
                course_id=sess.scalar(select(Item.course_id).where(Item.id == item_id)),
                status="in_progress",
                data={"beats": 99},
                updated_at=utcnow(),
            )
        )
        sess.flush()
        stamp = cache.progress_stamp(user_id)
        cache.keep_progress(sess, user_id, item_id, None, stamp)
        assert cache.progress(sess, user_id, item_id) is None  # not kept: the session wrote
        sess.rollback()
    assert _beat(app, learner, item)["data"]["beats"] == 1


# ------------------------------------------------------------ the table itself


def _record(user_id: int = 1, item_id: int = 2, **data: Any) -> ProgressRecord:
    return ProgressRecord(
        user_id=user_id,
        item_id=item_id,
        course_id=3,
        status="in_progress",
        score=None,
        data=data,
        updated_at=utcnow(),
    )


@pytest.fixture
def states(tmp_path: Path) -> Iterator[ProgressStates]:
    generations = Generations(tmp_path / "generations")
    table = ProgressStates(tmp_path / "states", generations, lambda user: user % 97, ttl=30)
    yield table
    table.close()
    generations.close()


def test_rows_and_absence_are_kept_and_copied(states: ProgressStates) -> None:
    states.keep(None, 1, 2, states.stamp(1))
    assert states.get(1, 2) == (None,)
    record = _record(scroll=0.5, nested={"a": [1]})
    states.keep(record, 1, 2, states.stamp(1))
    found = states.get(1, 2)
    assert found is not None and found[0] == record
    found[0].data["nested"]["a"].append(2)  # the caller's copy
    again = states.get(1, 2)
    assert again is not None and again[0].data == {"scroll": 0.5, "nested": {"a": [1]}}


def test_a_second_table_on_the_file_sees_the_same_entries(tmp_path: Path) -> None:
    generations = Generations(tmp_path / "generations")
    one = ProgressStates(tmp_path / "states", generations, lambda user: user, ttl=30)
    two = ProgressStates(tmp_path / "states", generations, lambda user: user, ttl=30)
    record = _record(scroll=0.25)
    one.keep(record, 1, 2, one.stamp(1))
    assert two.get(1, 2) == (record,)
    one.close()
    two.close()
    generations.close()


def test_a_move_of_the_counter_ends_the_entry(states: ProgressStates) -> None:
    stamp = states.stamp(1)
    states.keep(_record(), 1, 2, stamp)
    states.generations.bump([states.slot_of_user(1)])
    assert states.get(1, 2) is None
    # kept under a stamp read before a move: never current
    states.keep(_record(), 1, 2, stamp)
    assert states.get(1, 2) is None


def test_written_keeps_current_entries_current_and_merges(states: ProgressStates) -> None:
    old = _record(scroll=0.1)
    states.keep(old, 1, 2, states.stamp(1))
    states.keep(_record(1, 5, scroll=0.9), 1, 5, states.stamp(1))
    newer = _record(scroll=0.2)
    states.written({(1, 2): newer}, upserted)
    assert states.get(1, 2) == (newer,)
    assert states.get(1, 5) is None  # the learner's other item: not written here, dropped
    # a completed row stays as it was (the upsert's rule)
    done = ProgressRecord(**{**newer.values(), "status": "completed", "completed_at": utcnow()})
    states.keep(done, 1, 2, states.stamp(1))
    states.written({(1, 2): _record(scroll=0.3)}, upserted)
    assert states.get(1, 2) == (done,)


def test_written_after_anothers_move_leaves_the_entry_behind(states: ProgressStates) -> None:
    states.keep(_record(scroll=0.1), 1, 2, states.stamp(1))
    states.generations.bump([states.slot_of_user(1)])  # another process wrote
    states.written({(1, 2): _record(scroll=0.2)}, upserted)
    assert states.get(1, 2) is None


def test_a_torn_or_damaged_entry_is_a_miss(states: ProgressStates) -> None:
    states.keep(_record(scroll=0.5), 1, 2, states.stamp(1))
    assert states.get(1, 2) is not None
    mapped = states._file.map
    row_at = _place(1, 2) + _ROW_AT  # the first byte of the row, as a writer would leave it
    mapped[row_at] = mapped[row_at] ^ 0xFF
    assert states.get(1, 2) is None


def test_a_row_too_large_is_not_kept(states: ProgressStates) -> None:
    states.keep(_record(text="x" * ENTRY_BYTES), 1, 2, states.stamp(1))
    assert states.get(1, 2) is None
    small = _record(scroll=0.1)
    states.keep(small, 1, 2, states.stamp(1))
    states.written({(1, 2): _record(text="y" * ENTRY_BYTES)}, upserted)
    assert states.get(1, 2) is None  # the written row does not fit: dropped, not stale


def test_another_key_in_the_same_place_replaces_the_entry(states: ProgressStates) -> None:
    first = (1, 2)
    second = next((1, item) for item in range(3, 1_000_000) if _place(1, item) == _place(*first))
    states.keep(_record(*first), *first, states.stamp(1))
    states.keep(_record(*second), *second, states.stamp(1))
    assert states.get(*first) is None
    found = states.get(*second)
    assert found is not None and found[0].item_id == second[1]


def test_entries_expire(states: ProgressStates, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.progress_states as module

    states.keep(_record(), 1, 2, states.stamp(1))
    assert states.get(1, 2) is not None
    later = module.time.time() + 31
    monkeypatch.setattr(module.time, "time", lambda: later)
    assert states.get(1, 2) is None


def test_timestamps_survive_the_round_trip(states: ProgressStates) -> None:
    record = ProgressRecord(
        **{
            **_record().values(),
            "completed_at": utcnow() - timedelta(days=1),
            "score": 0.75,
            "status": "completed",
        }
    )
    states.keep(record, 1, 2, states.stamp(1))
    found = states.get(1, 2)
    assert found is not None
    assert found[0] == record
    assert found[0].completed_at is not None and found[0].completed_at.tzinfo is not None


def test_an_entry_from_before_the_clock_was_set_back_is_not_current(
    states: ProgressStates, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.progress_states as module

    # the file outlives a reboot; an expiry far ahead means the clock went back
    now = module.time.time()
    monkeypatch.setattr(module.time, "time", lambda: now + 10 * 86400)
    states.keep(_record(), 1, 2, states.stamp(1))
    monkeypatch.setattr(module.time, "time", lambda: now)
    assert states.get(1, 2) is None


def test_the_epoch_ends_every_entry(states: ProgressStates) -> None:
    states.keep(_record(), 1, 2, states.stamp(1))
    states.keep(_record(5, 6), 5, 6, states.stamp(5))
    states.generations.bump([states.epoch_slot])
    assert states.get(1, 2) is None and states.get(5, 6) is None
    states.keep(_record(scroll=0.1), 1, 2, states.stamp(1))
    states.generations.bump([states.epoch_slot])  # between the read and the batch's write
    states.written({(1, 2): _record(scroll=0.2)}, upserted)
    assert states.get(1, 2) is None


def test_nothing_is_read_while_other_machines_may_be_missed(tmp_path: Path) -> None:
    link = {"up": False}
    generations = Generations(tmp_path / "generations")
    table = ProgressStates(
        tmp_path / "states", generations, lambda user: user, 30, connected=lambda: link["up"]
    )
    table.keep(_record(), 1, 2, table.stamp(1))
    assert table.get(1, 2) is None
    link["up"] = True
    assert table.get(1, 2) is not None
    table.close()
    generations.close()


def test_a_half_written_entry_is_left_alone_by_the_writer(states: ProgressStates) -> None:
    states.keep(_record(scroll=0.1), 1, 2, states.stamp(1))
    mapped = states._file.map
    row_at = _place(1, 2) + _ROW_AT
    mapped[row_at] = ord("{")  # a killed writer's leftovers: no longer JSON, CRC wrong
    states.written({(1, 2): _record(scroll=0.2)}, upserted)  # does not raise
    assert states.get(1, 2) is None


def test_a_deleted_items_progress_never_reaches_an_item_given_its_id(
    app: Flask, authored: tuple[Person, Person, Course, str]
) -> None:
    owner, learner, course, item = authored
    client = app.test_client()
    for _ in range(3):
        _beat(app, learner, item)
    _flush(app)
    _beat(app, learner, item)  # kept in the table
    _flush(app)
    user_id, item_id = _keys(app, item)
    assert _shared(app, user_id, item_id) is not None
    # deleting the item deletes its progress in the database (ON DELETE CASCADE)
    ok(call(client, "DELETE", f"/items/{item}", owner.headers), 204)
    body = {"type": "tally-test", "title": "Tally 2", "config": {}}
    path = f"/modules/{course.modules[0]}/items"
    new = ok(call(client, "POST", path, owner.headers, body), 201)["id"]
    if _keys(app, new)[1] == item_id:  # SQLite gives the new item the deleted one's id
        assert _shared(app, user_id, item_id) is None
    assert _beat(app, learner, new)["data"]["beats"] == 1


def test_forked_writers_never_hand_a_reader_a_mixed_entry(tmp_path: Path) -> None:
    # Writers in other processes keep and re-stamp one key over and over, each
    # with rows of its own; the reader takes no lock, so it may miss, but
    # whatever it gets must be a row some writer wrote, whole.
    generations = Generations(tmp_path / "generations")
    states = ProgressStates(tmp_path / "states", generations, lambda user: user, ttl=30)
    context = multiprocessing.get_context("fork")

    def write(writer: int) -> None:
        for n in range(1500):
            row = _record(1, 2, writer=writer, n=n, pad="x" * (n % 200))
            states.keep(row, 1, 2, states.stamp(1))
            states.written({(1, 2): _record(1, 2, writer=writer, n=-n)}, upserted)

    writers = [context.Process(target=write, args=(w,)) for w in range(3)]
    for process in writers:
        process.start()
    seen = 0
    try:
        while any(process.is_alive() for process in writers):
            found = states.get(1, 2)
            if found is not None and found[0] is not None:
                data = found[0].data
                assert data["writer"] in (0, 1, 2) and isinstance(data["n"], int)
                assert set(data) <= {"writer", "n", "pad"}
                if "pad" in data:
                    assert data["pad"] == "x" * (data["n"] % 200)
                seen += 1
    finally:
        for process in writers:
            process.join(60)
    assert [process.exitcode for process in writers] == [0, 0, 0]
    assert seen > 0
    states.close()
    generations.close()
