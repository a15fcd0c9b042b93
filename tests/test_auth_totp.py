"""TOTP second factor: set-up, login with codes, replay, recovery codes, turning it off."""

from __future__ import annotations

from urllib.parse import parse_qs
from urllib.parse import urlparse

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.auth import totp
from core.db import get_db
from core.models import RecoveryCode
from core.models import User
from tests.auth_helpers import PASSWORD
from tests.auth_helpers import Api
from tests.auth_helpers import Clock
from tests.auth_helpers import assert_problem
from tests.auth_helpers import audit_actions
from tests.auth_helpers import freeze_totp_clock
from tests.conftest import Users
from tests.conftest import snapshot

EMAIL = "ada@example.org"


@pytest.fixture
def api(client: FlaskClient) -> Api:
    """A CSRF-aware JSON client."""
    return Api(client)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The time the TOTP module sees."""
    return freeze_totp_clock(monkeypatch)


def _stored(app: Flask, user: User) -> User:
    with get_db(app).session() as sess:
        row = sess.get_one(User, user.id)
        sess.expunge(row)
    return row


def _enable(api: Api, clock: Clock) -> tuple[str, list[str]]:
    setup = api.post("/me/totp/setup")
    assert setup.status_code == 200
    secret = setup.get_json()["secret"]
    resp = api.post("/me/totp/confirm", {"code": clock.code(secret)})
    assert resp.status_code == 200
    codes: list[str] = resp.get_json()["recovery_codes"]
    return secret, codes


# ------------------------------------------------------------------ unit


def test_matching_step_window() -> None:
    secret = pyotp.random_base32()
    t = 1_700_000_015.0
    step = int(t // 30)
    at = pyotp.TOTP(secret).at
    assert totp.matching_step(secret, at(t), t) == step
    assert totp.matching_step(secret, at(t - 30), t) == step - 1
    assert totp.matching_step(secret, at(t + 30), t) == step + 1
    assert totp.matching_step(secret, at(t - 60), t) is None
    assert totp.matching_step(secret, at(t + 60), t) is None
    code = at(t)
    assert totp.matching_step(secret, f"{code[:3]} {code[3:]}", t) == step
    assert totp.matching_step(secret, "abcdef", t) is None
    assert totp.matching_step(secret, code + "0", t) is None


def test_recovery_codes_are_random_and_hashed() -> None:
    codes = {totp.new_recovery_code() for _ in range(50)}
    assert len(codes) == 50
    code = codes.pop()
    assert len(code) == 19 and code.count("-") == 3
    assert totp.hash_recovery_code(code) == totp.hash_recovery_code(code.upper().replace("-", " "))
    assert totp.hash_recovery_code(code) != totp.hash_recovery_code(codes.pop())


# ------------------------------------------------------------------ set-up


def test_setup_returns_secret_uri_and_qr(app: Flask, api: Api, users: Users) -> None:
    user = users.create(EMAIL, password=PASSWORD)
    api.login(EMAIL)
    resp = api.post("/me/totp/setup")
    assert resp.status_code == 200
    body = resp.get_json()
    uri = urlparse(body["otpauth_uri"])
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    assert parse_qs(uri.query)["secret"] == [body["secret"]]
    assert parse_qs(uri.query)["issuer"] == ["Test U"]
    assert body["qr_svg"].startswith("data:image/svg+xml")
    stored = _stored(app, user)
    assert stored.totp_secret == body["secret"]
    assert stored.totp_enabled is False


def test_confirm_enables_and_issues_hashed_recovery_codes(
    app: Flask, api: Api, users: Users, clock: Clock
) -> None:
    user = users.create(EMAIL, password=PASSWORD)
    api.login(EMAIL)
    _, codes = _enable(api, clock)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert _stored(app, user).totp_enabled is True
    with get_db(app).session() as sess:
        hashes = set(sess.scalars(select(RecoveryCode.code_hash)))
    assert hashes == {totp.hash_recovery_code(c) for c in codes}
    assert not hashes & set(codes)
    assert "auth.totp_enabled" in audit_actions(app)


def test_confirm_failures_change_nothing(app: Flask, api: Api, users: Users, clock: Clock) -> None:
    users.create(EMAIL, password=PASSWORD)
    api.login(EMAIL)
    before = snapshot(app)
    assert_problem(api.post("/me/totp/confirm", {"code": "123456"}), 409, "setup")
    secret = api.post("/me/totp/setup").get_json()["secret"]
    before = snapshot(app)
    assert_problem(api.post("/me/totp/confirm", {"code": clock.code(secret, -2)}), 400, "wrong")
    assert_problem(api.post("/me/totp/confirm", {"code": "12345"}), 400, "wrong")
    assert_problem(api.post("/me/totp/confirm", {"code": 123456}), 422)
    assert_problem(api.post("/me/totp/confirm", {}), 422)
    assert snapshot(app) == before
    api.post("/me/totp/confirm", {"code": clock.code(secret)})
    before = snapshot(app)
    assert_problem(api.post("/me/totp/setup"), 409, "already on")
    assert_problem(api.post("/me/totp/confirm", {"code": clock.code(secret, 1)}), 409)
    assert snapshot(app) == before


def test_totp_endpoints_need_a_login(app: Flask, api: Api) -> None:
    before = snapshot(app)
    assert_problem(api.post("/me/totp/setup"), 401)
    assert_problem(api.post("/me/totp/confirm", {"code": "123456"}), 401)
    assert_problem(api.post("/me/totp/disable", {"password": PASSWORD, "code": "1"}), 401)
    assert_problem(api.post("/me/recovery-codes", {"password": PASSWORD}), 401)
    assert snapshot(app) == before


# ------------------------------------------------------------------ login


def test_login_needs_the_second_factor(app: Flask, users: Users, clock: Clock) -> None:
    users.create(EMAIL, password=PASSWORD)
    setup_api = Api(app.test_client())
    setup_api.login(EMAIL)
    secret, _ = _enable(setup_api, clock)
    api = Api(app.test_client())
    before = snapshot(app)

    body = assert_problem(api.login(EMAIL), 401, "authenticator")
    assert body["totp_required"] is True
    body = assert_problem(api.login(EMAIL, totp_code="000000"), 401, "wrong")
    assert body["totp_required"] is True
    # The step used to confirm cannot be used again.
    body = assert_problem(api.login(EMAIL, totp_code=clock.code(secret)), 401, "already used")
    # A wrong password with a right code is just a wrong password.
    body = assert_problem(
        api.login(EMAIL, "wrong password!!", totp_code=clock.code(secret, 1)), 401
    )
    assert body["detail"] == "invalid email or password"
    assert "totp_required" not in body
    assert snapshot(app) == before
    assert not api.logged_in()

    clock.advance()
    code = clock.code(secret)
    assert api.login(EMAIL, totp_code=code).status_code == 200
    assert api.logged_in()
    # Replaying the same code (another browser) fails.
    again = Api(app.test_client())
    assert_problem(again.login(EMAIL, totp_code=code), 401, "already used")
    clock.advance()
    assert again.login(EMAIL, totp_code=clock.code(secret)).status_code == 200


def test_codes_from_a_step_either_side_are_accepted(app: Flask, users: Users, clock: Clock) -> None:
    user = users.create(EMAIL, password=PASSWORD)
    api = Api(app.test_client())
    api.login(EMAIL)
    secret, _ = _enable(api, clock)
    clock.advance(3)
    assert Api(app.test_client()).login(EMAIL, totp_code=clock.code(secret, -1)).status_code == 200
    assert Api(app.test_client()).login(EMAIL, totp_code=clock.code(secret, 1)).status_code == 200
    # Now the +1 step was used: the current and earlier steps are spent too.
    assert_problem(Api(app.test_client()).login(EMAIL, totp_code=clock.code(secret)), 401)
    assert _stored(app, user).totp_last_step == int(clock.now // 30) + 1


def test_recovery_codes_are_single_use(app: Flask, users: Users, clock: Clock) -> None:
    users.create(EMAIL, password=PASSWORD)
    api = Api(app.test_client())
    api.login(EMAIL)
    _, codes = _enable(api, clock)
    first = Api(app.test_client())
    assert first.login(EMAIL, recovery_code=codes[0].upper()).status_code == 200
    assert first.logged_in()
    before = snapshot(app)
    assert_problem(Api(app.test_client()).login(EMAIL, recovery_code=codes[0]), 401, "already")
    assert_problem(Api(app.test_client()).login(EMAIL, recovery_code="nope-nope"), 401)
    assert snapshot(app) == before
    assert Api(app.test_client()).login(EMAIL, recovery_code=codes[1]).status_code == 200


def test_regenerate_recovery_codes(app: Flask, api: Api, users: Users, clock: Clock) -> None:
    users.create(EMAIL, password=PASSWORD)
    api.login(EMAIL)
    _, old = _enable(api, clock)
    before = snapshot(app)
    assert_problem(api.post("/me/recovery-codes", {"password": "wrong password!!"}), 403)
    assert_problem(api.post("/me/recovery-codes", {}), 422)
    assert snapshot(app) == before
    resp = api.post("/me/recovery-codes", {"password": PASSWORD})
    assert resp.status_code == 200
    new = resp.get_json()["recovery_codes"]
    assert len(new) == 10 and not set(new) & set(old)
    assert_problem(Api(app.test_client()).login(EMAIL, recovery_code=old[2]), 401)
    assert Api(app.test_client()).login(EMAIL, recovery_code=new[2]).status_code == 200


def test_regenerate_needs_totp_on(app: Flask, api: Api, users: Users) -> None:
    users.create(EMAIL, password=PASSWORD)
    api.login(EMAIL)
    before = snapshot(app)
    assert_problem(api.post("/me/recovery-codes", {"password": PASSWORD}), 409, "not on")
    assert snapshot(app) == before


# ------------------------------------------------------------------ turning it off


def test_disable_needs_password_and_code(app: Flask, api: Api, users: Users, clock: Clock) -> None:
    user = users.create(EMAIL, password=PASSWORD)
    api.login(EMAIL)
    secret, codes = _enable(api, clock)
    before = snapshot(app)
    clock.advance()
    code = clock.code(secret)
    assert_problem(
        api.post("/me/totp/disable", {"password": "wrong password!!", "code": code}),
        403,
        "password is not correct",
    )
    assert_problem(
        api.post("/me/totp/disable", {"password": PASSWORD, "code": "000000"}), 400, "wrong"
    )
    assert_problem(api.post("/me/totp/disable", {"password": PASSWORD}), 422)
    assert snapshot(app) == before

    assert api.post("/me/totp/disable", {"password": PASSWORD, "code": code}).status_code == 204
    stored = _stored(app, user)
    assert (stored.totp_enabled, stored.totp_secret, stored.totp_last_step) == (False, None, None)
    with get_db(app).session() as sess:
        assert sess.scalars(select(RecoveryCode)).all() == []
    assert "auth.totp_disabled" in audit_actions(app)
    assert Api(app.test_client()).login(EMAIL).status_code == 200
    before = snapshot(app)
    assert_problem(api.post("/me/totp/disable", {"password": PASSWORD, "code": code}), 409)
    assert snapshot(app) == before
    assert codes


def test_disable_with_a_recovery_code(app: Flask, api: Api, users: Users, clock: Clock) -> None:
    user = users.create(EMAIL, password=PASSWORD)
    api.login(EMAIL)
    _, codes = _enable(api, clock)
    resp = api.post("/me/totp/disable", {"password": PASSWORD, "code": codes[5]})
    assert resp.status_code == 204
    assert _stored(app, user).totp_enabled is False
