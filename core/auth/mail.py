"""Sending mail through the ``send_mail`` hook, and core's default sender.

Core's default (``trylast``, registered as ``core.mail``) writes each mail to
the ``outbox_mail`` table in the caller's transaction and logs it: an embedded
instance's operator reads the outbox, and a mail plugin that really delivers
overrides it by returning True first.
"""

from __future__ import annotations

import logging

from flask import current_app

from core import db
from core.hookspecs import hookimpl
from core.models import OutboxMail

log = logging.getLogger(__name__)


def send_mail(to: str, subject: str, body: str) -> bool:
    """Hand one plain-text mail to the first plugin that delivers it.

    :param to: the recipient address.
    :param subject: the subject line.
    :param body: the plain-text body (may hold secrets such as reset links;
        it is never logged).
    :return: True if a plugin took the mail, False if every one failed or declined.
    """
    host = current_app.extensions["trivium.plugins"]
    results = host.call("send_mail", firstresult=True, to=to, subject=subject, body=body)
    if not results:
        log.error("mail status=undelivered to=%s subject=%r", to, subject)
        return False
    return True


@hookimpl(trylast=True, specname="send_mail")
def write_to_outbox(to: str, subject: str, body: str) -> bool:
    """Core's default sender: store the mail in ``outbox_mail`` and log it.

    The row joins the request's transaction, so a refused request leaves no mail.
    """
    db.session().add(OutboxMail(to=to, subject=subject[:300], body=body))
    log.info("mail to=%s subject=%r", to, subject)
    return True
