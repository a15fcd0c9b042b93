"""A dramatiq broker whose queue is the ``jobs`` table (SQLite or PostgreSQL).

The embedded default needs no service: enqueueing inserts a row, consumers
claim rows with a conditional ``UPDATE`` and hold them under a lease that they
renew while the job runs.  A process that dies leaves its rows ``running``
with a lease that runs out; any consumer then claims them again, so every
message is delivered at least once (DESIGN.md, "Federation": jobs are
idempotent).  Delays and retries use ``available_at`` instead of dramatiq's
in-memory delay queues, so a pending retry survives a restart too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from typing import TypeVar

from dramatiq import Broker
from dramatiq import Consumer
from dramatiq import DecodeError
from dramatiq import Message
from dramatiq import MessageProxy
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed
from dramatiq.errors import QueueJoinTimeout
from dramatiq.errors import QueueNotFound
from dramatiq.middleware import Middleware
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from core.db import Database
from core.db import utcnow
from core.tasks import store

log = logging.getLogger(__name__)

#: Seconds between two purges of old ``done`` rows by one consumer.
PURGE_EVERY = 3600.0

T = TypeVar("T")


def error_text(message: MessageProxy) -> str:
    """What an operator reads on a failed row: the traceback, or the exception."""
    tb = message.options.get("traceback")
    if isinstance(tb, str) and tb:
        return tb
    exc: BaseException | None = getattr(message, "_exception", None)
    if exc is not None:
        return f"{type(exc).__name__}: {exc}"
    return "failed (no error recorded; rejected by a middleware)"


class DatabaseBroker(Broker):
    """A :class:`dramatiq.Broker` storing messages in the ``jobs`` table.

    :param db: the app's database.
    :param lease_seconds: how long a claimed row stays with its consumer
        without a renewal; a crashed worker's jobs run again after this.
    :param poll_interval: seconds an idle consumer waits before looking again
        (enqueues in the same process wake it at once).
    :param max_deliveries: a row whose lease expired this many times is failed
        rather than crash yet another worker.
    :param done_retention: consumers delete ``done`` rows older than this
        (hourly); ``None`` keeps them.
    """

    def __init__(
        self,
        db: Database,
        *,
        middleware: list[Middleware] | None = None,
        lease_seconds: float = 60.0,
        poll_interval: float = 1.0,
        max_deliveries: int = 20,
        done_retention: timedelta | None = timedelta(days=7),
    ) -> None:
        super().__init__(middleware=middleware)
        self.db = db
        self.done_retention = done_retention
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_interval = poll_interval
        self.max_deliveries = max_deliveries
        self.queues: dict[str, threading.Event] = {}

    # ------------------------------------------------------------ plumbing

    def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a transaction; database errors become ``ConnectionClosed``.

        dramatiq's worker treats ``ConnectionClosed`` as a broker outage:
        consumers restart, and acks are retried until they get through.
        """
        try:
            with self.db.engine.begin() as conn:
                return fn(conn)
        except DBAPIError as exc:
            raise ConnectionClosed(exc) from exc  # type: ignore[no-untyped-call]

    def wake(self, queue_name: str) -> None:
        """Wake this process's consumers of ``queue_name``."""
        event = self.queues.get(queue_name)
        if event is not None:
            event.set()

    # ------------------------------------------------------------ Broker API

    def declare_queue(self, queue_name: str) -> None:
        """Declare a queue (idempotent).  No delay queue: delays live in the rows."""
        if queue_name in self.queues:
            return
        self.emit_before("declare_queue", queue_name)
        self.queues[queue_name] = threading.Event()
        self.emit_after("declare_queue", queue_name)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        """A consumer claiming up to ``prefetch`` rows of ``queue_name`` at a time.

        :raise QueueNotFound: the queue was never declared.
        """
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)  # type: ignore[no-untyped-call]
        return DatabaseConsumer(self, queue_name, prefetch, timeout)

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Insert ``message`` as a queued row, due ``delay`` milliseconds from now.

        A message id that already has a row (a retry) puts that row back in
        the queue with the message's new options.

        :raise QueueNotFound: the message's queue was never declared.
        """
        queue_name = q_name(message.queue_name)
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)  # type: ignore[no-untyped-call]
        options = {k: v for k, v in message.options.items() if k != "eta"}
        plain = store.plain_message(message, queue_name=queue_name, options=options)
        self.emit_before("enqueue", plain, delay)
        self.run(lambda conn: self.write(conn, plain, delay))
        self.emit_after("enqueue", plain, delay)
        self.wake(queue_name)
        return plain

    def write(self, conn: Connection, message: Message[Any], delay: int | None) -> None:
        """Insert or requeue the row of ``message`` on ``conn`` (no middleware)."""
        available_at = utcnow() + timedelta(milliseconds=delay or 0)
        error = message.options.get("traceback", "")
        store.upsert_queued(conn, message, available_at=available_at, error=str(error or ""))

    def flush(self, queue_name: str) -> None:
        """Drop the queued messages of ``queue_name``."""
        self.run(lambda conn: store.delete_queued(conn, queue_name))

    def flush_all(self) -> None:
        """Drop the queued messages of every declared queue."""
        for name in self.queues:
            self.flush(name)

    def join(self, queue_name: str, *, timeout: int | None = None) -> None:
        """Wait until ``queue_name`` has no queued or running rows (tests).

        :raise QueueJoinTimeout: ``timeout`` milliseconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        while self.run(lambda conn: store.count(conn, queue_name, ("queued", "running"))):
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)  # type: ignore[no-untyped-call]
            time.sleep(0.05)


class DatabaseMessage(MessageProxy):
    """A claimed row: the message plus the claim needed to finish it."""

    def __init__(self, message: Message[Any], job_id: int, delivery: int) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.delivery = delivery


class DatabaseConsumer(Consumer):
    """Claims rows of one queue, renews their lease, and records the outcome.

    ``__next__`` runs in dramatiq's consumer thread; ``ack`` and ``nack`` in
    worker threads, hence the lock around the held claims.
    """

    def __init__(self, broker: DatabaseBroker, queue_name: str, prefetch: int, timeout: int):
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        self.timeout = timeout / 1000
        self.event = broker.queues[queue_name]
        self.held: dict[int, int] = {}
        self.ready: deque[DatabaseMessage] = deque()
        self.lock = threading.Lock()
        self.renewed_at = time.monotonic()
        self.purged_at: float | None = None

    def __next__(self) -> MessageProxy | None:
        self._renew_if_due()
        self._purge_if_due()
        if self.ready:
            return self.ready.popleft()
        with self.lock:
            room = self.prefetch - len(self.held)
        # Clear before looking: an enqueue after this point wakes the wait below.
        self.event.clear()
        if room > 0:
            self._fetch(room)
            if self.ready:
                return self.ready.popleft()
        self.event.wait(min(self.timeout, self.broker.poll_interval))
        return None

    def _fetch(self, room: int) -> None:
        broker = self.broker
        claims = broker.run(
            lambda conn: store.claim(
                conn,
                self.queue_name,
                room,
                lease=broker.lease,
                max_deliveries=broker.max_deliveries,
            )
        )
        for c in claims:
            try:
                message = store.decode(c.message)
            except DecodeError as exc:
                log.error("job=%s error=undecodable_message", c.id)
                self._fail_undecodable(c, exc)
                continue
            with self.lock:
                self.held[c.id] = c.delivery
            self.ready.append(DatabaseMessage(message, c.id, c.delivery))
            if c.delivery > 1:
                log.info(
                    "job=%s actor=%s delivery=%s status=redelivered",
                    c.id,
                    message.actor_name,
                    c.delivery,
                )

    def _fail_undecodable(self, claim: store.Claim, exc: Exception) -> None:
        def fail(conn: Connection) -> None:
            error = f"undecodable message: {exc}"
            store.finish(conn, claim.id, claim.delivery, state="failed", error=error)

        self.broker.run(fail)

    def _renew_if_due(self) -> None:
        if time.monotonic() - self.renewed_at < self.broker.lease.total_seconds() / 3:
            return
        self.renewed_at = time.monotonic()
        with self.lock:
            held = list(self.held.items())
        if held:
            self.broker.run(lambda conn: store.extend(conn, held, lease=self.broker.lease))

    def _purge_if_due(self) -> None:
        retention = self.broker.done_retention
        if retention is None:
            return
        if self.purged_at is not None and time.monotonic() - self.purged_at < PURGE_EVERY:
            return
        self.purged_at = time.monotonic()
        deleted = self.broker.run(
            lambda conn: store.purge(conn, older_than=retention, queue=self.queue_name)
        )
        if deleted:
            log.info("queue=%s status=purged done_rows=%d", self.queue_name, deleted)

    def _settle(self, message: MessageProxy, state: str, error: str = "") -> None:
        assert isinstance(message, DatabaseMessage)
        self.broker.run(
            lambda conn: store.finish(
                conn, message.job_id, message.delivery, state=state, error=error
            )
        )
        with self.lock:
            self.held.pop(message.job_id, None)
        self.event.set()

    def ack(self, message: MessageProxy) -> None:
        """The job ran: ``done`` (a no-op if it was re-queued for a retry)."""
        self._settle(message, "done")

    def nack(self, message: MessageProxy) -> None:
        """The job is given up: ``failed``, with the error for operators."""
        self._settle(message, "failed", error_text(message))

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Give back claimed rows that were never processed (worker shutdown)."""
        claims = [(m.job_id, m.delivery) for m in messages if isinstance(m, DatabaseMessage)]
        if not claims:
            return

        def give_back(conn: Connection) -> None:
            for job_id, delivery in claims:
                store.release(conn, job_id, delivery)

        self.broker.run(give_back)
        with self.lock:
            for job_id, _ in claims:
                self.held.pop(job_id, None)

    def close(self) -> None:
        """Give back rows claimed but not yet handed to the worker."""
        pending = list(self.ready)
        self.ready.clear()
        try:
            self.requeue(pending)
        except ConnectionClosed:
            log.warning("queue=%s status=requeue_failed count=%d", self.queue_name, len(pending))
