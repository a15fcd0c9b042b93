"""The background-job machinery of one app: broker, actors, worker, enqueueing."""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import weakref
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from typing import Literal

from dramatiq import Actor
from dramatiq import Broker
from dramatiq import DecodeError
from dramatiq import Message
from dramatiq import Worker
from dramatiq.common import q_name
from dramatiq.middleware import AgeLimit
from dramatiq.middleware import Callbacks
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware import Middleware
from dramatiq.middleware import Pipelines
from dramatiq.middleware import Retries
from dramatiq.middleware import ShutdownNotifications
from dramatiq.middleware import TimeLimit
from flask import Flask
from flask import current_app
from flask import g
from flask import has_app_context
from sqlalchemy import event
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm import SessionTransaction

from core import process
from core.config import JobsSection
from core.db import get_db
from core.models import Job
from core.plugins import PluginHost
from core.plugins import PluginLoadError
from core.tasks import store
from core.tasks.dbbroker import DatabaseBroker
from core.tasks.middleware import AppContextMiddleware
from core.tasks.middleware import JobStateMiddleware
from core.tasks.spec import ActorSpec

log = logging.getLogger(__name__)

EXTENSION = "trivium.jobs"
BrokerKind = Literal["db", "redis", "amqp"]


class JobsConfigError(Exception):
    """``jobs.broker`` is not ``db``, a ``redis://`` URL or an ``amqp://`` URL,
    or the client library for it is not installed."""


class DuplicateActor(Exception):
    """Two plugins (or a plugin and core) declared an actor under one name."""


class UnknownActor(LookupError):
    """No actor of this name is declared on the app's broker."""


class JobNotFound(LookupError):
    """No row in the ``jobs`` table has this id."""


class JobNotRetryable(Exception):
    """Only a ``failed`` job can be retried by hand."""


class EnqueueWouldDeadlock(Exception):
    """``enqueue`` was called on SQLite while this thread's session holds a write
    transaction; the insert would wait on that lock forever.  Commit first, or
    use :func:`enqueue_on_commit`."""


@dataclass(frozen=True)
class JobsOptions:
    """Tuning that instance.toml does not expose (tests shorten the timings).

    :ivar lease_seconds: ``db`` broker: how long a crashed worker's job stays
        claimed before another worker takes it; Redis: the heartbeat timeout.
    :ivar poll_interval: ``db`` broker: an idle consumer's polling period.
    :ivar min_backoff_ms: first retry delay (doubled per retry, with jitter).
    :ivar max_backoff_ms: longest retry delay.
    :ivar time_limit_ms: default time limit of a run.
    :ivar redis_namespace: prefix of the Redis keys.
    :ivar worker_timeout_ms: how often idle worker threads wake up.
    :ivar stop_timeout_ms: how long a stopping worker waits for running jobs.
    :ivar done_retention: ``db`` broker: its consumers delete ``done`` rows
        older than this; with other brokers use ``trivium jobs purge``.
    """

    lease_seconds: float = 60.0
    poll_interval: float = 1.0
    min_backoff_ms: int = 15_000
    max_backoff_ms: int = 6 * 3600 * 1000
    time_limit_ms: int = 10 * 60 * 1000
    redis_namespace: str = "trivium"
    worker_timeout_ms: int = 1000
    stop_timeout_ms: int = 30_000
    done_retention: timedelta | None = timedelta(days=7)


def broker_kind(url: str) -> BrokerKind:
    """Classify ``jobs.broker``.

    :raise JobsConfigError: it is none of the supported forms.
    """
    if url == "db":
        return "db"
    if url.startswith(("redis://", "rediss://", "unix://")):
        return "redis"
    if url.startswith(("amqp://", "amqps://")):
        return "amqp"
    raise JobsConfigError(f"jobs.broker = {url!r}: expected 'db', a redis:// URL or an amqp:// URL")


_live: weakref.WeakSet[Jobs] = weakref.WeakSet()


class Jobs:
    """One app's broker, its declared actors, and the worker this process runs.

    The broker is rebuilt on first use in a forked child (its connections and
    threads belong to the parent).
    """

    def __init__(
        self,
        app: Flask,
        settings: JobsSection,
        specs: Sequence[tuple[str, ActorSpec]],
        options: JobsOptions | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.options = options or JobsOptions()
        self.kind = broker_kind(settings.broker)
        self.specs: dict[str, ActorSpec] = {}
        owners: dict[str, str] = {}
        for owner, spec in specs:
            if spec.name in owners:
                raise DuplicateActor(
                    f"actor {spec.name!r} declared by both {owners[spec.name]!r} and {owner!r}"
                )
            owners[spec.name] = owner
            self.specs[spec.name] = spec
        self.owners = owners
        self._lock = threading.RLock()
        self._pid = 0
        self._booted = False
        self._broker: Broker | None = None
        self._actors: dict[str, Actor[Any, Any]] = {}
        self.worker: Worker | None = None
        self._build()
        _live.add(self)

    # ------------------------------------------------------------ broker

    def _middleware(self) -> list[Middleware]:
        opts = self.options
        middleware: list[Middleware] = [
            AgeLimit(),
            TimeLimit(time_limit=opts.time_limit_ms),
            ShutdownNotifications(),
            Callbacks(),
            Pipelines(),
            Retries(
                max_retries=self.settings.max_retries,
                min_backoff=opts.min_backoff_ms,
                max_backoff=opts.max_backoff_ms,
            ),
            CurrentMessage(),
        ]
        if self.kind != "db":
            middleware.append(JobStateMiddleware(get_db(self.app)))
        middleware.append(AppContextMiddleware(self.app))
        return middleware

    def _make_broker(self) -> Broker:
        opts = self.options
        url = self.settings.broker
        if self.kind == "db":
            return DatabaseBroker(
                get_db(self.app),
                middleware=self._middleware(),
                lease_seconds=opts.lease_seconds,
                poll_interval=opts.poll_interval,
                done_retention=opts.done_retention,
            )
        try:
            if self.kind == "redis":
                from dramatiq.brokers.redis import RedisBroker

                return RedisBroker(  # type: ignore[no-untyped-call]
                    url=url,
                    middleware=self._middleware(),
                    namespace=opts.redis_namespace,
                    heartbeat_timeout=int(opts.lease_seconds * 1000),
                )
            from dramatiq.brokers.rabbitmq import RabbitmqBroker

            return RabbitmqBroker(url=url, middleware=self._middleware(), confirm_delivery=True)
        except ImportError as exc:
            raise JobsConfigError(
                f"jobs.broker is {self.kind}: install trivium[{self.kind}] ({exc})"
            ) from exc

    def _build(self) -> None:
        broker = self._make_broker()
        actors: dict[str, Actor[Any, Any]] = {}
        for name, spec in self.specs.items():
            actors[name] = Actor(
                spec.fn,
                broker=broker,
                actor_name=name,
                queue_name=spec.queue,
                priority=spec.priority,
                options=spec.dramatiq_options(),
            )
        self._broker = broker
        self._actors = actors
        self._pid = process.pid()
        self._booted = False
        self.worker = None

    @property
    def broker(self) -> Broker:
        """This process's broker."""
        with self._lock:
            if self._broker is None or self._pid != process.pid():
                self._build()
            assert self._broker is not None
            return self._broker

    def actor(self, name: str) -> Actor[Any, Any]:
        """The declared dramatiq actor called ``name``.

        :raise UnknownActor: no such actor.
        """
        _ = self.broker  # rebuilds it after a fork
        try:
            return self._actors[name]
        except KeyError:
            raise UnknownActor(name) from None

    def queues(self) -> set[str]:
        """The queues of all declared actors."""
        return {spec.queue for spec in self.specs.values()}

    # ------------------------------------------------------------ sending

    def enqueue(
        self,
        name: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        delay_ms: int | None = None,
    ) -> Message[Any]:
        """Send one message to the actor ``name``.

        :raise UnknownActor: no such actor.
        :raise EnqueueWouldDeadlock: see the exception.
        """
        actor = self.actor(name)
        if self.kind == "db":
            _refuse_nested_sqlite_write(self.app)
        message = actor.message_with_options(args=args, kwargs=kwargs or {})
        return self._send(actor.broker, message, delay_ms)

    def _send(self, broker: Broker, message: Message[Any], delay_ms: int | None) -> Message[Any]:
        try:
            return broker.enqueue(message, delay=delay_ms)
        except Exception as exc:
            # With Redis or RabbitMQ the row says "queued" already: make it
            # say what happened instead.
            for mw in broker.middleware:
                if isinstance(mw, JobStateMiddleware):
                    mw.record_outcome(message, None, "failed", f"not sent: {exc!r}")
            raise

    def enqueue_on_commit(
        self,
        session: Session,
        name: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        delay_ms: int | None = None,
    ) -> Message[Any]:
        """Send a message only if ``session``'s transaction commits.

        With the ``db`` broker the row is written in that very transaction (the
        job and the data it reads commit together); with Redis or RabbitMQ the
        message is sent just after the (outermost) commit.  A rollback drops it.
        """
        actor = self.actor(name)
        message = actor.message_with_options(args=args, kwargs=kwargs or {})
        broker = self.broker
        if isinstance(broker, DatabaseBroker):
            broker.emit_before("enqueue", message, delay_ms)
            broker.write(session.connection(), message, delay_ms)
            broker.emit_after("enqueue", message, delay_ms)
            queue = actor.queue_name
            event.listen(session, "after_commit", lambda _s: broker.wake(queue), once=True)
            return message

        pending = [message]

        def send(sess: Session) -> None:
            if sess.in_nested_transaction() or not pending:
                return  # a SAVEPOINT released, or already sent or dropped
            pending.clear()
            try:
                self._send(broker, message, delay_ms)
            except Exception:
                # The data is committed; the failure is on the job's row.
                log.exception("job=%s actor=%s status=not_sent", message.message_id, name)

        def drop(sess: Session, previous: SessionTransaction) -> None:
            if not previous.nested:
                pending.clear()

        event.listen(session, "after_commit", send)
        event.listen(session, "after_soft_rollback", drop)
        return message

    # ------------------------------------------------------------ jobs table

    def list_jobs(self, *, state: str | None = None, limit: int = 50) -> list[store.JobInfo]:
        """The most recently changed jobs, optionally of one state."""
        with get_db(self.app).engine.begin() as conn:
            return store.list_jobs(conn, state=state, limit=limit)

    def page(
        self, *, state: str | None = None, before: int | None = None, limit: int = 50
    ) -> tuple[list[store.JobInfo], int | None]:
        """A page of jobs, newest first, and the key of the next page (see
        :func:`core.tasks.store.page_jobs`)."""
        with get_db(self.app).engine.connect() as conn:
            return store.page_jobs(conn, state=state, before=before, limit=limit)

    def state_counts(self) -> dict[str, int]:
        """How many jobs are ``queued``, ``running``, ``done`` and ``failed``."""
        with get_db(self.app).engine.connect() as conn:
            return store.state_counts(conn)

    def find(self, message_id: str) -> store.JobInfo | None:
        """The job of this message id (the id pages and links use), or None."""
        with get_db(self.app).engine.connect() as conn:
            return store.find(conn, message_id)

    def retry_message(self, message_id: str) -> store.JobInfo:
        """:meth:`retry` the job of this message id.

        :return: the job as it was before the retry.
        :raise JobNotFound: no job has this message id.
        :raise JobNotRetryable: the job is not ``failed``.
        """
        job = self.find(message_id)
        if job is None:
            raise JobNotFound(message_id)
        self.retry(job.id)
        return job

    def retry(self, job_id: int) -> None:
        """Queue a failed job again, with a fresh retry budget.

        :raise JobNotFound: no such row.
        :raise JobNotRetryable: the job is not ``failed``.
        """
        with get_db(self.app).engine.begin() as conn:
            row = store.get_row(conn, job_id)
        if row is None:
            raise JobNotFound(job_id)
        state, text = row
        if state != "failed":
            raise JobNotRetryable(f"job {job_id} is {state}, not failed")
        message = store.decode(text)
        options = {
            k: v for k, v in message.options.items() if k not in {"retries", "traceback", "eta"}
        }
        fresh = store.plain_message(message, options=options)
        broker = self.broker
        with get_db(self.app).engine.begin() as conn:
            # the state check above was a read: this write decides, once
            if not store.take_failed(conn, job_id):
                raise JobNotRetryable(f"job {job_id} is no longer failed (retried meanwhile)")
            if isinstance(broker, DatabaseBroker):
                broker.write(conn, fresh, None)
                store.reset_attempts(conn, job_id)
        if isinstance(broker, DatabaseBroker):
            broker.wake(q_name(fresh.queue_name))
        else:
            try:
                broker.enqueue(fresh)
            except Exception:
                log.exception("job=%s status=retry_not_sent", job_id)
                with get_db(self.app).engine.begin() as conn:
                    store.give_back_failed(conn, job_id)
                raise
        log.info("job=%s actor=%s status=retried_by_operator", job_id, fresh.actor_name)

    def purge(self, older_than: timedelta) -> int:
        """Delete ``done`` rows older than ``older_than``; return how many."""
        with get_db(self.app).engine.begin() as conn:
            return store.purge(conn, older_than=older_than)

    # ------------------------------------------------------------ worker

    def start_worker(
        self, *, queues: Iterable[str] | None = None, threads: int | None = None
    ) -> Worker:
        """Start a dramatiq worker in this process (threads; returns at once).

        :param queues: consume only these queues (default: every declared one).
        :param threads: worker threads (default: ``jobs.worker_threads``).
        """
        with self._lock:
            if self.worker is not None and self._pid == process.pid():
                return self.worker
            broker = self.broker
            if not self._booted:
                # Starts TimeLimit's watchdog thread (dramatiq's CLI does this per process).
                broker.emit_after("process_boot")
                self._booted = True
            worker = Worker(
                broker,
                queues=set(queues) if queues is not None else None,
                worker_threads=threads or self.settings.worker_threads,
                worker_timeout=self.options.worker_timeout_ms,
            )
            worker.start()
            self.worker = worker
            log.info(
                "jobs=worker status=started broker=%s threads=%d pid=%d",
                self.kind,
                worker.worker_threads,
                os.getpid(),
            )
            return worker

    def stop_worker(self, timeout_ms: int | None = None) -> None:
        """Stop this process's worker: running jobs finish, fetched ones go back."""
        with self._lock:
            worker = self.worker
            if worker is None or self._pid != process.pid():
                self.worker = None
                return
            self.worker = None
            worker.stop(timeout=timeout_ms or self.options.stop_timeout_ms)
            broker = worker.broker
            broker.middleware = [
                m for m in broker.middleware if getattr(m, "worker", None) is not worker
            ]
            log.info("jobs=worker status=stopped pid=%d", os.getpid())

    def start_embedded_worker(self) -> bool:
        """Start the in-process worker if this instance uses one (``db`` broker
        and ``jobs.embedded_worker``); True if one runs now."""
        if self.kind != "db" or not self.settings.embedded_worker:
            return False
        if self.worker is None or self._pid != process.pid():
            self.start_worker()
        return True

    def close(self) -> None:
        """Stop the worker and close the broker's connections."""
        self.stop_worker()
        with self._lock:
            if self._broker is not None and self._pid == process.pid():
                self._broker.close()
            self._broker = None


def _refuse_nested_sqlite_write(app: Flask) -> None:
    sess: Session | None = g.get("db_session") if has_app_context() else None
    if sess is None or not get_db(app).is_sqlite or not sess.in_transaction():
        return
    conn = sess.connection()
    driver = conn.connection.driver_connection
    if driver is not None and getattr(driver, "in_transaction", False):
        raise EnqueueWouldDeadlock(
            "enqueue() inside an open SQLite write transaction: commit first, "
            "or use core.tasks.enqueue_on_commit(session, ...)"
        )


@atexit.register
def _stop_workers_at_exit() -> None:
    for jobs in list(_live):
        try:
            jobs.stop_worker(timeout_ms=5000)
        except Exception:
            log.exception("jobs=worker status=stop_failed")


# ---------------------------------------------------------------- app wiring


def core_actors() -> list[ActorSpec]:
    """Core's own jobs."""
    from core.tasks.builtin import announce_completion
    from core.tasks.builtin import complete_where_due
    from core.tasks.builtin import deliver_mail
    from core.tasks.builtin import send_mail
    from core.tasks.builtin import sweep_erased_statements

    return [
        send_mail,
        deliver_mail,
        complete_where_due,
        announce_completion,
        sweep_erased_statements,
    ]


def collect_specs(host: PluginHost) -> list[tuple[str, ActorSpec]]:
    """Core's actors and every plugin's ``register_actors`` result.

    :raise PluginLoadError: a plugin returned something that is not an ActorSpec.
    """
    specs: list[tuple[str, ActorSpec]] = [("core", spec) for spec in core_actors()]
    for plugin, spec in host.call_lists("register_actors"):
        if not isinstance(spec, ActorSpec):
            raise PluginLoadError(
                f"plugin {plugin!r} hook register_actors returned {spec!r}: "
                "expected a core.tasks.ActorSpec (use @core.tasks.actor)"
            )
        specs.append((plugin, spec))
    return specs


def init_app(app: Flask, options: JobsOptions | None = None) -> Jobs:
    """Build the app's broker, declare core's and plugins' actors on it.

    Calling it again replaces the app's job machinery (tests pass shorter
    timings this way).  With the ``db`` broker and ``jobs.embedded_worker`` the
    worker starts in each serving process: ``trivium serve`` starts it after
    fork, and any other server on the first request.

    :raise JobsConfigError: the broker setting is unusable.
    :raise DuplicateActor: two actors share a name.
    """
    previous: Jobs | None = app.extensions.get(EXTENSION)
    if previous is not None:
        previous.close()
    settings = app.extensions["trivium.settings"]
    host: PluginHost = app.extensions["trivium.plugins"]
    jobs = Jobs(app, settings.jobs, collect_specs(host), options)
    app.extensions[EXTENSION] = jobs
    if previous is None:

        @app.before_request
        def _embedded_worker() -> None:
            get_jobs(app).start_embedded_worker()

    return jobs


def get_jobs(app: Flask | None = None) -> Jobs:
    """The :class:`Jobs` of ``app`` (the current app by default)."""
    target = app or current_app
    jobs: Jobs = target.extensions[EXTENSION]
    return jobs


def enqueue(name: str, /, *args: Any, **kwargs: Any) -> Message[Any]:
    """Send a message to the actor ``name`` on the current app's broker.

    ``core.tasks.enqueue("core.send_mail", to, subject, body)``.  The message is
    stored at once, independently of the caller's transaction: commit the data
    the job reads first, or use :func:`enqueue_on_commit`.

    :raise UnknownActor: no such actor.
    :raise EnqueueWouldDeadlock: called inside an open SQLite write transaction.
    """
    return get_jobs().enqueue(name, args, kwargs)


def enqueue_with_options(
    name: str,
    *,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    delay_ms: int | None = None,
) -> Message[Any]:
    """:func:`enqueue` with a delay (the job runs no earlier than ``delay_ms`` from now)."""
    return get_jobs().enqueue(name, args, kwargs, delay_ms=delay_ms)


def enqueue_on_commit(session: Session, name: str, /, *args: Any, **kwargs: Any) -> Message[Any]:
    """Send a message to ``name`` when ``session`` commits; never if it rolls back."""
    return get_jobs().enqueue_on_commit(session, name, args, kwargs)


def current_job_id() -> str | None:
    """The message id of the job running in this thread (an idempotency key)."""
    message = CurrentMessage.get_current_message()
    return None if message is None else message.message_id


@dataclass(frozen=True)
class PendingJob:
    """A job that is waiting or running, as :func:`pending_jobs` lists it.

    :ivar id: the row's id in the ``jobs`` table (grows with each enqueue).
    :ivar message_id: the message id (see :func:`current_job_id`).
    :ivar state: ``queued`` (waiting, or waiting for a retry) or ``running``.
    """

    id: int
    message_id: str
    state: str


def pending_jobs(actor_name: str, args: Sequence[Any] | None = None) -> list[PendingJob]:
    """Jobs of ``actor_name`` that are queued or running, on the current app, oldest first.

    Read from the ``jobs`` table, which every broker keeps up to date.  The
    answer is a snapshot: a job may start or finish right after it.

    :param args: only jobs sent with exactly these positional arguments.
    """
    wanted = None if args is None else json.loads(json.dumps(list(args)))
    stmt = (
        select(Job.id, Job.message_id, Job.state, Job.message)
        .where(Job.actor == actor_name, Job.state.in_(("queued", "running")))
        .order_by(Job.id)
    )
    with get_db(current_app).engine.connect() as conn:
        rows = conn.execute(stmt).all()
    out = []
    for row in rows:
        if wanted is not None:
            try:
                sent = list(store.decode(row.message).args)
            except DecodeError:
                continue
            if sent != wanted:
                continue
        out.append(PendingJob(row.id, row.message_id, row.state))
    return out


def is_queued(actor_name: str, args: Sequence[Any] | None = None) -> bool:
    """Whether a job of ``actor_name`` (with ``args``, if given) is queued or running,
    leaving out the job running in this thread.

    :param args: only jobs sent with exactly these positional arguments.
    """
    me = current_job_id()
    return any(job.message_id != me for job in pending_jobs(actor_name, args))
