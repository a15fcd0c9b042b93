"""Accounts API: registration, login, second factor, passwords, invitations, API tokens.

Every refused request leaves the database as it was: checks run before
anything is added to the session, failed logins are counted in the cache, and
a view commits only once it has succeeded.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from datetime import datetime
from datetime import timedelta
from typing import Annotated
from typing import Any
from typing import Literal
from typing import cast

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from flask import g
from flask import request
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
from core.api import API_PREFIX
from core.api import decode_cursor
from core.api import encode_cursor
from core.api import json_response
from core.api import operation
from core.api import parse_body
from core.api import parse_query
from core.auth import csrf
from core.auth import login_session
from core.auth import logout_session
from core.auth import require_user
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

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__, url_prefix=API_PREFIX)

RESET_SALT = "password-reset"
RESET_PAGE_PATH = "/reset-password"
"""Where the web UI takes a reset token (``?token=...``) in the mailed link."""

TAGS_AUTH = ("auth",)
TAGS_ME = ("me",)
TAGS_ADMIN = ("admin",)


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


class InvitationQuery(BaseModel):
    """Paging through invitations, newest first."""

    model_config = ConfigDict(extra="forbid")
    cursor: str | None = None
    limit: int = Field(default=50, ge=1, le=200)


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


class UserOut(BaseModel):
    """The logged-in user, as the accounts endpoints show it."""

    id: str
    email: str
    display_name: str
    is_admin: bool
    totp_enabled: bool

    @classmethod
    def of(cls, user: User) -> UserOut:
        """Describe ``user``."""
        return cls(
            id=user.public_id,
            email=user.email,
            display_name=user.display_name,
            is_admin=user.is_admin,
            totp_enabled=user.totp_enabled,
        )


class SessionOut(BaseModel):
    """A started session: the user and the CSRF token for its next requests.

    ``csrf_token`` is None for API-token clients, which need none.
    """

    user: UserOut
    csrf_token: str | None


class CsrfOut(BaseModel):
    """The session's CSRF token, for the ``X-CSRFToken`` header."""

    csrf_token: str


class MessageOut(BaseModel):
    """A human-readable outcome."""

    detail: str


class InvitationCreated(BaseModel):
    """A new invitation; ``code`` is shown this once."""

    id: str
    code: str
    email: str | None
    expires_at: datetime
    mail_sent: bool


class InvitationOut(BaseModel):
    """An invitation as listed (never with its code)."""

    id: str
    email: str | None
    status: Literal["open", "used", "expired"]
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None


class InvitationPage(BaseModel):
    """One page of invitations."""

    items: list[InvitationOut]
    next_cursor: str | None


class TotpSetupOut(BaseModel):
    """What an authenticator app needs: the secret, its URI and a QR code of it."""

    secret: str
    otpauth_uri: str
    qr_svg: str


class RecoveryCodesOut(BaseModel):
    """New single-use recovery codes, shown this once."""

    recovery_codes: list[str]


class TokenOut(BaseModel):
    """A personal API token as listed (never with its secret)."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenOut:
        """Describe ``token``."""
        return cls(
            id=token.public_id,
            name=token.name,
            prefix=token.prefix,
            created_at=token.created_at,
            expires_at=token.expires_at,
            last_used_at=token.last_used_at,
        )


class TokenCreated(TokenOut):
    """A new token; ``token`` is the secret, shown this once."""

    token: str


class TokenList(BaseModel):
    """The caller's live (unrevoked) tokens."""

    items: list[TokenOut]


# ------------------------------------------------------------------ helpers


def _settings() -> Settings:
    settings: Settings = current_app.extensions["trivium.settings"]
    return settings


def _throttle() -> LoginThrottle:
    return LoginThrottle(get_cache(), _settings().accounts)


def _no_content() -> Response:
    return Response(status=204)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _client_ip() -> str:
    return request.remote_addr or ""


def _confirm_password(user: User, password: str) -> None:
    """Re-check a logged-in user's password, throttled like a login.

    :raise LoginThrottled: too many recent failures for the account or address.
    :raise PasswordIncorrect: the password does not match.
    """
    throttle = _throttle()
    throttle.check(user.email, _client_ip())
    if not get_password_service().verify(user.password_hash, password):
        throttle.record_failure(user.email, _client_ip())
        raise PasswordIncorrect("the current password is not correct")


def _start_session(user: User) -> Response:
    login_session(user)
    return json_response(SessionOut(user=UserOut.of(user), csrf_token=csrf.rotate_csrf_token()))


# ------------------------------------------------------------------ session


@bp.get("/auth/csrf")
@operation("Get the session's CSRF token", tags=TAGS_AUTH, response=CsrfOut, auth=False)
def get_csrf_token() -> Response:
    """Return the CSRF token to send as ``X-CSRFToken`` on unsafe requests."""
    return json_response(CsrfOut(csrf_token=csrf.csrf_token()))


@bp.post("/auth/register")
@operation(
    "Create a local account and log in",
    tags=TAGS_AUTH,
    body=RegisterBody,
    response=SessionOut,
    status=201,
    auth=False,
    errors=(403, 409),
)
def register() -> Response:
    """Register with e-mail and password (open, or invite-only with a code)."""
    mode = _settings().accounts.registration
    if mode == "closed":
        raise RegistrationClosed("this instance does not accept new registrations")
    body = parse_body(RegisterBody)
    check_password_policy(body.password, body.email, _settings().accounts.password_min_length)
    sess = db.session()
    now = utcnow()

    invitation: Invitation | None = None
    if mode == "invite":
        # Checked before the address, so only invitees can learn which are taken.
        if not body.invite_code:
            raise InvitationRequired("registration on this instance needs an invitation code")
        invitation = sess.scalar(
            select(Invitation).where(Invitation.code_hash == _sha256(body.invite_code.strip()))
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
    resp = _start_session(user)
    resp.status_code = 201
    return resp


@bp.post("/auth/login")
@operation(
    "Log in with e-mail and password (and a second factor if enabled)",
    tags=TAGS_AUTH,
    body=LoginBody,
    response=SessionOut,
    auth=False,
    errors=(401, 429),
)
def login() -> Response:
    """Start a session.

    Unknown addresses and wrong passwords get the same answer in the same
    time.  Accounts with TOTP get ``totp_required: true`` until a valid code
    or recovery code comes with the password.
    """
    body = parse_body(LoginBody)
    ip = _client_ip()
    throttle = _throttle()
    throttle.check(body.email, ip)
    passwords = get_password_service()
    sess = db.session()

    user = sess.scalar(select(User).where(User.email == body.email))
    if user is None:
        passwords.burn(body.password)
        ok = False
    else:
        ok = passwords.verify(user.password_hash, body.password) and user.is_active
    if user is None or not ok:
        throttle.record_failure(body.email, ip)
        log.info("login status=failed user=%s ip=%s", user.public_id if user else "-", ip)
        raise InvalidCredentials("invalid email or password")

    second_factor = None
    if user.totp_enabled:
        if body.totp_code is None and body.recovery_code is None:
            # Not counted: only a right password gets here, so this cannot
            # be used to guess passwords beyond the failure limit.
            raise SecondFactorRequired(
                "enter the code from your authenticator app or a recovery code",
                totp_required=True,
            )
        if body.totp_code is not None and totp.spend_totp(sess, user, body.totp_code):
            second_factor = "totp"
        elif body.recovery_code is not None and totp.spend_recovery_code(
            sess, user, body.recovery_code
        ):
            second_factor = "recovery_code"
        else:
            sess.rollback()
            throttle.record_failure(body.email, ip)
            log.info("login status=bad_second_factor user=%s ip=%s", user.public_id, ip)
            raise SecondFactorInvalid(
                "the authentication code is wrong, expired or already used",
                totp_required=True,
            )

    if user.password_hash and passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash(body.password)
    user.last_login_at = utcnow()
    audit(sess, user, "auth.login", f"user:{user.public_id}", {"second_factor": second_factor})
    sess.commit()
    throttle.clear_account(body.email)
    return _start_session(user)


@bp.post("/auth/logout")
@operation("End this session", tags=TAGS_AUTH, status=204, auth=False)
def logout() -> Response:
    """Forget the session cookie's login (a no-op when not logged in)."""
    logout_session()
    return _no_content()


@bp.post("/auth/logout-all")
@operation("End every session of the current user", tags=TAGS_AUTH, status=204)
def logout_all() -> Response:
    """Invalidate every session cookie of the user, this one included.

    API tokens are not sessions: revoke them with ``DELETE /me/tokens/<id>``.
    """
    user = require_user()
    sess = db.session()
    user.session_version += 1
    audit(sess, user, "auth.logout_all", f"user:{user.public_id}")
    sess.commit()
    logout_session()
    return _no_content()


# ------------------------------------------------------------------ password reset


def _password_fingerprint(user: User) -> str:
    # Ties a reset token to the password it replaces: once the password
    # changes (by this token or otherwise) every older token stops working.
    return _sha256(f"{user.public_id}:{user.password_hash or ''}")[:32]


def _reset_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=RESET_SALT)


@bp.post("/auth/password-reset")
@operation(
    "Mail a password-reset link",
    tags=TAGS_AUTH,
    body=ResetRequestBody,
    response=MessageOut,
    status=202,
    auth=False,
)
def request_password_reset() -> Response:
    """Send a reset link if the address has an active account; answer 202 either way."""
    body = parse_body(ResetRequestBody)
    settings = _settings()
    throttle = _throttle()
    answer = MessageOut(detail="if an account with this address exists, a reset link is on its way")
    # Silent limits, so neither mail-bombing nor the answer tells anything.
    if not throttle.allow_once(
        "reset-ip", _client_ip(), settings.accounts.login_max_attempts_per_ip
    ) or not throttle.allow_once(
        "reset-account", body.email, settings.accounts.login_max_attempts_per_account
    ):
        log.warning("password_reset status=rate_limited ip=%s", _client_ip())
        return json_response(answer, 202)
    sess = db.session()
    user = sess.scalar(select(User).where(User.email == body.email))
    if user is None or not user.is_active:
        log.info("password_reset status=no_account ip=%s", _client_ip())
        return json_response(answer, 202)
    token = _reset_serializer().dumps({"u": user.public_id, "f": _password_fingerprint(user)})
    minutes = settings.accounts.reset_token_max_age // 60
    base = settings.instance.base_url.rstrip("/")
    send_mail(
        user.email,
        f"Reset your {settings.instance.name} password",
        f"Someone asked to reset the password of your {settings.instance.name} account.\n\n"
        f"To choose a new password, open this link within {minutes} minutes:\n\n"
        f"{base}{RESET_PAGE_PATH}?token={token}\n\n"
        f"or send this token with your new password to {base}{API_PREFIX}"
        f"/auth/password-reset/confirm:\n\n{token}\n\n"
        "If it was not you, ignore this mail: your password stays as it is.\n",
    )
    audit(sess, None, "auth.password_reset_requested", f"user:{user.public_id}")
    sess.commit()
    return json_response(answer, 202)


@bp.post("/auth/password-reset/confirm")
@operation(
    "Set a new password with a reset token",
    tags=TAGS_AUTH,
    body=ResetConfirmBody,
    response=MessageOut,
    auth=False,
)
def confirm_password_reset() -> Response:
    """Replace the password and end every session of the account."""
    body = parse_body(ResetConfirmBody)
    settings = _settings()
    try:
        data = _reset_serializer().loads(body.token, max_age=settings.accounts.reset_token_max_age)
    except SignatureExpired:
        raise ResetTokenExpired("this reset link has expired; request a new one") from None
    except BadData:
        raise ResetTokenInvalid("this reset link is not valid") from None
    if not isinstance(data, dict) or not isinstance(data.get("u"), str):
        raise ResetTokenInvalid("this reset link is not valid")
    sess = db.session()
    user = sess.scalar(select(User).where(User.public_id == data["u"]))
    if (
        user is None
        or not user.is_active
        or not hmac.compare_digest(str(data.get("f", "")), _password_fingerprint(user))
    ):
        raise ResetTokenUsed(
            "this reset link was already used or the password has changed since; request a new one"
        )
    check_password_policy(body.new_password, user.email, settings.accounts.password_min_length)
    user.password_hash = get_password_service().hash(body.new_password)
    user.session_version += 1
    audit(sess, user, "auth.password_reset", f"user:{user.public_id}")
    sess.commit()
    _throttle().clear_account(user.email)
    return json_response(
        MessageOut(detail="your password has been changed; log in with the new one")
    )


# ------------------------------------------------------------------ me: password


@bp.post("/me/password")
@operation(
    "Change the password (other sessions are logged out)",
    tags=TAGS_ME,
    body=PasswordChangeBody,
    response=SessionOut,
    errors=(429,),
)
def change_password() -> Response:
    """Replace the password; every other session ends, this one continues."""
    user = require_user()
    body = parse_body(PasswordChangeBody)
    _confirm_password(user, body.current_password)
    if body.new_password == body.current_password:
        raise PasswordRejected(
            "the new password must differ from the current one",
            errors=[{"loc": "new_password", "msg": "same as the current password"}],
        )
    check_password_policy(body.new_password, user.email, _settings().accounts.password_min_length)
    sess = db.session()
    user.password_hash = get_password_service().hash(body.new_password)
    user.session_version += 1
    audit(sess, user, "auth.password_change", f"user:{user.public_id}")
    sess.commit()
    if g.get("auth_via") == "session":
        return _start_session(user)
    return json_response(SessionOut(user=UserOut.of(user), csrf_token=None))


# ------------------------------------------------------------------ me: TOTP


@bp.post("/me/totp/setup")
@operation(
    "Start setting up a TOTP second factor",
    tags=TAGS_ME,
    response=TotpSetupOut,
    errors=(409,),
)
def totp_setup() -> Response:
    """Store a new secret (not yet enabled) and return it as URI and QR code."""
    user = require_user()
    if user.totp_enabled:
        raise TotpStateConflict("two-factor authentication is already on; turn it off first")
    sess = db.session()
    secret = totp.new_secret()
    user.totp_secret = secret
    user.totp_last_step = None
    uri = totp.provisioning_uri(secret, user.email, _settings().instance.name)
    sess.commit()
    return json_response(
        TotpSetupOut(secret=secret, otpauth_uri=uri, qr_svg=totp.qr_svg_data_uri(uri))
    )


@bp.post("/me/totp/confirm")
@operation(
    "Turn on TOTP with a first code; returns recovery codes once",
    tags=TAGS_ME,
    body=CodeBody,
    response=RecoveryCodesOut,
    errors=(409,),
)
def totp_confirm() -> Response:
    """Prove the authenticator works, turn the second factor on, issue recovery codes."""
    user = require_user()
    body = parse_body(CodeBody)
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
    sess.commit()
    return json_response(RecoveryCodesOut(recovery_codes=codes))


@bp.post("/me/totp/disable")
@operation(
    "Turn off the TOTP second factor",
    tags=TAGS_ME,
    body=TotpDisableBody,
    status=204,
    errors=(409, 429),
)
def totp_disable() -> Response:
    """Turn the second factor off with the password and a current code (or recovery code)."""
    user = require_user()
    body = parse_body(TotpDisableBody)
    if not user.totp_enabled:
        raise TotpStateConflict("two-factor authentication is not on")
    _confirm_password(user, body.password)
    sess = db.session()
    if not (
        totp.spend_totp(sess, user, body.code) or totp.spend_recovery_code(sess, user, body.code)
    ):
        sess.rollback()
        _throttle().record_failure(user.email, _client_ip())
        raise TotpCodeInvalid("the code is wrong, expired or already used")
    user.totp_enabled = False
    user.totp_secret = None
    user.totp_last_step = None
    totp.delete_recovery_codes(sess, user)
    audit(sess, user, "auth.totp_disabled", f"user:{user.public_id}")
    sess.commit()
    return _no_content()


@bp.post("/me/recovery-codes")
@operation(
    "Replace the recovery codes (the old ones stop working)",
    tags=TAGS_ME,
    body=PasswordBody,
    response=RecoveryCodesOut,
    errors=(409, 429),
)
def regenerate_recovery_codes() -> Response:
    """Issue a new set of recovery codes; returns them once."""
    user = require_user()
    body = parse_body(PasswordBody)
    if not user.totp_enabled:
        raise TotpStateConflict("two-factor authentication is not on")
    _confirm_password(user, body.password)
    sess = db.session()
    codes = totp.replace_recovery_codes(sess, user)
    audit(sess, user, "auth.recovery_codes_replaced", f"user:{user.public_id}")
    sess.commit()
    return json_response(RecoveryCodesOut(recovery_codes=codes))


# ------------------------------------------------------------------ me: API tokens


@bp.get("/me/tokens")
@operation("List my API tokens", tags=TAGS_ME, response=TokenList)
def list_tokens() -> Response:
    """The caller's unrevoked tokens, newest first (without their secrets)."""
    user = require_user()
    rows = db.session().scalars(
        select(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .order_by(ApiToken.id.desc())
    )
    return json_response(TokenList(items=[TokenOut.of(t) for t in rows]))


@bp.post("/me/tokens")
@operation(
    "Create an API token; its secret is returned once",
    tags=TAGS_ME,
    body=TokenBody,
    response=TokenCreated,
    status=201,
)
def create_api_token() -> Response:
    """Create a personal API token for ``Authorization: Bearer``."""
    user = require_user()
    body = parse_body(TokenBody)
    sess = db.session()
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    token, plaintext = create_token(sess, user, body.name, expires)
    audit(sess, user, "auth.token_created", f"token:{token.public_id}", {"name": body.name})
    sess.commit()
    out = TokenCreated(**TokenOut.of(token).model_dump(), token=plaintext)
    return json_response(out, 201)


@bp.delete("/me/tokens/<public_id>")
@operation("Revoke one of my API tokens", tags=TAGS_ME, status=204, errors=(404,))
def revoke_api_token(public_id: str) -> Response:
    """Revoke a token of the caller; another user's token is not found."""
    user = require_user()
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
    return _no_content()


# ------------------------------------------------------------------ admin: invitations


def _require_admin() -> User:
    user = require_user()
    if not user.is_admin:
        raise AdminRequired("only site administrators can manage invitations")
    return user


@bp.post("/admin/invitations")
@operation(
    "Create an invitation (mailed when bound to an address); the code is returned once",
    tags=TAGS_ADMIN,
    body=InvitationBody,
    response=InvitationCreated,
    status=201,
)
def create_invitation() -> Response:
    """Create an invitation code, stored only as its SHA-256."""
    admin = _require_admin()
    body = parse_body(InvitationBody)
    settings = _settings()
    sess = db.session()
    code = secrets.token_urlsafe(24)
    invitation = Invitation(
        code_hash=_sha256(code),
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
            f"Your invitation to {settings.instance.name}",
            f"{admin.display_name} invites you to {settings.instance.name}.\n\n"
            f"Register at {settings.instance.base_url.rstrip('/')}/ with this e-mail "
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
    out = InvitationCreated(
        id=invitation.public_id,
        code=code,
        email=invitation.email,
        expires_at=invitation.expires_at,
        mail_sent=mailed,
    )
    return json_response(out, 201)


@bp.get("/admin/invitations")
@operation(
    "List invitations, newest first (codes are never shown again)",
    tags=TAGS_ADMIN,
    query=InvitationQuery,
    response=InvitationPage,
)
def list_invitations() -> Response:
    """Page through invitations with their state: open, used or expired."""
    _require_admin()
    query = parse_query(InvitationQuery)
    after = decode_cursor(query.cursor)
    stmt = select(Invitation).order_by(Invitation.id.desc()).limit(query.limit + 1)
    if after is not None:
        stmt = stmt.where(Invitation.id < after)
    rows = list(db.session().scalars(stmt))
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    now = utcnow()

    def status(inv: Invitation) -> Literal["open", "used", "expired"]:
        if inv.used_at is not None:
            return "used"
        return "expired" if inv.expires_at <= now else "open"

    items = [
        InvitationOut(
            id=inv.public_id,
            email=inv.email,
            status=status(inv),
            created_at=inv.created_at,
            expires_at=inv.expires_at,
            used_at=inv.used_at,
        )
        for inv in rows
    ]
    cursor = encode_cursor(rows[-1].id) if more and rows else None
    return json_response(InvitationPage(items=items, next_cursor=cursor))


def init_app(app: Flask) -> None:
    """Mount the accounts API and CSRF protection on ``app``."""
    csrf.init_app(app)
    app.register_blueprint(bp)
