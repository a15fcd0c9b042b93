"""The read cache is exact on one machine: a change committed by one process is seen
by every other process of the instance at its next request.

"Another process" is a second app built on the same instance folder: it shares the
database and the change counters file, and nothing in memory.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core import create_app
from core import operator
from core import rbac
from core import readcache
from core.cache import MemoryCache
from core.db import get_db
from core.generations import SLOTS
from core.generations import Generations
from core.generations import RedisRelay
from core.generations import slot_of
from core.models import Course as CourseRow
from core.models import Enrolment
from core.models import User
from tests.conftest import Users
from tests.conftest import add_test_keys
from tests.conftest import base_config
from tests.course_helpers import Person
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import complete
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.course_helpers import problem


@pytest.fixture
def other(config: dict[str, Any], app: Flask) -> Iterator[FlaskClient]:
    """A client of a second "process" of the same instance."""
    second = create_app(config["path"], config)
    yield second.test_client()
    get_db(second).dispose()


@pytest.fixture
def world(client: FlaskClient, users: Users) -> tuple[Person, Person, Any]:
    teacher = person(users, creator=True)
    learner = person(users)
    course = build_course(client, teacher, items=2)
    enrol(client, course, learner)
    return teacher, learner, course


def _warm(client: FlaskClient, path: str, who: Person) -> Any:
    # the first load only notes the item's course (the token's owner, the
    # page's courses); the second one is kept — and the test checks it is
    ok(call(client, "GET", path, who.headers))
    body = ok(call(client, "GET", path, who.headers))
    cache = client.application.extensions["trivium.readcache"]
    if isinstance(client.application.extensions["trivium.cache"], MemoryCache):
        tokens = client.application.extensions["trivium.tokens.local"]
        assert len(tokens.entries) >= 1
    if path.startswith("/items/"):
        assert cache.item(path.split("/")[2]) is not None
        assert cache._standings
    elif path == "/me/courses":
        assert cache._lists
    return body


def test_generations_are_shared_through_the_file(tmp_path: Path) -> None:
    one = Generations(tmp_path / "run" / "generations")
    two = Generations(tmp_path / "run" / "generations")
    slot = slot_of(("course", 7))
    assert slot == slot_of(("course", 7)) and 0 <= slot < SLOTS
    before = two.read(slot)
    one.bump([slot, slot])
    assert two.read(slot) == before + 1
    assert oct((tmp_path / "run" / "generations").stat().st_mode & 0o777) == "0o600"
    one.close()
    two.close()


def test_progress_counters_never_share_a_slot_with_other_keys() -> None:
    # heartbeats move learners' progress counters all the time: a course,
    # standing, user or token entry sharing one would be rebuilt on each read
    from core.generations import QUIET_SLOTS
    from core.readcache import PROGRESS_EPOCH
    from core.readcache import PUBLICATION
    from core.readcache import course_key
    from core.readcache import progress_key
    from core.readcache import standing_key
    from core.readcache import user_key

    busy = {slot_of(progress_key(user)) for user in range(5000)}
    quiet = {slot_of(course_key(n)) for n in range(5000)}
    quiet |= {slot_of(user_key(n)) for n in range(5000)}
    quiet |= {slot_of(standing_key(n, n % 7)) for n in range(5000)}
    quiet |= {slot_of(("token", n)) for n in range(5000)}
    quiet |= {slot_of(PUBLICATION), slot_of(PROGRESS_EPOCH)}
    assert all(QUIET_SLOTS <= slot < SLOTS for slot in busy)
    assert all(0 <= slot < QUIET_SLOTS for slot in quiet)
    assert len(busy) > 4800  # still spread over their own part


def test_the_shared_files_of_an_earlier_layout_are_removed(tmp_path: Path) -> None:
    from core import create_app
    from core.db import get_db

    config = base_config(tmp_path, "sqlite")
    run = tmp_path / "run"
    run.mkdir()
    for old in ("generations", "progress-states"):
        (run / old).write_bytes(b"\0" * 64)
    app = create_app(tmp_path, config)
    try:
        names = sorted(p.name for p in run.iterdir())
        assert "generations" not in names and "progress-states" not in names
        assert "generations-2" in names and "progress-states-2" in names
    finally:
        get_db(app).dispose()


def test_memory_generations_without_a_file() -> None:
    gens = Generations(None)
    gens.bump([3])
    assert gens.read(3) == 1 and gens.read(4) == 0


def test_item_edit_in_another_process_is_seen_at_once(
    client: FlaskClient, world: tuple[Person, Person, Any], other: FlaskClient
) -> None:
    teacher, learner, course = world
    item = course.items[0]
    assert _warm(other, f"/items/{item}", learner)["title"] == "Page 0.0"
    cache = other.application.extensions["trivium.readcache"]
    assert cache.item(item) is not None  # the second process now holds the item
    ok(call(client, "PATCH", f"/items/{item}", teacher.headers, {"title": "Renamed"}))
    assert cache.item(item) is None
    assert ok(call(other, "GET", f"/items/{item}", learner.headers))["title"] == "Renamed"


def test_unpublish_and_removal_close_items_in_every_process(
    client: FlaskClient, world: tuple[Person, Person, Any], other: FlaskClient
) -> None:
    teacher, learner, course = world
    item = course.items[0]
    _warm(other, f"/items/{item}", learner)
    ok(call(client, "POST", f"/courses/{course.id}/unpublish", teacher.headers))
    problem(call(other, "GET", f"/items/{item}", learner.headers), 404)
    ok(call(client, "POST", f"/courses/{course.id}/publish", teacher.headers))
    _warm(other, f"/items/{item}", learner)
    enrolments = ok(call(client, "GET", f"/courses/{course.id}/enrolments", teacher.headers))
    mine = next(e for e in enrolments["items"] if e["user"]["id"] == learner.id)
    resp = call(client, "DELETE", f"/enrolments/{mine['id']}", teacher.headers)
    assert resp.status_code in {200, 204}, resp.get_data(as_text=True)
    problem(call(other, "GET", f"/items/{item}", learner.headers), 403)
    problem(
        call(
            other,
            "PUT",
            f"/items/{item}/progress",
            learner.headers,
            {"status": "in_progress", "data": {}},
        ),
        403,
    )


def test_deleted_item_is_gone_in_every_process(
    client: FlaskClient, world: tuple[Person, Person, Any], other: FlaskClient
) -> None:
    teacher, learner, course = world
    item = course.items[1]
    _warm(other, f"/items/{item}", learner)
    resp = call(client, "DELETE", f"/items/{item}", teacher.headers)
    assert resp.status_code in {200, 204}, resp.get_data(as_text=True)
    problem(call(other, "GET", f"/items/{item}", learner.headers), 404)


def test_my_courses_follow_changes_from_another_process(
    client: FlaskClient, world: tuple[Person, Person, Any], other: FlaskClient
) -> None:
    teacher, learner, course = world
    _warm(other, "/me/courses", learner)
    ok(call(client, "PATCH", f"/courses/{course.id}", teacher.headers, {"title": "New title"}))
    page = ok(call(other, "GET", "/me/courses", learner.headers))
    assert page["items"][0]["course"]["title"] == "New title"
    _warm(other, "/me/courses", learner)
    complete(client, course.items[0], learner)
    page = ok(call(other, "GET", "/me/courses", learner.headers))
    assert page["items"][0]["progress"]["completed"] == 1
    # back to draft: learners no longer list it; published again: listed again
    _warm(other, "/me/courses", learner)
    ok(call(client, "POST", f"/courses/{course.id}/unpublish", teacher.headers))
    assert ok(call(other, "GET", "/me/courses", learner.headers))["items"] == []
    _warm(other, "/me/courses", learner)
    ok(call(client, "POST", f"/courses/{course.id}/publish", teacher.headers))
    assert len(ok(call(other, "GET", "/me/courses", learner.headers))["items"]) == 1


def test_a_new_enrolment_is_listed_at_once(
    client: FlaskClient, users: Users, world: tuple[Person, Person, Any], other: FlaskClient
) -> None:
    teacher, learner, _ = world
    second = build_course(client, teacher, items=1, title="Second")
    _warm(other, "/me/courses", learner)
    enrol(client, second, learner)
    titles = [
        c["course"]["title"]
        for c in ok(call(other, "GET", "/me/courses", learner.headers))["items"]
    ]
    assert "Second" in titles


def test_revoked_token_is_refused_by_every_process(
    client: FlaskClient, world: tuple[Person, Person, Any], other: FlaskClient
) -> None:
    _, learner, course = world
    _warm(other, f"/items/{course.items[0]}", learner)
    tokens = ok(call(client, "GET", "/me/tokens", learner.headers))
    token_id = tokens["items"][0]["id"] if "items" in tokens else tokens[0]["id"]
    resp = call(client, "DELETE", f"/me/tokens/{token_id}", learner.headers)
    assert resp.status_code in {200, 204}, resp.get_data(as_text=True)
    problem(call(other, "GET", f"/items/{course.items[0]}", learner.headers), 401)


def test_demoted_admin_loses_rights_in_every_process(
    app: Flask, users: Users, other: FlaskClient
) -> None:
    boss = person(users, admin=True)
    deputy = person(users, admin=True)
    ok(call(other, "GET", "/plugins", deputy.headers))
    ok(call(other, "GET", "/plugins", deputy.headers))
    tokens = other.application.extensions["trivium.tokens.local"]
    assert len(tokens.entries) == 1
    with app.test_request_context("/"), get_db(app).session() as sess:
        operator.set_admin(
            sess, sess.get_one(User, boss.user.id), sess.get_one(User, deputy.user.id), False
        )
    problem(call(other, "GET", "/plugins", deputy.headers), 403)


def test_counters_are_exact_across_forked_processes(tmp_path: Path) -> None:
    gens = Generations(tmp_path / "generations")
    slot = slot_of(("course", 1))
    context = multiprocessing.get_context("fork")

    def work() -> None:
        for _ in range(3000):
            gens.bump([slot])

    workers = [context.Process(target=work) for _ in range(3)]
    for w in workers:
        w.start()
    work()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    assert gens.read(slot) == 4 * 3000
    gens.close()


def test_an_uncommitted_change_never_reaches_the_cache(
    app: Flask, world: tuple[Person, Person, Any]
) -> None:
    _, learner, course = world
    db = get_db(app)
    with app.test_request_context("/"):
        with db.sessions() as sess:
            user = sess.get_one(User, learner.user.id)
            row = sess.scalars(select(CourseRow).where(CourseRow.public_id == course.id)).one()
            enrolment = sess.scalars(select(Enrolment).where(Enrolment.user_id == user.id)).one()
            enrolment.status = "withdrawn"
            sess.flush()
            assert rbac.access(sess, user, row).enrolment_status == "withdrawn"
            sess.rollback()
        with db.sessions() as sess:
            user = sess.get_one(User, learner.user.id)
            row = sess.scalars(select(CourseRow).where(CourseRow.public_id == course.id)).one()
            assert rbac.access(sess, user, row).enrolment_status == "active"


def test_entries_end_after_read_seconds(
    monkeypatch: pytest.MonkeyPatch, app: Flask, world: tuple[Person, Person, Any]
) -> None:
    _, learner, course = world
    cache = app.extensions["trivium.readcache"]
    db = get_db(app)
    with app.test_request_context("/"), db.sessions() as sess:
        user = sess.get_one(User, learner.user.id)
        row = sess.scalars(select(CourseRow).where(CourseRow.public_id == course.id)).one()
        rbac.access(sess, user, row)
        assert cache.standing(user.id, row.id) is not None
        now = readcache.time.monotonic()
        monkeypatch.setattr(readcache.time, "monotonic", lambda: now + cache.ttl + 1)
        assert cache.standing(user.id, row.id) is None


def test_read_seconds_zero_turns_the_cache_off(tmp_path: Path, config: dict[str, Any]) -> None:
    config = {**config, "cache": {"read_seconds": 0}}
    off = create_app(config["path"], config)
    try:
        with off.app_context():
            assert readcache.current() is None
    finally:
        get_db(off).dispose()


REDIS_URL = os.environ.get("TRIVIUM_TEST_REDIS_URL", "")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="TRIVIUM_TEST_REDIS_URL not set")


def _until(check: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return bool(check())


@needs_redis
def test_relay_carries_moves_to_another_machine(tmp_path: Path) -> None:
    here = Generations(tmp_path / "a" / "generations")
    there = Generations(tmp_path / "b" / "generations")
    channel = f"trivium:test:{uuid.uuid4().hex}"
    RedisRelay(REDIS_URL, channel, here)
    RedisRelay(REDIS_URL, channel, there)
    try:
        assert here.relay is not None and there.relay is not None
        assert here.relay.wait_ready(5) and there.relay.wait_ready(5)
        slot = slot_of(("course", 42))
        before = there.read(slot)
        here.bump([slot])
        assert here.read(slot) == 1
        assert _until(lambda: there.read(slot) == before + 1)
        # its own message does not move the sender twice
        time.sleep(0.2)
        assert here.read(slot) == 1
    finally:
        here.close()
        there.close()


@needs_redis
def test_processes_of_one_machine_skip_each_others_messages(tmp_path: Path) -> None:
    # two processes of one machine: one counters file; a move is in it already
    mine = Generations(tmp_path / "generations")
    neighbour = Generations(tmp_path / "generations")
    elsewhere = Generations(tmp_path / "other" / "generations")
    assert mine.machine == neighbour.machine != elsewhere.machine
    channel = f"trivium:test:{uuid.uuid4().hex}"
    relays = [RedisRelay(REDIS_URL, channel, g) for g in (mine, neighbour, elsewhere)]
    try:
        assert all(relay.wait_ready(5) for relay in relays)
        slot = slot_of(("progress", 7))
        mine.bump([slot])
        assert _until(lambda: elsewhere.read(slot) == 1)
        time.sleep(0.3)
        assert mine.read(slot) == neighbour.read(slot) == 1  # not moved a second time
    finally:
        for generations in (mine, neighbour, elsewhere):
            generations.close()


@needs_redis
@pytest.mark.parametrize("backend", ["sqlite"])
def test_item_edit_on_another_machine_is_seen_through_redis(
    tmp_path: Path, config: dict[str, Any], app: Flask, client: FlaskClient, users: Users
) -> None:
    teacher = person(users, creator=True)
    learner = person(users)
    course = build_course(client, teacher, items=1)
    enrol(client, course, learner)
    # a second machine: its own instance folder (so its own counters file),
    # the same database, both on one Redis cache
    base = f"http://{uuid.uuid4().hex}.test"
    first = {
        **config,
        "cache": {"url": REDIS_URL},
        "instance": {**config["instance"], "base_url": base},
    }
    machine_a = create_app(config["path"], first)
    other_path = tmp_path / "machine-b"
    other_path.mkdir()
    add_test_keys(other_path)  # every machine of an instance holds its keys
    machine_b = create_app(str(other_path), {**first, "path": str(other_path)})
    try:
        b = machine_b.test_client()
        relay = machine_b.extensions["trivium.readcache"].generations.relay
        assert relay is not None and relay.wait_ready(5)
        item = course.items[0]
        assert _warm(b, f"/items/{item}", learner)["title"] == "Page 0.0"
        a = machine_a.test_client()
        ok(call(a, "PATCH", f"/items/{item}", teacher.headers, {"title": "Moved on"}))
        cache = machine_b.extensions["trivium.readcache"]
        assert _until(lambda: cache.item(item) is None)
        assert ok(call(b, "GET", f"/items/{item}", learner.headers))["title"] == "Moved on"
    finally:
        for one in (machine_a, machine_b):
            one.extensions["trivium.readcache"].generations.close()
            get_db(one).dispose()
