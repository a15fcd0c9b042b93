"""Security notices: the account holder is mailed when their password or second factor changes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core import create_app
from core.cli import cli
from core.db import get_db
from core.models import OutboxMail
from core.models import User
from tests.auth_helpers import PASSWORD
from tests.auth_helpers import Api
from tests.auth_helpers import Clock
from tests.auth_helpers import assert_problem
from tests.auth_helpers import freeze_totp_clock
from tests.auth_helpers import outbox
from tests.conftest import Users
from tests.conftest import snapshot
from tests.staff_pages import Browser

EMAIL = "ada@example.org"
OTHER_PASSWORD = "another long passphrase"
WHEN = re.compile(r" on \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\.")


@pytest.fixture
def api(client: FlaskClient) -> Api:
    return Api(client)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return freeze_totp_clock(monkeypatch)


def notices(app: Flask) -> list[OutboxMail]:
    """The mails that are not reset links."""
    return [m for m in outbox(app) if "token=" not in m.body]


def assert_notice(mail: OutboxMail, subject: str, first: str) -> None:
    assert mail.to == EMAIL
    assert mail.subject == subject
    assert mail.body.startswith(first), mail.body
    assert WHEN.search(mail.body)


def test_a_password_change_is_told_to_the_holder(app: Flask, api: Api, users: Users) -> None:
    users.create(EMAIL, password=PASSWORD)
    api.login(EMAIL)

    resp = api.post("/me/password", {"current_password": PASSWORD, "new_password": OTHER_PASSWORD})

    assert resp.status_code == 200
    [mail] = notices(app)
    assert_notice(
        mail,
        "Your Test U password was changed",
        "The password of your Test U account was changed by someone signed in to it",
    )
    assert "Every signed-in session of the account has ended." in mail.body
    assert "/login" in mail.body and "Forgot your password?" in mail.body
    assert PASSWORD not in mail.body and OTHER_PASSWORD not in mail.body


def test_a_refused_password_change_mails_nothing(app: Flask, api: Api, users: Users) -> None:
    users.create(EMAIL, password=PASSWORD)
    api.login(EMAIL)
    before = snapshot(app)

    body = {"current_password": "wrong password!!", "new_password": OTHER_PASSWORD}
    assert_problem(api.post("/me/password", body), 403)

    assert snapshot(app) == before  # outbox_mail included
    assert notices(app) == []


def test_a_password_reset_is_told_to_the_holder(app: Flask, api: Api, users: Users) -> None:
    users.create(EMAIL, password=PASSWORD)
    assert api.post("/auth/password-reset", {"email": EMAIL}).status_code == 202
    [link] = outbox(app)
    token = re.search(r"token=(\S+)", link.body)
    assert token is not None

    resp = api.post(
        "/auth/password-reset/confirm", {"token": token.group(1), "new_password": OTHER_PASSWORD}
    )

    assert resp.status_code == 200
    [mail] = notices(app)
    assert_notice(
        mail,
        "Your Test U password was reset",
        "The password of your Test U account was reset with a link sent to this address on",
    )
    assert token.group(1) not in mail.body


@pytest.mark.parametrize(
    ("token", "password", "status"),
    [
        ("not-a-token", OTHER_PASSWORD, 400),  # forged
        (None, "short", 422),  # a real token, a password the policy refuses
    ],
)
def test_a_refused_reset_mails_no_notice(
    app: Flask, api: Api, users: Users, token: str | None, password: str, status: int
) -> None:
    users.create(EMAIL, password=PASSWORD)
    assert api.post("/auth/password-reset", {"email": EMAIL}).status_code == 202
    found = re.search(r"token=(\S+)", outbox(app)[0].body)
    assert found is not None
    before = snapshot(app)

    body = {"token": token or found.group(1), "new_password": password}
    assert_problem(api.post("/auth/password-reset/confirm", body), status)

    assert snapshot(app) == before
    assert notices(app) == []


def test_a_wrong_code_turns_nothing_on_and_mails_nothing(
    app: Flask, api: Api, users: Users, clock: Clock
) -> None:
    users.create(EMAIL, password=PASSWORD)
    api.login(EMAIL)
    assert api.post("/me/totp/setup").status_code == 200
    before = snapshot(app)

    assert_problem(api.post("/me/totp/confirm", {"code": "000000"}), 400)

    assert snapshot(app) == before
    assert notices(app) == []


def test_turning_the_second_factor_on_and_off_is_told(
    app: Flask, api: Api, users: Users, clock: Clock
) -> None:
    users.create(EMAIL, password=PASSWORD)
    api.login(EMAIL)
    secret = api.post("/me/totp/setup").get_json()["secret"]
    assert notices(app) == []  # a set-up not confirmed changes nothing yet
    assert api.post("/me/totp/confirm", {"code": clock.code(secret)}).status_code == 200
    clock.advance()
    wrong = {"password": PASSWORD, "code": "000000"}
    assert_problem(api.post("/me/totp/disable", wrong), 400)
    assert len(notices(app)) == 1

    code = clock.code(secret)
    assert api.post("/me/totp/disable", {"password": PASSWORD, "code": code}).status_code == 204

    on, off = notices(app)
    assert_notice(
        on,
        "Two-factor authentication is on for your Test U account",
        "Two-factor authentication was turned on for your Test U account by someone signed in",
    )
    assert_notice(
        off,
        "Two-factor authentication is off for your Test U account",
        "Two-factor authentication was turned off for your Test U account by someone signed in",
    )
    assert secret not in on.body + off.body


def test_an_admin_turning_a_second_factor_off_is_told(
    app: Flask, users: Users, clock: Clock
) -> None:
    admin = users.create("root@example.org", password=PASSWORD, admin=True)
    user = users.create(EMAIL, password=PASSWORD)
    with get_db(app).session() as sess:
        target = sess.get_one(User, user.id)
        target.totp_enabled, target.totp_secret = True, "JBSWY3DPEHPK3PXP"

    resp = Browser(app, admin).post(f"/admin/users/{user.public_id}/second-factor/reset")

    assert resp.status_code == 303
    [mail] = notices(app)
    assert_notice(
        mail,
        "Two-factor authentication is off for your Test U account",
        "Two-factor authentication was turned off for your Test U account by an administrator",
    )
    assert "tell the administrators of Test U at once" in mail.body


# ---------------------------------------------------------------- the command line


def run(path: Path, *args: str) -> Any:
    env = {"TRIVIUM_INSTANCE_PATH": None, "TRIVIUM_ACCOUNTS_HASH_PROFILE": "cheapest"}
    return CliRunner(env=env).invoke(cli, ["--instance", str(path), *args])


def cli_notices(path: Path) -> list[tuple[str, str]]:
    app = create_app(path)
    try:
        with get_db(app).session() as sess:
            return [(m.to, m.subject) for m in sess.scalars(select(OutboxMail))]
    finally:
        get_db(app).dispose()


def test_an_operator_setting_a_password_is_told_and_a_refusal_is_not(tmp_path: Path) -> None:
    path = tmp_path / "uni"
    assert run(path, "init", str(path), "--name", "Uni U").exit_code == 0
    assert run(path, "db", "upgrade").exit_code == 0
    made = run(path, "users", "create", "ada@uni.example", "--password", PASSWORD)
    assert made.exit_code == 0, made.output

    refused = run(path, "users", "set-password", "ada@uni.example", "--password", "short")
    assert refused.exit_code == 1
    assert cli_notices(path) == []

    done = run(path, "users", "set-password", "ada@uni.example", "--password", OTHER_PASSWORD)
    assert done.exit_code == 0, done.output
    assert cli_notices(path) == [("ada@uni.example", "Your Uni U password was changed")]
