"""A person's copy of their data: ``GET /api/v1/me/export``, the account page, the CLI.

Two people with rows in every table core keeps about people; each one's
document holds their own rows, none of the other's, and no secret.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy import update

from core import db
from core import hookimpl
from core import privacy
from core.api.me import PersonalDataExport
from core.cli import cli
from core.db import get_db
from core.models import ApiToken
from core.models import AuditLog
from core.models import Identity
from core.models import Invitation
from core.models import OutboxMail
from core.models import RecoveryCode
from core.models import User
from core.plugins import PluginHost
from tests.auth_helpers import OTHER_PASSWORD
from tests.auth_helpers import PASSWORD
from tests.auth_helpers import Api
from tests.conftest import Users
from tests.course_helpers import Course
from tests.course_helpers import Person
from tests.course_helpers import add_staff
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import complete
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.course_helpers import problem
from tests.web_helpers import Pages


@dataclass
class Side:
    """One person's rows, as built by :func:`populate`."""

    who: Person
    courses: list[Course]
    learns: Course
    token_plaintexts: list[str]
    recovery_codes: list[str]
    oidc_subject: str


@dataclass
class World:
    app: Flask
    client: FlaskClient
    ann: Side
    bob: Side
    admin: Person


def _add_rows(app: Flask, side: Side, admin: Person, invitee: str) -> None:
    """Rows no API call makes here: identities, a second factor, invitations, an admin's audit."""
    user = side.who.user
    now = datetime.now(UTC)
    with get_db(app).session() as sess:
        row = sess.get_one(User, user.id)
        row.totp_secret = "JBSWY3DPEHPK3PXP" + user.public_id[:8].upper().replace("0", "A")
        row.totp_enabled = True
        row.last_login_at = now
        sess.add(Identity(user_id=user.id, provider="local", subject=user.email))
        sess.add(
            Identity(
                user_id=user.id,
                provider="oidc",
                issuer="https://idp.example",
                subject=side.oidc_subject,
            )
        )
        for code in side.recovery_codes:
            sess.add(
                RecoveryCode(user_id=user.id, code_hash=hashlib.sha256(code.encode()).hexdigest())
            )
        sess.add(
            Invitation(
                code_hash=hashlib.sha256(f"to-{user.email}".encode()).hexdigest(),
                email=user.email,
                created_by_id=admin.user.id,
                expires_at=now + timedelta(days=7),
                used_at=now,
                used_by_id=user.id,
            )
        )
        sess.add(
            Invitation(
                code_hash=hashlib.sha256(f"by-{user.email}".encode()).hexdigest(),
                email=invitee,
                created_by_id=user.id,
                expires_at=now + timedelta(days=7),
            )
        )
        sess.add(
            AuditLog(
                actor_id=admin.user.id,
                action="admin.user_creator",
                target=f"user:{user.public_id}",
                ip="203.0.113.7",
                detail={"value": True},
            )
        )


def _side(
    app: Flask, client: FlaskClient, users: Users, name: str, password: str
) -> tuple[Side, Course]:
    who = person(users, f"{name}@example.org", creator=True, password=password)
    own = build_course(client, who, title=f"{name.title()}'s first course", items=2)
    second = build_course(client, who, title=f"{name.title()}'s second course", items=1)
    created = ok(call(client, "POST", "/me/tokens", who.headers, {"name": f"{name} script"}), 201)
    side = Side(
        who=who,
        courses=[own, second],
        learns=own,  # replaced below: each learns in the other's course
        token_plaintexts=[who.headers["Authorization"].split()[1], created["token"]],
        recovery_codes=[f"{name}-recovery-{n}" for n in range(3)],
        oidc_subject=f"{name}-oidc-subject-42",
    )
    return side, own


@pytest.fixture
def world(app: Flask, client: FlaskClient, users: Users) -> World:
    return build_world(app, client, users)


def build_world(app: Flask, client: FlaskClient, users: Users) -> World:
    """Ann and Bob, each with rows in every table core keeps about people."""
    admin = person(users, "root@example.org", admin=True)
    ann, ann_course = _side(app, client, users, "ann", PASSWORD)
    bob, bob_course = _side(app, client, users, "bob", OTHER_PASSWORD)
    for learner, course in ((ann, bob_course), (bob, ann_course)):
        learner.learns = course
        enrol(client, course, learner.who)
        complete(client, course.items[0], learner.who)
    add_staff(client, ann.courses[1], ann.who, bob.who, "ta")
    add_staff(client, bob.courses[1], bob.who, ann.who, "ta")
    _add_rows(app, ann, admin, "carol@example.org")
    _add_rows(app, bob, admin, "dave@example.org")
    anonymous = Api(app.test_client())
    for side in (ann, bob):
        resp = anonymous.post("/auth/password-reset", {"email": side.who.user.email})
        assert resp.status_code == 202
    return World(app, client, ann, bob, admin)


def export(world: World, side: Side) -> tuple[dict[str, Any], str]:
    resp = world.client.get("/api/v1/me/export", headers=side.who.headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json(), resp.get_data(as_text=True)


def secrets_of(app: Flask) -> dict[str, list[str]]:
    """Every stored secret of every account: none may reach any export."""
    found: dict[str, list[str]] = {}
    with get_db(app).session() as sess:
        for user in sess.scalars(select(User)):
            found.setdefault("password hash", []).append(user.password_hash or "")
            found.setdefault("totp secret", []).append(user.totp_secret or "")
        for token_hash, prefix in sess.execute(select(ApiToken.token_hash, ApiToken.prefix)):
            found.setdefault("token hash", []).append(token_hash)
            found.setdefault("token prefix", []).append(prefix)
        found["recovery code hash"] = list(sess.scalars(select(RecoveryCode.code_hash)))
        found["invitation code hash"] = list(sess.scalars(select(Invitation.code_hash)))
        bodies = list(sess.scalars(select(OutboxMail.body)))
    found["mail body"] = bodies
    found["reset token"] = [t for body in bodies for t in re.findall(r"token=(\S+)", body)]
    return {kind: [v for v in values if v] for kind, values in found.items()}


def internal_ids(value: Any, path: str = "") -> list[str]:
    """Where the document shows an integer under an id-like key."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, sub in value.items():
            here = f"{path}.{key}"
            if (key == "id" or str(key).endswith("_id")) and isinstance(sub, int):
                found.append(here)
            found += internal_ids(sub, here)
    elif isinstance(value, list):
        for n, sub in enumerate(value):
            found += internal_ids(sub, f"{path}[{n}]")
    return found


# ------------------------------------------------------------------ the document


def test_the_document_holds_the_callers_rows_and_none_of_anothers(world: World) -> None:
    ann, bob = world.ann, world.bob
    doc, raw = export(world, ann)
    me = ann.who.user

    PersonalDataExport.model_validate(doc)  # the OpenAPI model says what is there
    assert doc["format"] == "trivium.personal-data" and doc["format_version"] == 1
    assert doc["instance"] == {"name": "Test U", "base_url": "http://testserver"}
    assert datetime.fromisoformat(doc["generated_at"]) > datetime.now(UTC) - timedelta(minutes=1)
    assert doc["account"] == {
        "id": me.public_id,
        "email": "ann@example.org",
        "display_name": "Ann",
        "created_at": doc["account"]["created_at"],
        "last_login_at": doc["account"]["last_login_at"],
        "active": True,
        "site_admin": False,
        "can_create_courses": True,
        "has_password": True,
        "second_factor": True,
        "recovery_codes_unused": 3,
    }
    assert [(i["provider"], i["subject"]) for i in doc["identities"]] == [
        ("local", "ann@example.org"),
        ("oidc", ann.oidc_subject),
    ]
    assert [t["name"] for t in doc["api_tokens"]] == ["test", "ann script"]
    assert doc["invitations"]["received"][0]["used_at"] is not None
    assert [i["used"] for i in doc["invitations"]["created"]] == [False]
    assert [m["subject"] for m in doc["mail"]] == ["Reset your Test U password"]
    assert [c["id"] for c in doc["courses_created"]] == [c.id for c in ann.courses]
    assert sorted((r["course"]["id"], r["role"]) for r in doc["course_roles"]) == sorted(
        [
            (ann.courses[0].id, "instructor"),
            (ann.courses[1].id, "instructor"),
            (bob.courses[1].id, "ta"),
        ]
    )
    assert [(e["course"]["id"], e["status"]) for e in doc["enrolments"]] == [
        (ann.learns.id, "active")
    ]
    assert [(p["item"]["id"], p["status"]) for p in doc["progress"]] == [
        (ann.learns.items[0], "completed")
    ]
    assert doc["learning_events"]
    assert {s["actor"]["account"]["name"] for s in doc["learning_events"]} == {me.public_id}
    by = {entry["by"] for entry in doc["audit_log"]}
    assert by == {"you", "other", "system"}
    actions = {entry["action"] for entry in doc["audit_log"]}
    assert {"course.create", "auth.token_created", "admin.user_creator"} <= actions
    assert "auth.password_reset_requested" in actions
    for entry in doc["audit_log"]:
        assert (entry["ip"] is None) == (entry["by"] != "you"), entry
    assert "203.0.113.7" not in raw  # the administrator's address is theirs
    assert doc["plugins"] == {} and doc["plugins_failed"] == []

    # nothing of Bob's: his ids, address, tokens, identity, invitee, enrolment
    with get_db(world.app).session() as sess:
        bob_enrolments = ok(
            call(world.client, "GET", f"/courses/{bob.learns.id}/enrolment", bob.who.headers)
        )
        bob_mail = list(
            sess.scalars(select(OutboxMail.public_id).where(OutboxMail.to == bob.who.user.email))
        )
    for foreign in (
        bob.who.user.public_id,
        bob.who.user.email,
        "bob script",
        bob.oidc_subject,
        "carol@example.org",
        bob_enrolments["id"],
        *bob_mail,
        bob.learns.items[0],
    ):
        assert foreign not in raw, foreign
    assert internal_ids(doc) == []


def test_no_secret_ever_appears(world: World) -> None:
    for side in (world.ann, world.bob):
        _, raw = export(world, side)
        for kind, values in secrets_of(world.app).items():
            assert values, kind  # the world has one of each
            for value in values:
                assert value not in raw, f"{kind} in the export"
        for plaintext in side.token_plaintexts + side.recovery_codes:
            assert plaintext not in raw


def test_anonymous_callers_are_refused(client: FlaskClient) -> None:
    problem(client.get("/api/v1/me/export"), 401)


def test_the_file_is_an_attachment_no_cache_keeps(world: World) -> None:
    resp = world.client.get("/api/v1/me/export", headers=world.ann.who.headers)
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    day = datetime.now(UTC).date().isoformat()
    assert resp.headers["Content-Disposition"] == (
        f'attachment; filename="trivium-export-{day}.json"'
    )
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.get_data(as_text=True).startswith("{\n  ")  # indented for people too


def test_each_export_is_audited(world: World) -> None:
    export(world, world.ann)
    with get_db(world.app).session() as sess:
        rows = sess.execute(
            select(AuditLog.actor_id, AuditLog.target, AuditLog.detail).where(
                AuditLog.action == "account.export"
            )
        ).all()
    me = world.ann.who.user
    assert [tuple(r) for r in rows] == [(me.id, f"user:{me.public_id}", {"via": "api"})]


def test_exports_are_rate_limited_per_account(world: World) -> None:
    for _ in range(privacy.EXPORTS_PER_WINDOW):
        export(world, world.ann)
    refused = world.client.get("/api/v1/me/export", headers=world.ann.who.headers)
    body = problem(refused, 429)
    assert body["retry_after"] == 900 and refused.headers["Retry-After"] == "900"
    export(world, world.bob)  # another account is not affected
    with get_db(world.app).session() as sess:
        count = len(
            sess.scalars(select(AuditLog.id).where(AuditLog.action == "account.export")).all()
        )
    assert count == privacy.EXPORTS_PER_WINDOW + 1


def test_a_deactivated_account_cannot_export_itself(world: World) -> None:
    from core import operator
    from core.auth.tokens import forget_user_tokens

    with world.app.app_context():
        sess = db.session()
        operator.deactivate(sess, None, sess.get_one(User, world.ann.who.user.id))
        sess.commit()
        forget_user_tokens(sess, world.ann.who.user.id)
    problem(world.client.get("/api/v1/me/export", headers=world.ann.who.headers), 401)


# ------------------------------------------------------------------ plugins


class Failing:
    @hookimpl
    def export_user_data(self, user: User) -> dict[str, Any]:
        raise RuntimeError("the bookmarks table is on fire")


class NotADict:
    @hookimpl
    def export_user_data(self, user: User) -> Any:
        return {"marks": {1, 2}}  # a set is not JSON


class BadQuery:
    @hookimpl
    def export_user_data(self, user: User) -> dict[str, Any]:
        db.session().execute(text("SELECT * FROM no_such_table"))
        return {}


@pytest.fixture
def host(app: Flask) -> PluginHost:
    found: PluginHost = app.extensions["trivium.plugins"]
    return found


@pytest.fixture
def broken_plugins(host: PluginHost) -> Iterator[None]:
    names = {"failing": Failing(), "not_a_dict": NotADict(), "bad_query": BadQuery()}
    for name, plugin in names.items():
        host.register(plugin, name)
    try:
        yield
    finally:
        for name in names:
            host.unregister(name)


def test_a_failing_plugin_is_marked_and_the_rest_exported(
    world: World, host: PluginHost, broken_plugins: None, caplog: pytest.LogCaptureFixture
) -> None:
    doc, raw = export(world, world.ann)

    assert sorted(doc["plugins_failed"]) == ["bad_query", "failing", "not_a_dict"]
    for name in doc["plugins_failed"]:
        assert doc["plugins"][name] == privacy.PLUGIN_FAILED
    assert "on fire" not in raw  # the error is for the operators' log
    assert doc["account"]["email"] == "ann@example.org" and doc["progress"]
    failed = {(f.plugin, f.hook) for f in host.failures}
    assert {(n, "export_user_data") for n in doc["plugins_failed"]} <= failed
    assert "plugin=failing hook=export_user_data" in caplog.text
    with get_db(world.app).session() as sess:  # and the export was still audited
        assert sess.scalar(select(AuditLog.id).where(AuditLog.action == "account.export"))


def test_hook_export_user_data(world: World, host: PluginHost) -> None:
    seen: list[User] = []
    when = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)

    class Bookmarks:
        @hookimpl
        def export_user_data(self, user: User) -> dict[str, Any]:
            assert db.session().get(User, user.id) is user  # read with the request's session
            seen.append(user)
            return {"bookmarks": [{"item": "abc", "created_at": when}]}

    class Nothing:
        @hookimpl
        def export_user_data(self) -> None:
            return None

    host.register(Bookmarks(), "bookmarks")
    host.register(Nothing(), "nothing")
    try:
        doc, _ = export(world, world.ann)
    finally:
        host.unregister("bookmarks")
        host.unregister("nothing")
    assert [u.public_id for u in seen] == [world.ann.who.user.public_id]
    assert doc["plugins"] == {
        "bookmarks": {"bookmarks": [{"item": "abc", "created_at": "2026-03-01T12:30:00+00:00"}]}
    }
    assert doc["plugins_failed"] == []


def test_hook_withhold_from_export(world: World, host: PluginHost) -> None:
    seen: list[int] = []

    class Graded:
        @hookimpl
        def withhold_from_export(
            self, user: User, statements: list[dict[str, Any]]
        ) -> dict[str, Any]:
            seen.append(len(statements))
            return {s["id"]: {**s, "result": {"withheld": True}} for s in statements[:1]}

    host.register(Graded(), "graded")
    try:
        doc, _ = export(world, world.ann)
    finally:
        host.unregister("graded")
    events = doc["learning_events"]
    assert seen == [len(events)] and events
    assert events[0]["result"] == {"withheld": True}
    assert all(e.get("result") != {"withheld": True} for e in events[1:])
    assert doc["plugins_failed"] == []


def test_a_plugin_failing_to_withhold_hides_every_result(world: World, host: PluginHost) -> None:
    class Broken:
        @hookimpl
        def withhold_from_export(self, statements: list[dict[str, Any]]) -> dict[str, Any]:
            raise RuntimeError("no idea")

    plain, _ = export(world, world.ann)
    assert any("result" in e for e in plain["learning_events"])
    host.register(Broken(), "broken")
    try:
        doc, _ = export(world, world.ann)
    finally:
        host.unregister("broken")
    assert doc["learning_events"]
    assert all("result" not in e for e in doc["learning_events"])
    assert doc["plugins_failed"] == ["broken"]


# ------------------------------------------------------------------ the account page


def test_the_account_page_offers_the_download(world: World) -> None:
    with get_db(world.app).session() as sess:  # a one-step login: no second factor
        sess.execute(update(User).values(totp_enabled=False))
    pages = Pages(world.client)
    login = pages.post("/login", {"email": "bob@example.org", "password": OTHER_PASSWORD})
    assert login.status_code == 302 and "/login/code" not in login.headers["Location"]

    page = pages.get("/account").get_data(as_text=True)
    assert 'href="/account/export"' in page and "Download my data" in page
    resp = pages.get("/account/export")
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="trivium-export-')
    assert resp.headers["Cache-Control"] == "no-store"
    doc = json.loads(resp.get_data())
    assert doc["account"]["email"] == "bob@example.org"
    with get_db(world.app).session() as sess:
        detail = sess.scalar(select(AuditLog.detail).where(AuditLog.action == "account.export"))
    assert detail == {"via": "web"}

    for _ in range(privacy.EXPORTS_PER_WINDOW - 1):
        assert pages.get("/account/export").status_code == 200
    refused = pages.get("/account/export")
    assert refused.status_code == 302 and refused.headers["Location"].endswith("/account")
    assert "Try again later" in pages.get("/account").get_data(as_text=True)


def test_the_download_page_needs_a_login(client: FlaskClient) -> None:
    resp = Pages(client).get("/account/export")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


# ------------------------------------------------------------------ trivium users export

CLI_ENV = {"TRIVIUM_INSTANCE_PATH": None, "TRIVIUM_ACCOUNTS_HASH_PROFILE": "cheapest"}


def run(path: Path, *args: str) -> Result:
    return CliRunner(env=CLI_ENV).invoke(cli, ["--instance", str(path), *args])


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    path = tmp_path / "uni"
    assert run(path, "init", str(path), "--name", "Uni U").exit_code == 0
    assert run(path, "db", "upgrade").exit_code == 0
    created = run(path, "users", "create", "ada@uni.example", "--password", PASSWORD)
    assert created.exit_code == 0, created.output
    return path


def export_audits(path: Path) -> list[tuple[int | None, str, dict[str, Any]]]:
    from core import create_app

    app = create_app(path)
    try:
        with get_db(app).session() as sess:
            rows = sess.execute(
                select(AuditLog.actor_id, AuditLog.target, AuditLog.detail).where(
                    AuditLog.action == "account.export"
                )
            )
            return [tuple(r) for r in rows]  # type: ignore[misc]
    finally:
        get_db(app).dispose()


def test_cli_writes_the_document_to_a_new_private_file(instance: Path, tmp_path: Path) -> None:
    target = tmp_path / "ada.json"
    result = run(instance, "users", "export", " Ada@Uni.Example ", "--output", str(target))

    assert result.exit_code == 0, result.output
    assert f"Wrote the data of ada@uni.example to {target}" in result.output
    doc = json.loads(target.read_bytes())
    assert doc["account"]["email"] == "ada@uni.example"
    assert doc["instance"]["name"] == "Uni U"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    audits = export_audits(instance)
    assert len(audits) == 1
    actor, target_name, detail = audits[0]
    assert actor is None and target_name == f"user:{doc['account']['id']}"
    assert detail == {"via": "cli"}


def test_cli_prints_the_document_without_output(instance: Path) -> None:
    result = run(instance, "users", "export", "ada@uni.example")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["account"]["email"] == "ada@uni.example"


def test_cli_refuses_an_unknown_address_and_writes_nothing(instance: Path, tmp_path: Path) -> None:
    target = tmp_path / "nobody.json"
    result = run(instance, "users", "export", "nobody@uni.example", "--output", str(target))
    assert result.exit_code == 1
    assert "no user nobody@uni.example" in result.output
    assert not target.exists()
    assert export_audits(instance) == []


def test_cli_never_writes_over_a_file(instance: Path, tmp_path: Path) -> None:
    target = tmp_path / "kept.json"
    target.write_text("keep me")
    result = run(instance, "users", "export", "ada@uni.example", "--output", str(target))
    assert result.exit_code == 1
    assert "exists" in result.output
    assert target.read_text() == "keep me"
    assert export_audits(instance) == []


def test_a_removal_by_staff_is_in_the_learners_export_not_named_in_the_instructors(
    app: Flask, client: FlaskClient, users: Users
) -> None:
    teacher = person(users, "teach@example.org", creator=True)
    learner = person(users, "learn@example.org")
    course = build_course(client, teacher)
    enrolment = enrol(client, course, learner)
    path = f"/enrolments/{enrolment['id']}"
    assert call(client, "DELETE", path, teacher.headers).status_code in {200, 204}

    mine = ok(call(client, "GET", "/me/export", learner.headers))
    theirs = ok(call(client, "GET", "/me/export", teacher.headers))

    [entry] = [e for e in mine["audit_log"] if e["action"] == "enrolment.remove"]
    assert entry["detail"]["user"] == learner.id
    [seen] = [e for e in theirs["audit_log"] if e["action"] == "enrolment.remove"]
    assert learner.id not in json.dumps(seen)
