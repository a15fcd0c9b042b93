"""Sending mail through the ``send_mail`` hook, and core's default sender.

Core's default (``trylast``, registered as ``core.mail``) writes each mail to
the ``outbox_mail`` table in the caller's transaction and logs it.  Without
``[mail] url`` that is all: an embedded instance's operator reads the outbox
(``trivium mail outbox``).  With an SMTP URL the same transaction also queues
a ``core.deliver_mail`` job, which sends it (:mod:`core.smtp`) and marks it
sent, so a refused request sends nothing and a slow or unreachable mail
server never holds up a request.  A mail plugin that delivers otherwise
overrides all this by returning True first.

Each row says where its delivery stands (:class:`~core.models.OutboxMail`:
``outbox``, ``queued``, ``sent``, ``failed``, with the tries and the last
error), so a mail that could not be delivered is never a silent failure:
``trivium mail outbox --state failed`` and the administration's mail page
list it, and :func:`queue_again` tries it again.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import Session

from core import db
from core.auth.audit import audit
from core.hookspecs import hookimpl
from core.models import OutboxMail
from core.models import User

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
    delivering = delivery_on()
    mail = OutboxMail(
        to=to, subject=subject[:300], body=body, state="queued" if delivering else "outbox"
    )
    sess.add(mail)
    if delivering:
        from core.tasks import get_jobs

        sess.flush()
        get_jobs().enqueue_on_commit(sess, DELIVER_ACTOR, (mail.id,))
        log.info("mail to=%s subject=%r status=queued id=%s", to, subject, mail.id)
    else:
        log.info("mail to=%s subject=%r status=outbox", to, subject)
    return True


#: The job that sends one outbox mail by SMTP (:func:`core.tasks.builtin.deliver_mail`).
DELIVER_ACTOR = "core.deliver_mail"


#: Every delivery state of :class:`~core.models.OutboxMail`.
STATES = ("outbox", "queued", "sent", "failed")

#: Delivery states from which a mail may be queued again.
RETRYABLE = ("outbox", "failed")


def delivery_on() -> bool:
    """Whether mail is delivered by SMTP (``[mail] url`` is set) or only kept."""
    return bool(current_app.extensions["trivium.settings"].mail.url)


def outbox_counts(sess: Session) -> dict[str, int]:
    """How many mails are in each delivery state (every one of :data:`STATES`, zeros too)."""
    counts = dict.fromkeys(STATES, 0)
    for state, n in sess.execute(select(OutboxMail.state, func.count()).group_by(OutboxMail.state)):
        counts[state] = int(n)
    return counts


def page_outbox(
    sess: Session, *, state: str | None = None, before: int | None = None, limit: int = 50
) -> tuple[list[OutboxMail], int | None]:
    """A page of the outbox, newest first (by row id: the order the mail was written).

    :param state: only mail in this delivery state.
    :param before: only mail older than the row with this id (the previous
        page's key).
    :return: the rows, and the key of the next page (None on the last one).
    """
    stmt = select(OutboxMail).order_by(OutboxMail.id.desc()).limit(limit + 1)
    if state is not None:
        stmt = stmt.where(OutboxMail.state == state)
    if before is not None:
        stmt = stmt.where(OutboxMail.id < before)
    rows = list(sess.scalars(stmt))
    next_key = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_key


def find_mail(sess: Session, public_id: str) -> OutboxMail | None:
    """The outbox mail with this opaque id, or None (also for an id too long to be one)."""
    if len(public_id) > 32:
        return None
    return sess.scalar(select(OutboxMail).where(OutboxMail.public_id == public_id))


class MailDeliveryOff(Exception):
    """``[mail] url`` is empty: there is no SMTP server to deliver to."""


class MailNotRetryable(Exception):
    """The mail is queued or sent already: only a kept or failed one is queued again."""


def queue_again(sess: Session, mail: OutboxMail, actor: User | None) -> None:
    """Queue a failed or kept mail for SMTP delivery again, with a fresh count of tries.

    The job is sent when ``sess`` commits; the action is audited in it.

    :param actor: the admin who asked (None: the command line).
    :raise MailDeliveryOff: no SMTP server is configured.
    :raise MailNotRetryable: the mail is ``queued`` or ``sent`` (also when
        another admin queued it a moment ago).
    """
    from core.tasks import get_jobs

    if not delivery_on():
        raise MailDeliveryOff("[mail] url is empty: mail is kept in the outbox only")
    moved = sess.scalar(
        update(OutboxMail)
        .where(OutboxMail.id == mail.id, OutboxMail.state.in_(RETRYABLE))
        .values(state="queued", attempts=0)
        .returning(OutboxMail.id)
        .execution_options(synchronize_session="fetch")
    )
    if moved is None:
        sess.refresh(mail)
        raise MailNotRetryable(f"mail {mail.public_id} is {mail.state}: only kept or failed mail")
    detail: dict[str, Any] = {"to": mail.to}
    if actor is None:
        detail["via"] = "cli"
    audit(sess, actor, "mail.retry", f"mail:{mail.public_id}", detail)
    get_jobs().enqueue_on_commit(sess, DELIVER_ACTOR, (mail.id,))
    log.info("mail id=%s status=queued_again", mail.id)
