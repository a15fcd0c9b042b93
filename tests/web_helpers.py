"""A form-filling client for the HTML pages (Flask test client, no JavaScript)."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
_FIELD_ERROR = re.compile(r'<p class="field-error" id="([^"]+)-error">(.*?)</p>', re.S)


class Pages:
    """Browse like a browser without JavaScript: GET pages, POST their forms with the CSRF token."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        """GET a page as a browser asks for it."""
        return self.client.get(path, headers=BROWSER, **kwargs)

    def csrf(self, path: str = "/") -> str:
        """The session's CSRF token as the layout prints it for forms and htmx."""
        found = _CSRF.search(self.get(path).get_data(as_text=True))
        assert found, f"no csrf_token in {path}"
        return unescape(found.group(1))

    def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: str | None = None
    ) -> TestResponse:
        """POST a form with a valid CSRF token (or the given one)."""
        form = dict(data or {})
        form["csrf_token"] = self.csrf() if csrf is None else csrf
        return self.client.post(path, data=form, headers=BROWSER)


def field_errors(resp: TestResponse) -> dict[str, str]:
    """Inline errors on a page by input id (``f-email`` → message)."""
    page = resp.get_data(as_text=True)
    return {
        m.group(1): unescape(re.sub(r"\s+", " ", m.group(2)).strip())
        for m in _FIELD_ERROR.finditer(page)
    }


def input_value(resp: TestResponse, input_id: str) -> str | None:
    """The ``value`` printed for an input (None: no value attribute)."""
    page = resp.get_data(as_text=True)
    tag = re.search(rf'<input id="{re.escape(input_id)}"[^>]*>', page)
    assert tag, f"no input #{input_id}"
    value = re.search(r'value="([^"]*)"', tag.group(0))
    return unescape(value.group(1)) if value else None
