"""dramatiq middleware of Trivium's brokers: an app context per run, and job state rows."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from dramatiq import Broker
from dramatiq import Message
from dramatiq import MessageProxy
from dramatiq.common import current_millis
from dramatiq.common import dq_name
from dramatiq.middleware import Middleware
from flask import Flask
from flask.ctx import AppContext
from sqlalchemy import Connection

from core.db import Database
from core.db import utcnow
from core.tasks import store
from core.tasks.dbbroker import error_text
from core.tasks.store import AnyMessage

log = logging.getLogger(__name__)


class AppContextMiddleware(Middleware):
    """Runs each actor inside ``app.app_context()``.

    Actors can then use ``core.db.session()``, ``current_app`` and the plugin
    host; the context (and its session) is torn down after the run, rolled
    back if the actor raised.  Add it last, so it wraps the actor innermost.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.local = threading.local()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        """Push a fresh application context for this run."""
        ctx = self.app.app_context()
        ctx.push()
        self.local.ctx = ctx

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        """Pop the run's context; teardown sees the actor's exception."""
        ctx: AppContext | None = getattr(self.local, "ctx", None)
        self.local.ctx = None
        if ctx is not None:
            ctx.pop(exception)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        """A skipped message may or may not have got a context."""
        self.after_process_message(broker, message)


class JobStateMiddleware(Middleware):
    """Keeps a ``jobs`` row per message for brokers other than ``db``.

    Operators list and retry failed jobs the same way whatever the broker:
    ``queued`` on enqueue (and on each retry), ``running`` when a worker starts
    it, ``done`` on ack, ``failed`` with the error on nack (or when it could not
    be sent at all, see :meth:`core.tasks.Jobs.enqueue`).  A database outage
    never blocks a job: the row write is logged and skipped.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.lock = threading.Lock()
        self.deliveries: dict[str, int] = {}

    def _write(self, what: str, message: AnyMessage, fn: Callable[[Connection], Any]) -> Any:
        try:
            with self.db.engine.begin() as conn:
                return fn(conn)
        except Exception as exc:
            log.warning(
                "job=%s actor=%s status=state_not_recorded step=%s error=%r",
                message.message_id,
                message.actor_name,
                what,
                exc,
            )
            return None

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        """Record the message as queued, due when its delay runs out.

        Before, not after, the send: a worker may start the message before
        ``enqueue`` returns, and its ``running`` must not be overwritten.
        """
        eta = message.options.get("eta")
        wait_ms = max(0, int(eta) - current_millis()) if isinstance(eta, int | float) else 0
        available_at = utcnow() + timedelta(milliseconds=wait_ms)
        error = str(message.options.get("traceback") or "")
        plain = store.plain_message(message)
        self._write(
            "enqueue",
            message,
            lambda conn: store.upsert_queued(conn, plain, available_at=available_at, error=error),
        )

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        """Record the run as started."""
        delivery = self._write("start", message, lambda conn: store.mark_running(conn, message))
        if delivery is not None:
            with self.lock:
                self.deliveries[message.message_id] = delivery

    def _finish(self, message: MessageProxy, state: str, error: str = "") -> None:
        if message.queue_name == dq_name(message.queue_name):
            # A delayed message moved onto its real queue: not a run.
            return
        with self.lock:
            delivery = self.deliveries.pop(message.message_id, None)
        self.record_outcome(message, delivery, state, error)

    def record_outcome(
        self, message: AnyMessage, delivery: int | None, state: str, error: str
    ) -> None:
        """Finish the row of ``message`` (``delivery``: the run that ends, if known)."""
        self._write(
            state,
            message,
            lambda conn: store.finish_message(conn, message, delivery, state=state, error=error),
        )

    def after_ack(self, broker: Broker, message: MessageProxy) -> None:
        """The run finished (a run that scheduled a retry stays ``queued``)."""
        self._finish(message, "done")

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        """The message was given up."""
        self._finish(message, "failed", error_text(message))
