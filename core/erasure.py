"""Right to erasure: a person's account is erased, their learning records kept under no name.

A person erases their own account (``POST /api/v1/me/erase``, "Erase my
account" on the account page, unless ``[accounts] self_erasure = false``); an
administrator erases someone's (the user's page in the administration, or
``trivium users erase EMAIL``).  GDPR article 17.  It cannot be undone.

Erasure removes everything on this instance that names or reaches the
person, in one transaction, and keeps the learning and assessment records a
university must keep, attached to the account's row, which no longer holds a
name, an address or a way to log in:

- ``users``: the address becomes ``erased-<id>@erased.invalid`` (a name that
  can never receive mail, RFC 2606), the display name ``Erased user``; the
  password hash, the second factor's secret and last step, the last login
  time, the administrator and course-creator rights go; the account is
  inactive, every session ends, and ``erased_at`` records when.  The public
  id stays: it names no one, and the records below still point to it.
- ``identities``, ``recovery_codes``, ``api_tokens``: deleted.
- ``course_roles``: deleted (an erased account teaches nothing); the courses
  stay, and those left without an instructor are named in the result.
- ``enrolments``: active and pending ones are withdrawn, as if the person
  had left; completions and the enrolment history stay.
- ``outbox_mail``: every mail to the address is deleted (bodies hold names,
  reset links and codes), and so are the jobs that would still send mail to it.
- ``invitations``: the address is cleared from invitations sent to it.
- ``audit_log``: the address is replaced by ``(erased)`` wherever an entry's
  ``email`` or ``to`` held it; the entries stay (the instance's security
  record), pointing to the erased account.
- ``events``: each stored xAPI statement's actor ``name`` becomes ``Erased
  user``; the account's public id stays as the statement's account name.
  A job repeats this a few seconds after the commit, for heartbeats another
  server process was still holding (:mod:`core.progress_buffer`).

Kept: progress, completions, quiz attempts and grades, events and audit
entries, as records of an account that names no one.  Rows a plugin owns are
each plugin's to erase through the ``erase_user_data`` hook, in the same
transaction; a plugin that fails stops the erasure and nothing is erased.

Not reached: copies outside this instance (a peer's records of a learner who
enrolled there, statements sent to an external LRS, backups, mail already
delivered) and, with Redis or RabbitMQ as the job broker, mail jobs already in
the broker's queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import Any

from dramatiq import DecodeError
from flask import current_app
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm import aliased

from core import rbac
from core.auth.audit import audit
from core.auth.tokens import forget_token_hashes
from core.db import utcnow
from core.errors import Conflict
from core.errors import Forbidden
from core.errors import Problem
from core.models import ApiToken
from core.models import AuditLog
from core.models import Course
from core.models import CourseRole
from core.models import Enrolment
from core.models import Event
from core.models import Identity
from core.models import Invitation
from core.models import Job
from core.models import OutboxMail
from core.models import RecoveryCode
from core.models import User
from core.operator import AccountStateInvalid
from core.operator import keep_an_admin
from core.plugins import PluginHost
from core.tasks import store

log = logging.getLogger(__name__)

HOOK = "erase_user_data"
ERASED_NAME = "Erased user"
ERASED_DOMAIN = "erased.invalid"
ERASED_VALUE = "(erased)"
SWEEP_DELAY_MS = 10_000
"""When the statements are swept again: well past a buffer's flush interval."""

#: Audit detail keys that may hold the person's address.
_ADDRESS_KEYS = ("email", "to")


class SelfErasureOff(Forbidden):
    """The instance lets only its administrators erase accounts."""

    title = "Erasure by administrators only"
    type_slug = "self-erasure-off"


class NoPasswordToConfirm(Conflict):
    """An account without a password cannot confirm its own erasure."""

    title = "No password to confirm with"
    type_slug = "no-password-to-confirm"


class ErasureFailed(Problem):
    """A plugin could not erase its data; nothing was erased."""

    status = 500
    title = "Erasure failed"
    type_slug = "erasure-failed"


@dataclass(frozen=True)
class Erasure:
    """What an erasure removed or changed, for the operator and the log.

    :ivar user: the erased account's public id (it stays).
    :ivar unstaffed: courses the person was the only instructor of, as
        ``(public id, title)``: an administrator should give them one.
    """

    user: str
    erased_at: datetime
    identities: int = 0
    tokens: int = 0
    staff_roles: int = 0
    enrolments_withdrawn: int = 0
    mail: int = 0
    mail_jobs: int = 0
    events: int = 0
    unstaffed: list[tuple[str, str]] = field(default_factory=list)
    token_hashes: tuple[str, ...] = ()


def erased_address(user: User) -> str:
    """The address an erased account holds instead of the person's."""
    return f"erased-{user.public_id}@{ERASED_DOMAIN}"


def check_self_erasure(user: User) -> None:
    """Refuse a person's own erasure where the instance or the account does not allow it.

    :raise SelfErasureOff: ``[accounts] self_erasure = false``.
    :raise NoPasswordToConfirm: the account has no password to confirm it with.
    """
    if not current_app.extensions["trivium.settings"].accounts.self_erasure:
        raise SelfErasureOff(
            "this instance's administrators erase accounts; ask them to erase yours"
        )
    if not user.password_hash:
        raise NoPasswordToConfirm(
            "this account has no password to confirm its erasure with; "
            "ask the instance's administrators to erase it"
        )


def erase_account(sess: Session, actor: User | None, user: User, *, via: str) -> Erasure:
    """Erase ``user`` as the module docstring says, in ``sess`` (flushed, not committed).

    After committing, call :func:`after_commit` with the result.  Heartbeats
    of the person still waiting in a progress buffer are written with their
    name; the sweep job this queues scrubs them (a caller may call
    :func:`core.progress_buffer.flush_before_reading` first, before writing
    anything in ``sess``: with SQLite the buffer's write would wait for
    ``sess``'s lock).

    :param actor: who erases: the person themselves, an administrator, or
        None for the operator's command line.
    :param via: ``api``, ``web`` or ``cli`` (audited).
    :raise AccountStateInvalid: the account is already erased.
    :raise LastActiveAdmin: it is the last active site administrator.
    :raise ErasureFailed: a plugin's ``erase_user_data`` failed (the caller
        rolls back; nothing is erased).
    """
    if user.erased_at is not None:
        raise AccountStateInvalid("this account is already erased")
    if user.is_admin and user.is_active:
        keep_an_admin(sess)
    address = user.email.lower()
    token_hashes = tuple(
        sess.scalars(select(ApiToken.token_hash).where(ApiToken.user_id == user.id))
    )
    unstaffed = sole_instructor_of(sess, user)
    identities = _count(sess, delete(Identity).where(Identity.user_id == user.id))
    _count(sess, delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    tokens = _count(sess, delete(ApiToken).where(ApiToken.user_id == user.id))
    roles = list(sess.scalars(select(CourseRole).where(CourseRole.user_id == user.id)))
    for role in roles:
        sess.delete(role)  # through the session: the read cache hears of each
    withdrawn = list(
        sess.scalars(
            select(Enrolment).where(
                Enrolment.user_id == user.id, Enrolment.status.in_(("active", "pending"))
            )
        )
    )
    for enrolment in withdrawn:
        enrolment.status = "withdrawn"
    mail = _count(sess, delete(OutboxMail).where(func.lower(OutboxMail.to) == address))
    mail_jobs = _drop_mail_jobs(sess, address)
    sess.execute(
        update(Invitation).where(func.lower(Invitation.email) == address).values(email=None)
    )
    _scrub_audit(sess, address)
    events = scrub_statements(sess, user.id)
    _erase_plugin_data(sess, user)
    now = utcnow()
    user.email = erased_address(user)
    user.display_name = ERASED_NAME
    user.password_hash = None
    user.totp_secret = None
    user.totp_enabled = False
    user.totp_last_step = None
    user.is_admin = False
    user.can_create_courses = False
    user.is_active = False
    user.last_login_at = None
    user.session_version += 1
    user.erased_at = now
    rbac.forget(sess)
    audit(sess, actor, "account.erase", f"user:{user.public_id}", {"via": via})
    from core.tasks import get_jobs

    get_jobs().enqueue_on_commit(
        sess, "core.sweep_erased_statements", (user.id,), delay_ms=SWEEP_DELAY_MS
    )
    sess.flush()
    erasure = Erasure(
        user=user.public_id,
        erased_at=now,
        identities=identities,
        tokens=tokens,
        staff_roles=len(roles),
        enrolments_withdrawn=len(withdrawn),
        mail=mail,
        mail_jobs=mail_jobs,
        events=events,
        unstaffed=unstaffed,
        token_hashes=token_hashes,
    )
    log.info(
        "account_erased user=%s by=%s via=%s events=%s mail=%s",
        user.public_id,
        "self" if actor is not None and actor.id == user.id else _by(actor),
        via,
        events,
        mail,
    )
    return erasure


def after_commit(erasure: Erasure) -> None:
    """Drop the erased account's API tokens from the caches (once the erasure committed)."""
    forget_token_hashes(list(erasure.token_hashes))


def _by(actor: User | None) -> str:
    return actor.public_id if actor is not None else "cli"


def _count(sess: Session, statement: Any) -> int:
    result = sess.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)


def sole_instructor_of(sess: Session, user: User) -> list[tuple[str, str]]:
    """The courses ``user`` is the only instructor of, as ``(public id, title)``."""
    other = aliased(CourseRole)
    others = (
        select(other.id)
        .where(
            other.course_id == Course.id,
            other.role == "instructor",
            other.user_id != user.id,
        )
        .exists()
    )
    rows = sess.execute(
        select(Course.public_id, Course.title)
        .join(CourseRole, CourseRole.course_id == Course.id)
        .where(CourseRole.user_id == user.id, CourseRole.role == "instructor", ~others)
        .order_by(Course.id)
    )
    return [(pid, title) for pid, title in rows]


def _drop_mail_jobs(sess: Session, address: str) -> int:
    """Delete the jobs that would still send mail to ``address`` (not one running now)."""
    rows = sess.execute(
        select(Job.id, Job.message).where(Job.actor == "core.send_mail", Job.state != "running")
    )
    doomed = []
    for job_id, text_ in rows:
        try:
            args = store.decode(text_).args
        except DecodeError:
            continue
        if args and isinstance(args[0], str) and args[0].lower() == address:
            doomed.append(job_id)
    if doomed:
        sess.execute(delete(Job).where(Job.id.in_(doomed)))
    return len(doomed)


def _scrub_audit(sess: Session, address: str) -> None:
    rows = sess.execute(
        select(AuditLog.id, AuditLog.detail).where(
            or_(*(func.lower(AuditLog.detail[key].as_string()) == address for key in _ADDRESS_KEYS))
        )
    )
    for entry_id, detail in rows:
        scrubbed = dict(detail)
        for key in _ADDRESS_KEYS:
            value = scrubbed.get(key)
            if isinstance(value, str) and value.lower() == address:
                scrubbed[key] = ERASED_VALUE
        sess.execute(update(AuditLog).where(AuditLog.id == entry_id).values(detail=scrubbed))


_SCRUB_SQLITE = text(
    "UPDATE events SET statement = json_set(statement, '$.actor.name', :name) "
    "WHERE user_id = :user_id AND json_extract(statement, '$.actor.name') IS NOT :name"
)
_SCRUB_POSTGRESQL = text(
    "UPDATE events SET statement = "
    "jsonb_set(statement::jsonb, '{actor,name}', to_jsonb(CAST(:name AS text)))::json "
    "WHERE user_id = :user_id AND (statement -> 'actor' ->> 'name') IS DISTINCT FROM :name"
)


def scrub_statements(sess: Session, user_id: int) -> int:
    """Replace the actor's name in every stored statement of ``user_id``; return how many."""
    dialect = sess.get_bind().dialect.name
    if dialect == "sqlite":
        statement = _SCRUB_SQLITE
    elif dialect == "postgresql":
        statement = _SCRUB_POSTGRESQL
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        return _scrub_each(sess, user_id)
    params = {"name": ERASED_NAME, "user_id": user_id}
    return _count(sess, statement.params(params))


def _scrub_each(sess: Session, user_id: int) -> int:
    count = 0
    for row in sess.scalars(select(Event).where(Event.user_id == user_id)):
        statement = dict(row.statement)
        actor_ = dict(statement.get("actor") or {})
        if actor_.get("name") != ERASED_NAME:
            actor_["name"] = ERASED_NAME
            statement["actor"] = actor_
            row.statement = statement
            count += 1
    return count


def _erase_plugin_data(sess: Session, user: User) -> None:
    host: PluginHost = current_app.extensions["trivium.plugins"]
    kwargs = {"user": user}
    for name, function, argnames in host.implementations(HOOK):
        try:
            function(*[kwargs[arg] for arg in argnames])
        except Exception as exc:
            host.record_failure(name, HOOK, exc)
            raise ErasureFailed(
                f"the plugin {name} could not erase its data, so nothing was erased; "
                "the instance's operators find the error in its log",
                plugin=name,
            ) from exc
