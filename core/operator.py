"""Operator services: user accounts and roles, the audit log, masked settings.

Invitations live with the other account actions in :mod:`core.auth.accounts`.

Like :mod:`core.courses`, functions here flush but never commit and raise
:mod:`core.errors` problems; the caller checks that the actor is a site admin
and commits.  Every change is audited in the caller's transaction.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import Literal
from urllib.parse import unquote
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.auth import notices
from core.auth.audit import audit
from core.auth.passwords import check_password_policy
from core.auth.passwords import make_password_service
from core.auth.totp import delete_recovery_codes
from core.config import AccountsSection
from core.config import Settings
from core.errors import Conflict
from core.errors import NotFound
from core.models import AuditLog
from core.models import User

log = logging.getLogger(__name__)

_PUBLIC_ID = re.compile(r"[0-9A-Za-z_-]{1,32}")

# ---------------------------------------------------------------- errors


class AccountNotFound(NotFound):
    """No user account with this public id."""

    type_slug = "account-not-found"


class CannotChangeOwnAccount(Conflict):
    """An admin tried to deactivate themselves or drop their own admin role."""

    type_slug = "cannot-change-own-account"


class AccountStateInvalid(Conflict):
    """The account is already in the requested state."""

    type_slug = "account-state-invalid"


class LastActiveAdmin(Conflict):
    """The change would leave the instance without an active site administrator."""

    type_slug = "last-active-admin"


# ---------------------------------------------------------------- users


def get_account(sess: Session, public_id: str) -> User:
    """Any user (active or not) by public id.

    :raise AccountNotFound: there is none.
    """
    found = None
    if _PUBLIC_ID.fullmatch(public_id):
        found = sess.scalar(select(User).where(User.public_id == public_id))
    if found is None:
        raise AccountNotFound("no such user")
    return found


def find_active_user_by_email(sess: Session, email: str) -> User | None:
    """The active account with this e-mail address (compared as stored: trimmed, lower-case)."""
    address = email.strip().lower()
    if not address or len(address) > 320:
        return None
    return sess.scalar(select(User).where(User.email == address, User.is_active.is_(True)))


def search_users(
    sess: Session,
    *,
    q: str | None = None,
    state: Literal["active", "inactive", "erased", "admin", "creator"] | None = None,
    before: int | None = None,
    limit: int = 50,
) -> tuple[list[User], int | None]:
    """A page of users, newest first, matching ``q`` in e-mail or display name.

    :param state: only active, deactivated (not erased), erased, admin or
        course-creating accounts.
    :param before: the cursor: only users with a smaller internal id.
    :return: the page and the cursor key of the next one (None at the end).
    """
    stmt = select(User)
    if q:
        stmt = stmt.where(
            or_(
                User.email.icontains(q, autoescape=True),
                User.display_name.icontains(q, autoescape=True),
            )
        )
    if state == "active":
        stmt = stmt.where(User.is_active.is_(True))
    elif state == "inactive":
        stmt = stmt.where(User.is_active.is_(False), User.erased_at.is_(None))
    elif state == "erased":
        stmt = stmt.where(User.erased_at.is_not(None))
    elif state == "admin":
        stmt = stmt.where(User.is_admin.is_(True))
    elif state == "creator":
        stmt = stmt.where(User.can_create_courses.is_(True))
    if before is not None:
        stmt = stmt.where(User.id < before)
    rows = list(sess.scalars(stmt.order_by(User.id.desc()).limit(limit + 1)))
    next_key = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_key


def _target(user: User) -> str:
    return f"user:{user.public_id}"


def _by(actor: User | None) -> str:
    return actor.public_id if actor is not None else "cli"


def _via(actor: User | None) -> dict[str, Any]:
    """The audit detail naming the command line when no admin acted."""
    return {} if actor is not None else {"via": "cli"}


def refuse_if_erased(user: User) -> None:
    """An erased account is changed by nothing any more.

    :raise AccountStateInvalid: ``user`` is erased.
    """
    if user.erased_at is not None:
        raise AccountStateInvalid("this account is erased: it cannot be changed")


def set_admin(sess: Session, actor: User | None, user: User, value: bool) -> None:
    """Make ``user`` a site admin or take the role away.

    :param actor: the admin acting, or None for the operator's command line.
    :raise CannotChangeOwnAccount: ``actor`` would drop their own admin role
        (another admin must do it, so an instance always keeps one).
    :raise LastActiveAdmin: ``user`` is the last active site admin.
    """
    refuse_if_erased(user)
    if actor is not None and user.id == actor.id and not value:
        raise CannotChangeOwnAccount("you cannot remove your own admin role")
    if user.is_admin == value:
        return
    if not value and user.is_active:
        keep_an_admin(sess)
    user.is_admin = value
    audit(sess, actor, "admin.user_admin", _target(user), {"value": value, **_via(actor)})
    sess.flush()


def keep_an_admin(sess: Session) -> None:
    """Refuse to lose an active admin unless another stays.

    The active admins' rows are locked (PostgreSQL) until the caller's
    commit, so two admins taking each other's role at once cannot both pass.

    :raise LastActiveAdmin: no other active admin would remain.
    """
    admins = sess.scalars(
        select(User.id).where(User.is_admin.is_(True), User.is_active.is_(True)).with_for_update()
    ).all()
    if len(admins) <= 1:
        raise LastActiveAdmin("an instance keeps at least one active site administrator")


def set_password(
    sess: Session, actor: User | None, user: User, password: str, accounts: AccountsSection
) -> None:
    """Give ``user`` a new password (checked by the policy); every session ends.

    For an operator helping someone locked out.  API tokens stay valid, as
    they do after a password reset.

    :raise PasswordRejected: the password breaks the policy.
    """
    refuse_if_erased(user)
    check_password_policy(password, user.email, accounts.password_min_length)
    user.password_hash = make_password_service(accounts).hash(password)
    user.session_version += 1
    audit(sess, actor, "admin.user_password", _target(user), _via(actor))
    notices.notify(user, "password", by_admin=True)
    log.info("user_password_set user=%s by=%s", user.public_id, _by(actor))
    sess.flush()


def reset_second_factor(sess: Session, actor: User | None, user: User) -> bool:
    """Turn ``user``'s second factor off (lost device), recovery codes and all.

    Every session ends; the user may set a new one up after logging in with
    the password alone.

    :return: False if there was none to turn off (nothing changed).
    """
    refuse_if_erased(user)
    if not user.totp_enabled and not user.totp_secret:
        return False
    user.totp_enabled = False
    user.totp_secret = None
    user.totp_last_step = None
    delete_recovery_codes(sess, user)
    user.session_version += 1
    audit(sess, actor, "admin.user_totp_reset", _target(user), _via(actor))
    notices.notify(user, "second_factor_off", by_admin=True)
    log.info("user_totp_reset user=%s by=%s", user.public_id, _by(actor))
    sess.flush()
    return True


def set_course_creator(sess: Session, actor: User, user: User, value: bool) -> None:
    """Allow or stop ``user`` creating courses (their existing courses stay)."""
    refuse_if_erased(user)
    if user.can_create_courses == value:
        return
    user.can_create_courses = value
    audit(sess, actor, "admin.user_creator", _target(user), {"value": value})
    sess.flush()


def deactivate(sess: Session, actor: User | None, user: User) -> None:
    """Deactivate an account: it cannot log in, and its sessions end at once.

    API tokens stop working too (they are refused for inactive users; call
    :func:`core.auth.tokens.forget_user_tokens` after committing to drop
    cached ones).  Courses, enrolments and progress are kept.

    :param actor: the admin acting, or None for the operator's command line.
    :raise CannotChangeOwnAccount: ``actor`` is ``user``.
    :raise AccountStateInvalid: the account is already deactivated.
    :raise LastActiveAdmin: it is the last active site admin.
    """
    refuse_if_erased(user)
    if actor is not None and user.id == actor.id:
        raise CannotChangeOwnAccount("you cannot deactivate your own account")
    if not user.is_active:
        raise AccountStateInvalid("this account is already deactivated")
    if user.is_admin:
        keep_an_admin(sess)
    user.is_active = False
    # A new session version makes every existing session cookie invalid, so
    # reactivating the account does not bring old sessions back.
    user.session_version += 1
    audit(sess, actor, "admin.user_deactivate", _target(user), _via(actor) or None)
    log.info("user_deactivated user=%s by=%s", user.public_id, _by(actor))
    sess.flush()


def reactivate(sess: Session, actor: User | None, user: User) -> None:
    """Let a deactivated account log in again.

    :raise AccountStateInvalid: the account is active.
    """
    refuse_if_erased(user)
    if user.is_active:
        raise AccountStateInvalid("this account is active")
    user.is_active = True
    audit(sess, actor, "admin.user_reactivate", _target(user), _via(actor) or None)
    sess.flush()


# ---------------------------------------------------------------- audit log


@dataclass(frozen=True)
class AuditRow:
    """An audit entry with its actor's public id and e-mail address."""

    entry: AuditLog
    actor_id: str | None
    actor_email: str | None


def audit_entries(
    sess: Session,
    *,
    action: str | None = None,
    actor: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> tuple[list[AuditRow], int | None]:
    """A page of the audit log, newest first.

    :param action: only this exact action (``course.publish``).
    :param actor: only entries by the user with this e-mail address or public id.
    """
    stmt = select(AuditLog, User.public_id, User.email).outerjoin(
        User, User.id == AuditLog.actor_id
    )
    if action:
        stmt = stmt.where(AuditLog.action == action)
    if actor:
        stmt = stmt.where(or_(User.email == actor.strip().lower(), User.public_id == actor.strip()))
    if before is not None:
        stmt = stmt.where(AuditLog.id < before)
    rows = sess.execute(stmt.order_by(AuditLog.id.desc()).limit(limit + 1)).all()
    next_key = rows[limit - 1][0].id if len(rows) > limit else None
    return [AuditRow(r[0], r[1], r[2]) for r in rows[:limit]], next_key


def audit_actions(sess: Session) -> list[str]:
    """Every action name the audit log holds, for a filter menu."""
    return sorted(sess.scalars(select(AuditLog.action).distinct()))


# ---------------------------------------------------------------- settings

MASK = "••••••"

_SECRET_NAME = re.compile(r"(secret|password|passwd|token|key|credential)", re.IGNORECASE)


#: A user name this long without an ``@`` is taken for a token (some mail services
#: log in with an API token as the user name).
TOKEN_LIKE_USER = 24


#: Query parameters whose value is a secret (``?password=``, ``&api_key=``, ``token=``).
_SECRET_QUERY = re.compile(
    r"(?i)((?:^|(?<=&))[^&=]*(?:secret|password|passwd|token|key|credential)[^&=]*=)[^&]*"
)


def _shown_user(user: str, password: str) -> str:
    if user and (user == password or (len(user) >= TOKEN_LIKE_USER and "@" not in unquote(user))):
        return MASK
    return user


def _mask_url(value: str) -> str:
    parts = urlsplit(value)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        shown = _shown_user(user, password)
        netloc = f"{shown}:{MASK}@{host}" if colon else f"{shown}@{host}"
    query = _SECRET_QUERY.sub(rf"\g<1>{MASK}", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return value
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _mask(name: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _mask(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(name, v) for v in value]
    if isinstance(value, str) and value and _SECRET_NAME.search(name):
        return MASK
    if isinstance(value, str) and "://" in value:
        return _mask_url(value)
    return value


def masked_settings(settings: Settings) -> dict[str, Any]:
    """The effective settings by section, with secrets replaced by :data:`MASK`.

    Text values under names that suggest a secret (``secret_key``,
    ``*_password``, ``api_token``, ``private_key``) are masked wherever they
    are, plugin tables included, as are passwords inside URLs and query
    values named like secrets, and a user name that is the password again or
    looks like a token (long, no ``@``), as some mail services log in with an
    API token as the user name.
    """
    data = settings.model_dump(mode="json")
    masked: dict[str, Any] = _mask("", data)
    return masked


__all__ = [
    "MASK",
    "AccountNotFound",
    "AccountStateInvalid",
    "AuditRow",
    "CannotChangeOwnAccount",
    "LastActiveAdmin",
    "audit_actions",
    "audit_entries",
    "deactivate",
    "find_active_user_by_email",
    "get_account",
    "masked_settings",
    "reactivate",
    "reset_second_factor",
    "search_users",
    "set_admin",
    "set_course_creator",
    "set_password",
]
