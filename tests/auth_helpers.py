"""Helpers for the accounts tests: a CSRF-aware JSON client, TOTP codes, stored rows."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from core.auth import totp as totp_module
from core.db import get_db
from core.models import AuditLog
from core.models import OutboxMail

PASSWORD = "correct horse battery staple"
OTHER_PASSWORD = "tr0ub4dor & 3 more words"


class Api:
    """A browser-like API client: keeps cookies and sends the CSRF header."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def csrf(self) -> str:
        """Fetch the session's CSRF token."""
        resp = self.client.get("/api/v1/auth/csrf")
        assert resp.status_code == 200
        token: str = resp.get_json()["csrf_token"]
        return token

    def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        csrf: bool = True,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> TestResponse:
        """Send ``body`` as JSON (with a fresh CSRF token unless ``csrf`` is False)."""
        all_headers = dict(headers or {})
        if csrf:
            all_headers["X-CSRFToken"] = self.csrf()
        if body is not None:
            kwargs["json"] = body
        return self.client.open("/api/v1" + path, method=method, headers=all_headers, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> TestResponse:
        """POST JSON."""
        return self.send("POST", path, body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        """GET (no CSRF needed)."""
        return self.client.get("/api/v1" + path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        """DELETE."""
        return self.send("DELETE", path, **kwargs)

    def register(self, email: str, password: str = PASSWORD, **extra: Any) -> TestResponse:
        """Register an account (logs this client in)."""
        body = {"email": email, "display_name": "Ada", "password": password, **extra}
        return self.post("/auth/register", body)

    def login(self, email: str, password: str = PASSWORD, **extra: Any) -> TestResponse:
        """Log in."""
        return self.post("/auth/login", {"email": email, "password": password, **extra})

    def logged_in(self) -> bool:
        """Whether this client's session is authenticated."""
        status = self.get("/me/tokens").status_code
        assert status in {200, 401}
        return status == 200


def assert_problem(resp: TestResponse, status: int, detail_part: str = "") -> dict[str, Any]:
    """Assert a problem+json response with ``status`` whose detail contains ``detail_part``."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    body: dict[str, Any] = resp.get_json()
    assert body["status"] == status
    assert detail_part.lower() in body["detail"].lower(), body
    assert "Traceback" not in resp.get_data(as_text=True)
    return body


def outbox(app: Flask) -> list[OutboxMail]:
    """Every mail written to the outbox, oldest first."""
    with get_db(app).session() as sess:
        rows = list(sess.scalars(select(OutboxMail).order_by(OutboxMail.id)))
        sess.expunge_all()
    return rows


def audit_actions(app: Flask) -> list[str]:
    """The audit log's actions, oldest first."""
    with get_db(app).session() as sess:
        return list(sess.scalars(select(AuditLog.action).order_by(AuditLog.id)))


class Clock:
    """A settable clock for the TOTP module (codes depend on the time step)."""

    def __init__(self) -> None:
        # Start in the middle of a step so a test never straddles a boundary.
        self.now = (int(time.time()) // 30) * 30 + 15.0

    def advance(self, steps: int = 1) -> None:
        """Move on ``steps`` TOTP time steps."""
        self.now += 30 * steps

    def code(self, secret: str, offset_steps: int = 0) -> str:
        """The TOTP code of ``offset_steps`` steps from now."""
        return pyotp.TOTP(secret).at(self.now + 30 * offset_steps)


def freeze_totp_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Make the TOTP module see a :class:`Clock` instead of the real time."""
    fake = Clock()
    monkeypatch.setattr(totp_module, "time", SimpleNamespace(time=lambda: fake.now))
    return fake
