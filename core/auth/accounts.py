"""Account actions shared by the JSON API and the web pages.

Registration, login with a second factor, password reset and change, TOTP
set-up, recovery codes, personal API tokens and invitations.  Each function
checks everything before it changes anything and commits once it has
succeeded, so a refused action leaves the database as it was; it raises one
of the named :class:`core.errors.Problem` subclasses below.  Starting the
session and shaping the answer (JSON or a page) is left to the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Annotated
from typing import Any
from typing import Literal
from typing import cast

from flask import current_app
from itsdangerous import BadData
from itsdangerous import SignatureExpired
from itsdangerous import URLSafeTimedSerializer
from pydantic import AfterValidator
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from sqlalchemy import CursorResult
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from core import db
from core import progress_buffer
from core.api import API_PREFIX
from core.auth import notices
from core.auth import totp
from core.auth.audit import audit
from core.auth.mail import send_mail
from core.auth.passwords import MAX_PASSWORD_LENGTH
from core.auth.passwords import PasswordRejected
from core.auth.passwords import check_password_policy
from core.auth.passwords import get_password_service
from core.auth.throttle import LoginThrottle
from core.auth.tokens import create_token
from core.auth.tokens import forget_token
from core.cache import get_cache
from core.config import Settings
from core.db import utcnow
from core.errors import BadRequest
from core.errors import Conflict
from core.errors import Forbidden
from core.errors import NotFound
from core.errors import Unauthorized
from core.models import ApiToken
from core.models import Identity
from core.models import Invitation
from core.models import User

if TYPE_CHECKING:
    from core.erasure import Erasure

log = logging.getLogger(__name__)

RESET_SALT = "password-reset"
RESET_PAGE_PATH = "/reset-password"
"""Where the web pages take a reset token (``?token=...``) in the mailed link."""
RESET_API_PATH = f"{API_PREFIX}/auth/password-reset/confirm"


# ------------------------------------------------------------------ errors


class RegistrationClosed(Forbidden):
    """The instance does not accept registrations (``registration = "closed"``)."""

    title = "Registration closed"
    type_slug = "registration-closed"


class InvitationRequired(Forbidden):
    """Registration is by invitation and no code was given."""

    title = "Invitation required"
    type_slug = "invitation-required"


class InvitationInvalid(Forbidden):
    """The invitation code is unknown, used, expired or for another address."""

    title = "Invitation not valid"
    type_slug = "invitation-invalid"


class EmailTaken(Conflict):
    """An account with this e-mail address exists."""

    title = "E-mail address taken"
    type_slug = "email-taken"


class InvalidCredentials(Unauthorized):
    """Unknown e-mail or wrong password: one answer for both."""

    title = "Login failed"
    type_slug = "invalid-credentials"


class SecondFactorRequired(Unauthorized):
    """The password was right; the account needs a TOTP or recovery code too."""

    title = "Second factor required"
    type_slug = "second-factor-required"


class SecondFactorInvalid(Unauthorized):
    """The TOTP or recovery code given at login is wrong or already used."""

    title = "Second factor not accepted"
    type_slug = "second-factor-invalid"


class PasswordIncorrect(Forbidden):
    """A logged-in user's re-entered current password does not match."""

    title = "Password incorrect"
    type_slug = "password-incorrect"


class TotpCodeInvalid(BadRequest):
    """A TOTP code given to set up or turn off the second factor is not accepted."""

    title = "Code not accepted"
    type_slug = "totp-code-invalid"


class TotpStateConflict(Conflict):
    """The second factor is not in the state this action needs (on, off, set up)."""

    title = "Two-factor state conflict"
    type_slug = "totp-state"


class ResetTokenExpired(BadRequest):
    """The password-reset token is genuine but older than ``reset_token_max_age``."""

    title = "Reset link expired"
    type_slug = "reset-token-expired"


class ResetTokenInvalid(BadRequest):
    """The password-reset token was not issued by this instance."""

    title = "Reset link invalid"
    type_slug = "reset-token-invalid"


class ResetTokenUsed(BadRequest):
    """The password-reset token was used, or the password changed since it was issued."""

    title = "Reset link used"
    type_slug = "reset-token-used"


class AdminRequired(Forbidden):
    """The action is for site administrators."""

    title = "Administrators only"
    type_slug = "admin-required"


class TokenNotFound(NotFound):
    """No API token of the caller has this id."""

    title = "Token not found"
    type_slug = "token-not-found"


# ------------------------------------------------------------------ input types

_LOCAL_PART = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_DOMAIN = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}"
EMAIL_RE = re.compile(rf"{_LOCAL_PART}@{_DOMAIN}")
MAX_EMAIL_LENGTH = 254


def normalise_email(value: str) -> str:
    """Strip and lower-case an e-mail address (the form it is stored and looked up in)."""
    return value.strip().lower()


def _valid_email(value: str) -> str:
    email = normalise_email(value)
    local, _, domain = email.partition("@")
    if (
        len(email) > MAX_EMAIL_LENGTH
        or len(local) > 64
        or not EMAIL_RE.fullmatch(email)
        or domain.rsplit(".", 1)[-1].isdigit()
    ):
        raise ValueError("not a valid e-mail address")
    return email


def _display_name(value: str) -> str:
    name = value.strip()
    if not name:
        raise ValueError("the display name must not be empty")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ValueError("the display name must not contain control characters")
    return name


Email = Annotated[str, Field(max_length=320), AfterValidator(_valid_email)]
LoginEmail = Annotated[str, Field(max_length=320), AfterValidator(normalise_email)]
DisplayName = Annotated[str, Field(max_length=200), AfterValidator(_display_name)]
TokenName = Annotated[str, Field(max_length=100), AfterValidator(_display_name)]
# New passwords get the policy's own messages (length included); the cap here
# only bounds the work on absurd inputs.
NewPassword = Annotated[str, Field(max_length=MAX_PASSWORD_LENGTH * 4)]
GivenPassword = Annotated[str, Field(max_length=MAX_PASSWORD_LENGTH)]
Code = Annotated[str, Field(min_length=1, max_length=64)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RegisterBody(_Body):
    """A new local account."""

    email: Email
    display_name: DisplayName
    password: NewPassword
    invite_code: Code | None = None


class LoginBody(_Body):
    """Credentials, plus a second factor for accounts that have one."""

    email: LoginEmail
    password: GivenPassword
    totp_code: Code | None = None
    recovery_code: Code | None = None


class InvitationBody(_Body):
    """An invitation, optionally bound to (and mailed to) one address."""

    email: Email | None = None
    days: int = Field(default=7, ge=1, le=365)


class ProfileBody(_Body):
    """What a user may change of their own profile."""

    display_name: DisplayName


class CodeBody(_Body):
    """A TOTP code from the authenticator app."""

    code: Code


class TotpDisableBody(_Body):
    """The password and a TOTP (or recovery) code, to turn the second factor off."""

    password: GivenPassword
    code: Code


class PasswordBody(_Body):
    """The current password, to confirm a sensitive action."""

    password: GivenPassword


class ErasureBody(_Body):
    """The password, and a TOTP (or recovery) code when the second factor is on."""

    password: GivenPassword
    code: Code | None = None


class PasswordChangeBody(_Body):
    """The current and the new password."""

    current_password: GivenPassword
    new_password: NewPassword


class ResetRequestBody(_Body):
    """Whose password to reset."""

    email: LoginEmail


class ResetConfirmBody(_Body):
    """The token from the reset mail and the new password."""

    token: Annotated[str, Field(min_length=1, max_length=1000)]
    new_password: NewPassword


class TokenBody(_Body):
    """A new personal API token."""

    name: TokenName
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


# ------------------------------------------------------------------ helpers


def settings() -> Settings:
    """The instance's settings."""
    found: Settings = current_app.extensions["trivium.settings"]
    return found


def throttle() -> LoginThrottle:
    """The login throttle (shared through the cache)."""
    return LoginThrottle(get_cache(), settings().accounts)


def sha256_hex(value: str) -> str:
    """Hex SHA-256 of ``value``: how invitation codes are stored."""
    return hashlib.sha256(value.encode()).hexdigest()


def confirm_password(user: User, password: str, ip: str) -> None:
    """Re-check a logged-in user's password, throttled like a login.

    :raise LoginThrottled: too many recent failures for the account or address.
    :raise PasswordIncorrect: the password does not match.
    """
    limiter = throttle()
    limiter.check(user.email, ip)
    if not get_password_service().verify(user.password_hash, password):
        limiter.record_failure(user.email, ip)
        raise PasswordIncorrect("the current password is not correct")


# ------------------------------------------------------------------ registration and login


def register(body: RegisterBody) -> User:
    """Create a local account (open, or invite-only with a code); not logged in yet.

    :raise RegistrationClosed: ``registration = "closed"``.
    :raise InvitationRequired: invite-only and no code.
    :raise InvitationInvalid: the code is unknown, used, expired or for another address.
    :raise PasswordRejected: the password breaks the policy.
    :raise EmailTaken: the address has an account.
    """
    mode = settings().accounts.registration
    if mode == "closed":
        raise RegistrationClosed("this instance does not accept new registrations")
    check_password_policy(body.password, body.email, settings().accounts.password_min_length)
    sess = db.session()
    now = utcnow()

    invitation: Invitation | None = None
    if mode == "invite":
        # Checked before the address, so only invitees can learn which are taken.
        if not body.invite_code:
            raise InvitationRequired("registration on this instance needs an invitation code")
        invitation = sess.scalar(
            select(Invitation).where(Invitation.code_hash == sha256_hex(body.invite_code.strip()))
        )
        if invitation is None or invitation.used_at is not None or invitation.expires_at <= now:
            raise InvitationInvalid("the invitation code is unknown, already used or expired")
        if invitation.email is not None and invitation.email != body.email:
            raise InvitationInvalid("this invitation is for a different e-mail address")

    if sess.scalar(select(User.id).where(User.email == body.email)) is not None:
        raise EmailTaken("an account with this e-mail address already exists")

    user = User(
        email=body.email,
        display_name=body.display_name,
        password_hash=get_password_service().hash(body.password),
        last_login_at=now,
    )
    user.identities.append(Identity(provider="local", subject=body.email))
    sess.add(user)
    try:
        sess.flush()
        if invitation is not None:
            # Conditional, so two registrations cannot share one invitation.
            spent = cast(
                "CursorResult[Any]",
                sess.execute(
                    update(Invitation)
                    .where(Invitation.id == invitation.id, Invitation.used_at.is_(None))
                    .values(used_at=now, used_by_id=user.id)
                ),
            )
            if spent.rowcount != 1:
                sess.rollback()
                raise InvitationInvalid("the invitation code is unknown, already used or expired")
        audit(
            sess,
            user,
            "auth.register",
            f"user:{user.public_id}",
            {"invitation": invitation.public_id if invitation is not None else None},
        )
        sess.commit()
    except IntegrityError:
        sess.rollback()
        raise EmailTaken("an account with this e-mail address already exists") from None
    return user


def verify_password(email: str, password: str, ip: str) -> User:
    """The account these credentials open (first step of a login; nothing is committed).

    Unknown addresses and wrong passwords get the same answer in the same time.

    :raise LoginThrottled: too many recent failures.
    :raise InvalidCredentials: unknown address, wrong password or inactive account.
    """
    limiter = throttle()
    limiter.check(email, ip)
    passwords = get_password_service()
    user = db.session().scalar(select(User).where(User.email == email))
    if user is None:
        passwords.burn(password)
        ok = False
    else:
        ok = passwords.verify(user.password_hash, password) and user.is_active
    if user is None or not ok:
        limiter.record_failure(email, ip)
        log.info("login status=failed user=%s ip=%s", user.public_id if user else "-", ip)
        raise InvalidCredentials("invalid email or password")
    if user.password_hash and passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash(password)
    return user


def verify_second_factor(
    user: User, totp_code: str | None, recovery_code: str | None, ip: str
) -> Literal["totp", "recovery_code"]:
    """Spend a TOTP or recovery code of a user whose password was just verified.

    :return: which kind of code was accepted.
    :raise LoginThrottled: too many recent failures.
    :raise SecondFactorRequired: no code was given (not counted as a failure:
        only a right password gets here).
    :raise SecondFactorInvalid: the code is wrong, expired or already used.
    """
    limiter = throttle()
    limiter.check(user.email, ip)
    if not totp_code and not recovery_code:
        raise SecondFactorRequired(
            "enter the code from your authenticator app or a recovery code",
            totp_required=True,
        )
    sess = db.session()
    if totp_code and totp.spend_totp(sess, user, totp_code):
        return "totp"
    if recovery_code and totp.spend_recovery_code(sess, user, recovery_code):
        return "recovery_code"
    sess.rollback()
    limiter.record_failure(user.email, ip)
    log.info("login status=bad_second_factor user=%s ip=%s", user.public_id, ip)
    raise SecondFactorInvalid(
        "the authentication code is wrong, expired or already used", totp_required=True
    )


def complete_login(user: User, second_factor: str | None) -> User:
    """Record a successful login (the caller then starts the session)."""
    sess = db.session()
    user.last_login_at = utcnow()
    audit(sess, user, "auth.login", f"user:{user.public_id}", {"second_factor": second_factor})
    sess.commit()
    throttle().clear_account(user.email)
    return user


def authenticate(body: LoginBody, ip: str) -> User:
    """Check credentials and, for accounts with TOTP, the code sent along; record the login.

    :raise LoginThrottled: too many recent failures.
    :raise InvalidCredentials: unknown address, wrong password or inactive account.
    :raise SecondFactorRequired: the password is right; a code is needed.
    :raise SecondFactorInvalid: the code is wrong, expired or already used.
    """
    user = verify_password(body.email, body.password, ip)
    second_factor = None
    if user.totp_enabled:
        second_factor = verify_second_factor(user, body.totp_code, body.recovery_code, ip)
    return complete_login(user, second_factor)


def end_all_sessions(user: User) -> None:
    """Invalidate every session cookie of ``user`` (API tokens stay valid)."""
    sess = db.session()
    user.session_version += 1
    audit(sess, user, "auth.logout_all", f"user:{user.public_id}")
    sess.commit()


def update_profile(user: User, body: ProfileBody) -> User:
    """Change the user's display name."""
    sess = db.session()
    if body.display_name != user.display_name:
        user.display_name = body.display_name
        audit(sess, user, "auth.profile_updated", f"user:{user.public_id}")
        sess.commit()
    return user


# ------------------------------------------------------------------ password reset


def _password_fingerprint(user: User) -> str:
    # Ties a reset token to the password it replaces: once the password
    # changes (by this token or otherwise) every older token stops working.
    return sha256_hex(f"{user.public_id}:{user.password_hash or ''}")[:32]


def _reset_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=RESET_SALT)


def request_password_reset(body: ResetRequestBody, ip: str) -> None:
    """Mail a reset link if the address has an active account; silent either way.

    Rate limits are silent too, so neither mail-bombing nor the outcome
    tells anything about which addresses have accounts.
    """
    conf = settings()
    limiter = throttle()
    if not limiter.allow_once(
        "reset-ip", ip, conf.accounts.login_max_attempts_per_ip
    ) or not limiter.allow_once(
        "reset-account", body.email, conf.accounts.login_max_attempts_per_account
    ):
        log.warning("password_reset status=rate_limited ip=%s", ip)
        return
    sess = db.session()
    user = sess.scalar(select(User).where(User.email == body.email))
    if user is None or not user.is_active:
        log.info("password_reset status=no_account ip=%s", ip)
        return
    token = _reset_serializer().dumps({"u": user.public_id, "f": _password_fingerprint(user)})
    minutes = conf.accounts.reset_token_max_age // 60
    base = conf.instance.base_url.rstrip("/")
    send_mail(
        user.email,
        f"Reset your {conf.instance.name} password",
        f"Someone asked to reset the password of your {conf.instance.name} account.\n\n"
        f"To choose a new password, open this link within {minutes} minutes:\n\n"
        f"{base}{RESET_PAGE_PATH}?token={token}\n\n"
        f"or send this token with your new password to {base}{RESET_API_PATH}:\n\n{token}\n\n"
        "If it was not you, ignore this mail: your password stays as it is.\n",
    )
    audit(sess, None, "auth.password_reset_requested", f"user:{user.public_id}")
    from core import erasure

    if not erasure.still_unerased(sess, user):
        sess.rollback()  # erased meanwhile: no mail to the address it had
        log.info("password_reset status=erased_meanwhile ip=%s", ip)
        return
    sess.commit()


def reset_token_user(token: str) -> User:
    """The account a reset token is for, if the token is still usable.

    :raise ResetTokenExpired: older than ``reset_token_max_age``.
    :raise ResetTokenInvalid: not issued by this instance.
    :raise ResetTokenUsed: used already, or the password changed since.
    """
    try:
        data = _reset_serializer().loads(token, max_age=settings().accounts.reset_token_max_age)
    except SignatureExpired:
        raise ResetTokenExpired("this reset link has expired; request a new one") from None
    except BadData:
        raise ResetTokenInvalid("this reset link is not valid") from None
    if not isinstance(data, dict) or not isinstance(data.get("u"), str):
        raise ResetTokenInvalid("this reset link is not valid")
    user = db.session().scalar(select(User).where(User.public_id == data["u"]))
    if (
        user is None
        or not user.is_active
        or not hmac.compare_digest(str(data.get("f", "")), _password_fingerprint(user))
    ):
        raise ResetTokenUsed(
            "this reset link was already used or the password has changed since; request a new one"
        )
    return user


def confirm_password_reset(body: ResetConfirmBody) -> User:
    """Replace the password with a reset token and end every session of the account.

    :raise ResetTokenExpired: see :func:`reset_token_user` (and the other token errors).
    :raise PasswordRejected: the new password breaks the policy.
    """
    user = reset_token_user(body.token)
    check_password_policy(body.new_password, user.email, settings().accounts.password_min_length)
    sess = db.session()
    user.password_hash = get_password_service().hash(body.new_password)
    user.session_version += 1
    audit(sess, user, "auth.password_reset", f"user:{user.public_id}")
    notices.notify(user, "password_reset", by_admin=False)
    sess.commit()
    throttle().clear_account(user.email)
    return user


def change_password(user: User, body: PasswordChangeBody, ip: str) -> User:
    """Replace the password; every session ends (the caller restarts its own).

    :raise PasswordIncorrect: the current password is wrong (throttled).
    :raise PasswordRejected: the new password is the old one or breaks the policy.
    """
    confirm_password(user, body.current_password, ip)
    if body.new_password == body.current_password:
        raise PasswordRejected(
            "the new password must differ from the current one",
            errors=[{"loc": "new_password", "msg": "same as the current password"}],
        )
    check_password_policy(body.new_password, user.email, settings().accounts.password_min_length)
    sess = db.session()
    user.password_hash = get_password_service().hash(body.new_password)
    user.session_version += 1
    audit(sess, user, "auth.password_change", f"user:{user.public_id}")
    notices.notify(user, "password", by_admin=False)
    sess.commit()
    return user


# ------------------------------------------------------------------ TOTP


@dataclass(frozen=True)
class TotpSetup:
    """What an authenticator app needs: the secret, its URI and a QR code (SVG data URI)."""

    secret: str
    otpauth_uri: str
    qr_svg: str


def totp_setup_for(user: User, secret: str) -> TotpSetup:
    """Describe a stored (not yet enabled) secret for the authenticator app."""
    uri = totp.provisioning_uri(secret, user.email, settings().instance.name)
    return TotpSetup(secret=secret, otpauth_uri=uri, qr_svg=totp.qr_svg_data_uri(uri))


def start_totp_setup(user: User) -> TotpSetup:
    """Store a new secret (not yet enabled) for ``user``.

    :raise TotpStateConflict: the second factor is already on.
    """
    if user.totp_enabled:
        raise TotpStateConflict("two-factor authentication is already on; turn it off first")
    sess = db.session()
    secret = totp.new_secret()
    user.totp_secret = secret
    user.totp_last_step = None
    setup = totp_setup_for(user, secret)
    sess.commit()
    return setup


def confirm_totp(user: User, body: CodeBody) -> list[str]:
    """Turn the second factor on with a first code; return the new recovery codes.

    :raise TotpStateConflict: already on, or set-up not started.
    :raise TotpCodeInvalid: the code is wrong or expired.
    """
    if user.totp_enabled:
        raise TotpStateConflict("two-factor authentication is already on")
    if not user.totp_secret:
        raise TotpStateConflict("start with POST /api/v1/me/totp/setup")
    sess = db.session()
    if not totp.spend_totp(sess, user, body.code):
        sess.rollback()
        raise TotpCodeInvalid("the code is wrong or expired; check the device's clock")
    user.totp_enabled = True
    codes = totp.replace_recovery_codes(sess, user)
    audit(sess, user, "auth.totp_enabled", f"user:{user.public_id}")
    notices.notify(user, "second_factor_on", by_admin=False)
    sess.commit()
    return codes


def disable_totp(user: User, body: TotpDisableBody, ip: str) -> None:
    """Turn the second factor off with the password and a current code (or recovery code).

    :raise TotpStateConflict: it is not on.
    :raise PasswordIncorrect: wrong password (throttled).
    :raise TotpCodeInvalid: the code is wrong, expired or used (counted as a failure).
    """
    if not user.totp_enabled:
        raise TotpStateConflict("two-factor authentication is not on")
    confirm_password(user, body.password, ip)
    sess = db.session()
    if not (
        totp.spend_totp(sess, user, body.code) or totp.spend_recovery_code(sess, user, body.code)
    ):
        sess.rollback()
        throttle().record_failure(user.email, ip)
        raise TotpCodeInvalid("the code is wrong, expired or already used")
    user.totp_enabled = False
    user.totp_secret = None
    user.totp_last_step = None
    totp.delete_recovery_codes(sess, user)
    audit(sess, user, "auth.totp_disabled", f"user:{user.public_id}")
    notices.notify(user, "second_factor_off", by_admin=False)
    sess.commit()


def erase_own_account(user: User, body: ErasureBody, ip: str, *, via: str) -> Erasure:
    """Erase the caller's account (:mod:`core.erasure`), confirmed with its password.

    With the second factor on, a current code or an unused recovery code is
    needed too.  Commits; the caller ends the request's session.

    :raise SelfErasureOff: only administrators erase accounts here.
    :raise NoPasswordToConfirm: the account has no password.
    :raise PasswordIncorrect: wrong password (throttled).
    :raise SecondFactorRequired: the second factor is on and no code came
        (not counted as a failure).
    :raise TotpCodeInvalid: the code is wrong, expired or used (counted as a failure).
    :raise LastActiveAdmin: the caller is the last active site administrator.
    :raise ErasureFailed: a plugin could not erase its data (nothing erased).
    """
    from core import erasure

    erasure.check_self_erasure(user)
    confirm_password(user, body.password, ip)
    # the person's waiting heartbeats are written before the erasure scrubs
    # statements; first, while this transaction holds no write lock (SQLite)
    progress_buffer.flush_before_reading()
    sess = db.session()
    if user.totp_enabled and not body.code:
        raise SecondFactorRequired(
            "this account has a second factor: give a current code or a recovery code too",
            totp_required=True,
        )
    if user.totp_enabled and not (
        totp.spend_totp(sess, user, body.code or "")
        or totp.spend_recovery_code(sess, user, body.code or "")
    ):
        sess.rollback()
        throttle().record_failure(user.email, ip)
        raise TotpCodeInvalid("the code is wrong, expired or already used")
    address = user.email
    try:
        done = erasure.erase_account(sess, user, user, via=via)
        sess.commit()
    except BaseException:
        sess.rollback()
        raise
    erasure.after_commit(done)
    throttle().clear_account(address)
    return done


def regenerate_recovery_codes(user: User, body: PasswordBody, ip: str) -> list[str]:
    """Issue a new set of recovery codes (the old ones stop working).

    :raise TotpStateConflict: the second factor is not on.
    :raise PasswordIncorrect: wrong password (throttled).
    """
    if not user.totp_enabled:
        raise TotpStateConflict("two-factor authentication is not on")
    confirm_password(user, body.password, ip)
    sess = db.session()
    codes = totp.replace_recovery_codes(sess, user)
    audit(sess, user, "auth.recovery_codes_replaced", f"user:{user.public_id}")
    sess.commit()
    return codes


# ------------------------------------------------------------------ API tokens


def live_tokens(user: User) -> list[ApiToken]:
    """The user's unrevoked tokens, newest first."""
    return list(
        db.session().scalars(
            select(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.id.desc())
        )
    )


def create_api_token(user: User, body: TokenBody) -> tuple[ApiToken, str]:
    """Create a personal API token; return it and its secret (shown once)."""
    sess = db.session()
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    token, plaintext = create_token(sess, user, body.name, expires)
    audit(sess, user, "auth.token_created", f"token:{token.public_id}", {"name": body.name})
    sess.commit()
    return token, plaintext


def revoke_api_token(user: User, public_id: str) -> ApiToken:
    """Revoke a token of ``user``.

    :raise TokenNotFound: no live token of ``user`` has this id (another user's included).
    """
    sess = db.session()
    token = sess.scalar(
        select(ApiToken).where(ApiToken.public_id == public_id, ApiToken.user_id == user.id)
    )
    if token is None or token.revoked_at is not None:
        raise TokenNotFound("you have no API token with this id")
    token.revoked_at = utcnow()
    audit(sess, user, "auth.token_revoked", f"token:{token.public_id}")
    sess.commit()
    forget_token(token.token_hash)
    return token


# ------------------------------------------------------------------ invitations


@dataclass(frozen=True)
class NewInvitation:
    """A created invitation and its code (shown this once)."""

    invitation: Invitation
    code: str
    mail_sent: bool


def require_admin(user: User) -> User:
    """``user`` if a site administrator.

    :raise AdminRequired: otherwise.
    """
    if not user.is_admin:
        raise AdminRequired("only site administrators can manage invitations")
    return user


def create_invitation(admin: User, body: InvitationBody) -> NewInvitation:
    """Create an invitation code (stored only as its SHA-256), mailed when bound to an address.

    :raise AdminRequired: ``admin`` is not a site administrator.
    """
    require_admin(admin)
    conf = settings()
    sess = db.session()
    code = secrets.token_urlsafe(24)
    invitation = Invitation(
        code_hash=sha256_hex(code),
        email=body.email,
        created_by_id=admin.id,
        expires_at=utcnow() + timedelta(days=body.days),
    )
    sess.add(invitation)
    sess.flush()
    mailed = False
    if body.email is not None:
        mailed = send_mail(
            body.email,
            f"Your invitation to {conf.instance.name}",
            # no inviter's name: the mail outlives the inviter's account (erasure)
            f"An administrator of {conf.instance.name} invites you to join it.\n\n"
            f"Register at {conf.instance.base_url.rstrip('/')}/ with this e-mail "
            f"address and the invitation code:\n\n{code}\n\n"
            f"The invitation expires on {invitation.expires_at:%Y-%m-%d %H:%M} UTC.\n",
        )
    audit(
        sess,
        admin,
        "auth.invitation_created",
        f"invitation:{invitation.public_id}",
        {"email": body.email, "days": body.days},
    )
    sess.commit()
    return NewInvitation(invitation=invitation, code=code, mail_sent=mailed)


InvitationStatus = Literal["open", "used", "expired"]


def invitation_status(invitation: Invitation, now: datetime | None = None) -> InvitationStatus:
    """Whether an invitation can still be used."""
    if invitation.used_at is not None:
        return "used"
    return "expired" if invitation.expires_at <= (now or utcnow()) else "open"


def list_invitations(admin: User, after: int | None, limit: int) -> tuple[list[Invitation], bool]:
    """A page of invitations, newest first, and whether more follow.

    :param after: the internal id to continue after (from a cursor), or None.
    :raise AdminRequired: ``admin`` is not a site administrator.
    """
    require_admin(admin)
    stmt = select(Invitation).order_by(Invitation.id.desc()).limit(limit + 1)
    if after is not None:
        stmt = stmt.where(Invitation.id < after)
    rows = list(db.session().scalars(stmt))
    return rows[:limit], len(rows) > limit
