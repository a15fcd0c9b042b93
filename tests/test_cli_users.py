"""``trivium users``: an operator's account commands (list, password, 2FA, roles, state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from click.testing import Result
from flask import Flask
from sqlalchemy import select

from core import create_app
from core.auth.accounts import throttle
from core.auth.passwords import make_password_service
from core.auth.tokens import create_token
from core.auth.tokens import user_for_token
from core.cli import cli
from core.db import get_db
from core.models import AuditLog
from core.models import RecoveryCode
from core.models import User
from tests.conftest import snapshot

ENV = {"TRIVIUM_INSTANCE_PATH": None, "TRIVIUM_ACCOUNTS_HASH_PROFILE": "cheapest"}
PASSWORD = "correct horse battery"
NEW_PASSWORD = "another long passphrase"


def run(path: Path, *args: str, input: str | None = None) -> Result:
    runner = CliRunner(env=ENV)
    return runner.invoke(cli, ["--instance", str(path), *args], input=input)


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    path = tmp_path / "uni"
    assert run(path, "init", str(path), "--name", "Uni U").exit_code == 0
    assert run(path, "db", "upgrade").exit_code == 0
    for email, flag in (("root@uni.example", "--admin"), ("ada@uni.example", "--creator")):
        created = run(path, "users", "create", email, flag, "--password", PASSWORD)
        assert created.exit_code == 0, created.output
    return path


@pytest.fixture
def app(instance: Path) -> Any:
    application = create_app(instance)
    yield application
    get_db(application).dispose()


def account(app: Flask, email: str) -> User:
    with get_db(app).sessions() as sess:
        user = sess.scalars(select(User).where(User.email == email)).one()
        sess.expunge(user)
    return user


def audits(app: Flask) -> list[tuple[str, dict[str, Any]]]:
    with get_db(app).sessions() as sess:
        rows = sess.execute(select(AuditLog.action, AuditLog.detail).order_by(AuditLog.id))
        return [(a, d) for a, d in rows if a.startswith("admin.")]


def test_list_shows_accounts_and_their_flags(instance: Path) -> None:
    listed = run(instance, "users", "list")
    admins = run(instance, "users", "list", "--state", "admin")
    found = run(instance, "users", "list", "--search", "ADA")

    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert any("root@uni.example" in line and "admin" in line for line in lines)
    assert any("ada@uni.example" in line and "creator" in line for line in lines)
    assert "ada@" not in admins.output and "root@" in admins.output
    assert "ada@" in found.output and "root@" not in found.output


def test_set_password_replaces_it_and_ends_sessions(instance: Path, app: Flask) -> None:
    before = account(app, "ada@uni.example")
    with app.app_context():
        throttle().record_failure("ada@uni.example", "192.0.2.1")

    result = run(
        instance, "users", "set-password", "ADA@uni.example", input=f"{NEW_PASSWORD}\n" * 2
    )

    assert result.exit_code == 0, result.output
    after = account(app, "ada@uni.example")
    hasher = make_password_service(app.extensions["trivium.settings"].accounts)
    assert hasher.verify(after.password_hash or "", NEW_PASSWORD)
    assert after.session_version == before.session_version + 1
    assert audits(app) == [("admin.user_password", {"via": "cli"})]


def test_set_password_applies_the_policy_and_changes_nothing(instance: Path, app: Flask) -> None:
    before = snapshot(app)

    short = run(instance, "users", "set-password", "ada@uni.example", "--password", "short")
    own = run(
        instance, "users", "set-password", "ada@uni.example", "--password", "ada@uni.example1"
    )
    nobody = run(instance, "users", "set-password", "eve@uni.example", "--password", PASSWORD)

    assert short.exit_code == 1 and "ada@uni.example:" in short.output
    assert own.exit_code == 1
    assert nobody.exit_code == 1 and "no user eve@uni.example" in nobody.output
    assert snapshot(app) == before


ADDRESS_RULE = "your e-mail address or its name part"
REFUSED_PASSWORDS = {
    "too short": ("short pw", "the password must be at least 10 characters long"),
    "too long": ("x" * 1024 + "y", "the password must be at most 1024 characters long"),
    "the address": ("grace@uni.example", f"the password must not contain {ADDRESS_RULE}"),
    "its name part": ("Grace-2024-spring", f"the password must not contain {ADDRESS_RULE}"),
    "one character": ("aaaaaaaaaaaa", "the password must not be a single character repeated"),
    "common": ("Password123", "this password is one of the most common ones"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_PASSWORDS))
def test_create_applies_the_password_policy_and_creates_nothing(
    instance: Path, app: Flask, case: str
) -> None:
    password, rule = REFUSED_PASSWORDS[case]
    before = snapshot(app)

    created = run(instance, "users", "create", "grace@uni.example", "--password", password)

    assert created.exit_code == 2, created.output
    assert f"Invalid value for password: {rule}" in created.output
    assert snapshot(app) == before  # no user, no identity, no audit row
    # the same rule and words as for a new password of an existing account
    own = password.replace("grace", "ada").replace("Grace", "Ada")
    changed = run(instance, "users", "set-password", "ada@uni.example", "--password", own)
    assert changed.exit_code == 1
    assert rule in changed.output


def test_reset_2fa_turns_the_second_factor_off(instance: Path, app: Flask) -> None:
    with get_db(app).sessions() as sess:
        user = sess.scalars(select(User).where(User.email == "ada@uni.example")).one()
        user.totp_enabled = True
        user.totp_secret = "JBSWY3DPEHPK3PXP"
        sess.add(RecoveryCode(user_id=user.id, code_hash="0" * 64))
        sess.commit()
        version = user.session_version

    result = run(instance, "users", "reset-2fa", "ada@uni.example")
    again = run(instance, "users", "reset-2fa", "ada@uni.example")

    assert result.exit_code == 0 and "Turned two-factor authentication off" in result.output
    assert again.exit_code == 0 and "nothing changed" in again.output
    after = account(app, "ada@uni.example")
    assert (after.totp_enabled, after.totp_secret) == (False, None)
    assert after.session_version == version + 1
    with get_db(app).sessions() as sess:
        assert sess.scalars(select(RecoveryCode)).all() == []
    assert audits(app) == [("admin.user_totp_reset", {"via": "cli"})]


def test_admin_grants_and_revokes_and_tokens_follow(instance: Path, app: Flask) -> None:
    with app.app_context(), get_db(app).sessions() as sess:
        ada = sess.scalars(select(User).where(User.email == "ada@uni.example")).one()
        _, token = create_token(sess, ada, "script")
        sess.commit()
        assert user_for_token(sess, token).is_admin is False  # type: ignore[union-attr]

    granted = run(instance, "users", "admin", "ada@uni.example")
    with app.app_context(), get_db(app).sessions() as sess:
        assert user_for_token(sess, token).is_admin is True  # type: ignore[union-attr]
    revoked = run(instance, "users", "admin", "ada@uni.example", "--revoke")
    again = run(instance, "users", "admin", "ada@uni.example", "--revoke")

    assert granted.exit_code == 0 and "is a site administrator" in granted.output
    assert revoked.exit_code == 0 and "no longer" in revoked.output
    assert again.exit_code == 0 and "was not a site administrator: nothing changed" in again.output
    assert account(app, "ada@uni.example").is_admin is False
    assert audits(app) == [
        ("admin.user_admin", {"value": True, "via": "cli"}),
        ("admin.user_admin", {"value": False, "via": "cli"}),
    ]


def test_the_last_active_admin_keeps_the_role_and_the_account(instance: Path, app: Flask) -> None:
    before = snapshot(app)

    revoked = run(instance, "users", "admin", "root@uni.example", "--revoke")
    deactivated = run(instance, "users", "deactivate", "root@uni.example")

    for result in (revoked, deactivated):
        assert result.exit_code == 1
        assert "at least one active site administrator" in result.output
    assert snapshot(app) == before


def test_deactivate_and_reactivate(instance: Path, app: Flask) -> None:
    with app.app_context(), get_db(app).sessions() as sess:
        ada = sess.scalars(select(User).where(User.email == "ada@uni.example")).one()
        _, token = create_token(sess, ada, "script")
        sess.commit()
        assert user_for_token(sess, token) is not None

    off = run(instance, "users", "deactivate", "ada@uni.example")
    twice = run(instance, "users", "deactivate", "ada@uni.example")
    with app.app_context(), get_db(app).sessions() as sess:
        assert user_for_token(sess, token) is None  # refused at once, cache or not
    on = run(instance, "users", "reactivate", "ada@uni.example")

    assert off.exit_code == 0 and twice.exit_code == 1 and "already deactivated" in twice.output
    assert on.exit_code == 0 and account(app, "ada@uni.example").is_active is True
    assert [a for a, _ in audits(app)] == ["admin.user_deactivate", "admin.user_reactivate"]
