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
  reset links and codes), and so are the jobs that would still send mail to
  it or deliver those rows; a job's error text that quotes the address (a
  server's refusal) loses it.
- ``invitations``: an unused invitation to the address is deleted (it was
  the person's to use); a used one loses the address.
- ``audit_log``: the address is replaced by ``(erased)`` wherever an entry's
  ``email`` or ``to`` held it, the address the person acted from is blanked
  in their own entries, and the names they gave their API tokens go; the
  entries stay (the instance's security record), pointing to the erased
  account.
- ``events``: each stored xAPI statement's actor ``name`` becomes ``Erased
  user``; the account's public id stays as the statement's account name.

Kept: progress, completions, quiz attempts (unfinished ones too) with their
answers, grades and graders' feedback, events and audit entries, as the
records of an account that names no one.  Rows a plugin owns are each
plugin's to erase through the ``erase_user_data`` hook, in the same
transaction; a plugin that fails stops the erasure and nothing is erased.

Races: the account's row is changed first and over the version of it the
erasure read (``users.row_version``), so of two erasures at once the second
is refused, and a request that read the account before the erasure and
writes it after (a password reset, a profile change, a login) is refused
with a conflict instead of restoring a password or a name.  What such a
request adds beside the row (a token, an enrolment), a heartbeat another
server process still held, and what a machine whose caches still knew the
person did meanwhile are erased by two sweep jobs (:func:`sweep`): seconds
after the commit, and once the token and read caches of every machine have
expired (``[accounts] token_cache_seconds`` plus ``[cache] read_seconds``:
with the in-process cache, another machine may take a token of the person
for that long; a Redis cache drops it at once), and at least a request's
longest run.  A request that writes beside the row something that reaches
the person (a password-reset mail) holds the row first
(:func:`still_unerased`).

Not reached: copies outside this instance (a peer's records of a learner who
enrolled there, statements sent to an external LRS, backups, mail already
delivered or being handed to the mail server at that moment) and, with Redis
or RabbitMQ as the job broker, mail jobs already in the broker's queue.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import Any

from dramatiq import DecodeError
from flask import current_app
from sqlalchemy import and_
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.orm import aliased
from sqlalchemy.orm.exc import StaleDataError

from core import rbac
from core.auth.audit import audit
from core.auth.tokens import forget_token_hashes
from core.db import rowcount
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
REQUEST_TIMEOUT_MS = 60_000
"""The longest a served request runs (``trivium serve``'s worker timeout)."""

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
    name; the sweep jobs this queues scrub them (a caller may call
    :func:`core.progress_buffer.flush_before_reading` first, before writing
    anything in ``sess``: with SQLite the buffer's write would wait for
    ``sess``'s lock).

    The account row is changed first, over the version of it ``user`` holds
    (``users.row_version``): of two erasures at once, or an erasure and a
    request changing the account, the later writer is refused.

    :param actor: who erases: the person themselves, an administrator, or
        None for the operator's command line.
    :param via: ``api``, ``web`` or ``cli`` (audited).
    :raise AccountStateInvalid: the account is already erased, or was
        changed meanwhile.
    :raise LastActiveAdmin: it is the last active site administrator.
    :raise ErasureFailed: a plugin's ``erase_user_data`` failed (the caller
        rolls back; nothing is erased).
    """
    if user.erased_at is not None:
        raise AccountStateInvalid("this account is already erased")
    if user.is_admin and user.is_active:
        keep_an_admin(sess)
    now = utcnow()
    user.erased_at = now
    user.is_active = False
    user.row_version += 1  # a write over the version read before this one is refused
    try:
        sess.flush()  # takes the row (PostgreSQL: its lock) before anything else
    except StaleDataError:
        raise AccountStateInvalid(
            "this account was changed or erased meanwhile; reload it and try again"
        ) from None
    address = user.email.lower()
    token_hashes = tuple(
        sess.scalars(select(ApiToken.token_hash).where(ApiToken.user_id == user.id))
    )
    unstaffed = sole_instructor_of(sess, user)
    cleared = clear_account(sess, user)
    mail_ids = list(sess.scalars(select(OutboxMail.id).where(func.lower(OutboxMail.to) == address)))
    if mail_ids:
        sess.execute(delete(OutboxMail).where(OutboxMail.id.in_(mail_ids)))
    mail_jobs = _drop_mail_jobs(sess, address, set(mail_ids))
    # an unused invitation to the address is the person's; a used one keeps its history
    sess.execute(
        delete(Invitation).where(
            func.lower(Invitation.email) == address, Invitation.used_at.is_(None)
        )
    )
    sess.execute(
        update(Invitation).where(func.lower(Invitation.email) == address).values(email=None)
    )
    _scrub_audit(sess, user, address)
    events = scrub_statements(sess, user.id)
    _erase_plugin_data(sess, user)
    user.email = erased_address(user)
    user.display_name = ERASED_NAME
    user.session_version += 1
    rbac.forget(sess)
    entry = audit(sess, actor, "account.erase", f"user:{user.public_id}", {"via": via})
    if actor is not None and actor.id == user.id:
        entry.ip = ""  # where the person asked from is theirs too
    _queue_sweeps(sess, user.id)
    sess.flush()
    erasure = Erasure(
        user=user.public_id,
        erased_at=now,
        identities=cleared.identities,
        tokens=cleared.tokens,
        staff_roles=cleared.staff_roles,
        enrolments_withdrawn=cleared.enrolments_withdrawn,
        mail=len(mail_ids),
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
        len(mail_ids),
    )
    return erasure


@dataclass(frozen=True)
class Cleared:
    """What :func:`clear_account` removed."""

    identities: int
    tokens: int
    staff_roles: int
    enrolments_withdrawn: int


def clear_account(sess: Session, user: User) -> Cleared:
    """Remove what an erased account may not hold, on its row and the rows hanging off it.

    Ways to log in or act (password, second factor, identities, recovery
    codes, tokens), rights and staff roles, the last login; enrolments
    still active or pending are withdrawn.  The erasure does it first; the
    sweep jobs do it again, for what a request that began before the erasure
    added after it (a token, an enrolment).  Flushes.
    """
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
    user.password_hash = None
    user.totp_secret = None
    user.totp_enabled = False
    user.totp_last_step = None
    user.is_admin = False
    user.can_create_courses = False
    user.is_active = False
    user.last_login_at = None
    sess.flush()
    return Cleared(identities, tokens, len(roles), len(withdrawn))


def sweep_delays_ms() -> tuple[int, ...]:
    """When the sweep jobs run after an erasure commits.

    The first soon after other processes' buffers flushed; the last once
    every cache that may still have let another machine take the person for
    who they were has expired (a verified token, the course standing).
    """
    settings = current_app.extensions["trivium.settings"]
    caches = settings.accounts.token_cache_seconds * 1000 + settings.cache.read_seconds * 1000
    # and a request begun just before the erasure may run until the server's timeout
    last = max(caches, REQUEST_TIMEOUT_MS) + settings.progress.flush_ms + SWEEP_DELAY_MS
    return (SWEEP_DELAY_MS, last)


def _queue_sweeps(sess: Session, user_id: int) -> None:
    from core.tasks import get_jobs

    for delay in sweep_delays_ms():
        get_jobs().enqueue_on_commit(
            sess, "core.sweep_erased_statements", (user_id,), delay_ms=delay
        )


def sweep(sess: Session, user_id: int) -> tuple[int, tuple[str, ...]] | None:
    """Erase again what reached an erased account after its erasure committed.

    A request that held the account from before may have added a token, an
    enrolment or an audit entry with its address, another process's buffer
    may have written a heartbeat with the person's name, a plugin a row of
    its own (``erase_user_data`` is called again).  Flushed, not committed.

    :raise ErasureFailed: a plugin failed (the job is tried again).

    :return: how many statements were scrubbed and the hashes of the tokens
        deleted (for :func:`forget_token_hashes` after the commit); None if
        the account is not erased.
    """
    user = sess.get(User, user_id)
    if user is None or user.erased_at is None:
        return None
    hashes = tuple(sess.scalars(select(ApiToken.token_hash).where(ApiToken.user_id == user.id)))
    clear_account(sess, user)
    user.email = erased_address(user)
    user.display_name = ERASED_NAME
    _scrub_own_audit(sess, user)
    statements = scrub_statements(sess, user.id)
    _erase_plugin_data(sess, user)
    sess.flush()
    return statements, hashes


def after_commit(erasure: Erasure) -> None:
    """Drop the erased account's API tokens from the caches (once the erasure committed)."""
    forget_token_hashes(list(erasure.token_hashes))


def _by(actor: User | None) -> str:
    return actor.public_id if actor is not None else "cli"


def _count(sess: Session, statement: Any) -> int:
    return rowcount(sess.execute(statement))


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


def _drop_mail_jobs(sess: Session, address: str, outbox_ids: set[int]) -> int:
    """Delete the jobs that would still send mail to ``address`` (not one running now).

    Those of the plugin senders (``core.send_mail``, the address in their
    message) and the SMTP deliveries of the outbox rows erased
    (``core.deliver_mail``); an error text a job kept that quotes the address
    (a server's refusal) loses it.
    """
    rows = sess.execute(
        select(Job.id, Job.actor, Job.message).where(
            Job.actor.in_(("core.send_mail", "core.deliver_mail")), Job.state != "running"
        )
    )
    doomed = []
    for job_id, actor_name, text_ in rows:
        try:
            args = store.decode(text_).args
        except DecodeError:
            continue
        if not args:
            continue
        if actor_name == "core.send_mail":
            mine = isinstance(args[0], str) and args[0].lower() == address
        else:
            mine = args[0] in outbox_ids
        if mine:
            doomed.append(job_id)
    if doomed:
        sess.execute(delete(Job).where(Job.id.in_(doomed)))
    quoted = re.compile(re.escape(address), re.IGNORECASE)
    for job_id, error in sess.execute(
        select(Job.id, Job.error).where(func.lower(Job.error).contains(address, autoescape=True))
    ).all():
        sess.execute(
            update(Job).where(Job.id == job_id).values(error=quoted.sub(ERASED_VALUE, error))
        )
    return len(doomed)


def _scrub_audit(sess: Session, user: User, address: str) -> None:
    """The address out of entries' details (see also :func:`_scrub_own_audit`)."""
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
    _scrub_own_audit(sess, user)


def _scrub_own_audit(sess: Session, user: User) -> None:
    """Where the person acted from, and the names they gave their tokens.

    Their own entries, and those with no actor about their account (a
    password reset asked for by address).
    """
    sess.execute(
        update(AuditLog)
        .where(
            or_(
                AuditLog.actor_id == user.id,
                and_(AuditLog.actor_id.is_(None), AuditLog.target == f"user:{user.public_id}"),
            ),
            AuditLog.ip != "",
        )
        .values(ip="")
    )
    named = sess.execute(
        select(AuditLog.id, AuditLog.detail).where(
            AuditLog.actor_id == user.id, AuditLog.action == "auth.token_created"
        )
    )
    for entry_id, detail in named:
        if isinstance(detail, dict) and "name" in detail:
            kept = {k: v for k, v in detail.items() if k != "name"}
            sess.execute(update(AuditLog).where(AuditLog.id == entry_id).values(detail=kept))


def still_unerased(sess: Session, user: User) -> bool:
    """Hold ``user``'s row for this transaction if no erasure came first; False if one did.

    For a request that read the account and writes beside it, not on its
    row, something that names or reaches the person (a mail to the address):
    called before committing, it waits for an erasure under way (the row's
    lock, SQLite's write lock) and then answers False, and the caller rolls
    back; an erasure coming after waits for this commit and erases what it
    wrote.
    """
    held = sess.execute(
        update(User)
        .where(
            User.id == user.id,
            User.row_version == user.row_version,
            User.erased_at.is_(None),
        )
        .values(row_version=User.row_version)
        .execution_options(synchronize_session=False)
    )
    return rowcount(held) == 1


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
    params = {"name": ERASED_NAME, "user_id": user_id}
    if dialect == "sqlite":
        return _count(sess, _SCRUB_SQLITE.params(params))
    if dialect == "postgresql":
        try:
            with sess.begin_nested():
                return _count(sess, _SCRUB_POSTGRESQL.params(params))
        except DBAPIError:
            # a statement holding text jsonb refuses (a NUL character): one by one
            log.warning("erasure user_id=%s statements=scrubbed_one_by_one", user_id)
    return _scrub_each(sess, user_id)


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
    sess.flush()
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
