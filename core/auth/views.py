"""Accounts API: registration, login, second factor, passwords, invitations, API tokens.

The JSON face of :mod:`core.auth.accounts`, which holds the logic (the web
pages in :mod:`core.web.account` call the same functions).  Every refused
request leaves the database as it was.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Literal

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import g
from flask import request
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

from core.api import API_PREFIX
from core.api import decode_cursor
from core.api import encode_cursor
from core.api import json_response
from core.api import operation
from core.api import parse_body
from core.api import parse_query
from core.auth import accounts
from core.auth import csrf
from core.auth import login_session
from core.auth import logout_session
from core.auth import require_user
from core.auth.accounts import CodeBody
from core.auth.accounts import ErasureBody
from core.auth.accounts import InvitationBody
from core.auth.accounts import LoginBody
from core.auth.accounts import PasswordBody
from core.auth.accounts import PasswordChangeBody
from core.auth.accounts import RegisterBody
from core.auth.accounts import ResetConfirmBody
from core.auth.accounts import ResetRequestBody
from core.auth.accounts import TokenBody
from core.auth.accounts import TotpDisableBody
from core.db import utcnow
from core.models import ApiToken
from core.models import User

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__, url_prefix=API_PREFIX)

#: Kept for callers of the former private helper; see :func:`core.auth.accounts.sha256_hex`.
_sha256 = accounts.sha256_hex

TAGS_AUTH = ("auth",)
TAGS_ME = ("me",)
TAGS_ADMIN = ("admin",)


# ------------------------------------------------------------------ output types


class InvitationQuery(BaseModel):
    """Paging through invitations, newest first."""

    model_config = ConfigDict(extra="forbid")
    cursor: str | None = None
    limit: int = Field(default=50, ge=1, le=200)


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


def _no_content() -> Response:
    return Response(status=204)


def _client_ip() -> str:
    return request.remote_addr or ""


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
    user = accounts.register(parse_body(RegisterBody))
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
    user = accounts.authenticate(parse_body(LoginBody), _client_ip())
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
    accounts.end_all_sessions(require_user())
    logout_session()
    return _no_content()


# ------------------------------------------------------------------ password reset


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
    accounts.request_password_reset(parse_body(ResetRequestBody), _client_ip())
    return json_response(
        MessageOut(detail="if an account with this address exists, a reset link is on its way"),
        202,
    )


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
    accounts.confirm_password_reset(parse_body(ResetConfirmBody))
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
    accounts.change_password(user, parse_body(PasswordChangeBody), _client_ip())
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
    setup = accounts.start_totp_setup(require_user())
    return json_response(
        TotpSetupOut(secret=setup.secret, otpauth_uri=setup.otpauth_uri, qr_svg=setup.qr_svg)
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
    codes = accounts.confirm_totp(user, parse_body(CodeBody))
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
    accounts.disable_totp(user, parse_body(TotpDisableBody), _client_ip())
    return _no_content()


class ErasureOut(BaseModel):
    """The account just erased: its public id stays, naming no one."""

    id: str
    erased_at: datetime
    unstaffed_courses: list[str] = Field(
        description="ids of courses you were the only instructor of (they stay, unstaffed)"
    )


@bp.post("/me/erase")
@operation(
    "Erase your account for good (your learning records stay, under no name)",
    tags=TAGS_ME,
    body=ErasureBody,
    response=ErasureOut,
    errors=(400, 401, 403, 409, 422, 429, 500),
)
def erase_me() -> Response:
    """Erase the caller's account, confirmed with its password (and second factor).

    What goes and what stays is in :mod:`core.erasure`.  The session ends;
    every API token of the account stops working.
    """
    user = require_user()
    done = accounts.erase_own_account(user, parse_body(ErasureBody), _client_ip(), via="api")
    logout_session()
    return json_response(
        ErasureOut(
            id=done.user,
            erased_at=done.erased_at,
            unstaffed_courses=[pid for pid, _ in done.unstaffed],
        )
    )


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
    codes = accounts.regenerate_recovery_codes(user, parse_body(PasswordBody), _client_ip())
    return json_response(RecoveryCodesOut(recovery_codes=codes))


# ------------------------------------------------------------------ me: API tokens


@bp.get("/me/tokens")
@operation("List my API tokens", tags=TAGS_ME, response=TokenList)
def list_tokens() -> Response:
    """The caller's unrevoked tokens, newest first (without their secrets)."""
    tokens = accounts.live_tokens(require_user())
    return json_response(TokenList(items=[TokenOut.of(t) for t in tokens]))


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
    token, plaintext = accounts.create_api_token(user, parse_body(TokenBody))
    out = TokenCreated(**TokenOut.of(token).model_dump(), token=plaintext)
    return json_response(out, 201)


@bp.delete("/me/tokens/<public_id>")
@operation("Revoke one of my API tokens", tags=TAGS_ME, status=204, errors=(404,))
def revoke_api_token(public_id: str) -> Response:
    """Revoke a token of the caller; another user's token is not found."""
    accounts.revoke_api_token(require_user(), public_id)
    return _no_content()


# ------------------------------------------------------------------ admin: invitations


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
    admin = accounts.require_admin(require_user())
    created = accounts.create_invitation(admin, parse_body(InvitationBody))
    out = InvitationCreated(
        id=created.invitation.public_id,
        code=created.code,
        email=created.invitation.email,
        expires_at=created.invitation.expires_at,
        mail_sent=created.mail_sent,
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
    admin = accounts.require_admin(require_user())
    query = parse_query(InvitationQuery)
    rows, more = accounts.list_invitations(admin, decode_cursor(query.cursor), query.limit)
    now = utcnow()
    items = [
        InvitationOut(
            id=inv.public_id,
            email=inv.email,
            status=accounts.invitation_status(inv, now),
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
