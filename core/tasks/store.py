"""The ``jobs`` table: the queue of the ``db`` broker and the job log of the others.

Every state change is a conditional ``UPDATE`` (a compare-and-set), so that two
processes racing for one row cannot both win.  ``attempts`` counts deliveries
and doubles as the fencing token of a claim: a worker finishes a job only if
the row is still ``running`` under the delivery number it claimed, so a worker
whose lease expired (and whose job was handed to someone else) cannot overwrite
the newer outcome.

States: ``queued`` → ``running`` → ``done`` | ``failed``; a retry puts a row back
to ``queued`` with ``available_at`` in the future.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import Any

from dramatiq import Message
from dramatiq import MessageProxy
from dramatiq.common import q_name
from sqlalchemy import Connection
from sqlalchemy import RowMapping
from sqlalchemy import and_
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import update

from core.db import utcnow
from core.models import Job

STATES = ("queued", "running", "done", "failed")
#: A message, or a worker's proxy of one.
AnyMessage = Message[Any] | MessageProxy
#: Longest error text kept on a row.
MAX_ERROR = 20_000


@dataclass(frozen=True)
class Claim:
    """One row handed to a consumer: deliver it, then finish it under ``delivery``."""

    id: int
    delivery: int
    message: str


@dataclass(frozen=True)
class JobInfo:
    """What ``trivium jobs list`` and the operators' Jobs page show of a row."""

    id: int
    message_id: str
    queue: str
    actor: str
    state: str
    attempts: int
    available_at: datetime
    updated_at: datetime
    error: str
    created_at: datetime


def encode(message: AnyMessage) -> str:
    """A message as the text stored in ``jobs.message``."""
    data: bytes = message.encode()
    return data.decode("utf-8")


def decode(text: str) -> Message[Any]:
    """The message stored in a row (raises ``dramatiq.DecodeError``)."""
    return Message.decode(text.encode("utf-8"))


def plain_message(message: AnyMessage, **changes: Any) -> Message[Any]:
    """A plain :class:`dramatiq.Message` copy (``message`` may be a proxy)."""
    fields = message.asdict()
    fields["options"] = dict(fields["options"])
    fields.update(changes)
    return Message(**fields)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 20] + "\n... (truncated)"


def upsert_queued(
    conn: Connection,
    message: AnyMessage,
    *,
    available_at: datetime,
    error: str = "",
) -> None:
    """Record ``message`` as queued: a new row, or a retry of a known message id."""
    values = {
        "queue": q_name(message.queue_name),
        "actor": message.actor_name,
        "message": encode(message),
        "state": "queued",
        "available_at": available_at,
        "locked_until": None,
        "error": _clip(error),
    }
    result = conn.execute(update(Job).where(Job.message_id == message.message_id).values(values))
    if result.rowcount == 0:
        conn.execute(insert(Job).values(message_id=message.message_id, attempts=0, **values))


def claim(
    conn: Connection,
    queue: str,
    limit: int,
    *,
    lease: timedelta,
    max_deliveries: int,
) -> list[Claim]:
    """Atomically take up to ``limit`` deliverable rows of ``queue``.

    Deliverable: ``queued`` and due, or ``running`` with an expired lease (its
    worker died).  A row whose lease expired ``max_deliveries`` times is failed
    instead of being handed out again.
    """
    now = utcnow()
    expired = and_(Job.state == "running", Job.locked_until < now)
    conn.execute(
        update(Job)
        .where(Job.queue == queue, expired, Job.attempts >= max_deliveries)
        .values(
            state="failed",
            locked_until=None,
            error=f"abandoned: delivered {max_deliveries} times, never finished "
            "(the worker running it stopped or crashed each time)",
        )
    )
    deliverable = or_(and_(Job.state == "queued", Job.available_at <= now), expired)
    candidates = (
        select(Job.id)
        .where(Job.queue == queue, deliverable)
        .order_by(Job.available_at, Job.id)
        .limit(limit)
        # PostgreSQL: concurrent consumers pass over each other's rows instead
        # of queueing behind them (SQLite, which serialises writers, ignores it).
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = conn.execute(
        update(Job)
        # The condition is repeated on the row itself: a row another consumer
        # claimed in the meantime no longer matches and is skipped.
        .where(Job.id.in_(candidates), Job.queue == queue, deliverable)
        .values(state="running", attempts=Job.attempts + 1, locked_until=now + lease)
        .returning(Job.id, Job.attempts, Job.message)
    ).all()
    return sorted((Claim(r.id, r.attempts, r.message) for r in rows), key=lambda c: c.id)


def extend(conn: Connection, deliveries: Iterable[tuple[int, int]], *, lease: timedelta) -> None:
    """Push back the lease of rows this consumer still holds."""
    until = utcnow() + lease
    for job_id, delivery in deliveries:
        conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.attempts == delivery, Job.state == "running")
            .values(locked_until=until)
        )


def finish(conn: Connection, job_id: int, delivery: int, *, state: str, error: str = "") -> bool:
    """Mark a claimed row ``done`` or ``failed``; False if the claim was lost."""
    result = conn.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempts == delivery, Job.state == "running")
        .values(state=state, locked_until=None, error=_clip(error))
    )
    return result.rowcount == 1


def release(conn: Connection, job_id: int, delivery: int) -> None:
    """Put a claimed but unprocessed row back (clean shutdown)."""
    conn.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempts == delivery, Job.state == "running")
        .values(state="queued", locked_until=None, attempts=Job.attempts - 1)
    )


def mark_running(conn: Connection, message: AnyMessage) -> int:
    """Record that a worker started ``message`` (brokers other than ``db``).

    :return: the delivery number, to finish the row with.
    """
    values = {"state": "running", "attempts": Job.attempts + 1, "locked_until": None}
    result = conn.execute(update(Job).where(Job.message_id == message.message_id).values(values))
    if result.rowcount == 0:
        conn.execute(
            insert(Job).values(
                message_id=message.message_id,
                queue=q_name(message.queue_name),
                actor=message.actor_name,
                message=encode(message),
                state="running",
                attempts=1,
            )
        )
        return 1
    attempts = conn.execute(select(Job.attempts).where(Job.message_id == message.message_id))
    return int(attempts.scalar_one())


def finish_message(
    conn: Connection,
    message: AnyMessage,
    delivery: int | None,
    *,
    state: str,
    error: str = "",
) -> None:
    """Mark the row of ``message`` done or failed (brokers other than ``db``).

    With a known ``delivery`` only that run's row is finished; without one
    (a message rejected before it ran) the row is failed unless it is done.
    """
    stmt = update(Job).where(Job.message_id == message.message_id)
    if delivery is not None:
        stmt = stmt.where(Job.attempts == delivery, Job.state == "running")
    else:
        stmt = stmt.where(Job.state.in_(("queued", "running")))
    result = conn.execute(stmt.values(state=state, locked_until=None, error=_clip(error)))
    if result.rowcount == 0 and delivery is None and state == "failed":
        exists = conn.execute(select(Job.id).where(Job.message_id == message.message_id)).first()
        if exists is None:
            conn.execute(
                insert(Job).values(
                    message_id=message.message_id,
                    queue=q_name(message.queue_name),
                    actor=message.actor_name,
                    message=encode(message),
                    state="failed",
                    attempts=0,
                    error=_clip(error),
                )
            )


def take_failed(conn: Connection, job_id: int) -> bool:
    """Move a ``failed`` row to ``queued`` for an operator's retry; False if it is not failed.

    One conditional write, so that of two retries at once only one goes
    through (the other's row is no longer ``failed`` when it gets its turn).
    """
    result = conn.execute(
        update(Job).where(Job.id == job_id, Job.state == "failed").values(state="queued")
    )
    return bool(result.rowcount)


def give_back_failed(conn: Connection, job_id: int) -> None:
    """Undo :func:`take_failed` when the retry could not be sent to the broker."""
    conn.execute(update(Job).where(Job.id == job_id, Job.state == "queued").values(state="failed"))


def reset_attempts(conn: Connection, job_id: int) -> None:
    """Give a row a fresh delivery count (an operator's retry)."""
    conn.execute(update(Job).where(Job.id == job_id).values(attempts=0))


def list_jobs(conn: Connection, *, state: str | None = None, limit: int = 50) -> list[JobInfo]:
    """The most recently changed rows, optionally of one state."""
    stmt = select(Job).order_by(Job.updated_at.desc(), Job.id.desc()).limit(limit)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    return [_info(row) for row in conn.execute(stmt).mappings()]


def _info(row: RowMapping) -> JobInfo:
    return JobInfo(**{f.name: row[f.name] for f in dataclasses.fields(JobInfo)})


def page_jobs(
    conn: Connection, *, state: str | None = None, before: int | None = None, limit: int = 50
) -> tuple[list[JobInfo], int | None]:
    """A page of rows, newest first (by row id: the order they were first sent).

    Keyed on the row id rather than ``updated_at``, which changes under a
    reader paging through (a retry, a run), has no index, and ties.

    :param state: only rows in this state.
    :param before: only rows older than the row with this id (the previous
        page's key).
    :return: the rows, and the key of the next page (None on the last one).
    """
    stmt = select(Job).order_by(Job.id.desc()).limit(limit + 1)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    if before is not None:
        stmt = stmt.where(Job.id < before)
    rows = [_info(row) for row in conn.execute(stmt).mappings()]
    next_key = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_key


def state_counts(conn: Connection) -> dict[str, int]:
    """How many rows are in each state (every state of :data:`STATES`, zeros included)."""
    counts = dict.fromkeys(STATES, 0)
    for state, n in conn.execute(select(Job.state, func.count()).group_by(Job.state)):
        counts[state] = int(n)
    return counts


def find(conn: Connection, message_id: str) -> JobInfo | None:
    """The row of the message with this id, or None."""
    row = conn.execute(select(Job).where(Job.message_id == message_id)).mappings().first()
    return None if row is None else _info(row)


def get_row(conn: Connection, job_id: int) -> tuple[str, str] | None:
    """``(state, message)`` of a row, or None."""
    row = conn.execute(select(Job.state, Job.message).where(Job.id == job_id)).first()
    return None if row is None else (row.state, row.message)


def count(conn: Connection, queue: str, states: Iterable[str]) -> int:
    """How many rows of ``queue`` are in one of ``states``."""
    stmt = select(func.count()).where(Job.queue == queue, Job.state.in_(tuple(states)))
    return int(conn.execute(stmt).scalar_one())


def purge(conn: Connection, *, older_than: timedelta, queue: str | None = None) -> int:
    """Delete ``done`` rows last changed before ``older_than`` ago."""
    stmt = delete(Job).where(Job.state == "done", Job.updated_at < utcnow() - older_than)
    if queue is not None:
        stmt = stmt.where(Job.queue == queue)
    return int(conn.execute(stmt).rowcount)


def delete_queued(conn: Connection, queue: str) -> int:
    """Drop the queued rows of ``queue`` (``Broker.flush``)."""
    stmt = delete(Job).where(Job.queue == queue, Job.state == "queued")
    return int(conn.execute(stmt).rowcount)
