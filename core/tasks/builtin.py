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
