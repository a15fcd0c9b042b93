"""Operator API: loaded plugins with their failures, and the audit log.

Both need the ``site.plugins`` / ``site.audit`` permission: site admins, unless
a plugin's ``permission_allowed`` says otherwise.
"""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from typing import Any

from flask import jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel
from pydantic import Field
from sqlalchemy import select

from core import db
from core import rbac
from core.api import bp
from core.api import json_response
from core.api import operation
from core.api import page
from core.api import parse_query
from core.api.courses import PageQuery
from core.api.courses import cursor_key
from core.auth import require_user
from core.courses import plugin_host
from core.models import AuditLog
from core.models import User

TAGS = ("admin",)

#: How many recent plugin failures ``/plugins`` shows.
RECENT_FAILURES = 50


class PluginOut(BaseModel):
    """A loaded plugin."""

    name: str
    version: str | None
    hooks: list[str]
    builtin: bool
    failures: int = Field(description="failed hook calls since start-up (recent ones kept)")


class PluginFailureOut(BaseModel):
    """One failed hook call."""

    plugin: str
    hook: str
    error: str
    at: datetime


class PluginList(BaseModel):
    """Loaded plugins and the most recent failures, newest first."""

    plugins: list[PluginOut]
    failures: list[PluginFailureOut]


class AuditQuery(PageQuery):
    """Filter the audit log by action (exact, e.g. ``course.publish``)."""

    action: str | None = Field(default=None, max_length=100)


class AuditEntry(BaseModel):
    """One audited action."""

    at: datetime
    actor_id: str | None
    action: str
    target: str
    ip: str
    detail: dict[str, Any]


class AuditPage(BaseModel):
    """A page of the audit log, newest first."""

    items: list[AuditEntry]
    next_cursor: str | None


@bp.get("/plugins")
@operation(
    "Loaded plugins and recent plugin failures (site admins)", tags=TAGS, response=PluginList
)
def plugins() -> ResponseReturnValue:
    """List plugins with their hooks, versions and failures."""
    rbac.require(require_user(), "site.plugins")
    host = plugin_host()
    out = PluginList(
        plugins=[
            PluginOut(
                name=p.name,
                version=p.version,
                hooks=p.hooks,
                builtin=p.builtin,
                failures=p.failures,
            )
            for p in host.info()
        ],
        failures=[
            PluginFailureOut(
                plugin=f.plugin,
                hook=f.hook,
                error=f.error,
                at=datetime.fromtimestamp(f.at, UTC),
            )
            for f in reversed(host.failures[-RECENT_FAILURES:])
        ],
    )
    return json_response(out)


@bp.get("/admin/audit")
@operation(
    "The audit log (site admins), newest first",
    tags=TAGS,
    query=AuditQuery,
    response=AuditPage,
    errors=(422,),
)
def audit_log() -> ResponseReturnValue:
    """Page through audited actions."""
    rbac.require(require_user(), "site.audit")
    query = parse_query(AuditQuery)
    before = cursor_key(query)
    stmt = select(AuditLog, User.public_id).outerjoin(User, User.id == AuditLog.actor_id)
    if query.action:
        stmt = stmt.where(AuditLog.action == query.action)
    if before is not None:
        stmt = stmt.where(AuditLog.id < before)
    rows = db.session().execute(stmt.order_by(AuditLog.id.desc()).limit(query.limit + 1)).all()
    next_key = rows[query.limit - 1][0].id if len(rows) > query.limit else None
    items = [
        AuditEntry.model_validate(
            {
                "at": entry.at,
                "actor_id": actor,
                "action": entry.action,
                "target": entry.target,
                "ip": entry.ip,
                "detail": entry.detail or {},
            }
        ).model_dump(mode="json")
        for entry, actor in rows[: query.limit]
    ]
    return jsonify(page(items, next_key))
