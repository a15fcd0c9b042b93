"""Sending mail through the ``send_mail`` hook, and core's default sender.

Core's default (``trylast``, registered as ``core.mail``) writes each mail to
the ``outbox_mail`` table in the caller's transaction and logs it.  Without
``[mail] url`` that is all: an embedded instance's operator reads the outbox
(``trivium mail outbox``).  With an SMTP URL the same transaction also queues
a ``core.deliver_mail`` job, which sends it (:mod:`core.smtp`) and marks it
sent, so a refused request sends nothing and a slow or unreachable mail
server never holds up a request.  A mail plugin that delivers otherwise
overrides all this by returning True first.
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
    sess = db.session()
    mail = OutboxMail(to=to, subject=subject[:300], body=body)
    sess.add(mail)
    if current_app.extensions["trivium.settings"].mail.url:
        from core.tasks import get_jobs

        sess.flush()
        get_jobs().enqueue_on_commit(sess, DELIVER_ACTOR, (mail.id,))
        log.info("mail to=%s subject=%r status=queued id=%s", to, subject, mail.id)
    else:
        log.info("mail to=%s subject=%r status=outbox", to, subject)
    return True


#: The job that sends one outbox mail by SMTP (:func:`core.tasks.builtin.deliver_mail`).
DELIVER_ACTOR = "core.deliver_mail"
