"""Helpers for the teaching and operator page tests: a logged-in browser-like client."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from core.db import get_db
from core.models import User

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
SCRIPT = {"Accept": "application/json"}


class Browser:
    """A test client logged in as one user, sending forms like a browser does."""

    def __init__(self, app: Flask, user: User | None) -> None:
        self.app = app
        self.client: FlaskClient = app.test_client()
        self.user = user
        if user is not None:
            with get_db(app).session() as sess:
                version = sess.scalar(select(User.session_version).where(User.id == user.id))
            with self.client.session_transaction() as session:
                session["uid"] = user.public_id
                session["sv"] = version
        self._csrf: str | None = None

    def csrf(self) -> str:
        """The session's CSRF token."""
        if self._csrf is None:
            resp = self.client.get("/api/v1/auth/csrf")
            self._csrf = str(resp.get_json()["csrf_token"])
        return self._csrf

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        """GET a page."""
        return self.client.get(path, headers=BROWSER, **kwargs)

    def post(
        self,
        path: str,
        data: dict[str, Any] | list[tuple[str, str]] | None = None,
        *,
        csrf: bool = True,
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        """POST a form (with the CSRF token unless ``csrf`` is False)."""
        pairs: list[tuple[str, str]] = (
            list(data.items()) if isinstance(data, dict) else list(data or [])
        )
        if csrf:
            pairs.append(("csrf_token", self.csrf()))
        body = "&".join(f"{_quote(k)}={_quote(str(v))}" for k, v in pairs)
        return self.client.post(
            path,
            data=body,
            content_type="application/x-www-form-urlencoded",
            headers=headers or BROWSER,
        )


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def text(resp: TestResponse) -> str:
    """The response body as text."""
    return resp.get_data(as_text=True)


def field_value(page: str, name: str) -> str | None:
    """The ``value`` of the form input ``f-<name>`` in ``page`` (HTML-escaped as sent)."""
    match = re.search(rf'<input id="f-{re.escape(name)}"[^>]*value="([^"]*)"', page)
    return match.group(1) if match else None


def textarea_value(page: str, name: str) -> str | None:
    """The content of the form text area ``f-<name>`` in ``page``."""
    match = re.search(rf'<textarea id="f-{re.escape(name)}"[^>]*>(.*?)</textarea>', page, re.S)
    return match.group(1) if match else None
