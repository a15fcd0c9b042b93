"""Background jobs: dramatiq actors on each instance's broker.

A plugin declares jobs as :class:`ActorSpec` values and returns them from
``register_actors``::

    from core import hookimpl
    from core.tasks import actor

    @actor("quiz.regrade", queue="quiz", max_retries=3)
    def regrade(attempt_id: int) -> None:
        ...

    @hookimpl
    def register_actors():
        return [regrade]

and sends them with ``regrade.send(attempt.id)`` or
``core.tasks.enqueue("quiz.regrade", attempt.id)``.  Nothing is bound to a
broker at import time: ``create_app`` builds the broker from ``jobs.broker``
(``db``: the ``jobs`` table, run by an in-process worker; ``redis://`` or
``amqp://``: ``trivium worker`` processes) and declares every spec on it.
Actors run inside an application context, so ``core.db.session()`` works.

Every job runs *at least once*: a worker that crashes mid-job, or loses its
lease, has the job run again elsewhere, and a failed job is retried with
backoff.  Write actors to be idempotent:

- pass ids, not objects, and re-read the current state when the job starts;
  return early when the work is already done (``if attempt.graded: return``);
- make the effect an upsert or guard it with a unique constraint, so that a
  second run changes nothing;
- commit the job's database writes in one transaction at the end;
- for calls to other systems, send :func:`current_job_id` as the idempotency
  key (it is the same on every delivery of one message);
- commit the data a job reads *before* enqueueing it, or use
  :func:`enqueue_on_commit`, so the job never runs ahead of the transaction.
"""

from __future__ import annotations

from core.tasks.builtin import MailNotSent
from core.tasks.dbbroker import DatabaseBroker
from core.tasks.middleware import AppContextMiddleware
from core.tasks.middleware import JobStateMiddleware
from core.tasks.runtime import DuplicateActor
from core.tasks.runtime import EnqueueWouldDeadlock
from core.tasks.runtime import JobNotFound
from core.tasks.runtime import JobNotRetryable
from core.tasks.runtime import Jobs
from core.tasks.runtime import JobsConfigError
from core.tasks.runtime import JobsOptions
from core.tasks.runtime import PendingJob
from core.tasks.runtime import UnknownActor
from core.tasks.runtime import current_job_id
from core.tasks.runtime import enqueue
from core.tasks.runtime import enqueue_on_commit
from core.tasks.runtime import enqueue_with_options
from core.tasks.runtime import get_jobs
from core.tasks.runtime import init_app
from core.tasks.runtime import is_queued
from core.tasks.runtime import pending_jobs
from core.tasks.spec import ActorSpec
from core.tasks.spec import ActorSpecInvalid
from core.tasks.spec import actor

__all__ = [
    "ActorSpec",
    "ActorSpecInvalid",
    "AppContextMiddleware",
    "DatabaseBroker",
    "DuplicateActor",
    "EnqueueWouldDeadlock",
    "JobNotFound",
    "JobNotRetryable",
    "JobStateMiddleware",
    "Jobs",
    "JobsConfigError",
    "JobsOptions",
    "MailNotSent",
    "PendingJob",
    "UnknownActor",
    "actor",
    "current_job_id",
    "enqueue",
    "enqueue_on_commit",
    "enqueue_with_options",
    "get_jobs",
    "init_app",
    "is_queued",
    "pending_jobs",
]
