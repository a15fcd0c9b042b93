"""Account pages: sign up, log in (with a second factor), log out, password reset, settings,
the download of one's own data and the erasure of one's account.

Every action is a plain HTML form posted with its CSRF token; the work is
done by :mod:`core.auth.accounts`, the same functions the JSON API calls, so
throttling, the password policy and audit records apply alike.  A refused
form is shown again with the user's input (never passwords or codes) and the
errors next to their fields.  Secrets (API tokens, recovery codes) are shown
once, on the response page itself, never stored in the session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any
from typing import TypeVar

from flask import Blueprint
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import session as flask_session
from flask import url_for
from flask_babel import gettext
from flask_babel import ngettext
from pydantic import BaseModel
from pydantic import ValidationError
from sqlalchemy import select
from werkzeug.wrappers.response import Response as BaseResponse

from core import db
from core import erasure
from core import privacy
from core.auth import accounts
from core.auth import csrf
from core.auth import current_user
from core.auth import login_session
from core.auth import logout_session
from core.auth.passwords import PasswordRejected
from core.auth.throttle import LoginThrottled
from core.config import Settings
from core.errors import Problem
from core.models import User
from core.operator import LastActiveAdmin
from core.web.forms import FormState
from core.web.guards import login_required
from core.web.guards import safe_next
from core.web.guards import user as page_user

log = logging.getLogger(__name__)

bp = Blueprint("account", __name__)

#: Session key of a login waiting for its second factor: user id, session version, deadline.
PENDING_LOGIN = "pending_2fa"
PENDING_LOGIN_SECONDS = 300

Page = str | tuple[str, int] | BaseResponse


def _settings() -> Settings:
    found: Settings = current_app.extensions["trivium.settings"]
    return found


def _ip() -> str:
    return request.remote_addr or ""


def _message(problem: Problem) -> str:
    """A translated sentence for a refused account action."""
    messages: dict[type[Problem], str] = {
        accounts.InvalidCredentials: gettext("The e-mail address or password is not correct."),
        accounts.SecondFactorInvalid: gettext(
            "The code is wrong, expired or already used. Try the newest code from your app."
        ),
        accounts.SecondFactorRequired: gettext(
            "Enter the code from your authenticator app or a recovery code."
        ),
        accounts.RegistrationClosed: gettext("This site does not accept new registrations."),
        accounts.InvitationRequired: gettext("Registration on this site needs an invitation code."),
        accounts.InvitationInvalid: gettext(
            "This invitation code is unknown, already used, expired or for another address."
        ),
        accounts.EmailTaken: gettext("An account with this e-mail address already exists."),
        accounts.PasswordIncorrect: gettext("Your current password is not correct."),
        accounts.TotpCodeInvalid: gettext(
            "The code was not accepted. Check that your device's clock is right."
        ),
        accounts.TotpStateConflict: gettext(
            "Two-factor authentication changed meanwhile; reload the page."
        ),
        accounts.ResetTokenExpired: gettext("This reset link has expired. Request a new one."),
        accounts.ResetTokenInvalid: gettext("This reset link is not valid. Request a new one."),
        accounts.ResetTokenUsed: gettext(
            "This reset link was already used, or the password changed since. Request a new one."
        ),
        accounts.TokenNotFound: gettext("You have no API token with this id."),
        erasure.SelfErasureOff: gettext(
            "On this site, only the administrators erase accounts. Ask them to erase yours."
        ),
        erasure.NoPasswordToConfirm: gettext(
            "Your account has no password to confirm its erasure with. "
            "Ask the administrators to erase it."
        ),
        erasure.ErasureFailed: gettext(
            "Your account could not be erased, and nothing was changed. "
            "Try again later, or ask the administrators."
        ),
        LastActiveAdmin: gettext(
            "You are the only active administrator of this site. "
            "Make someone else an administrator before erasing your account."
        ),
    }
    if isinstance(problem, LoginThrottled):
        minutes = max(1, int(problem.extra.get("retry_after") or 60) // 60)
        return str(
            ngettext(
                "Too many attempts. Try again in %(num)d minute.",
                "Too many attempts. Try again in %(num)d minutes.",
                minutes,
            )
        )
    for cls in type(problem).__mro__:
        if cls in messages:
            return str(messages[cls])
    return problem.detail


_FIELD_MESSAGES = {
    "email": lambda: gettext("Enter a valid e-mail address, like name@example.org."),
    "display_name": lambda: gettext("Enter a name (up to 200 characters, no control characters)."),
    "name": lambda: gettext("Enter a name (up to 100 characters)."),
    "password": lambda: gettext("Enter your password."),
    "current_password": lambda: gettext("Enter your current password."),
    "new_password": lambda: gettext("Enter a new password."),
    "invite_code": lambda: gettext("Enter the invitation code you received."),
    "code": lambda: gettext("Enter the code from your authenticator app."),
    "expires_in_days": lambda: gettext("Enter a number of days from 1 to 3650, or leave it empty."),
    "token": lambda: gettext("This reset link is not valid. Request a new one."),
}


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], data: Mapping[str, Any], form: FormState) -> M | None:
    """Validate form input with the API's own model; record errors on ``form``."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else ""
            message = _FIELD_MESSAGES.get(name)
            if name and message is not None:
                if name not in form.errors:
                    form.add(name, str(message()))
            else:
                form.add(
                    None, gettext("The form could not be read; reload the page and try again.")
                )
        return None


def _optional(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _password_problem(form: FormState, exc: PasswordRejected, field: str) -> None:
    """Put a password-policy refusal on the password field (its message names the rule)."""
    form.add(field, gettext("This password is not allowed: %(reason)s.", reason=exc.detail))


def _status(problem: Problem) -> int:
    return problem.status if 400 <= problem.status < 500 else 400


# ------------------------------------------------------------------ sign up


def _signup_page(form: FormState, mode: str, status: int = 200) -> tuple[str, int]:
    page = render_template(
        "account/signup.html",
        form=form,
        mode=mode,
        config_min_password=_settings().accounts.password_min_length,
    )
    return page, status


@bp.route("/signup", methods=["GET", "POST"])
def signup() -> Page:
    """Create an account (open registration, or with an invitation code)."""
    mode = _settings().accounts.registration
    if current_user() is not None:
        return redirect(url_for("web.home"))
    form = FormState.of(request.form, ("email", "display_name", "invite_code"))
    if request.method == "GET":
        form.values["invite_code"] = request.args.get("code", "")[:64]
        return _signup_page(form, mode)
    if mode == "closed":
        form.add(None, _message(accounts.RegistrationClosed()))
        return _signup_page(form, mode, 403)
    body = _parse(
        accounts.RegisterBody,
        {
            "email": request.form.get("email", ""),
            "display_name": request.form.get("display_name", ""),
            "password": request.form.get("password", ""),
            "invite_code": _optional(request.form.get("invite_code")),
        },
        form,
    )
    if body is None:
        return _signup_page(form, mode, 422)
    if request.form.get("password") != request.form.get("password2"):
        form.add("password2", gettext("The two passwords do not match."))
        return _signup_page(form, mode, 422)
    try:
        user = accounts.register(body)
    except PasswordRejected as exc:
        _password_problem(form, exc, "password")
        return _signup_page(form, mode, 422)
    except (accounts.InvitationRequired, accounts.InvitationInvalid) as exc:
        form.add("invite_code", _message(exc))
        return _signup_page(form, mode, exc.status)
    except accounts.EmailTaken as exc:
        form.add("email", _message(exc))
        return _signup_page(form, mode, exc.status)
    except accounts.RegistrationClosed as exc:
        form.add(None, _message(exc))
        return _signup_page(form, mode, exc.status)
    login_session(user)
    csrf.rotate_csrf_token()
    flash(gettext("Welcome, %(name)s! Your account is ready.", name=user.display_name), "success")
    return redirect(_after_login())


# ------------------------------------------------------------------ log in


def _after_login() -> str:
    default = (
        url_for("learner.dashboard")
        if "learner.dashboard" in current_app.view_functions
        else url_for("web.home")
    )
    return safe_next(request.args.get("next") or request.form.get("next"), default)


def _finish_login(user: User, second_factor: str | None) -> BaseResponse:
    accounts.complete_login(user, second_factor)
    login_session(user)
    csrf.rotate_csrf_token()
    flash(gettext("You are logged in."), "success")
    return redirect(_after_login())


@bp.route("/login", methods=["GET", "POST"])
def login() -> Page:
    """Log in with e-mail and password; accounts with TOTP continue to the code step."""
    next_url = safe_next(request.values.get("next"), "")
    form = FormState.of(request.form, ("email",))
    if request.method == "GET":
        if current_user() is not None:
            return redirect(_after_login())
        return render_template("account/login.html", form=form, next=next_url)
    email = accounts.normalise_email(request.form.get("email", ""))[:320]
    password = request.form.get("password", "")
    if not email:
        form.add("email", str(_FIELD_MESSAGES["email"]()))
    if not password:
        form.add("password", str(_FIELD_MESSAGES["password"]()))
    if not form.ok:
        return render_template("account/login.html", form=form, next=next_url), 422
    try:
        user = accounts.verify_password(email, password[:1024], _ip())
    except (accounts.InvalidCredentials, LoginThrottled) as exc:
        form.add(None, _message(exc))
        return render_template("account/login.html", form=form, next=next_url), exc.status
    if not user.totp_enabled:
        return _finish_login(user, None)
    db.session().commit()  # a rehashed password is kept even if the code step is abandoned
    flask_session[PENDING_LOGIN] = {
        "u": user.public_id,
        "v": user.session_version,
        "until": int(time.time()) + PENDING_LOGIN_SECONDS,
    }
    return redirect(url_for("account.login_code", next=next_url or None))


def _pending_user() -> User | None:
    pending = flask_session.get(PENDING_LOGIN)
    if not isinstance(pending, dict) or int(pending.get("until", 0)) < time.time():
        flask_session.pop(PENDING_LOGIN, None)
        return None
    found = db.session().scalar(select(User).where(User.public_id == str(pending.get("u"))))
    if found is None or not found.is_active or found.session_version != pending.get("v"):
        flask_session.pop(PENDING_LOGIN, None)
        return None
    return found


@bp.route("/login/code", methods=["GET", "POST"])
def login_code() -> Page:
    """The second step of a login: a TOTP code or a recovery code."""
    next_url = safe_next(request.values.get("next"), "")
    user = _pending_user()
    if user is None:
        flash(gettext("Please log in again; the code step timed out."), "warning")
        return redirect(url_for("account.login", next=next_url or None))
    form = FormState()
    use_recovery = request.values.get("method") == "recovery"
    if request.method == "GET":
        return render_template(
            "account/login_code.html", form=form, next=next_url, use_recovery=use_recovery
        )
    code = request.form.get("code", "").strip().replace(" ", "")[:64]
    try:
        if not code:
            raise accounts.SecondFactorRequired()
        kind = accounts.verify_second_factor(
            user, None if use_recovery else code, code if use_recovery else None, _ip()
        )
    except (accounts.SecondFactorRequired, accounts.SecondFactorInvalid, LoginThrottled) as exc:
        form.add("code", _message(exc))
        page = render_template(
            "account/login_code.html", form=form, next=next_url, use_recovery=use_recovery
        )
        return page, _status(exc) if not isinstance(exc, accounts.SecondFactorRequired) else 422
    flask_session.pop(PENDING_LOGIN, None)
    return _finish_login(user, kind)


@bp.post("/logout")
def logout() -> BaseResponse:
    """End this session."""
    logout_session()
    flash(gettext("You are logged out."), "success")
    return redirect(url_for("web.home"))


# ------------------------------------------------------------------ password reset


@bp.route("/forgot-password", methods=["GET", "POST"])
def forgot_password() -> Page:
    """Ask for a reset link by mail (the answer never tells whether the address has an account)."""
    form = FormState.of(request.form, ("email",))
    if request.method == "GET":
        return render_template("account/forgot_password.html", form=form, sent=False)
    body = _parse(accounts.ResetRequestBody, {"email": request.form.get("email", "")}, form)
    if body is None or not form.get("email"):
        if form.ok:
            form.add("email", str(_FIELD_MESSAGES["email"]()))
        return render_template("account/forgot_password.html", form=form, sent=False), 422
    accounts.request_password_reset(body, _ip())
    return render_template("account/forgot_password.html", form=form, sent=True), 202


@bp.route("/reset-password", methods=["GET", "POST"])
def reset_password() -> Page:
    """Choose a new password with the token from the reset mail."""
    token = request.values.get("token", "")[:1000]
    form = FormState()
    try:
        accounts.reset_token_user(token)
    except (accounts.ResetTokenExpired, accounts.ResetTokenInvalid, accounts.ResetTokenUsed) as exc:
        form.add(None, _message(exc))
        return render_template("account/reset_password.html", form=form, token=None), 400
    if request.method == "GET":
        return render_template("account/reset_password.html", form=form, token=token)
    new_password = request.form.get("new_password", "")
    if not new_password:
        form.add("new_password", str(_FIELD_MESSAGES["new_password"]()))
    elif new_password != request.form.get("new_password2"):
        form.add("new_password2", gettext("The two passwords do not match."))
    body = None
    if form.ok:
        body = _parse(
            accounts.ResetConfirmBody, {"token": token, "new_password": new_password}, form
        )
    if body is None:
        return render_template("account/reset_password.html", form=form, token=token), 422
    try:
        accounts.confirm_password_reset(body)
    except PasswordRejected as exc:
        _password_problem(form, exc, "new_password")
        return render_template("account/reset_password.html", form=form, token=token), 422
    logout_session()
    flash(gettext("Your password has been changed. Log in with the new one."), "success")
    return redirect(url_for("account.login"))


# ------------------------------------------------------------------ account settings


def _settings_page(
    status: int = 200,
    *,
    profile: FormState | None = None,
    password: FormState | None = None,
    totp_form: FormState | None = None,
    recovery_form: FormState | None = None,
    tokens_form: FormState | None = None,
    erase_form: FormState | None = None,
    new_token: tuple[str, str] | None = None,
) -> tuple[str, int]:
    user = page_user()
    return (
        render_template(
            "account/settings.html",
            user=user,
            profile=profile or FormState(values={"display_name": user.display_name}),
            password=password or FormState(),
            totp_form=totp_form or FormState(),
            recovery_form=recovery_form or FormState(),
            tokens_form=tokens_form or FormState(),
            erase_form=erase_form or FormState(),
            tokens=accounts.live_tokens(user),
            new_token=new_token,
            setup_pending=bool(user.totp_secret) and not user.totp_enabled,
            self_erasure=_settings().accounts.self_erasure,
        ),
        status,
    )


@bp.get("/account")
@login_required
def settings() -> Page:
    """The account page: profile, password, two-factor authentication, API tokens, your data,
    and the erasure of the account."""
    return _settings_page()


@bp.get("/account/export")
@login_required
def export_data() -> Page:
    """Download everything the instance stores about you, as one JSON file (audited)."""
    user = page_user()
    try:
        privacy.check_rate(user)
    except privacy.ExportThrottled:
        flash(
            gettext(
                "You have downloaded your data several times in the last minutes. Try again later."
            ),
            "error",
        )
        return redirect(url_for("account.settings"))
    sess = db.session()
    document = privacy.export_user(sess, user)
    privacy.record_export(sess, user, user, "web")
    sess.commit()
    return privacy.download(document)


@bp.post("/account/profile")
@login_required
def update_profile() -> Page:
    """Change the display name."""
    user = page_user()
    form = FormState.of(request.form, ("display_name",))
    body = _parse(
        accounts.ProfileBody, {"display_name": request.form.get("display_name", "")}, form
    )
    if body is None:
        return _settings_page(422, profile=form)
    accounts.update_profile(user, body)
    flash(gettext("Your profile has been saved."), "success")
    return redirect(url_for("account.settings"))


@bp.post("/account/password")
@login_required
def change_password() -> Page:
    """Change the password; other sessions end, this one continues."""
    user = page_user()
    form = FormState()
    current = request.form.get("current_password", "")
    new = request.form.get("new_password", "")
    if not current:
        form.add("current_password", str(_FIELD_MESSAGES["current_password"]()))
    if not new:
        form.add("new_password", str(_FIELD_MESSAGES["new_password"]()))
    elif new != request.form.get("new_password2"):
        form.add("new_password2", gettext("The two passwords do not match."))
    body = None
    if form.ok:
        body = _parse(
            accounts.PasswordChangeBody, {"current_password": current, "new_password": new}, form
        )
    if body is None:
        return _settings_page(422, password=form)
    try:
        accounts.change_password(user, body, _ip())
    except PasswordRejected as exc:
        _password_problem(form, exc, "new_password")
        return _settings_page(422, password=form)
    except (accounts.PasswordIncorrect, LoginThrottled) as exc:
        form.add("current_password", _message(exc))
        return _settings_page(exc.status, password=form)
    login_session(user)
    csrf.rotate_csrf_token()
    flash(gettext("Your password has been changed; other sessions were logged out."), "success")
    return redirect(url_for("account.settings"))


@bp.post("/account/logout-all")
@login_required
def logout_all() -> BaseResponse:
    """End every session of the account, this one included."""
    accounts.end_all_sessions(page_user())
    logout_session()
    flash(gettext("All your sessions have been logged out."), "success")
    return redirect(url_for("account.login"))


# ------------------------------------------------------------------ two-factor authentication


def _totp_page(form: FormState, status: int = 200) -> tuple[str, int]:
    user = page_user()
    if not user.totp_secret or user.totp_enabled:
        return _settings_page(409)
    setup = accounts.totp_setup_for(user, user.totp_secret)
    return render_template("account/totp_setup.html", setup=setup, form=form), status


@bp.post("/account/totp/setup")
@login_required
def totp_setup() -> Page:
    """Start setting up an authenticator app: a new secret and its QR code."""
    user = page_user()
    try:
        accounts.start_totp_setup(user)
    except accounts.TotpStateConflict as exc:
        flash(_message(exc), "error")
        return redirect(url_for("account.settings"))
    return redirect(url_for("account.totp_confirm"))


@bp.route("/account/totp/confirm", methods=["GET", "POST"])
@login_required
def totp_confirm() -> Page:
    """Scan the QR code, then prove it works with a first code; shows the recovery codes."""
    user = page_user()
    form = FormState()
    if request.method == "GET":
        if not user.totp_secret or user.totp_enabled:
            return redirect(url_for("account.settings"))
        return _totp_page(form)
    code = request.form.get("code", "").strip().replace(" ", "")
    body = _parse(accounts.CodeBody, {"code": code}, form)
    if body is None:
        return _totp_page(form, 422)
    try:
        codes = accounts.confirm_totp(user, body)
    except accounts.TotpCodeInvalid as exc:
        form.add("code", _message(exc))
        return _totp_page(form, exc.status)
    except accounts.TotpStateConflict as exc:
        flash(_message(exc), "error")
        return redirect(url_for("account.settings"))
    flash(gettext("Two-factor authentication is on."), "success")
    return render_template("account/recovery_codes.html", codes=codes)


@bp.post("/account/totp/disable")
@login_required
def totp_disable() -> Page:
    """Turn two-factor authentication off (password and a current or recovery code)."""
    user = page_user()
    form = FormState()
    code = request.form.get("code", "").strip().replace(" ", "")
    body = _parse(
        accounts.TotpDisableBody, {"password": request.form.get("password", ""), "code": code}, form
    )
    if body is None:
        return _settings_page(422, totp_form=form)
    try:
        accounts.disable_totp(user, body, _ip())
    except (accounts.PasswordIncorrect, LoginThrottled) as exc:
        form.add("password", _message(exc))
        return _settings_page(exc.status, totp_form=form)
    except accounts.TotpCodeInvalid as exc:
        form.add("code", _message(exc))
        return _settings_page(exc.status, totp_form=form)
    except accounts.TotpStateConflict as exc:
        form.add(None, _message(exc))
        return _settings_page(exc.status, totp_form=form)
    flash(gettext("Two-factor authentication is off."), "success")
    return redirect(url_for("account.settings"))


@bp.post("/account/recovery-codes")
@login_required
def recovery_codes() -> Page:
    """Replace the recovery codes; the new ones are shown once."""
    user = page_user()
    form = FormState()
    body = _parse(accounts.PasswordBody, {"password": request.form.get("password", "")}, form)
    if body is None:
        return _settings_page(422, recovery_form=form)
    try:
        codes = accounts.regenerate_recovery_codes(user, body, _ip())
    except (accounts.PasswordIncorrect, LoginThrottled) as exc:
        form.add("password", _message(exc))
        return _settings_page(exc.status, recovery_form=form)
    except accounts.TotpStateConflict as exc:
        form.add(None, _message(exc))
        return _settings_page(exc.status, recovery_form=form)
    return render_template("account/recovery_codes.html", codes=codes)


# ------------------------------------------------------------------ API tokens


@bp.post("/account/tokens")
@login_required
def create_token() -> Page:
    """Create a personal API token; its secret is shown on this response only."""
    user = page_user()
    form = FormState.of(request.form, ("name", "expires_in_days"))
    days_raw = form.get("expires_in_days")
    days: Any = None
    if days_raw:
        days = int(days_raw) if days_raw.isdigit() and len(days_raw) < 6 else -1
    body = _parse(
        accounts.TokenBody, {"name": request.form.get("name", ""), "expires_in_days": days}, form
    )
    if body is None:
        return _settings_page(422, tokens_form=form)
    token, plaintext = accounts.create_api_token(user, body)
    return _settings_page(201, new_token=(token.name, plaintext))


@bp.post("/account/tokens/<public_id>/revoke")
@login_required
def revoke_token(public_id: str) -> Page:
    """Revoke one of the user's tokens (another user's is not found)."""
    try:
        token = accounts.revoke_api_token(page_user(), public_id[:64])
    except accounts.TokenNotFound as exc:
        flash(_message(exc), "error")
        return _settings_page(404)
    flash(gettext("The token “%(name)s” has been revoked.", name=token.name), "success")
    return redirect(url_for("account.settings"))


# ------------------------------------------------------------------ erasure


@bp.post("/account/erase")
@login_required
def erase_account() -> Page:
    """Erase one's own account for good (:mod:`core.erasure`), then end the session.

    Needs the password, a current or recovery code when the second factor
    is on, and the "cannot be undone" box ticked; a refusal changes nothing.
    """
    user = page_user()
    form = FormState()
    try:
        erasure.check_self_erasure(user)
    except (erasure.SelfErasureOff, erasure.NoPasswordToConfirm) as exc:
        form.add(None, _message(exc))
        return _settings_page(exc.status, erase_form=form)
    if request.form.get("confirm") not in {"1", "true", "on"}:
        form.add(
            "confirm",
            gettext("Tick the box to confirm that you understand the erasure cannot be undone."),
        )
        return _settings_page(400, erase_form=form)
    password = request.form.get("password", "")
    code = request.form.get("code", "").strip().replace(" ", "")[:64]
    if not password:
        form.add("password", str(_FIELD_MESSAGES["password"]()))
    if user.totp_enabled and not code:
        form.add("code", _message(accounts.SecondFactorRequired()))
    if not form.ok:
        return _settings_page(422, erase_form=form)
    body = _parse(
        accounts.ErasureBody,
        {"password": password, "code": code if user.totp_enabled else None},
        form,
    )
    if body is None:
        return _settings_page(422, erase_form=form)
    try:
        accounts.erase_own_account(user, body, _ip(), via="web")
    except (accounts.PasswordIncorrect, LoginThrottled) as exc:
        form.add("password", _message(exc))
        return _settings_page(exc.status, erase_form=form)
    except accounts.TotpCodeInvalid as exc:
        form.add("code", _message(exc))
        return _settings_page(exc.status, erase_form=form)
    except (
        erasure.SelfErasureOff,
        erasure.NoPasswordToConfirm,
        erasure.ErasureFailed,
        LastActiveAdmin,
    ) as exc:
        form.add(None, _message(exc))
        return _settings_page(exc.status, erase_form=form)
    logout_session()
    flash(gettext("Your account was erased."), "success")
    return redirect(url_for("web.home"))
