"""The audit log: who did which security or administrative action, from where."""

from __future__ import annotations

import logging
from typing import Any

from flask import has_request_context
from flask import request
from sqlalchemy.orm import Session

from core.models import AuditLog
from core.models import User

log = logging.getLogger(__name__)


def audit(
    sess: Session,
    actor: User | None,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
) -> AuditLog:
    """Add an audit entry to ``sess``; it is stored with the caller's commit.

    :param sess: the session whose transaction records the action itself, so
        the entry exists exactly when the action does.
    :param actor: who acted (None for anonymous or system actions).
    :param action: a dotted name, e.g. ``"auth.login"``.
    :param target: what was acted on, e.g. ``"user:<public_id>"``.
    :param detail: extra JSON facts; never secrets.
    :return: the pending entry.
    """
    ip = (request.remote_addr or "") if has_request_context() else ""
    entry = AuditLog(
        actor_id=actor.id if actor is not None else None,
        action=action,
        target=target[:200],
        ip=ip[:64],
        detail=detail or {},
    )
    sess.add(entry)
    log.info(
        "audit action=%s actor=%s target=%s ip=%s",
        action,
        actor.public_id if actor is not None else "-",
        target or "-",
        ip or "-",
    )
    return entry
