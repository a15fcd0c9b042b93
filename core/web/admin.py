"""Operator pages: users and roles, account erasure, invitations, plugins, instance settings,
audit log, background jobs, mail.

Every page needs a site admin (``site.*`` actions of :mod:`core.rbac`; a
plugin's ``permission_allowed`` may grant them to others).  Changes go
through :mod:`core.operator` and are audited like the API's.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC
from datetime import datetime
from typing import Any

from flask import Blueprint
from flask import current_app
from flask import flash
from flask import make_response
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import field_validator
from sqlalchemy import func
from sqlalchemy import select
from werkzeug.wrappers.response import Response as BaseResponse

from core import db
from core import erasure
from core import operator
from core import progress_buffer
from core import rbac
from core.auth import accounts
from core.auth import audit as audit_log
from core.auth import mail as outbox
from core.auth import require_user
from core.auth.accounts import Email
from core.auth.tokens import forget_user_tokens
from core.config import Settings
from core.courses import plugin_host
from core.errors import NotFound
from core.errors import last_line
from core.models import Course
from core.models import CourseRole
from core.models import Enrolment
from core.models import OutboxMail
from core.models import User
from core.tasks import JobNotFound
from core.tasks import JobNotRetryable
from core.tasks import get_jobs
from core.tasks.store import STATES
from core.web.forms import FormState
from core.web.staff_util import cursor_arg
from core.web.staff_util import cursor_for
from core.web.staff_util import label_helpers
from core.web.staff_util import login_redirect
from core.web.staff_util import validate_form

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, url_prefix="/admin")
bp.before_request(login_redirect)
bp.context_processor(label_helpers)

PAGE_SIZE = 50

#: How many recent plugin failures the plugins page shows.
RECENT_FAILURES = 50


def _admin(action: str) -> User:
    """The current user, once ``action`` (``site.*``) is allowed."""
    user = require_user()
    rbac.require(user, action)
    return user


class UnknownJob(NotFound):
    """No background job has this message id (or it was purged)."""

    type_slug = "job-not-found"


class UnknownMail(NotFound):
    """No outbox mail has this id (or it was purged: ``trivium mail purge``)."""

    type_slug = "mail-not-found"


def _settings() -> Settings:
    settings: Settings = current_app.extensions["trivium.settings"]
    return settings


class InvitationForm(BaseModel):
    """An invitation from the form: an optional address and a validity in days."""

    model_config = ConfigDict(str_strip_whitespace=True)
    email: Email | None = None
    days: int = Field(default=7, ge=1, le=365)

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value


# ---------------------------------------------------------------- overview


@bp.get("/")
def index() -> ResponseReturnValue:
    """What the instance holds, and where to manage it."""
    _admin("site.users")
    sess = db.session()
    counts = {
        "users": sess.scalar(select(func.count()).select_from(User)) or 0,
        "inactive": sess.scalar(
            select(func.count())
            .select_from(User)
            .where(User.is_active.is_(False), User.erased_at.is_(None))
        )
        or 0,
        "admins": sess.scalar(select(func.count()).select_from(User).where(User.is_admin.is_(True)))
        or 0,
        "courses": sess.scalar(select(func.count()).select_from(Course)) or 0,
    }
    host = plugin_host()
    return render_template(
        "admin/index.html",
        counts=counts,
        plugins=len(host.info()),
        failures=len(host.failures),
        jobs=get_jobs().state_counts(),
        mail=outbox.outbox_counts(sess),
        delivery_on=outbox.delivery_on(),
    )


# ---------------------------------------------------------------- users


@bp.get("/users")
def users() -> ResponseReturnValue:
    """Search accounts by e-mail or name, newest first."""
    _admin("site.users")
    q = request.args.get("q", "").strip()[:200]
    state = request.args.get("state", "")
    if state not in {"active", "inactive", "erased", "admin", "creator"}:
        state = ""
    rows, next_key = operator.search_users(
        db.session(),
        q=q or None,
        state=state or None,  # type: ignore[arg-type]
        before=cursor_arg(),
        limit=PAGE_SIZE,
    )
    return render_template(
        "admin/users.html",
        rows=rows,
        q=q,
        state=state,
        next_cursor=cursor_for(next_key),
        form=FormState(values={"q": q, "state": state}),
    )


@bp.get("/users/<user_id>")
def user(user_id: str) -> ResponseReturnValue:
    """One account: its roles, courses and the actions on it."""
    admin = _admin("site.users")
    sess = db.session()
    account = operator.get_account(sess, user_id)
    teaching = sess.execute(
        select(Course, CourseRole.role)
        .join(CourseRole, CourseRole.course_id == Course.id)
        .where(CourseRole.user_id == account.id)
        .order_by(Course.title)
    ).all()
    enrolments = (
        sess.scalar(
            select(func.count()).select_from(Enrolment).where(Enrolment.user_id == account.id)
        )
        or 0
    )
    recent, _ = operator.audit_entries(sess, actor=account.public_id, limit=10)
    return render_template(
        "admin/user.html",
        account=account,
        me=admin,
        teaching=teaching,
        enrolments=enrolments,
        recent=recent,
    )


def _back_to(account: User) -> BaseResponse:
    return redirect(url_for("admin.user", user_id=account.public_id), code=303)


def _flag() -> bool:
    return request.form.get("value") in {"1", "true", "on"}


@bp.post("/users/<user_id>/admin")
def set_admin(user_id: str) -> ResponseReturnValue:
    """Make an account a site admin, or take the role away."""
    admin = _admin("site.users")
    sess = db.session()
    account = operator.get_account(sess, user_id)
    value = _flag()
    try:
        operator.set_admin(sess, admin, account, value)
    except (
        operator.CannotChangeOwnAccount,
        operator.AccountStateInvalid,
        operator.LastActiveAdmin,
    ) as exc:
        sess.rollback()
        flash(exc.detail, "error")
        return _back_to(account)
    sess.commit()
    forget_user_tokens(sess, account.id)  # their API tokens carry the rights
    if value:
        flash(
            gettext("%(name)s is now a site administrator.", name=account.display_name), "success"
        )
    else:
        flash(
            gettext("%(name)s is no longer a site administrator.", name=account.display_name),
            "success",
        )
    return _back_to(account)


@bp.post("/users/<user_id>/creator")
def set_creator(user_id: str) -> ResponseReturnValue:
    """Allow an account to create courses, or stop it."""
    admin = _admin("site.users")
    sess = db.session()
    account = operator.get_account(sess, user_id)
    value = _flag()
    try:
        operator.set_course_creator(sess, admin, account, value)
    except operator.AccountStateInvalid as exc:
        sess.rollback()
        flash(exc.detail, "error")
        return _back_to(account)
    sess.commit()
    forget_user_tokens(sess, account.id)  # their API tokens carry the rights
    if value:
        flash(gettext("%(name)s may create courses.", name=account.display_name), "success")
    else:
        flash(
            gettext("%(name)s may no longer create courses.", name=account.display_name),
            "success",
        )
    return _back_to(account)


@bp.post("/users/<user_id>/deactivate")
def deactivate(user_id: str) -> ResponseReturnValue:
    """Deactivate an account and end its sessions."""
    admin = _admin("site.users")
    sess = db.session()
    account = operator.get_account(sess, user_id)
    try:
        operator.deactivate(sess, admin, account)
    except (
        operator.CannotChangeOwnAccount,
        operator.AccountStateInvalid,
        operator.LastActiveAdmin,
    ) as exc:
        sess.rollback()
        flash(exc.detail, "error")
        return _back_to(account)
    sess.commit()
    forget_user_tokens(sess, account.id)
    flash(
        gettext(
            "%(name)s is deactivated and has been logged out everywhere.",
            name=account.display_name,
        ),
        "success",
    )
    return _back_to(account)


@bp.post("/users/<user_id>/second-factor/reset")
def reset_second_factor(user_id: str) -> ResponseReturnValue:
    """Turn another account's second factor off (a lost device) and end its sessions."""
    admin = _admin("site.users")
    sess = db.session()
    account = operator.get_account(sess, user_id)
    if account.id == admin.id:
        flash(gettext("Turn your own second factor off on your account page."), "error")
        return _back_to(account)
    try:
        changed = operator.reset_second_factor(sess, admin, account)
    except operator.AccountStateInvalid as exc:
        sess.rollback()
        flash(exc.detail, "error")
        return _back_to(account)
    if changed:
        sess.commit()
        flash(
            gettext(
                "Two-factor authentication is off for %(name)s, who has been logged out "
                "everywhere and can set it up again after logging in with the password.",
                name=account.display_name,
            ),
            "success",
        )
    else:
        flash(gettext("%(name)s has no second factor.", name=account.display_name), "info")
    return _back_to(account)


@bp.post("/users/<user_id>/reactivate")
def reactivate(user_id: str) -> ResponseReturnValue:
    """Let a deactivated account log in again."""
    admin = _admin("site.users")
    sess = db.session()
    account = operator.get_account(sess, user_id)
    try:
        operator.reactivate(sess, admin, account)
    except operator.AccountStateInvalid as exc:
        sess.rollback()
        flash(exc.detail, "error")
        return _back_to(account)
    sess.commit()
    flash(gettext("%(name)s can log in again.", name=account.display_name), "success")
    return _back_to(account)


# ---------------------------------------------------------------- erasure


def _erase_page(account: User, form: FormState, status: int = 200) -> ResponseReturnValue:
    unstaffed = erasure.sole_instructor_of(db.session(), account)
    return (
        render_template("admin/erase_user.html", account=account, unstaffed=unstaffed, form=form),
        status,
    )


def _not_erasable(admin: User, account: User) -> BaseResponse | None:
    """Back to the user page, with the reason, for one's own or an erased account."""
    if account.id == admin.id:
        flash(
            gettext(
                "You cannot erase your own account here. Erase it on your account page, "
                "or ask another administrator."
            ),
            "error",
        )
        return _back_to(account)
    if account.erased_at is not None:
        flash(gettext("This account is already erased."), "error")
        return _back_to(account)
    return None


@bp.get("/users/<user_id>/erase")
def confirm_erase(user_id: str) -> ResponseReturnValue:
    """What erasing the account removes and keeps, and the form that does it."""
    admin = _admin("site.users")
    account = operator.get_account(db.session(), user_id)
    refused = _not_erasable(admin, account)
    if refused is not None:
        return refused
    return _erase_page(account, FormState())


@bp.post("/users/<user_id>/erase")
def erase(user_id: str) -> ResponseReturnValue:
    """Erase an account for good (:mod:`core.erasure`); its learning records stay, unnamed."""
    admin = _admin("site.users")
    sess = db.session()
    account = operator.get_account(sess, user_id)
    refused = _not_erasable(admin, account)
    if refused is not None:
        return refused
    if request.form.get("confirm") not in {"1", "true", "on"}:
        form = FormState()
        form.add(
            "confirm",
            gettext("Tick the box to confirm that you understand the erasure cannot be undone."),
        )
        return _erase_page(account, form, 400)
    # the person's waiting heartbeats first, while this transaction has written nothing
    progress_buffer.flush_before_reading()
    try:
        done = erasure.erase_account(sess, admin, account, via="web")
    except (
        operator.AccountStateInvalid,
        operator.LastActiveAdmin,
        erasure.ErasureFailed,
    ) as exc:
        sess.rollback()
        flash(exc.detail, "error")
        return _back_to(account)
    sess.commit()
    erasure.after_commit(done)
    flash(gettext("The account was erased. Its learning records stay, under no name."), "success")
    if done.unstaffed:
        flash(
            gettext(
                "These courses have no instructor now: %(titles)s. Give each one an instructor.",
                titles=", ".join(title for _, title in done.unstaffed),
            ),
            "warning",
        )
    return _back_to(account)


# ---------------------------------------------------------------- invitations


def _render_invitations(
    admin: User,
    form: FormState | None = None,
    created: accounts.NewInvitation | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    key = cursor_arg()
    rows, more = accounts.list_invitations(admin, key, PAGE_SIZE)
    return (
        render_template(
            "admin/invitations.html",
            rows=rows,
            status_of=accounts.invitation_status,
            next_cursor=cursor_for(rows[-1].id) if more and rows else None,
            form=form or FormState(values={"days": "7"}),
            created=created,
            registration=_settings().accounts.registration,
        ),
        status,
    )


@bp.get("/invitations")
def invitations() -> ResponseReturnValue:
    """Invitations with their state; the form to create one."""
    admin = _admin("site.users")
    return _render_invitations(admin)


@bp.post("/invitations")
def create_invitation() -> ResponseReturnValue:
    """Create an invitation; its code is shown this once."""
    admin = _admin("site.users")
    state = FormState.of(request.form, ["email", "days"])
    data = validate_form(
        InvitationForm, {"email": state.get("email"), "days": state.get("days") or "7"}, state
    )
    if not isinstance(data, InvitationForm):
        return _render_invitations(admin, form=state, status=422)
    body = accounts.InvitationBody(email=data.email, days=data.days)
    created = accounts.create_invitation(admin, body)
    return _render_invitations(admin, created=created)


# ---------------------------------------------------------------- plugins, settings, audit


@bp.get("/plugins")
def plugins() -> ResponseReturnValue:
    """Loaded plugins with versions, hooks and failures; installed content types."""
    _admin("site.plugins")
    host = plugin_host()
    failures = [
        (f, datetime.fromtimestamp(f.at, UTC)) for f in reversed(host.failures[-RECENT_FAILURES:])
    ]
    types = sorted((name, ctype.label or name) for name, ctype in host.content_types.items())
    return render_template(
        "admin/plugins.html", plugins=host.info(), failures=failures, types=types
    )


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            _flatten(f"{prefix}.{key}" if prefix else str(key), value[key], out)
        return
    out.append((prefix, json.dumps(value, ensure_ascii=False)))


@bp.get("/settings")
def settings() -> ResponseReturnValue:
    """The effective settings, secrets masked (read-only)."""
    _admin("site.settings")
    masked = operator.masked_settings(_settings())
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    top: list[tuple[str, str]] = []
    for name in masked:
        value = masked[name]
        if isinstance(value, dict):
            rows: list[tuple[str, str]] = []
            _flatten("", value, rows)
            sections.append((name, rows))
        else:
            top.append((name, json.dumps(value, ensure_ascii=False)))
    return render_template(
        "admin/settings.html", sections=sections, top=top, mask=json.dumps(operator.MASK)
    )


@bp.get("/audit")
def audit() -> ResponseReturnValue:
    """The audit log, newest first, filtered by action and actor."""
    _admin("site.audit")
    action = request.args.get("action", "").strip()[:100]
    actor = request.args.get("actor", "").strip()[:320]
    sess = db.session()
    rows, next_key = operator.audit_entries(
        sess, action=action or None, actor=actor or None, before=cursor_arg(), limit=PAGE_SIZE
    )
    return render_template(
        "admin/audit.html",
        rows=rows,
        action_options=[(a, a) for a in operator.audit_actions(sess)],
        action=action,
        actor=actor,
        next_cursor=cursor_for(next_key),
        form=FormState(values={"action": action, "actor": actor}),
        detail=lambda d: json.dumps(d or {}, ensure_ascii=False, sort_keys=True),
    )


# ---------------------------------------------------------------- background jobs

#: The Jobs page's ``state`` for every job (without ``state``: the default view).
ALL_JOBS = "all"


def job_state_label(state: str) -> str:
    """A job state (or the ``all`` filter) for people."""
    labels: dict[str, str] = {
        ALL_JOBS: gettext("All"),
        "queued": gettext("Queued"),
        "running": gettext("Running"),
        "done": gettext("Done"),
        "failed": gettext("Failed"),
    }
    return labels.get(state, state)


def error_line(text: str) -> str:
    """The last line of a stored error, as the Jobs and Mail pages list it."""
    return last_line(text, 200)


def _job_filter(value: str | None, counts: dict[str, int]) -> str:
    """The state the Jobs page lists: the one asked for, else ``failed`` while any
    job is failed (what needs the operator), else every job."""
    if value == ALL_JOBS or value in STATES:
        return value
    return "failed" if counts["failed"] else ALL_JOBS


@bp.get("/jobs")
def jobs() -> ResponseReturnValue:
    """Background jobs, newest first, by state; failed ones with their error and a retry."""
    _admin("site.jobs")
    runtime = get_jobs()
    counts = runtime.state_counts()
    shown = _job_filter(request.args.get("state"), counts)
    rows, next_key = runtime.page(
        state=None if shown == ALL_JOBS else shown, before=cursor_arg(), limit=PAGE_SIZE
    )
    return render_template(
        "admin/jobs.html",
        rows=rows,
        counts=counts,
        total=sum(counts.values()),
        shown=shown,
        filters=[ALL_JOBS, "failed", "queued", "running", "done"],
        state_label=job_state_label,
        last_line=error_line,
        now=db.utcnow(),
        next_cursor=cursor_for(next_key),
    )


@bp.post("/jobs/<message_id>/retry")
def retry_job(message_id: str) -> ResponseReturnValue:
    """Queue a failed job again with a fresh retry budget (``trivium jobs retry``)."""
    admin = _admin("site.jobs")
    message_id = message_id[:64]
    back_to = request.form.get("state", "")
    if back_to != ALL_JOBS and back_to not in STATES:
        back_to = ""
    back = redirect(url_for("admin.jobs", state=back_to or None), code=303)
    try:
        job = get_jobs().retry_message(message_id)
    except JobNotFound:
        raise UnknownJob(gettext("There is no such job; it may have been deleted.")) from None
    except JobNotRetryable:
        found = get_jobs().find(message_id)
        flash(
            gettext(
                "Only a failed job can be retried, and this one is not (state: %(state)s). "
                "Nothing was changed.",
                state=job_state_label(found.state) if found is not None else "?",
            ),
            "error",
        )
        return back
    # The retry is written on the broker's own connection (with Redis or RabbitMQ
    # not in the database at all), so it cannot share the audit entry's
    # transaction: the entry follows the committed retry, and a refusal records nothing.
    sess = db.session()
    audit_log.audit(
        sess,
        admin,
        "admin.job_retry",
        f"job:{job.message_id}",
        {"actor": job.actor, "queue": job.queue, "attempts": job.attempts},
    )
    sess.commit()
    flash(gettext("The job %(actor)s is queued again.", actor=job.actor), "success")
    return back


# ---------------------------------------------------------------- mail

#: The Mail page's ``state`` for every mail (without ``state``: the default view).
ALL_MAIL = "all"

#: The Mail page's tabs, in order.
MAIL_FILTERS = (ALL_MAIL, "failed", "queued", "sent", "outbox")


def mail_state_label(state: str) -> str:
    """A delivery state of :class:`~core.models.OutboxMail` (or the ``all`` filter) for people."""
    labels: dict[str, str] = {
        ALL_MAIL: gettext("All"),
        "failed": gettext("Failed"),
        "queued": gettext("Waiting to be sent"),
        "sent": gettext("Sent"),
        "outbox": gettext("Kept, not sent"),
    }
    return labels.get(state, state)


def mail_state_help(state: str) -> str:
    """What a delivery state means, in a sentence."""
    texts: dict[str, str] = {
        "failed": gettext(
            "The mail server refused this mail for good, or every try failed. "
            "Nobody will try again unless you retry it."
        ),
        "queued": gettext(
            "A background job will send it; after a failed try it is tried again later."
        ),
        "sent": gettext("The mail server accepted it."),
        "outbox": gettext(
            "No SMTP server was configured when it was written or due to be sent: "
            "it is kept here only, and nobody received it."
        ),
    }
    return texts.get(state, "")


def _mail_filter(value: str | None, counts: dict[str, int]) -> str:
    """The state the Mail page lists: the one asked for, else ``failed`` while any
    mail is failed (what needs the operator), else every mail."""
    if value in MAIL_FILTERS:
        return value
    return "failed" if counts["failed"] else ALL_MAIL


def _mail(public_id: str) -> OutboxMail:
    found = outbox.find_mail(db.session(), public_id)
    if found is None:
        raise UnknownMail(gettext("There is no such mail; it may have been deleted."))
    return found


@bp.get("/mail")
def mail() -> ResponseReturnValue:
    """The outbox, newest first, by delivery state; failed mail with its error and a retry."""
    _admin("site.mail")
    sess = db.session()
    counts = outbox.outbox_counts(sess)
    shown = _mail_filter(request.args.get("state"), counts)
    rows, next_key = outbox.page_outbox(
        sess, state=None if shown == ALL_MAIL else shown, before=cursor_arg(), limit=PAGE_SIZE
    )
    return render_template(
        "admin/mail.html",
        rows=rows,
        counts=counts,
        total=sum(counts.values()),
        shown=shown,
        filters=MAIL_FILTERS,
        state_label=mail_state_label,
        last_line=error_line,
        delivery_on=outbox.delivery_on(),
        retryable=outbox.RETRYABLE,
        next_cursor=cursor_for(next_key),
    )


@bp.get("/mail/<public_id>")
def mail_message(public_id: str) -> ResponseReturnValue:
    """One mail with its body, which may hold a password-reset link or an invitation code.

    Reading it is audited (``admin.mail_read``) and the page is not cached,
    like any page that shows a secret.
    """
    admin = _admin("site.mail")
    sess = db.session()
    found = _mail(public_id)
    audit_log.audit(sess, admin, "admin.mail_read", f"mail:{found.public_id}", {"to": found.to})
    sess.commit()
    resp = make_response(
        render_template(
            "admin/mail_message.html",
            mail=found,
            state_label=mail_state_label,
            state_help=mail_state_help,
            delivery_on=outbox.delivery_on(),
            retryable=outbox.RETRYABLE,
        )
    )
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/mail/<public_id>/retry")
def retry_mail(public_id: str) -> ResponseReturnValue:
    """Queue a failed or kept mail for delivery again (``trivium mail retry``).

    From the list (its ``state`` filter in the form) back to the list, else
    back to the mail's page.
    """
    admin = _admin("site.mail")
    sess = db.session()
    found = _mail(public_id)
    back_to = request.form.get("state", "")
    if back_to in MAIL_FILTERS:
        back = redirect(url_for("admin.mail", state=back_to), code=303)
    else:
        back = redirect(url_for("admin.mail_message", public_id=found.public_id), code=303)
    to = found.to
    try:
        outbox.queue_again(sess, found, admin)
    except outbox.MailDeliveryOff:
        sess.rollback()
        flash(
            gettext(
                "SMTP delivery is off ([mail] url is empty), so mail cannot be sent; "
                "it is only kept here. Nothing was changed."
            ),
            "error",
        )
        return back
    except outbox.MailNotRetryable:
        state = found.state
        sess.rollback()
        flash(
            gettext(
                "Only a failed or kept mail can be sent again, and this one is not "
                "(state: %(state)s). Nothing was changed.",
                state=mail_state_label(state),
            ),
            "error",
        )
        return back
    sess.commit()
    flash(gettext("The mail to %(to)s is queued for delivery.", to=to), "success")
    return back


__all__ = ["bp"]
