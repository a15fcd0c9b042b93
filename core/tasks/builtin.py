"""Core's own jobs."""

from __future__ import annotations

import logging
from datetime import timedelta

from dramatiq.middleware import CurrentMessage
from flask import current_app
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import update

from core.db import session
from core.plugins import PluginHost
from core.smtp import MailRefused
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


class MailBeingSent(Exception):
    """Another delivery job holds this mail's lease: this one is tried again later."""


#: How long a delivery job may hold a mail, per second of ``[mail] timeout_seconds``
#: (an SMTP conversation is a handful of exchanges, each bounded by the timeout).
LEASE_PER_TIMEOUT = 10


@actor("core.deliver_mail", queue="mail", max_retries=8, throws=(MailRefused,))
def deliver_mail(outbox_id: int) -> None:
    """Send one ``outbox_mail`` row by SMTP (``[mail] url``) and mark it sent.

    Queued by core's default mail sender in the transaction that wrote the
    row (and by ``trivium mail retry`` or the administration's mail page).
    An unreachable server, a temporary refusal or one the settings can mend
    (login, STARTTLS, sender, relaying) is tried again with backoff: eight
    more tries over one to two hours.  A permanent refusal of this recipient
    or message fails the job at once, with the server's answer as its error
    (:func:`core.smtp.send`).  Each try is counted on the row with its error;
    the row is ``failed`` once no try is left.

    A job first takes the row's lease (``sending_until``), so two jobs for
    one mail (an operator retried it while another still waited) never send
    it at once; the second finds it sent, or waits for the lease.  At least
    once: a worker that dies between the server's acceptance and the commit
    sends the mail again once the lease has run out.

    :raise MailRefused: the server refused it for good.
    :raise MailBeingSent: another job is sending it (retried later).
    """
    from core import smtp
    from core.db import utcnow
    from core.models import OutboxMail

    sess = session()
    mail = sess.get(OutboxMail, outbox_id)
    if mail is None or mail.sent_at is not None:
        log.info("job=core.deliver_mail id=%s status=nothing_to_send", outbox_id)
        return
    conf = current_app.extensions["trivium.settings"]
    if not conf.mail.url:
        # the setting was removed meanwhile: the mail stays in the outbox
        _mail_tried(outbox_id, state="outbox", error="[mail] url is empty", counts=False)
        log.warning("job=core.deliver_mail id=%s status=kept mail_url=empty", outbox_id)
        return
    to, subject, body = mail.to, mail.subject, mail.body
    now = utcnow()
    lease = timedelta(seconds=LEASE_PER_TIMEOUT * conf.mail.timeout_seconds)
    claimed = sess.scalar(
        update(OutboxMail)
        .where(
            OutboxMail.id == outbox_id,
            OutboxMail.sent_at.is_(None),
            or_(OutboxMail.sending_until.is_(None), OutboxMail.sending_until < now),
        )
        .values(sending_until=now + lease, state="queued")
        .returning(OutboxMail.id)
    )
    sess.commit()  # no transaction stays open while the mail server takes its time
    if claimed is None:
        if sess.scalar(select(OutboxMail.sent_at).where(OutboxMail.id == outbox_id)) is None:
            sess.rollback()
            raise MailBeingSent(f"mail {outbox_id} is being sent by another job")
        log.info("job=core.deliver_mail id=%s status=sent_meanwhile", outbox_id)
        return
    try:
        message = smtp.build_message(smtp.sender_of(conf), to, subject, body)
        server = smtp.send_with(conf, message)
    except BaseException as exc:  # a time limit interrupts with a BaseException
        final = isinstance(exc, MailRefused) or _last_try(deliver_mail.max_retries)
        try:
            _mail_tried(outbox_id, state="failed" if final else "queued", error=_reason(exc))
        except Exception:  # the job's own failure is what counts: it is raised below
            log.exception("job=core.deliver_mail id=%s status=try_not_recorded", outbox_id)
        raise exc
    marked = _mail_tried(outbox_id, state="sent", error="")
    status = "sent" if marked else "sent_row_gone_or_marked_meanwhile"
    log.info(
        "job=core.deliver_mail id=%s status=%s server=%s", outbox_id, status, server.describe()
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:2000]


def _last_try(max_retries: int | None) -> bool:
    """True unless the running job will be tried again after a failure.

    The arithmetic of dramatiq's ``Retries``: during a run, ``retries``
    counts the failed runs before it, and a failure with ``retries`` at the
    limit is the last.  The limit is the message's, else the actor's, else
    the instance's ``jobs.max_retries``.
    """
    message = CurrentMessage.get_current_message()
    if message is None:
        return True  # called directly: nothing retries it
    if max_retries is None:
        max_retries = current_app.extensions["trivium.settings"].jobs.max_retries
    retries = message.options.get("retries", 0)
    limit = message.options.get("max_retries", max_retries)
    return limit is not None and retries >= limit


def _mail_tried(outbox_id: int, *, state: str, error: str, counts: bool = True) -> bool:
    """Record a delivery try on an unsent row in its own transaction, ending the lease.

    :return: False if the row is gone or was marked sent meanwhile.
    """
    from core.db import utcnow
    from core.models import OutboxMail

    sess = session()
    sess.rollback()
    now = utcnow()
    values: dict[str, object] = {"state": state, "last_error": error, "sending_until": None}
    if counts:
        values.update(attempts=OutboxMail.attempts + 1, last_attempt_at=now)
    if state == "sent":
        values["sent_at"] = now
    marked = sess.scalar(
        update(OutboxMail)
        .where(OutboxMail.id == outbox_id, OutboxMail.sent_at.is_(None))
        .values(**values)
        .returning(OutboxMail.id)
    )
    sess.commit()
    return marked is not None


@actor("core.complete_where_due", max_retries=5)
def complete_where_due(course_id: int) -> None:
    """Complete the course for learners who meet its changed completion rule.

    Enqueued when a required item is deleted or made optional.  Each learner
    completed here gets a ``core.announce_completion`` job written in the same
    transaction, so a crash after the commit cannot lose the hook call.  A
    second run finds nobody left to complete.
    """
    from core import progress
    from core.models import Course
    from core.tasks.runtime import get_jobs

    sess = session()
    course = sess.get(Course, course_id)
    if course is None:
        log.info("job=core.complete_where_due course_id=%s status=course_gone", course_id)
        return
    completed = progress.complete_where_due(sess, course)
    jobs = get_jobs()
    for user in completed:
        jobs.enqueue_on_commit(sess, "core.announce_completion", (user.id, course.id))
    sess.commit()
    log.info("job=core.complete_where_due course=%s completed=%d", course.public_id, len(completed))


@actor("core.announce_completion", max_retries=8)
def announce_completion(user_id: int, course_id: int) -> None:
    """Call ``course_completed`` for a completion a job stored.

    At least once: a worker that dies after the hook ran but before the job
    is acknowledged calls it again, so listeners must be idempotent (issue a
    credential once per learner and course).
    """
    from core.models import Course
    from core.models import Enrolment
    from core.models import User

    sess = session()
    user = sess.get(User, user_id)
    course = sess.get(Course, course_id)
    completed = sess.scalar(
        select(Enrolment.completed_at).where(
            Enrolment.user_id == user_id, Enrolment.course_id == course_id
        )
    )
    if user is None or course is None or completed is None:
        log.info(
            "job=core.announce_completion user_id=%s course_id=%s status=nothing_to_announce",
            user_id,
            course_id,
        )
        return
    host: PluginHost = current_app.extensions["trivium.plugins"]
    host.call("course_completed", user=user, course=course)


@actor("core.sweep_erased_statements", max_retries=5)
def sweep_erased_statements(user_id: int) -> None:
    """Erase again what reached an erased account after its erasure committed.

    Queued twice by :func:`core.erasure.erase_account`: seconds after, for
    heartbeats other server processes still held, and once every cache that
    could still have let another machine act for the person has expired
    (see :func:`core.erasure.sweep`).  Idempotent.
    """
    from core import erasure
    from core import progress_buffer
    from core.auth.tokens import forget_token_hashes

    progress_buffer.flush_before_reading()  # when this worker serves requests too
    sess = session()
    swept = erasure.sweep(sess, user_id)
    if swept is None:
        sess.rollback()
        log.info("job=core.sweep_erased_statements user_id=%s status=not_erased", user_id)
        return
    sess.commit()
    statements, hashes = swept
    forget_token_hashes(list(hashes))
    log.info(
        "job=core.sweep_erased_statements user_id=%s statements=%s tokens=%s",
        user_id,
        statements,
        len(hashes),
    )
