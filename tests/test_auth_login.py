"""Login, logout, log-out-everywhere, throttling and password rehashing."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher
from argon2 import Type
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.auth.passwords import PasswordService
from core.db import get_db
from core.models import User
from tests.auth_helpers import PASSWORD
from tests.auth_helpers import Api
from tests.auth_helpers import assert_problem
from tests.auth_helpers import audit_actions
from tests.conftest import Users
from tests.conftest import snapshot


@pytest.fixture
def api(client: FlaskClient) -> Api:
    """A CSRF-aware JSON client."""
    return Api(client)


def _stored(app: Flask, user: User) -> User:
    with get_db(app).session() as sess:
        row = sess.get_one(User, user.id)
        sess.expunge(row)
    return row


def test_login_starts_a_fresh_session_and_audits(app: Flask, api: Api, users: Users) -> None:
    user = users.create("ada@example.org", password=PASSWORD)
    api.csrf()
    with api.client.session_transaction() as flask_session:
        flask_session["leftover"] = "from before login"
    resp = api.login(" ADA@example.org ")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["user"]["id"] == user.public_id
    assert body["csrf_token"]
    with api.client.session_transaction() as flask_session:
        assert "leftover" not in flask_session
    assert api.logged_in()
    assert _stored(app, user).last_login_at is not None
    assert audit_actions(app) == ["auth.login"]


def test_old_csrf_token_dies_at_login(api: Api, users: Users) -> None:
    users.create("ada@example.org", password=PASSWORD)
    old = api.csrf()
    new = api.login("ada@example.org").get_json()["csrf_token"]
    resp = api.send("POST", "/me/tokens", {"name": "x"}, csrf=False, headers={"X-CSRFToken": old})
    assert_problem(resp, 400, "CSRF")
    resp = api.send("POST", "/me/tokens", {"name": "x"}, csrf=False, headers={"X-CSRFToken": new})
    assert resp.status_code == 201


def test_unknown_email_and_wrong_password_look_the_same(
    app: Flask, api: Api, users: Users, monkeypatch: pytest.MonkeyPatch
) -> None:
    users.create("ada@example.org", password=PASSWORD)
    burned: list[str] = []
    original = PasswordService.burn

    def spy(self: PasswordService, password: str) -> None:
        burned.append(password)
        original(self, password)

    monkeypatch.setattr(PasswordService, "burn", spy)
    before = snapshot(app)
    wrong = assert_problem(api.login("ada@example.org", "wrong password!!"), 401)
    unknown = assert_problem(api.login("nobody@example.org", PASSWORD), 401)
    assert wrong == unknown
    assert wrong["detail"] == "invalid email or password"
    assert burned == [PASSWORD]  # the unknown address still cost one hash verification
    assert snapshot(app) == before
    assert not api.logged_in()


def test_inactive_and_passwordless_accounts_cannot_log_in(
    app: Flask, api: Api, users: Users
) -> None:
    user = users.create("ada@example.org", password=PASSWORD)
    users.create("sso@example.org")
    with get_db(app).session() as sess:
        sess.get_one(User, user.id).is_active = False
    before = snapshot(app)
    assert_problem(api.login("ada@example.org"), 401, "invalid email or password")
    assert_problem(api.login("sso@example.org", ""), 401, "invalid email or password")
    assert snapshot(app) == before


@pytest.mark.parametrize(
    "body",
    [
        {"email": "ada@example.org"},
        {"email": "ada@example.org", "password": None},
        {"email": ["ada@example.org"], "password": PASSWORD},
        {"email": "ada@example.org", "password": PASSWORD, "remember": True},
        {"email": "ada@example.org", "password": "x" * 1025},
        "ada@example.org",
    ],
)
def test_malformed_logins_are_422(app: Flask, api: Api, users: Users, body: Any) -> None:
    users.create("ada@example.org", password=PASSWORD)
    before = snapshot(app)
    assert_problem(api.post("/auth/login", body), 422)
    assert snapshot(app) == before


def test_login_without_csrf_is_refused(app: Flask, api: Api, users: Users) -> None:
    users.create("ada@example.org", password=PASSWORD)
    before = snapshot(app)
    resp = api.send(
        "POST", "/auth/login", {"email": "ada@example.org", "password": PASSWORD}, csrf=False
    )
    assert_problem(resp, 400, "CSRF token missing or invalid")
    assert snapshot(app) == before
    assert not api.logged_in()


def test_logout(api: Api, users: Users) -> None:
    users.create("ada@example.org", password=PASSWORD)
    api.login("ada@example.org")
    assert api.logged_in()
    assert api.post("/auth/logout").status_code == 204
    assert not api.logged_in()
    assert api.post("/auth/logout").status_code == 204


def test_logout_all_ends_every_session(app: Flask, users: Users) -> None:
    user = users.create("ada@example.org", password=PASSWORD)
    laptop, phone = Api(app.test_client()), Api(app.test_client())
    laptop.login("ada@example.org")
    phone.login("ada@example.org")
    assert laptop.logged_in() and phone.logged_in()
    assert phone.post("/auth/logout-all").status_code == 204
    assert not laptop.logged_in()
    assert not phone.logged_in()
    assert _stored(app, user).session_version == 2
    assert "auth.logout_all" in audit_actions(app)
    assert laptop.login("ada@example.org").status_code == 200
    assert laptop.logged_in()


def test_logout_all_needs_a_login(app: Flask, api: Api) -> None:
    before = snapshot(app)
    assert_problem(api.post("/auth/logout-all"), 401)
    assert snapshot(app) == before


def test_login_rehashes_when_parameters_changed(app: Flask, api: Api, users: Users) -> None:
    user = users.create("ada@example.org")
    old = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1, type=Type.ID).hash(PASSWORD)
    with get_db(app).session() as sess:
        sess.get_one(User, user.id).password_hash = old
    assert api.login("ada@example.org").status_code == 200
    new = _stored(app, user).password_hash
    assert new is not None and new != old
    assert "t=1" in new and "m=8" in new  # the test suite's CHEAPEST profile
    assert Api(app.test_client()).login("ada@example.org").status_code == 200


def test_current_hash_is_not_rewritten(app: Flask, api: Api, users: Users) -> None:
    user = users.create("ada@example.org", password=PASSWORD)
    before = _stored(app, user).password_hash
    assert api.login("ada@example.org").status_code == 200
    assert _stored(app, user).password_hash == before


# ------------------------------------------------------------------ throttling


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    """Low limits so throttling is reached quickly."""
    config["accounts"].update(login_max_attempts_per_account=3, login_max_attempts_per_ip=5)
    return config


def test_account_is_locked_after_failures(app: Flask, api: Api, users: Users) -> None:
    users.create("ada@example.org", password=PASSWORD)
    before = snapshot(app)
    for _ in range(3):
        assert_problem(api.login("ada@example.org", "wrong password!!"), 401)
    resp = api.login("ada@example.org")  # the right password, but locked
    body = assert_problem(resp, 429, "too many failed attempts")
    assert 0 < body["retry_after"] <= 900
    assert int(resp.headers["Retry-After"]) == body["retry_after"]
    assert snapshot(app) == before
    assert not api.logged_in()


def test_success_clears_the_account_counter(api: Api, users: Users) -> None:
    users.create("ada@example.org", password=PASSWORD)
    for _ in range(2):
        assert_problem(api.login("ada@example.org", "wrong password!!"), 401)
    assert api.login("ada@example.org").status_code == 200
    for _ in range(2):
        assert_problem(api.login("ada@example.org", "wrong password!!"), 401)
    assert api.login("ada@example.org").status_code == 200


def test_ip_is_locked_across_accounts(app: Flask, api: Api, users: Users) -> None:
    users.create("ada@example.org", password=PASSWORD)
    for n in range(5):
        assert_problem(api.login(f"guess{n}@example.org", "wrong password!!"), 401)
    assert_problem(api.login("ada@example.org"), 429)
    other_ip = Api(app.test_client())
    resp = other_ip.send(
        "POST",
        "/auth/login",
        {"email": "ada@example.org", "password": PASSWORD},
        environ_base={"REMOTE_ADDR": "10.9.8.7"},
    )
    assert resp.status_code == 200


def test_unknown_accounts_are_throttled_too(api: Api) -> None:
    for _ in range(3):
        assert_problem(api.login("nobody@example.org", "whatever it is"), 401)
    assert_problem(api.login("nobody@example.org", "whatever it is"), 429)


def test_rehash_survives_unparsable_stored_hash(app: Flask, api: Api, users: Users) -> None:
    user = users.create("ada@example.org")
    with get_db(app).session() as sess:
        sess.get_one(User, user.id).password_hash = "md5$legacy$abc"
    before = snapshot(app)
    assert_problem(api.login("ada@example.org", "md5$legacy$abc"), 401)
    assert snapshot(app) == before
    with get_db(app).session() as sess:
        assert sess.scalar(select(User.password_hash)) == "md5$legacy$abc"
