"""Right of access: everything this instance stores about one person, as one JSON document.

A person downloads their own copy (``GET /api/v1/me/export``, the account
page's "Download my data"); an operator answers a request that came by letter
with ``trivium users export EMAIL`` (GDPR articles 15 and 20).  Each export is
audited as ``account.export``.  The document uses public ids only, never
internal integer keys, and holds no secret.

What core's tables contribute (``core/models.py``), table by table:

- ``users``: the profile: public id, e-mail address, display name, when the
  account was created and last logged in, whether it is active, a site
  administrator or allowed to create courses, whether it has a password and
  whether the second factor is on.  Left out: the password hash, the TOTP
  secret and its last used time step (secrets, or derived from them), and
  ``session_version`` (a counter that ends sessions, about no one).
- ``identities``: each way to log in: provider, issuer and subject.
- ``recovery_codes``: only how many unused codes are left; never the hashes.
- ``api_tokens``: name, created, last used, expiry and revocation time of every
  token, revoked ones included.  Left out: the token's hash and its first
  characters (``prefix``), which are part of the secret.
- ``invitations``: invitations to the person's address or used to register
  (id and dates), and those the person created as an administrator (id,
  dates, whether used), without the invitee's address (someone else's data).
  Never the code's hash.
- ``outbox_mail``: mail sent to the person's address: subject, date, delivery
  state.  Left out: the bodies, which hold password-reset links and
  invitation codes that still work, and the SMTP server's error texts (the
  operators' diagnostics, not about the person).
- ``courses``: the courses the person created (id, title, created).
- ``course_roles``: each staff role with its course's id and title.
- ``enrolments``: each enrolment with its course's id and title, status and dates.
- ``progress``: each row with its item's id, title and type, the course's id,
  status, score, the content type's state (``data``) and dates.
- ``events``: the person's learning events, as the xAPI statements stored,
  except what a plugin's rules still hide from the person (a quiz's
  per-question scores before its review opens): the ``withhold_from_export``
  hook says which statements to show in part, and a plugin that fails to say
  hides every statement's ``result``.
- ``audit_log``: entries where the person acted, or was acted on (target
  ``user:<id>``, or the person's id in the entry's ``user``, ``email`` or
  ``to``, or a mail to them).  The address the action came from is given only
  for the person's own actions; who else acted is told only as
  ``"other"`` or ``"system"``, and other people's ids and addresses in an
  entry are replaced by ``(someone else)``.

Left out altogether: ``modules`` and ``items`` (course content, named where a
row refers to it), ``jobs`` (the background queue: transient messages holding
internal ids, about mail and completions already listed), ``catalog_entries``
and ``catalog_state`` (courses, not people), and caches derived from the rows
above (the shared progress states, the read cache, login-throttle counters).
Rows a plugin owns are each plugin's to give, through the ``export_user_data``
hook, under ``plugins.<plugin name>``.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from datetime import datetime
from typing import Any

import orjson
from flask import Response
from flask import current_app
from sqlalchemy import func
from sqlalchemy import literal
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import progress_buffer
from core.auth.audit import audit
from core.auth.throttle import LoginThrottle
from core.cache import get_cache
from core.config import Settings
from core.db import plain_json
from core.db import utcnow
from core.errors import TooManyRequests
from core.models import ApiToken
from core.models import AuditLog
from core.models import Course
from core.models import CourseRole
from core.models import Enrolment
from core.models import Event
from core.models import Identity
from core.models import Invitation
from core.models import Item
from core.models import OutboxMail
from core.models import Progress
from core.models import RecoveryCode
from core.models import User
from core.plugins import PluginHost

log = logging.getLogger(__name__)

FORMAT = "trivium.personal-data"
FORMAT_VERSION = 1
"""Raised when a member changes meaning or goes; new members keep the version."""

HOOK = "export_user_data"
WITHHOLD = "withhold_from_export"
EXPORTS_PER_WINDOW = 5
"""Exports one account may make within ``[accounts] login_window_seconds``.

Each reads every row about the person (and the audit log and outbox, which
have no index by person), so a script cannot make an instance do it in a loop.
Counted by the login throttle's cache: per server process with the in-process
cache (so up to this many per worker), across the instance with Redis.
"""

SOMEONE_ELSE = "(someone else)"
#: Audit detail keys that name a person by public id or address.
_PERSON_KEYS = ("user", "email", "to")

PLUGIN_FAILED = {
    "failed": True,
    "detail": "this plugin could not export its data; the instance's operators "
    "find the error in its log",
}


class ExportThrottled(TooManyRequests):
    """Too many data exports of one account within the window."""

    title = "Too many exports"
    type_slug = "export-throttled"


# ------------------------------------------------------------------ the document


def _at(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export_user(sess: Session, user: User) -> dict[str, Any]:
    """Everything core and the plugins store about ``user``, as one JSON-ready document.

    Called in an application context; the plugins read with
    :func:`core.db.session`, so ``sess`` should be it.  Reads only; a plugin
    whose ``export_user_data`` fails is logged, its section marked failed and
    named in ``plugins_failed``, and the rest is exported.

    :param sess: the session to read with (the request's, or the CLI's).
    :param user: the person, an object of ``sess``.
    :return: plain JSON data (dicts, lists, strings, numbers, booleans, None).
    """
    settings: Settings = current_app.extensions["trivium.settings"]
    host: PluginHost = current_app.extensions["trivium.plugins"]
    progress_buffer.flush_before_reading()  # this process's waiting heartbeats too
    failed_early: list[str] = []  # plugins failing to say what events to withhold
    document: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generated_at": _at(utcnow()),
        "instance": {
            "name": settings.instance.name,
            "base_url": settings.instance.base_url,
        },
        "account": _account(sess, user),
        "identities": _identities(sess, user),
        "api_tokens": _tokens(sess, user),
        "invitations": _invitations(sess, user),
        "mail": _mail(sess, user),
        "courses_created": _courses_created(sess, user),
        "course_roles": _course_roles(sess, user),
        "enrolments": _enrolments(sess, user),
        "progress": _progress(sess, user),
        "learning_events": _events(sess, host, user, failed_early),
        "audit_log": _audit_entries(sess, user),
    }
    sections, failed = _plugin_sections(sess, host, user)
    document["plugins"] = sections
    document["plugins_failed"] = sorted({*failed_early, *failed})
    return document


def _account(sess: Session, user: User) -> dict[str, Any]:
    unused = sess.scalar(
        select(func.count(RecoveryCode.id)).where(
            RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
        )
    )
    return {
        "id": user.public_id,
        "email": user.email,
        "display_name": user.display_name,
        "created_at": _at(user.created_at),
        "last_login_at": _at(user.last_login_at),
        "active": user.is_active,
        "site_admin": user.is_admin,
        "can_create_courses": user.can_create_courses,
        "has_password": user.password_hash is not None,
        "second_factor": user.totp_enabled,
        "recovery_codes_unused": int(unused or 0),
    }


def _identities(sess: Session, user: User) -> list[dict[str, Any]]:
    rows = sess.execute(
        select(Identity.provider, Identity.issuer, Identity.subject, Identity.created_at)
        .where(Identity.user_id == user.id)
        .order_by(Identity.id)
    )
    return [{"provider": p, "issuer": i, "subject": s, "created_at": _at(c)} for p, i, s, c in rows]


def _tokens(sess: Session, user: User) -> list[dict[str, Any]]:
    rows = sess.execute(
        select(
            ApiToken.public_id,
            ApiToken.name,
            ApiToken.created_at,
            ApiToken.last_used_at,
            ApiToken.expires_at,
            ApiToken.revoked_at,
        )
        .where(ApiToken.user_id == user.id)
        .order_by(ApiToken.id)
    )
    return [
        {
            "id": pid,
            "name": name,
            "created_at": _at(created),
            "last_used_at": _at(used),
            "expires_at": _at(expires),
            "revoked_at": _at(revoked),
        }
        for pid, name, created, used, expires, revoked in rows
    ]


def _invitations(sess: Session, user: User) -> dict[str, list[dict[str, Any]]]:
    columns = (
        Invitation.public_id,
        Invitation.created_at,
        Invitation.expires_at,
        Invitation.used_at,
    )
    received = sess.execute(
        select(*columns)
        .where(
            or_(
                Invitation.used_by_id == user.id,
                func.lower(Invitation.email) == user.email.lower(),
            )
        )
        .order_by(Invitation.id)
    )
    created = sess.execute(
        select(*columns).where(Invitation.created_by_id == user.id).order_by(Invitation.id)
    )
    return {
        "received": [
            {"id": pid, "created_at": _at(c), "expires_at": _at(e), "used_at": _at(u)}
            for pid, c, e, u in received
        ],
        "created": [
            {"id": pid, "created_at": _at(c), "expires_at": _at(e), "used": u is not None}
            for pid, c, e, u in created
        ],
    }


def _mail_to(user: User) -> Any:
    return func.lower(OutboxMail.to) == user.email.lower()


def _mail(sess: Session, user: User) -> list[dict[str, Any]]:
    rows = sess.execute(
        select(
            OutboxMail.public_id,
            OutboxMail.subject,
            OutboxMail.created_at,
            OutboxMail.sent_at,
            OutboxMail.state,
        )
        .where(_mail_to(user))
        .order_by(OutboxMail.id)
    )
    return [
        {"id": pid, "subject": subject, "created_at": _at(c), "sent_at": _at(s), "state": state}
        for pid, subject, c, s, state in rows
    ]


def _courses_created(sess: Session, user: User) -> list[dict[str, Any]]:
    rows = sess.execute(
        select(Course.public_id, Course.title, Course.created_at)
        .where(Course.created_by_id == user.id)
        .order_by(Course.id)
    )
    return [{"id": pid, "title": title, "created_at": _at(c)} for pid, title, c in rows]


def _course_roles(sess: Session, user: User) -> list[dict[str, Any]]:
    rows = sess.execute(
        select(Course.public_id, Course.title, CourseRole.role, CourseRole.created_at)
        .join(Course, Course.id == CourseRole.course_id)
        .where(CourseRole.user_id == user.id)
        .order_by(CourseRole.id)
    )
    return [
        {"course": {"id": pid, "title": title}, "role": role, "created_at": _at(c)}
        for pid, title, role, c in rows
    ]


def _enrolments(sess: Session, user: User) -> list[dict[str, Any]]:
    rows = sess.execute(
        select(
            Enrolment.public_id,
            Course.public_id,
            Course.title,
            Enrolment.status,
            Enrolment.created_at,
            Enrolment.updated_at,
            Enrolment.completed_at,
        )
        .join(Course, Course.id == Enrolment.course_id)
        .where(Enrolment.user_id == user.id)
        .order_by(Enrolment.id)
    )
    return [
        {
            "id": pid,
            "course": {"id": course_id, "title": title},
            "status": status,
            "created_at": _at(created),
            "updated_at": _at(updated),
            "completed_at": _at(completed),
        }
        for pid, course_id, title, status, created, updated, completed in rows
    ]


def _progress(sess: Session, user: User) -> list[dict[str, Any]]:
    rows = sess.execute(
        select(
            Item.public_id,
            Item.title,
            Item.type,
            Course.public_id,
            Progress.status,
            Progress.score,
            Progress.data,
            Progress.updated_at,
            Progress.completed_at,
        )
        .join(Item, Item.id == Progress.item_id)
        .join(Course, Course.id == Progress.course_id)
        .where(Progress.user_id == user.id)
        .order_by(Progress.id)
    )
    return [
        {
            "item": {"id": item_id, "title": title, "type": type_},
            "course": course_id,
            "status": status,
            "score": score,
            "data": data,
            "updated_at": _at(updated),
            "completed_at": _at(completed),
        }
        for item_id, title, type_, course_id, status, score, data, updated, completed in rows
    ]


def _events(sess: Session, host: PluginHost, user: User, failed: list[str]) -> list[dict[str, Any]]:
    """The person's xAPI statements, as each plugin's ``withhold_from_export`` lets them show.

    A plugin that fails to say hides every statement's ``result`` (fail closed).
    """
    statements = list(
        sess.scalars(select(Event.statement).where(Event.user_id == user.id).order_by(Event.id))
    )
    kwargs = {"user": user, "statements": statements}
    for plugin, function, argnames in host.implementations(WITHHOLD):
        try:
            replacements = function(*[kwargs[arg] for arg in argnames])
            if replacements is None:
                continue
            if not isinstance(replacements, dict):
                raise TypeError(f"{WITHHOLD} returned {type(replacements).__name__}, not a dict")
        except Exception as exc:
            host.record_failure(plugin, WITHHOLD, exc)
            sess.rollback()  # reads only: a fresh transaction loses nothing
            failed.append(plugin)
            statements = [{k: v for k, v in s.items() if k != "result"} for s in statements]
            break
        statements = [replacements.get(s.get("id"), s) for s in statements]
        kwargs["statements"] = statements
    return statements


def _audit_entries(sess: Session, user: User) -> list[dict[str, Any]]:
    own = (user.public_id, user.email)
    mail_targets = select(literal("mail:") + OutboxMail.public_id).where(_mail_to(user))
    rows = sess.execute(
        select(AuditLog.at, AuditLog.actor_id, AuditLog.action, AuditLog.target, AuditLog.ip)
        .add_columns(AuditLog.detail)
        .where(
            or_(
                AuditLog.actor_id == user.id,
                AuditLog.target.in_((f"user:{user.public_id}", user.public_id)),
                AuditLog.target.in_(mail_targets.scalar_subquery()),
                *(AuditLog.detail[key].as_string().in_(own) for key in _PERSON_KEYS),
            )
        )
        .order_by(AuditLog.id)
    )
    out = []
    for at, actor_id, action, target, ip, detail in rows:
        mine = actor_id == user.id
        if target.startswith("user:") and target != f"user:{user.public_id}":
            target = f"user:{SOMEONE_ELSE}"
        shown = dict(detail) if isinstance(detail, dict) else {}
        for key in _PERSON_KEYS:
            if isinstance(shown.get(key), str) and shown[key] not in own:
                shown[key] = SOMEONE_ELSE
        out.append(
            {
                "at": _at(at),
                "action": action,
                "by": "you" if mine else "system" if actor_id is None else "other",
                "target": target,
                "detail": shown,
                "ip": ip if mine else None,
            }
        )
    return out


def _plugin_sections(
    sess: Session, host: PluginHost, user: User
) -> tuple[dict[str, Any], list[str]]:
    """Each plugin's ``export_user_data`` section by plugin name, and the plugins that failed.

    Like :meth:`core.plugins.PluginHost.call`, each implementation runs on its
    own and a failure is recorded and contained; here the failing plugin keeps
    its place in the document, marked failed.
    """
    sections: dict[str, Any] = {}
    failed: list[str] = []
    kwargs = {"user": user}
    for name, function, argnames in host.implementations(HOOK):
        try:
            result = function(*[kwargs[arg] for arg in argnames])
            if result is None:
                continue
            if not isinstance(result, dict):
                raise TypeError(f"{HOOK} returned {type(result).__name__}, not a dict")
            sections[name] = plain_json(result)
        except Exception as exc:
            host.record_failure(name, HOOK, exc)
            # a failed query may have left the transaction unusable (PostgreSQL);
            # the export only reads, so nothing is lost by starting a new one
            sess.rollback()
            sections[name] = dict(PLUGIN_FAILED)
            failed.append(name)
    return sections, failed


# ------------------------------------------------------------------ delivery


def to_json(document: dict[str, Any]) -> bytes:
    """The document as indented UTF-8 JSON text, for people to read as well as programs."""
    try:
        return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    except TypeError:  # an integer beyond 64 bits in someone's data
        return json.dumps(document, indent=2, ensure_ascii=False).encode()


def file_name(day: date | None = None) -> str:
    """The download's name: ``trivium-export-<date>.json``."""
    return f"trivium-export-{(day or utcnow().date()).isoformat()}.json"


def download(document: dict[str, Any]) -> Response:
    """The document as a file download that no cache keeps."""
    resp = Response(to_json(document), mimetype="application/json")
    resp.headers["Content-Disposition"] = f'attachment; filename="{file_name()}"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


def check_rate(user: User) -> None:
    """Count one export of ``user``; refuse it past :data:`EXPORTS_PER_WINDOW`.

    Counted in the cache (shared through Redis when scaled out), like logins.

    :raise ExportThrottled: with ``retry_after`` (the window, an upper bound).
    """
    settings: Settings = current_app.extensions["trivium.settings"]
    limiter = LoginThrottle(get_cache(), settings.accounts)
    if not limiter.allow_once("export", user.public_id, EXPORTS_PER_WINDOW):
        log.warning("export status=throttled user=%s", user.public_id)
        raise ExportThrottled(
            f"at most {EXPORTS_PER_WINDOW} exports in {limiter.window // 60} minutes; "
            "try again later",
            retry_after=limiter.window,
        )


def record_export(sess: Session, actor: User | None, user: User, via: str) -> None:
    """Audit an export of ``user``'s data as ``account.export`` (stored with the caller's commit).

    :param actor: who asked: the person themselves, or None for an operator's command.
    :param via: ``api``, ``web`` or ``cli``.
    """
    audit(sess, actor, "account.export", f"user:{user.public_id}", {"via": via})
