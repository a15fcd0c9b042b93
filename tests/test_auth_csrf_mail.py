"""CSRF protection, the mail hook and the accounts API's OpenAPI entries."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from core import hookimpl
from core.api import build_openapi
from core.auth.mail import send_mail
from core.db import session as db_session
from tests.auth_helpers import PASSWORD
from tests.auth_helpers import Api
from tests.auth_helpers import assert_problem
from tests.auth_helpers import outbox
from tests.conftest import Users
from tests.conftest import snapshot


@pytest.fixture
def api(client: FlaskClient) -> Api:
    """A CSRF-aware JSON client."""
    return Api(client)


# ------------------------------------------------------------------ CSRF


def test_csrf_token_endpoint(api: Api) -> None:
    first = api.csrf()
    assert first
    assert api.csrf()  # same session secret, freshly signed


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_unsafe_methods_need_the_token(app: Flask, api: Api, users: Users, method: str) -> None:
    users.create("ada@example.org", password=PASSWORD)
    api.login("ada@example.org")
    before = snapshot(app)
    resp = api.send(method, "/me/tokens", {"name": "x"}, csrf=False)
    assert_problem(resp, 400, "CSRF token missing or invalid")
    resp = api.send(method, "/me/tokens", {"name": "x"}, csrf=False, headers={"X-CSRFToken": "x"})
    assert_problem(resp, 400, "CSRF token missing or invalid")
    assert snapshot(app) == before


def test_a_token_from_another_session_is_refused(app: Flask, api: Api, users: Users) -> None:
    users.create("ada@example.org", password=PASSWORD)
    foreign = Api(app.test_client()).csrf()
    before = snapshot(app)
    resp = api.send(
        "POST",
        "/auth/login",
        {"email": "ada@example.org", "password": PASSWORD},
        csrf=False,
        headers={"X-CSRFToken": foreign},
    )
    assert_problem(resp, 400, "CSRF")
    assert snapshot(app) == before


def test_safe_methods_need_no_token(api: Api) -> None:
    assert api.get("/openapi.json").status_code == 200


def test_bearer_requests_skip_csrf_and_ignore_the_cookie(
    app: Flask, api: Api, users: Users
) -> None:
    users.create("ada@example.org", password=PASSWORD)
    eve = users.create("eve@example.org")
    api.login("ada@example.org")
    eve_headers = users.headers(eve)
    # Ada's browser session rides along, but the bearer token decides who acts.
    resp = api.send("POST", "/me/tokens", {"name": "from-eve"}, csrf=False, headers=eve_headers)
    assert resp.status_code == 201
    # the cookie is not even read: nothing of Ada's session comes back
    assert "Set-Cookie" not in resp.headers
    names = {t["name"] for t in api.get("/me/tokens").get_json()["items"]}
    assert "from-eve" not in names
    # A bogus bearer token is not rescued by the session cookie.
    bogus = {"Authorization": "Bearer trv_bogus"}
    resp = api.send("POST", "/me/tokens", {"name": "x"}, csrf=False, headers=bogus)
    assert_problem(resp, 401)
    assert_problem(api.get("/me/tokens", headers=bogus), 401)


def test_a_bearer_request_writing_the_session_keeps_the_browsers_login(
    client: FlaskClient, api: Api, users: Users
) -> None:
    users.create("ada@example.org", password=PASSWORD)
    eve = users.create("eve@example.org")
    api.login("ada@example.org")
    # the same browser calls with a token (an API console's "Authorize"); the
    # call puts a CSRF token in its session, which must not replace Ada's cookie
    resp = client.get("/api/v1/auth/csrf", headers=users.headers(eve))
    assert resp.status_code == 200
    assert "Set-Cookie" not in resp.headers
    assert api.logged_in()


# ------------------------------------------------------------------ mail


def test_default_sender_writes_the_outbox(app: Flask) -> None:
    with app.test_request_context():
        assert send_mail("ada@example.org", "Hello", "Body text") is True
        db_session().commit()
    mails = outbox(app)
    assert [(m.to, m.subject, m.body) for m in mails] == [("ada@example.org", "Hello", "Body text")]


def test_hook_send_mail(app: Flask) -> None:
    sent: list[dict[str, Any]] = []

    class Smtp:
        @hookimpl
        def send_mail(self, to: str, subject: str, body: str) -> bool:
            sent.append({"to": to, "subject": subject})
            return True

    host = app.extensions["trivium.plugins"]
    host.register(Smtp(), "test-smtp")
    try:
        with app.test_request_context():
            assert send_mail("ada@example.org", "Hi", "x") is True
            db_session().commit()
    finally:
        host.unregister("test-smtp")
    assert sent == [{"to": "ada@example.org", "subject": "Hi"}]
    assert outbox(app) == []


def test_a_failing_mail_plugin_falls_back_to_the_outbox(app: Flask) -> None:
    class Broken:
        @hookimpl
        def send_mail(self, to: str) -> bool:
            raise ConnectionError("smtp down")

    host = app.extensions["trivium.plugins"]
    host.register(Broken(), "test-broken-mail")
    try:
        with app.test_request_context():
            assert send_mail("ada@example.org", "Hi", "x") is True
            db_session().commit()
    finally:
        host.unregister("test-broken-mail")
    assert [m.to for m in outbox(app)] == ["ada@example.org"]
    assert any(f.plugin == "test-broken-mail" for f in host.failures)


def test_undelivered_mail_is_reported(app: Flask) -> None:
    host = app.extensions["trivium.plugins"]
    default = host.pm.unregister(name="core.mail")
    try:
        with app.test_request_context():
            assert send_mail("ada@example.org", "Hi", "x") is False
    finally:
        host.pm.register(default, name="core.mail")


# ------------------------------------------------------------------ OpenAPI


def test_every_accounts_route_is_documented(app: Flask) -> None:
    with app.test_request_context():
        doc = build_openapi(app)
    paths = doc["paths"]
    expected = {
        "/auth/csrf": {"get"},
        "/auth/register": {"post"},
        "/auth/login": {"post"},
        "/auth/logout": {"post"},
        "/auth/logout-all": {"post"},
        "/auth/password-reset": {"post"},
        "/auth/password-reset/confirm": {"post"},
        "/me/password": {"post"},
        "/me/totp/setup": {"post"},
        "/me/totp/confirm": {"post"},
        "/me/totp/disable": {"post"},
        "/me/recovery-codes": {"post"},
        "/me/tokens": {"get", "post"},
        "/me/tokens/{public_id}": {"delete"},
        "/admin/invitations": {"get", "post"},
    }
    for path, methods in expected.items():
        assert set(paths[path]) == methods, path
        for method in methods:
            assert "x-undocumented" not in paths[path][method], (path, method)
    assert "requestBody" in paths["/auth/login"]["post"]
    assert "security" not in paths["/auth/login"]["post"]
    assert "security" in paths["/me/tokens"]["get"]
