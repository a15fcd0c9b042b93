"""Password hashing and policy, password change and password reset."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace
from typing import Any

import itsdangerous.timed
import pytest
from argon2.profiles import CHEAPEST
from argon2.profiles import RFC_9106_LOW_MEMORY
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer

from core.auth.passwords import PasswordRejected
from core.auth.passwords import check_password_policy
from core.auth.passwords import make_password_service
from core.config import AccountsSection
from core.db import get_db
from core.models import User
from tests.auth_helpers import OTHER_PASSWORD
from tests.auth_helpers import PASSWORD
from tests.auth_helpers import Api
from tests.auth_helpers import assert_problem
from tests.auth_helpers import audit_actions
from tests.auth_helpers import outbox
from tests.conftest import Users
from tests.conftest import snapshot

EMAIL = "ada@example.org"


@pytest.fixture
def api(client: FlaskClient) -> Api:
    """A CSRF-aware JSON client."""
    return Api(client)


def _stored(app: Flask, user: User) -> User:
    with get_db(app).session() as sess:
        row = sess.get_one(User, user.id)
        sess.expunge(row)
    return row


# ------------------------------------------------------------------ unit


def test_profiles_and_round_trip() -> None:
    cheap = make_password_service(AccountsSection(hash_profile="cheapest"))
    real = make_password_service(AccountsSection())
    assert cheap.hasher.time_cost == CHEAPEST.time_cost
    assert real.hasher.memory_cost == RFC_9106_LOW_MEMORY.memory_cost
    stored = cheap.hash(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert cheap.verify(stored, PASSWORD)
    assert not cheap.verify(stored, PASSWORD + "x")
    assert not cheap.verify(None, PASSWORD)
    assert not cheap.verify("not a hash", PASSWORD)
    assert not cheap.needs_rehash(stored)
    assert real.needs_rehash(stored)
    assert cheap.needs_rehash("not a hash")


@pytest.mark.parametrize(
    ("password", "email", "message"),
    [
        ("short", "a@example.org", "at least 10"),
        ("x" * 1025, "a@example.org", "at most 1024"),
        ("ada@example.org", "ada@example.org", "e-mail"),
        ("Lovelace-1815!", "lovelace@example.org", "e-mail"),
        ("Qwertyuiop", "a@example.org", "common"),
        ("1234567890", "a@example.org", "common"),
        ("aaaaaaaaaaaa", "a@example.org", "repeated"),
    ],
)
def test_policy_rules(password: str, email: str, message: str) -> None:
    with pytest.raises(PasswordRejected, match=re.escape(message)):
        check_password_policy(password, email, 10)


@pytest.mark.parametrize(
    "password", [PASSWORD, "xy" * 512, "Ada-has-a-long-passphrase", "ümlaut pässwörd"]
)
def test_policy_accepts(password: str) -> None:
    # A two-letter local part ("al") is too short to be searched for.
    check_password_policy(password, "al@example.org", 10)


# ------------------------------------------------------------------ change


def test_change_password_keeps_this_session_and_ends_others(app: Flask, users: Users) -> None:
    user = users.create(EMAIL, password=PASSWORD)
    here, elsewhere = Api(app.test_client()), Api(app.test_client())
    here.login(EMAIL)
    elsewhere.login(EMAIL)
    resp = here.post("/me/password", {"current_password": PASSWORD, "new_password": OTHER_PASSWORD})
    assert resp.status_code == 200
    assert resp.get_json()["csrf_token"]
    assert here.logged_in()
    assert not elsewhere.logged_in()
    assert _stored(app, user).session_version == 2
    assert "auth.password_change" in audit_actions(app)
    assert_problem(Api(app.test_client()).login(EMAIL), 401)
    assert Api(app.test_client()).login(EMAIL, OTHER_PASSWORD).status_code == 200


def test_change_password_with_a_token_sets_no_cookie(app: Flask, users: Users) -> None:
    user = users.create(EMAIL, password=PASSWORD)
    client = app.test_client()
    resp = client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": OTHER_PASSWORD},
        headers=users.headers(user),
    )
    assert resp.status_code == 200
    assert resp.get_json()["csrf_token"] is None
    assert "Set-Cookie" not in resp.headers


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (
            {"current_password": "wrong password!!", "new_password": OTHER_PASSWORD},
            403,
            "not correct",
        ),
        ({"current_password": PASSWORD, "new_password": PASSWORD}, 422, "differ"),
        ({"current_password": PASSWORD, "new_password": "short"}, 422, "at least"),
        ({"current_password": PASSWORD, "new_password": "password123"}, 422, "common"),
        ({"current_password": PASSWORD, "new_password": "ada-ada-ada-ada"}, 422, "e-mail"),
        ({"current_password": PASSWORD}, 422, ""),
        ({"current_password": PASSWORD, "new_password": OTHER_PASSWORD, "x": 1}, 422, ""),
    ],
)
def test_change_password_failures_change_nothing(
    app: Flask, api: Api, users: Users, body: dict[str, Any], status: int, detail: str
) -> None:
    users.create(EMAIL, password=PASSWORD)
    api.login(EMAIL)
    before = snapshot(app)
    assert_problem(api.post("/me/password", body), status, detail)
    assert snapshot(app) == before
    assert api.logged_in()


def test_change_password_needs_a_login(app: Flask, api: Api) -> None:
    before = snapshot(app)
    body = {"current_password": PASSWORD, "new_password": OTHER_PASSWORD}
    assert_problem(api.post("/me/password", body), 401)
    assert snapshot(app) == before


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    """Low limits so throttling is reached quickly."""
    config["accounts"].update(login_max_attempts_per_account=3, reset_token_max_age=60)
    return config


def test_wrong_current_passwords_are_throttled(app: Flask, api: Api, users: Users) -> None:
    users.create(EMAIL, password=PASSWORD)
    api.login(EMAIL)
    body = {"current_password": "wrong password!!", "new_password": OTHER_PASSWORD}
    for _ in range(3):
        assert_problem(api.post("/me/password", body), 403)
    body["current_password"] = PASSWORD
    assert_problem(api.post("/me/password", body), 429)


# ------------------------------------------------------------------ reset


def _reset_token(app: Flask) -> str:
    mails = outbox(app)
    assert mails, "no reset mail"
    match = re.search(r"token=(\S+)", mails[-1].body)
    assert match is not None
    return match.group(1)


def test_reset_round_trip(app: Flask, api: Api, users: Users) -> None:
    user = users.create(EMAIL, password=PASSWORD)
    logged_in = Api(app.test_client())
    logged_in.login(EMAIL)
    resp = api.post("/auth/password-reset", {"email": " Ada@Example.org"})
    assert resp.status_code == 202
    mail = outbox(app)[0]
    assert mail.to == EMAIL and "reset" in mail.subject.lower()
    token = _reset_token(app)

    resp = api.post(
        "/auth/password-reset/confirm", {"token": token, "new_password": OTHER_PASSWORD}
    )
    assert resp.status_code == 200
    assert not logged_in.logged_in()  # every session ended
    assert _stored(app, user).session_version == 2
    assert_problem(Api(app.test_client()).login(EMAIL), 401)
    assert Api(app.test_client()).login(EMAIL, OTHER_PASSWORD).status_code == 200
    actions = audit_actions(app)
    assert "auth.password_reset_requested" in actions and "auth.password_reset" in actions

    # Used: the password changed, so the same token is dead.
    before = snapshot(app)
    resp = api.post("/auth/password-reset/confirm", {"token": token, "new_password": PASSWORD})
    assert_problem(resp, 400, "already used")
    assert snapshot(app) == before


def test_reset_request_does_not_reveal_accounts(app: Flask, api: Api, users: Users) -> None:
    users.create(EMAIL, password=PASSWORD)
    before = snapshot(app)
    unknown = api.post("/auth/password-reset", {"email": "nobody@example.org"})
    assert unknown.status_code == 202
    assert snapshot(app) == before
    known = api.post("/auth/password-reset", {"email": EMAIL})
    assert known.status_code == 202
    assert known.get_json() == unknown.get_json()
    assert len(outbox(app)) == 1


def test_reset_mail_is_rate_limited_silently(app: Flask, api: Api, users: Users) -> None:
    users.create(EMAIL, password=PASSWORD)
    for _ in range(5):
        assert api.post("/auth/password-reset", {"email": EMAIL}).status_code == 202
    assert len(outbox(app)) == 3  # login_max_attempts_per_account in this module


def test_a_password_change_kills_older_reset_tokens(app: Flask, api: Api, users: Users) -> None:
    users.create(EMAIL, password=PASSWORD)
    api.post("/auth/password-reset", {"email": EMAIL})
    token = _reset_token(app)
    api.login(EMAIL)
    api.post("/me/password", {"current_password": PASSWORD, "new_password": OTHER_PASSWORD})
    before = snapshot(app)
    resp = api.post("/auth/password-reset/confirm", {"token": token, "new_password": PASSWORD})
    assert_problem(resp, 400, "already used or the password has changed")
    assert snapshot(app) == before


def test_expired_forged_and_malformed_tokens(
    app: Flask, api: Api, users: Users, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = users.create(EMAIL, password=PASSWORD)
    stored_hash = _stored(app, user).password_hash
    api.post("/auth/password-reset", {"email": EMAIL})
    token = _reset_token(app)
    before = snapshot(app)

    def confirm(body: Any) -> Any:
        return api.post("/auth/password-reset/confirm", body)

    good = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="password-reset")
    data = good.loads(token)
    forged = URLSafeTimedSerializer("another key", salt="password-reset").dumps(data)
    other_salt = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="other").dumps(data)
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    wrong_shape = good.dumps(["not", "a", "dict"])
    unknown_user = good.dumps({"u": "0" * 32, "f": data["f"]})
    assert_problem(confirm({"token": forged, "new_password": OTHER_PASSWORD}), 400, "not valid")
    assert_problem(confirm({"token": other_salt, "new_password": OTHER_PASSWORD}), 400, "not valid")
    assert_problem(confirm({"token": tampered, "new_password": OTHER_PASSWORD}), 400, "not valid")
    assert_problem(confirm({"token": "garbage", "new_password": OTHER_PASSWORD}), 400, "not valid")
    assert_problem(
        confirm({"token": wrong_shape, "new_password": OTHER_PASSWORD}), 400, "not valid"
    )
    assert_problem(confirm({"token": unknown_user, "new_password": OTHER_PASSWORD}), 400, "used")
    assert_problem(confirm({"token": token, "new_password": "short"}), 422, "at least")
    assert_problem(confirm({"token": token}), 422)
    assert_problem(confirm({"token": "", "new_password": OTHER_PASSWORD}), 422)
    assert snapshot(app) == before

    # A genuine token issued two minutes ago (the max age here is 60 seconds).
    monkeypatch.setattr(itsdangerous.timed, "time", SimpleNamespace(time=lambda: time.time() - 120))
    old = good.dumps(data)
    monkeypatch.undo()
    assert_problem(confirm({"token": old, "new_password": OTHER_PASSWORD}), 400, "expired")
    assert snapshot(app) == before
    assert _stored(app, user).password_hash == stored_hash
