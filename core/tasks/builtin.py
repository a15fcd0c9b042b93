"""Core's own jobs."""

from __future__ import annotations

import logging

from flask import current_app

from core.db import session
from core.plugins import PluginHost
from core.tasks.spec import actor

log = logging.getLogger(__name__)


class MailNotSent(Exception):
    """No ``send_mail`` implementation accepted the mail (the job is retried)."""


@actor("core.send_mail", max_retries=8)
def send_mail(to: str, subject: str, body: str) -> None:
    """Deliver one mail through the ``send_mail`` hook (first True wins), then commit.

    At least once: a worker that dies between handing the mail over and
    finishing the job sends it again.

    :raise MailNotSent: no implementation delivered it.
    """
    host: PluginHost = current_app.extensions["trivium.plugins"]
    results = host.call("send_mail", firstresult=True, to=to, subject=subject, body=body)
    if not results or results[0] is not True:
        raise MailNotSent(f"no send_mail implementation delivered the mail to {to}")
    # Senders may write in the job's session (core's default stores the mail
    # in outbox_mail); the job's transaction is theirs to keep.
    session().commit()
    log.info("job=core.send_mail status=sent")


@actor("core.complete_where_due", max_retries=5)
def complete_where_due(course_id: int) -> None:
    """Complete the course for learners who meet its changed completion rule.

    Enqueued when a required item is deleted or made optional.  Idempotent:
    a learner is completed once (see :func:`core.progress.complete_where_due`),
    and a second run finds nobody left to complete.
    """
    from core import progress
    from core.models import Course

    sess = session()
    course = sess.get(Course, course_id)
    if course is None:
        log.info("job=core.complete_where_due course_id=%s status=course_gone", course_id)
        return
    completed = progress.complete_where_due(sess, course)
    sess.commit()
    host: PluginHost = current_app.extensions["trivium.plugins"]
    for user in completed:
        host.call("course_completed", user=user, course=course)
    log.info("job=core.complete_where_due course=%s completed=%d", course.public_id, len(completed))
