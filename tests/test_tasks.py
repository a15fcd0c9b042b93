"""Background jobs on every broker: the ``jobs`` table (SQLite, PostgreSQL), Redis, RabbitMQ.

Each test gets its own queue name (and Redis namespace), so tests running in
parallel never consume each other's messages.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Connection
from sqlalchemy import create_engine
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy import update

from core import create_app
from core import hookimpl
from core import tasks
from core.db import get_db
from core.db import session
from core.db import utcnow
from core.models import Job
from core.models import OutboxMail
from core.models import User
from core.plugins import PluginLoadError
from core.tasks import ActorSpec
from core.tasks import JobsOptions
from core.tasks import store as tasks_store
from tests.conftest import PG_URL
from tests.conftest import REDIS_URL
from tests.conftest import base_config
from tests.conftest import reset_schema

AMQP_URL = os.environ.get("TRIVIUM_TEST_AMQP_URL", "")

#: Keys the ``test.flaky`` actor accepts; any other key fails.
HEALED: set[str] = set()


# ---------------------------------------------------------------- test actors


def record(key: str) -> None:
    """Idempotent: the effect (one outbox row per key) happens once however often it runs."""
    sess = session()
    exists = sess.scalar(select(OutboxMail.id).where(OutboxMail.to == key))
    if exists is None:
        sess.add(OutboxMail(to=key, subject=tasks.current_job_id() or "", body="recorded"))
        sess.commit()


def fail(key: str) -> None:
    raise RuntimeError(f"boom {key}")


def flaky(key: str) -> None:
    if key not in HEALED:
        raise RuntimeError(f"not yet {key}")
    record(key)


class JobActors:
    """A temporary plugin declaring the test actors on one queue."""

    def __init__(self, queue: str) -> None:
        self.queue = queue

    @hookimpl
    def register_actors(self) -> list[ActorSpec]:
        return [
            ActorSpec(record, "test.record", queue=self.queue),
            ActorSpec(fail, "test.fail", queue=self.queue, max_retries=2),
            ActorSpec(flaky, "test.flaky", queue=self.queue, max_retries=0),
        ]


# ---------------------------------------------------------------- harness


@contextmanager
def pg_admin() -> Iterator[Connection]:
    engine = create_engine(PG_URL)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


class Backend:
    """Builds apps sharing one database and one broker, and cleans up after them."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.queue = f"q_{uuid.uuid4().hex[:12]}"
        self.namespace = f"trivium-test-{uuid.uuid4().hex[:12]}"
        self.config: dict[str, Any] = base_config(tmp_path)
        self.pg_schema = ""
        if kind == "db-postgresql":
            # A schema of this test's own: other test sessions may share the database.
            self.pg_schema = f"trivium_tasks_{uuid.uuid4().hex[:12]}"
            with pg_admin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{self.pg_schema}"'))
            sep = "&" if "?" in PG_URL else "?"
            url = f"{PG_URL}{sep}options=-csearch_path%3D{self.pg_schema}"
            self.config["database"] = {"url": url}
        if kind == "redis":
            self.config["jobs"]["broker"] = REDIS_URL
        elif kind == "amqp":
            self.config["jobs"]["broker"] = AMQP_URL
        self.apps: list[Flask] = []

    def options(self, **changes: Any) -> JobsOptions:
        values: dict[str, Any] = {
            "lease_seconds": 30.0,
            "poll_interval": 0.05,
            "min_backoff_ms": 50,
            "max_backoff_ms": 200,
            "redis_namespace": self.namespace,
            "worker_timeout_ms": 100,
            "stop_timeout_ms": 5000,
        }
        values.update(changes)
        return JobsOptions(**values)

    def app(self, *, fresh_db: bool = False, **options: Any) -> Flask:
        plugins = {"jobtest": JobActors(self.queue)}
        app = create_app(self.config["path"], self.config, extra_plugins=plugins)
        tasks.init_app(app, self.options(**options))
        if fresh_db:
            reset_schema(app)
        self.apps.append(app)
        return app

    def start_worker(self, app: Flask) -> None:
        tasks.get_jobs(app).start_worker(queues=[self.queue], threads=2)

    def crash(self, app: Flask) -> None:
        """Tear an app down without letting it finish anything."""
        jobs = tasks.get_jobs(app)
        if jobs.worker is not None:
            jobs.stop_worker()
        get_db(app).dispose()

    def close(self) -> None:
        for app in self.apps:
            tasks.get_jobs(app).close()
            get_db(app).dispose()
        if self.pg_schema:
            with pg_admin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.pg_schema}" CASCADE'))
        if self.kind == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(f"{self.namespace}*"))
            if keys:
                client.delete(*keys)
            client.close()
        if self.kind == "amqp":
            import pika

            conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
            channel = conn.channel()
            for name in (self.queue, f"{self.queue}.DQ", f"{self.queue}.XQ"):
                channel.queue_delete(queue=name)
            conn.close()


KINDS = [
    "db-sqlite",
    pytest.param(
        "db-postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not PG_URL, reason="TRIVIUM_TEST_DATABASE_URL not set"),
        ],
    ),
    pytest.param(
        "redis",
        marks=[
            pytest.mark.redis,
            pytest.mark.skipif(not REDIS_URL, reason="TRIVIUM_TEST_REDIS_URL not set"),
        ],
    ),
    pytest.param(
        "amqp",
        marks=pytest.mark.skipif(not AMQP_URL, reason="TRIVIUM_TEST_AMQP_URL not set"),
    ),
]


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(str(request.param), tmp_path)
    try:
        yield b
    finally:
        b.close()


def job_row(app: Flask, message_id: str) -> Job | None:
    with get_db(app).sessions() as sess:
        return sess.scalar(select(Job).where(Job.message_id == message_id))


def wait_for(app: Flask, message_id: str, states: tuple[str, ...] = ("done", "failed")) -> Job:
    """The message's row once it reaches one of ``states`` (30 s at most)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = job_row(app, message_id)
        if row is not None and row.state in states:
            return row
        time.sleep(0.05)
    raise AssertionError(f"job {message_id} never reached {states}: {job_row(app, message_id)}")


def effects(app: Flask, key: str) -> int:
    with get_db(app).sessions() as sess:
        return int(sess.scalar(select(func.count()).where(OutboxMail.to == key)) or 0)


def send(app: Flask, name: str, *args: Any, delay_ms: int | None = None) -> str:
    with app.app_context():
        message = tasks.enqueue_with_options(name, args=args, delay_ms=delay_ms)
    return message.message_id


def take_one(app: Flask, queue: str) -> Any:
    """Fetch one message the way a worker does, then hold it without finishing it."""
    consumer = tasks.get_jobs(app).broker.consume(queue, prefetch=1, timeout=100)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            return consumer, message
    raise AssertionError("no message to take")


# ---------------------------------------------------------------- every broker


def test_hook_register_actors(backend: Backend) -> None:
    app = backend.app(fresh_db=True)
    backend.start_worker(app)

    message_id = send(app, "test.record", "runs@example.org")

    row = wait_for(app, message_id)
    assert (row.state, row.attempts, row.error) == ("done", 1, "")
    assert row.actor == "test.record" and row.queue == backend.queue
    with get_db(app).sessions() as sess:
        mail = sess.scalars(select(OutboxMail).where(OutboxMail.to == "runs@example.org")).one()
    assert mail.subject == message_id  # current_job_id() inside the actor


def test_a_job_enqueued_before_a_crash_still_runs_after_restart(backend: Backend) -> None:
    first = backend.app(fresh_db=True)
    message_id = send(first, "test.record", "restart@example.org")
    backend.crash(first)
    row = job_row(first, message_id)
    assert row is not None and row.state == "queued"

    second = backend.app()
    backend.start_worker(second)

    assert wait_for(second, message_id).state == "done"
    assert effects(second, "restart@example.org") == 1


def test_a_delayed_job_waits_then_runs(backend: Backend) -> None:
    app = backend.app(fresh_db=True)
    backend.start_worker(app)
    sent_at = time.monotonic()

    message_id = send(app, "test.record", "later@example.org", delay_ms=1500)

    time.sleep(0.5)
    row = job_row(app, message_id)
    assert row is not None and row.state == "queued"
    assert effects(app, "later@example.org") == 0
    assert wait_for(app, message_id).state == "done"
    assert time.monotonic() - sent_at >= 1.4


def test_a_claimed_job_is_redelivered_when_its_lease_expires(backend: Backend) -> None:
    lease = 1.0
    crashed = backend.app(fresh_db=True, lease_seconds=lease)
    message_id = send(crashed, "test.record", "lease@example.org")
    consumer, message = take_one(crashed, backend.queue)
    assert message.message_id == message_id
    # The doomed worker did the work but died before acknowledging it.
    with crashed.app_context():
        record("lease@example.org")
    taken_at = time.monotonic()
    if backend.kind == "amqp":
        consumer.close()  # RabbitMQ's lease is the consumer's connection

    survivor = backend.app(lease_seconds=lease)
    if backend.kind == "redis":
        survivor_broker: Any = tasks.get_jobs(survivor).broker
        survivor_broker.maintenance_chance = 1_000_000  # look for dead workers on every fetch
    backend.start_worker(survivor)

    row = wait_for(survivor, message_id)
    assert row.state == "done"
    if backend.kind.startswith("db"):
        assert row.attempts == 2
        assert time.monotonic() - taken_at >= lease * 0.9
    # Redelivered, and idempotent: the second run changed nothing.
    assert effects(survivor, "lease@example.org") == 1


def test_a_failing_job_is_retried_then_failed_with_its_error(backend: Backend) -> None:
    app = backend.app(fresh_db=True)
    backend.start_worker(app)

    message_id = send(app, "test.fail", "x1")

    row = wait_for(app, message_id, ("failed",))
    assert row.attempts == 3  # the first run and max_retries=2 retries
    assert "RuntimeError: boom x1" in row.error
    failed = tasks.get_jobs(app).list_jobs(state="failed")
    assert [j.message_id for j in failed] == [message_id]


def test_an_operator_retries_a_failed_job(backend: Backend) -> None:
    app = backend.app(fresh_db=True)
    backend.start_worker(app)
    key = f"flaky-{uuid.uuid4().hex}@example.org"
    message_id = send(app, "test.flaky", key)
    row = wait_for(app, message_id, ("failed",))
    assert "not yet" in row.error

    HEALED.add(key)
    tasks.get_jobs(app).retry(row.id)

    assert wait_for(app, message_id, ("done",)).error == ""
    assert effects(app, key) == 1
    with pytest.raises(tasks.JobNotRetryable):
        tasks.get_jobs(app).retry(row.id)
    with pytest.raises(tasks.JobNotFound):
        tasks.get_jobs(app).retry(row.id + 1000)


def test_of_two_retries_at_once_only_one_goes_through(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = backend.app(fresh_db=True)
    backend.start_worker(app)
    key = f"flaky-{uuid.uuid4().hex}@example.org"
    message_id = send(app, "test.flaky", key)
    row = wait_for(app, message_id, ("failed",))
    tasks.get_jobs(app).stop_worker()
    tasks.get_jobs(app).retry(row.id)
    queued = job_row(app, message_id)
    assert queued is not None and queued.state == "queued"

    # the second retry read the row before the first one wrote it
    monkeypatch.setattr(tasks_store, "get_row", lambda conn, job_id: ("failed", row.message))
    with pytest.raises(tasks.JobNotRetryable, match="no longer failed"):
        tasks.get_jobs(app).retry(row.id)

    after = job_row(app, message_id)
    assert after is not None
    assert (after.state, after.attempts, after.message, after.updated_at) == (
        "queued",
        queued.attempts,
        queued.message,
        queued.updated_at,
    )


def test_enqueue_on_commit_sends_only_what_commits(backend: Backend) -> None:
    app = backend.app(fresh_db=True)
    with app.app_context():
        sess = session()
        sess.add(User(email="c@example.org", display_name="C"))
        sess.flush()
        kept = tasks.enqueue_on_commit(sess, "test.record", "kept@example.org")
        with sess.begin_nested():  # a SAVEPOINT released is not the commit
            sess.add(User(email="n@example.org", display_name="N"))
        assert job_row(app, kept.message_id) is None
        sess.commit()
        sess.add(User(email="d@example.org", display_name="D"))
        sess.flush()
        dropped = tasks.enqueue_on_commit(sess, "test.record", "dropped@example.org")
        sess.rollback()
        sess.add(User(email="e@example.org", display_name="E"))
        sess.commit()  # a later commit does not resurrect the dropped message
    assert job_row(app, dropped.message_id) is None

    backend.start_worker(app)
    assert wait_for(app, kept.message_id).state == "done"
    assert effects(app, "kept@example.org") == 1
    assert job_row(app, dropped.message_id) is None
    assert effects(app, "dropped@example.org") == 0


# ---------------------------------------------------------------- db broker specifics


@pytest.fixture
def db_backend(tmp_path: Path) -> Iterator[Backend]:
    b = Backend("db-sqlite", tmp_path)
    try:
        yield b
    finally:
        b.close()


def test_enqueue_inside_a_sqlite_write_transaction_is_refused(db_backend: Backend) -> None:
    app = db_backend.app(fresh_db=True)
    with app.app_context():
        session().add(User(email="w@example.org", display_name="W"))
        session().flush()
        with pytest.raises(tasks.EnqueueWouldDeadlock):
            tasks.enqueue("test.record", "x@example.org")
        session().rollback()
        tasks.enqueue("test.record", "x@example.org")  # fine once nothing is pending


def test_stopping_gives_back_jobs_fetched_but_not_started(db_backend: Backend) -> None:
    app = db_backend.app(fresh_db=True)
    message_id = send(app, "test.record", "given-back@example.org")
    consumer, message = take_one(app, db_backend.queue)
    row = job_row(app, message_id)
    assert row is not None and (row.state, row.attempts) == ("running", 1)

    consumer.requeue([message])

    row = job_row(app, message_id)
    assert row is not None and (row.state, row.attempts, row.locked_until) == ("queued", 0, None)


def test_a_stale_claim_cannot_overwrite_a_newer_delivery(db_backend: Backend) -> None:
    app = db_backend.app(fresh_db=True, lease_seconds=0.2)
    message_id = send(app, "test.record", "stale@example.org")
    stale_consumer, stale = take_one(app, db_backend.queue)
    time.sleep(0.3)
    fresh_consumer, fresh = take_one(app, db_backend.queue)
    assert (stale.delivery, fresh.delivery) == (1, 2)

    stale_consumer.nack(stale)  # the late worker reports a failure: ignored
    row = job_row(app, message_id)
    assert row is not None and row.state == "running"
    fresh_consumer.ack(fresh)
    row = job_row(app, message_id)
    assert row is not None and row.state == "done"


def test_rows_abandoned_too_often_end_failed(db_backend: Backend) -> None:
    app = db_backend.app(fresh_db=True, lease_seconds=0.05)
    broker: Any = tasks.get_jobs(app).broker
    broker.max_deliveries = 2
    message_id = send(app, "test.record", "poison@example.org")
    take_one(app, db_backend.queue)
    time.sleep(0.1)
    take_one(app, db_backend.queue)
    time.sleep(0.1)

    consumer = broker.consume(db_backend.queue, prefetch=1, timeout=50)
    assert next(consumer) is None

    row = job_row(app, message_id)
    assert row is not None and row.state == "failed"
    assert "abandoned" in row.error


def test_consumers_purge_old_done_jobs_and_keep_failed_ones(db_backend: Backend) -> None:
    app = db_backend.app(fresh_db=True)
    old, recent, failed = (send(app, "test.record", f"{n}@example.org") for n in range(3))
    long_ago = utcnow() - timedelta(days=8)
    with get_db(app).engine.begin() as conn:
        for message_id, state, at in (
            (old, "done", long_ago),
            (recent, "done", utcnow()),
            (failed, "failed", long_ago),
        ):
            conn.execute(
                update(Job).where(Job.message_id == message_id).values(state=state, updated_at=at)
            )

    consumer = tasks.get_jobs(app).broker.consume(db_backend.queue, prefetch=1, timeout=50)
    assert next(consumer) is None

    assert job_row(app, old) is None
    assert [job_row(app, m) is not None for m in (recent, failed)] == [True, True]


def test_the_embedded_worker_starts_only_for_the_db_broker_when_enabled(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    app = create_app(tmp_path, config)
    assert tasks.get_jobs(app).start_embedded_worker() is False  # embedded_worker = false

    config["jobs"]["embedded_worker"] = True
    app = create_app(tmp_path, config)
    reset_schema(app)
    jobs = tasks.get_jobs(app)
    try:
        app.test_client().get("/api/v1/openapi.json")  # the first request starts it
        assert jobs.worker is not None
        with app.app_context():
            message = tasks.enqueue("core.send_mail", "to@example.org", "Hello", "Body")
        assert wait_for(app, message.message_id).state == "done"
        assert effects(app, "to@example.org") == 1  # core's sender wrote the outbox row
    finally:
        jobs.close()
        get_db(app).dispose()
    assert jobs.worker is None


# ---------------------------------------------------------------- declaring actors


def test_actor_decorator_builds_a_spec() -> None:
    @tasks.actor("demo.thing", queue="things", max_retries=1, time_limit_ms=5000, priority=3)
    def thing(n: int) -> int:
        return n * 2

    assert isinstance(thing, ActorSpec)
    assert (thing.name, thing.queue, thing.priority) == ("demo.thing", "things", 3)
    assert thing.dramatiq_options() == {"max_retries": 1, "time_limit": 5000}
    assert thing(21) == 42


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "non-empty"),
        ({"name": "x", "queue": "has space"}, "queue"),
        ({"name": "x", "max_retries": -1}, "max_retries"),
        ({"name": "x", "time_limit_ms": 0}, "time_limit_ms"),
    ],
)
def test_bad_specs_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(tasks.ActorSpecInvalid, match=message):
        ActorSpec(fn=print, **kwargs)


def test_duplicate_actor_names_stop_start_up_naming_both_plugins(tmp_path: Path) -> None:
    class Impostor:
        @hookimpl
        def register_actors(self) -> list[ActorSpec]:
            return [ActorSpec(print, "core.send_mail")]

    with pytest.raises(tasks.DuplicateActor, match="'core' and 'impostor'"):
        create_app(tmp_path, base_config(tmp_path), extra_plugins={"impostor": Impostor()})


def test_a_plugin_returning_a_plain_function_is_refused(tmp_path: Path) -> None:
    class Sloppy:
        @hookimpl
        def register_actors(self) -> list[Any]:
            return [print]

    with pytest.raises(PluginLoadError, match=r"'sloppy'.*register_actors"):
        create_app(tmp_path, base_config(tmp_path), extra_plugins={"sloppy": Sloppy()})


def test_unknown_broker_settings_and_actors_are_named_errors(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["jobs"]["broker"] = "kafka://somewhere"
    with pytest.raises(tasks.JobsConfigError, match="kafka"):
        create_app(tmp_path, config)

    app = create_app(tmp_path, base_config(tmp_path))
    with app.app_context(), pytest.raises(tasks.UnknownActor):
        tasks.enqueue("nobody.home")


@pytest.fixture(params=KINDS[:2])
def table_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(str(request.param), tmp_path)
    try:
        yield b
    finally:
        b.close()


def test_is_queued_and_pending_jobs_see_waiting_and_running_jobs(table_backend: Backend) -> None:
    app = table_backend.app(fresh_db=True)
    with app.app_context():
        assert not tasks.is_queued("test.record")
        assert tasks.pending_jobs("test.record") == []
    first = send(app, "test.record", "queued@example.org", delay_ms=60_000)
    second = send(app, "test.record", "other@example.org", delay_ms=60_000)
    with app.app_context():
        assert tasks.is_queued("test.record")
        assert tasks.is_queued("test.record", args=("queued@example.org",))
        assert not tasks.is_queued("test.record", args=("nobody@example.org",))
        assert not tasks.is_queued("test.fail")
        pending = tasks.pending_jobs("test.record")
        assert [(j.message_id, j.state) for j in pending] == [
            (first, "queued"),
            (second, "queued"),
        ]
        assert pending[0].id < pending[1].id
        (only,) = tasks.pending_jobs("test.record", args=["other@example.org"])
        assert only.message_id == second
    # Running counts; done does not.
    with get_db(app).engine.begin() as conn:
        conn.execute(update(Job).where(Job.message_id == first).values(state="running"))
        conn.execute(update(Job).where(Job.message_id == second).values(state="done"))
    with app.app_context():
        assert [(j.message_id, j.state) for j in tasks.pending_jobs("test.record")] == [
            (first, "running")
        ]
        assert not tasks.is_queued("test.record", args=("other@example.org",))
    with get_db(app).engine.begin() as conn:
        conn.execute(update(Job).where(Job.message_id == first).values(state="failed"))
    with app.app_context():
        assert not tasks.is_queued("test.record")


def test_is_queued_leaves_out_the_job_asking(db_backend: Backend) -> None:
    seen: list[tuple[bool, bool]] = []

    def probe(key: str) -> None:
        seen.append((tasks.is_queued("test.probe"), tasks.is_queued("test.probe", args=(key,))))

    class Probe:
        @hookimpl
        def register_actors(self) -> list[ActorSpec]:
            return [ActorSpec(probe, "test.probe", queue=db_backend.queue)]

    app = create_app(db_backend.config["path"], db_backend.config, extra_plugins={"probe": Probe()})
    tasks.init_app(app, db_backend.options())
    reset_schema(app)
    db_backend.apps.append(app)
    db_backend.start_worker(app)
    message_id = send(app, "test.probe", "alone")
    assert wait_for(app, message_id).state == "done"
    assert seen == [(False, False)]
