"""Erasing an account: ``POST /api/v1/me/erase``, the operator's services, ``trivium users erase``.

The world of :mod:`tests.test_export` (two people with rows in every table
core keeps about people): Ann is erased; afterwards nothing stored names or
reaches her, her learning records stay under her erased account, and Bob's
rows are exactly as they were.  Every refusal leaves every row as it was.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from click.testing import Result
from dramatiq import Message
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import update

from core import db
from core import erasure
from core import hookimpl
from core import operator
from core import progress_buffer
from core.auth.accounts import sha256_hex
from core.auth.totp import hash_recovery_code
from core.auth.totp import new_secret
from core.cli import cli
from core.db import get_db
from core.errors import Problem
from core.models import ApiToken
from core.models import AuditLog
from core.models import CourseRole
from core.models import Enrolment
from core.models import Event
from core.models import Identity
from core.models import Invitation
from core.models import Job
from core.models import OutboxMail
from core.models import Progress
from core.models import RecoveryCode
from core.models import User
from core.plugins import PluginHost
from core.tasks import store
from core.tasks.builtin import sweep_erased_statements
from tests.auth_helpers import PASSWORD
from tests.auth_helpers import Api
from tests.conftest import Users
from tests.conftest import base_config
from tests.conftest import snapshot
from tests.course_helpers import call
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.course_helpers import problem
from tests.test_export import Side
from tests.test_export import World
from tests.test_export import build_world
from tests.web_helpers import Pages

ERASE = "/me/erase"


def password_of(side: Side) -> str:
    from tests.auth_helpers import OTHER_PASSWORD

    return PASSWORD if side.who.user.email.startswith("ann") else OTHER_PASSWORD


def erase(world: World, side: Side, **changes: Any) -> Any:
    body = {"password": password_of(side), "code": side.recovery_codes[0], **changes}
    return call(world.client, "POST", ERASE, side.who.headers, body)


def rows_of(app: Flask, user_id: int) -> dict[str, Any]:
    """What core stores of one account, to compare before and after."""
    with get_db(app).session() as sess:
        user = sess.get_one(User, user_id)
        return {
            "user": {c.key: getattr(user, c.key) for c in User.__table__.columns},
            "identities": sess.scalar(select(func.count()).where(Identity.user_id == user_id)),
            "tokens": sess.scalar(select(func.count()).where(ApiToken.user_id == user_id)),
            "codes": sess.scalar(select(func.count()).where(RecoveryCode.user_id == user_id)),
            "roles": sorted(
                sess.execute(
                    select(CourseRole.course_id, CourseRole.role).where(
                        CourseRole.user_id == user_id
                    )
                ).all()
            ),
            "enrolments": sorted(
                sess.execute(
                    select(Enrolment.course_id, Enrolment.status).where(
                        Enrolment.user_id == user_id
                    )
                ).all()
            ),
            "progress": sorted(
                sess.execute(
                    select(Progress.item_id, Progress.status, Progress.completed_at).where(
                        Progress.user_id == user_id
                    )
                ).all()
            ),
            "events": sorted(
                (e.public_id, json.dumps(e.statement, sort_keys=True))
                for e in sess.scalars(select(Event).where(Event.user_id == user_id))
            ),
        }


def everything(app: Flask) -> str:
    """Every row of every table as one text, to search for a person's traces."""
    return json.dumps(snapshot(app), default=str)


def add_traces(app: Flask, side: Side, admin_id: int) -> None:
    """Rows naming the person that no API call here makes: an audit entry, mail jobs,
    a delivery that failed quoting the address, an invitation still to be used."""
    email = side.who.user.email
    with get_db(app).session() as sess:
        refused = OutboxMail(to=email, subject="Reset", body="a link", state="failed")
        sess.add(refused)
        sess.flush()
        delivery = Message(
            queue_name="mail",
            actor_name="core.deliver_mail",
            args=(refused.id,),
            kwargs={},
            options={},
        )
        sess.add(
            Job(
                message_id=delivery.message_id,
                queue="mail",
                actor="core.deliver_mail",
                message=store.encode(delivery),
                state="failed",
                error=f"MailRefused: the server refused {email}: 550 no such user",
            )
        )
        sess.add(
            Invitation(
                code_hash=sha256_hex(f"unused-{email}"),
                email=email,
                created_by_id=admin_id,
                expires_at=datetime.now(UTC) + timedelta(days=7),
            )
        )
        sess.add(
            AuditLog(
                actor_id=None,
                action="auth.invitation_created",
                target="invitation:x",
                detail={"email": email.upper(), "days": 7},
            )
        )
        message = Message(
            queue_name="default",
            actor_name="core.send_mail",
            args=(email, "Hello", f"Dear {side.who.user.display_name}"),
            kwargs={},
            options={},
        )
        sess.add(
            Job(
                message_id=message.message_id,
                queue="default",
                actor="core.send_mail",
                message=store.encode(message),
            )
        )


@pytest.fixture
def traced(app: Flask, client: FlaskClient, users: Users) -> World:
    world = build_world(app, client, users)
    for side in (world.ann, world.bob):
        add_traces(app, side, world.admin.user.id)
        with get_db(app).session() as sess:  # recovery codes as the instance hashes them
            sess.get_one(User, side.who.user.id).totp_secret = new_secret()
            sess.execute(delete(RecoveryCode).where(RecoveryCode.user_id == side.who.user.id))
            for code in side.recovery_codes:
                sess.add(RecoveryCode(user_id=side.who.user.id, code_hash=hash_recovery_code(code)))
    return world


# ------------------------------------------------------------------ the erasure


def test_erasing_removes_every_trace_and_keeps_the_records(traced: World) -> None:
    world, ann, bob = traced, traced.ann, traced.bob
    app = world.app
    address, name = ann.who.user.email, ann.who.user.display_name
    before = rows_of(app, ann.who.user.id)
    bob_before = rows_of(app, bob.who.user.id)
    assert address in everything(app) and before["events"] and before["progress"]

    out = ok(erase(world, ann))

    assert out["id"] == ann.who.id
    # Ann was the only instructor of both her courses (Bob only assists in one)
    assert sorted(out["unstaffed_courses"]) == sorted(c.id for c in ann.courses)
    after = rows_of(app, ann.who.user.id)
    user = after["user"]
    assert user["email"] == f"erased-{ann.who.id}@erased.invalid"
    assert user["display_name"] == "Erased user"
    assert user["public_id"] == ann.who.id
    assert user["password_hash"] is None and user["totp_secret"] is None
    assert not user["totp_enabled"] and not user["is_active"] and not user["is_admin"]
    assert not user["can_create_courses"] and user["last_login_at"] is None
    assert user["erased_at"] is not None
    assert user["session_version"] == before["user"]["session_version"] + 1
    assert (after["identities"], after["tokens"], after["codes"], after["roles"]) == (0, 0, 0, [])
    assert [status for _, status in after["enrolments"]] == ["withdrawn"]
    assert after["progress"] == before["progress"]  # the records stay
    assert [pid for pid, _ in after["events"]] == [pid for pid, _ in before["events"]]
    for _, statement in after["events"]:
        assert json.loads(statement)["actor"]["name"] == "Erased user"

    # nothing stored anywhere holds her address or her name any more
    text = everything(app)
    assert address not in text.lower()
    assert f"Dear {name}" not in text and json.dumps(name) not in text
    assert bob.who.user.email in text and f"Dear {bob.who.user.display_name}" in text

    with get_db(app).session() as sess:
        assert not sess.scalar(select(func.count()).where(func.lower(OutboxMail.to) == address))
        assert sess.scalar(
            select(func.count()).where(func.lower(OutboxMail.to) == bob.who.user.email)
        )
        scrubbed = sess.scalars(
            select(AuditLog.detail).where(AuditLog.action == "auth.invitation_created")
        ).all()
        assert {"email": "(erased)", "days": 7} in scrubbed
        assert {"email": bob.who.user.email.upper(), "days": 7} in scrubbed
        used = sess.scalar(select(Invitation).where(Invitation.used_by_id == ann.who.user.id))
        assert used is not None and used.email is None
        entry = sess.scalars(select(AuditLog).where(AuditLog.action == "account.erase")).one()
        assert (entry.actor_id, entry.target) == (ann.who.user.id, f"user:{ann.who.id}")
        assert entry.detail == {"via": "api"}
        sweeps = sess.scalars(select(Job).where(Job.actor == "core.sweep_erased_statements"))
        assert [store.decode(j.message).args for j in sweeps] == [(ann.who.user.id,)] * 2
        # where she acted from and what she named her tokens go; her entries stay
        mine = sess.execute(
            select(AuditLog.action, AuditLog.ip, AuditLog.detail).where(
                AuditLog.actor_id == ann.who.user.id
            )
        ).all()
        assert mine and all(ip == "" for _, ip, _ in mine)
        assert all("name" not in d for a, _, d in mine if a == "auth.token_created")
        # the invitation still to be used is gone; Bob's is not
        unused = sess.scalars(
            select(func.lower(Invitation.email)).where(Invitation.used_at.is_(None))
        ).all()
        assert address not in unused and bob.who.user.email in unused
        gone = sess.scalar(
            select(func.count()).where(Invitation.code_hash == sha256_hex(f"unused-{address}"))
        )
        assert gone == 0  # deleted, not merely stripped of its address (open to anyone)
        # the failed delivery to her is gone, Bob's kept
        deliveries = sess.scalars(select(Job.error).where(Job.actor == "core.deliver_mail"))
        assert [e for e in deliveries if "550" in e] == [
            f"MailRefused: the server refused {bob.who.user.email}: 550 no such user"
        ]

    # Bob's rows are exactly as they were, but for Ann's staff role in his course
    bob_after = rows_of(app, bob.who.user.id)
    assert bob_after == bob_before


def test_an_erased_account_is_gone_for_every_way_in(traced: World) -> None:
    world, ann = traced, traced.ann
    ok(erase(world, ann))
    for token in ann.token_plaintexts:
        resp = world.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 401
    api = Api(world.app.test_client())
    login = api.post("/auth/login", {"email": ann.who.user.email, "password": PASSWORD})
    assert login.status_code == 401
    # the address is free again: a new account, nothing of the old one
    fresh = api.post(
        "/auth/register",
        {"email": ann.who.user.email, "display_name": "Ann again", "password": PASSWORD + "!"},
    )
    assert fresh.status_code == 201, fresh.get_data(as_text=True)
    assert fresh.get_json()["user"]["id"] != ann.who.id


def test_a_late_heartbeat_is_swept_of_the_name(traced: World) -> None:
    world, ann = traced, traced.ann
    ok(erase(world, ann))
    late = {
        "id": "late",
        "actor": {"objectType": "Agent", "name": ann.who.user.display_name},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/progressed"},
    }
    with get_db(world.app).session() as sess:
        sess.add(Event(user_id=ann.who.user.id, verb="x", object_id="urn:x", statement=late))
    with world.app.app_context():
        sweep_erased_statements.fn(ann.who.user.id)
        sweep_erased_statements.fn(ann.who.user.id)  # idempotent
        db.session().close()
    with get_db(world.app).session() as sess:
        names = {
            s["actor"]["name"]
            for s in sess.scalars(select(Event.statement).where(Event.user_id == ann.who.user.id))
        }
    assert names == {"Erased user"}


def test_the_sweep_leaves_an_account_that_is_not_erased(traced: World) -> None:
    world, bob = traced, traced.bob
    before = rows_of(world.app, bob.who.user.id)
    with world.app.app_context():
        sweep_erased_statements.fn(bob.who.user.id)
        db.session().close()
    assert rows_of(world.app, bob.who.user.id) == before


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"password": "wrong password!"}, 403, "not correct"),
        ({"code": None}, 401, "second factor"),
        ({"code": "000000"}, 400, "wrong, expired or already used"),
        ({"password": None}, 422, "password"),
        ({"confirm": True}, 422, "confirm"),
    ],
)
def test_a_refused_erasure_changes_nothing(
    traced: World, change: dict[str, Any], status: int, says: str
) -> None:
    world, ann = traced, traced.ann
    before = snapshot(world.app)
    body = {"password": password_of(ann), "code": ann.recovery_codes[0], **change}
    body = {k: v for k, v in body.items() if v is not None}
    found = problem(call(world.client, "POST", ERASE, ann.who.headers, body), status)
    assert says in json.dumps(found)
    assert snapshot(world.app) == before


def test_an_instance_may_keep_erasure_to_its_administrators(traced: World) -> None:
    world, ann = traced, traced.ann
    world.app.extensions["trivium.settings"].accounts.self_erasure = False
    before = snapshot(world.app)
    found = problem(erase(world, ann), 403)
    assert "administrators" in found["detail"]
    assert snapshot(world.app) == before


def test_an_account_without_a_password_asks_the_administrators(app: Flask, users: Users) -> None:
    someone = person(users, "sso-only@example.org")
    before = snapshot(app)
    found = problem(
        call(app.test_client(), "POST", ERASE, someone.headers, {"password": "anything at all"}),
        409,
    )
    assert "administrators" in found["detail"]
    assert snapshot(app) == before


def test_the_last_active_administrator_cannot_erase_themselves(app: Flask, users: Users) -> None:
    root = person(users, "root@example.org", admin=True, password=PASSWORD)
    before = snapshot(app)
    found = problem(
        call(app.test_client(), "POST", ERASE, root.headers, {"password": PASSWORD}), 409
    )
    assert "at least one active site administrator" in found["detail"]
    assert snapshot(app) == before
    # with a second administrator, they may
    person(users, "second@example.org", admin=True)
    ok(call(app.test_client(), "POST", ERASE, root.headers, {"password": PASSWORD}))


class Failing:
    @hookimpl
    def erase_user_data(self, user: User) -> None:
        db.session().add(AuditLog(action="half.done", target="", detail={}))
        raise RuntimeError("the bookmarks table is on fire")


class Bookmarks:
    """A plugin that erases what it holds about the person: here, an audit row it wrote."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    @hookimpl
    def erase_user_data(self, user: User) -> None:
        self.seen.append((user.email, user.display_name))
        db.session().add(AuditLog(action="bookmarks.erased", target=f"user:{user.public_id}"))


@pytest.fixture
def host(app: Flask) -> PluginHost:
    found: PluginHost = app.extensions["trivium.plugins"]
    return found


def test_a_failing_plugin_stops_the_erasure(traced: World, host: PluginHost) -> None:
    world, ann = traced, traced.ann
    host.register(Failing(), "failing")
    try:
        before = snapshot(world.app)
        found = problem(erase(world, ann), 500)
        assert found["plugin"] == "failing" and "nothing was erased" in found["detail"]
        assert "on fire" not in json.dumps(found)
        assert snapshot(world.app) == before
    finally:
        host.unregister("failing")


def test_hook_erase_user_data(traced: World, host: PluginHost) -> None:
    world, ann = traced, traced.ann
    plugin = Bookmarks()
    host.register(plugin, "bookmarks")
    try:
        ok(erase(world, ann))
    finally:
        host.unregister("bookmarks")
    # the plugin still saw who it was erasing, to match its own rows
    assert plugin.seen == [(ann.who.user.email, ann.who.user.display_name)]
    with get_db(world.app).session() as sess:
        assert sess.scalar(select(func.count()).where(AuditLog.action == "bookmarks.erased"))


# ------------------------------------------------------------------ the operator's side


def test_an_erased_account_is_changed_by_nothing(traced: World) -> None:
    world, ann = traced, traced.ann
    ok(erase(world, ann))
    settings = world.app.extensions["trivium.settings"]
    changes = [
        lambda s, u: erasure.erase_account(s, None, u, via="cli"),
        lambda s, u: operator.reactivate(s, None, u),
        lambda s, u: operator.deactivate(s, None, u),
        lambda s, u: operator.set_admin(s, None, u, True),
        lambda s, u: operator.set_course_creator(s, world.admin.user, u, True),
        lambda s, u: operator.set_password(s, None, u, "a new password 42", settings.accounts),
        lambda s, u: operator.reset_second_factor(s, None, u),
    ]
    before = snapshot(world.app)
    for change in changes:
        with world.app.app_context():
            sess = db.session()
            user = sess.get_one(User, ann.who.user.id)
            with pytest.raises(Problem, match="erased") as refused:
                change(sess, user)
            assert refused.value.status == 409
            sess.rollback()
    assert snapshot(world.app) == before


def test_the_user_list_tells_erased_from_deactivated(traced: World) -> None:
    world, ann = traced, traced.ann
    ok(erase(world, ann))
    with world.app.app_context():
        sess = db.session()
        erased, _ = operator.search_users(sess, state="erased")
        inactive, _ = operator.search_users(sess, state="inactive")
    assert [u.public_id for u in erased] == [ann.who.id]
    assert ann.who.id not in [u.public_id for u in inactive]


# ------------------------------------------------------------------ trivium users erase

CLI_ENV = {"TRIVIUM_INSTANCE_PATH": None, "TRIVIUM_ACCOUNTS_HASH_PROFILE": "cheapest"}


def run(path: Path, *args: str, answer: str | None = None) -> Result:
    return CliRunner(env=CLI_ENV).invoke(cli, ["--instance", str(path), *args], input=answer)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "uni"
    assert run(path, "init", str(path), "--name", "Uni U").exit_code == 0
    assert run(path, "db", "upgrade").exit_code == 0
    created = run(
        path, "users", "create", "ann@example.org", "--name", "Ann", "--password", PASSWORD
    )
    assert created.exit_code == 0, created.output
    yield path


def _db_text(path: Path) -> str:
    """Every row of every table of the instance's database, as one text."""
    import sqlite3

    found = sorted(path.rglob("*.db")) + sorted(path.rglob("*.sqlite*"))
    conn = sqlite3.connect(found[0])
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {t: conn.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}  # noqa: S608
        return json.dumps(rows, default=str).lower()
    finally:
        conn.close()


def test_the_command_line_erases_after_asking(instance: Path) -> None:
    declined = run(instance, "users", "erase", "ann@example.org", answer="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert "ann@example.org" in _db_text(instance)

    done = run(instance, "users", "erase", "ANN@example.org", "--yes")
    assert done.exit_code == 0, done.output
    assert "Erased ann@example.org" in done.output
    assert "ann@example.org" not in _db_text(instance)
    listed = run(instance, "users", "list", "--state", "erased")
    assert "erased-" in listed.output and "erased" in listed.output

    again = run(instance, "users", "erase", "ann@example.org", "--yes")
    assert again.exit_code == 1 and "no user ann@example.org" in again.output


def test_the_command_line_names_courses_left_without_an_instructor(traced: World) -> None:
    world, ann = traced, traced.ann
    with world.app.app_context():
        sess = db.session()
        user = sess.get_one(User, ann.who.user.id)
        done = erasure.erase_account(sess, None, user, via="cli")
        sess.commit()
        erasure.after_commit(done)
    assert sorted(pid for pid, _ in done.unstaffed) == sorted(c.id for c in ann.courses)
    assert done.identities == 2 and done.tokens == 2 and done.mail_jobs == 2
    assert done.staff_roles == 3  # two courses of her own, an assistant's role in Bob's
    assert done.erased_at <= datetime.now(UTC)


class TestWithHeartbeatsWaiting:
    """Heartbeats batched (as served): the person's waiting ones are written, then scrubbed."""

    @pytest.fixture
    def config(self, tmp_path: Path, backend: str) -> dict[str, Any]:
        cfg = base_config(tmp_path, backend)
        cfg["progress"] = {"flush_ms": 10_000, "flush_rows": 100_000}
        return cfg

    def test_waiting_heartbeats_are_written_before_the_erasure(
        self, traced: World, caplog: pytest.LogCaptureFixture
    ) -> None:
        world, ann, bob = traced, traced.ann, traced.bob
        buffer = progress_buffer.get_buffer(world.app)
        try:
            for side in (ann, bob):
                item = side.learns.items[1]
                report = {"status": "in_progress", "data": {"scroll": 0.5}}
                ok(call(world.client, "PUT", f"/items/{item}/progress", side.who.headers, report))
            assert buffer.waiting() >= 2
            with caplog.at_level(logging.WARNING):
                ok(erase(world, ann))
            # written first, while the erasure held no lock, then scrubbed with the rest
            assert "flush_before_read_failed" not in caplog.text
            assert buffer.waiting() == 0
            with get_db(world.app).session() as sess:
                names = {
                    s["actor"]["name"]
                    for s in sess.scalars(
                        select(Event.statement).where(Event.verb.endswith("progressed"))
                    )
                }
            assert names == {"Erased user", bob.who.user.display_name}
        finally:
            buffer.close()


def test_a_missing_code_is_asked_for_and_not_counted_against_the_login(traced: World) -> None:
    world, ann = traced, traced.ann
    limit = world.app.extensions["trivium.settings"].accounts.login_max_attempts_per_account
    for _ in range(limit + 1):
        found = problem(erase(world, ann, code=None), 401)
        assert found["totp_required"] is True
    ok(erase(world, ann))  # not locked out: the password and a code still work


# ------------------------------------------------------------------ races


def test_of_two_erasures_at_once_the_later_is_refused(traced: World) -> None:
    world, ann = traced, traced.ann
    with world.app.app_context():
        first, second = get_db(world.app).sessions(), get_db(world.app).sessions()
        try:
            mine = first.get_one(User, ann.who.user.id)
            theirs = second.get_one(User, ann.who.user.id)  # read before either wrote
            erasure.erase_account(first, None, mine, via="cli")
            first.commit()
            with pytest.raises(operator.AccountStateInvalid, match="meanwhile"):
                erasure.erase_account(second, None, theirs, via="cli")
            second.rollback()
        finally:
            first.close()
            second.close()
    with get_db(world.app).session() as sess:
        assert sess.scalar(select(func.count()).where(AuditLog.action == "account.erase")) == 1


def test_a_request_that_read_the_account_before_its_erasure_writes_nothing(
    traced: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password reset whose link was checked just before the account was erased."""
    world, ann = traced, traced.ann
    api = Api(world.app.test_client())
    assert api.post("/auth/password-reset", {"email": ann.who.user.email}).status_code == 202
    with get_db(world.app).session() as sess:
        body = sess.scalars(
            select(OutboxMail.body)
            .where(OutboxMail.to == ann.who.user.email)
            .order_by(OutboxMail.id.desc())
        ).first()
    assert body is not None
    token = body.split("token=")[1].split()[0]

    from core.auth import accounts

    policy = accounts.check_password_policy

    def erase_meanwhile(*args: Any, **kwargs: Any) -> None:
        policy(*args, **kwargs)  # the reset has loaded the account by now
        with world.app.app_context():
            other = get_db(world.app).sessions()
            try:
                done = erasure.erase_account(
                    other, None, other.get_one(User, ann.who.user.id), via="cli"
                )
                other.commit()
                erasure.after_commit(done)
            finally:
                other.close()

    monkeypatch.setattr(accounts, "check_password_policy", erase_meanwhile)
    resp = api.post(
        "/auth/password-reset/confirm", {"token": token, "new_password": "a brand new pass 42"}
    )
    assert resp.status_code == 409, resp.get_data(as_text=True)
    assert resp.get_json()["type"].endswith("/changed-meanwhile")
    after = rows_of(world.app, ann.who.user.id)["user"]
    assert after["password_hash"] is None and after["email"].startswith("erased-")
    assert ann.who.user.email not in everything(world.app).lower()  # no notice mail either


def test_the_sweep_erases_what_a_late_request_added(traced: World) -> None:
    world, ann = traced, traced.ann
    ok(erase(world, ann))
    with get_db(world.app).session() as sess:  # what requests begun before the erasure wrote
        row = sess.get_one(User, ann.who.user.id)
        row.display_name = "Ann Realname"
        row.totp_secret = "JBSWY3DPEHPK3PXP"
        sess.add(
            ApiToken(
                user_id=row.id,
                name="Ann's laptop",
                token_hash="0" * 64,
                prefix="trv_0000",
            )
        )
        course_id = sess.scalar(select(Enrolment.course_id).where(Enrolment.user_id == row.id))
        sess.execute(
            update(Enrolment)
            .where(Enrolment.user_id == row.id, Enrolment.course_id == course_id)
            .values(status="active")
        )
    with world.app.app_context():
        sweep_erased_statements.fn(ann.who.user.id)
        db.session().close()
    after = rows_of(world.app, ann.who.user.id)
    assert after["user"]["display_name"] == "Erased user" and after["user"]["totp_secret"] is None
    assert after["tokens"] == 0
    assert [status for _, status in after["enrolments"]] == ["withdrawn"]


def test_the_last_sweep_waits_out_every_cache(app: Flask) -> None:
    settings = app.extensions["trivium.settings"]
    with app.app_context():
        delays = erasure.sweep_delays_ms()
    assert delays[0] == erasure.SWEEP_DELAY_MS
    assert (
        delays[-1]
        >= (settings.accounts.token_cache_seconds + settings.cache.read_seconds) * 1000
        + settings.progress.flush_ms
    )


def test_an_inviters_name_is_not_in_the_invitation_mail(app: Flask, users: Users) -> None:
    root = person(users, "root@example.org", admin=True)
    with get_db(app).session() as sess:
        sess.get_one(User, root.user.id).display_name = "Rosalind Unique-Name"
    sent = call(
        app.test_client(),
        "POST",
        "/admin/invitations",
        root.headers,
        {"email": "carol@example.org"},
    )
    assert sent.status_code == 201, sent.get_data(as_text=True)
    with get_db(app).session() as sess:
        (body,) = sess.scalars(select(OutboxMail.body).where(OutboxMail.to == "carol@example.org"))
    assert "Rosalind" not in body and "invites you" in body


REDIS_URL = os.environ.get("TRIVIUM_TEST_REDIS_URL", "")


@pytest.mark.skipif(not REDIS_URL, reason="TRIVIUM_TEST_REDIS_URL not set")
class TestWithARedisCache:
    """Verified tokens cached in Redis: the erasure drops them there too."""

    @pytest.fixture
    def config(self, tmp_path: Path, backend: str) -> dict[str, Any]:
        cfg = base_config(tmp_path, backend)
        cfg["cache"] = {"url": REDIS_URL}
        return cfg

    def test_the_tokens_stop_at_once(self, traced: World) -> None:
        world, ann = traced, traced.ann
        for token in ann.token_plaintexts:  # cached now
            headers = {"Authorization": f"Bearer {token}"}
            assert world.client.get("/api/v1/me", headers=headers).status_code == 200
        ok(erase(world, ann))
        for token in ann.token_plaintexts:
            headers = {"Authorization": f"Bearer {token}"}
            assert world.client.get("/api/v1/me", headers=headers).status_code == 401


def _erase_elsewhere(app: Flask, user_id: int) -> None:
    """Commit an erasure of ``user_id`` from another session (another request)."""
    with app.app_context():
        other = get_db(app).sessions()
        try:
            done = erasure.erase_account(other, None, other.get_one(User, user_id), via="cli")
            other.commit()
            erasure.after_commit(done)
        finally:
            other.close()


def test_ordinary_changes_at_once_do_not_conflict(traced: World) -> None:
    """Only an erasure moves the row's version: two logins at once both go through."""
    world, ann = traced, traced.ann
    first, second = get_db(world.app).sessions(), get_db(world.app).sessions()
    try:
        one = first.get_one(User, ann.who.user.id)
        two = second.get_one(User, ann.who.user.id)
        one.last_login_at = datetime.now(UTC)
        first.commit()
        two.display_name = "Ann Again"
        second.commit()
    finally:
        first.close()
        second.close()
    assert rows_of(world.app, ann.who.user.id)["user"]["display_name"] == "Ann Again"


def test_a_page_that_lost_the_race_says_so(traced: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world, ann = traced, traced.ann
    with get_db(world.app).session() as sess:
        sess.get_one(User, ann.who.user.id).totp_enabled = False
    pages = Pages(world.app.test_client())
    login = pages.post("/login", {"email": ann.who.user.email, "password": password_of(ann)})
    assert login.status_code in (302, 303), login.get_data(as_text=True)

    from core.auth import accounts

    real_audit = accounts.audit

    def erase_meanwhile(*args: Any, **kwargs: Any) -> Any:
        _erase_elsewhere(world.app, ann.who.user.id)
        return real_audit(*args, **kwargs)

    monkeypatch.setattr(accounts, "audit", erase_meanwhile)
    resp = pages.post("/account/profile", {"display_name": "Ann Realname"})
    assert resp.status_code == 409
    page = resp.get_data(as_text=True)
    assert "changed or removed meanwhile" in page and "<nav" in page  # the site's layout
    assert rows_of(world.app, ann.who.user.id)["user"]["display_name"] == "Erased user"


def test_a_reset_mail_asked_for_as_the_account_is_erased_is_not_kept(
    traced: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, ann = traced, traced.ann
    address = ann.who.user.email
    from core.auth import accounts

    real_send = accounts.send_mail

    def erase_meanwhile(*args: Any, **kwargs: Any) -> Any:
        _erase_elsewhere(world.app, ann.who.user.id)  # after the request found the account
        return real_send(*args, **kwargs)

    monkeypatch.setattr(accounts, "send_mail", erase_meanwhile)
    resp = Api(world.app.test_client()).post("/auth/password-reset", {"email": address})
    assert resp.status_code == 202
    assert address not in everything(world.app).lower()


def test_the_command_line_reports_a_lost_race(
    traced: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, ann = traced, traced.ann
    from core.cli import users as users_cli

    def erase_meanwhile(sess: Any, user: User) -> None:
        _erase_elsewhere(world.app, user.id)
        user.display_name = "Ann Realname"

    class State:
        def app(self) -> Flask:
            return world.app

    monkeypatch.setattr(users_cli, "state_of", lambda ctx: State())
    import click

    with pytest.raises(click.ClickException, match="changed meanwhile"):
        users_cli._account_change(None, ann.who.user.email, erase_meanwhile)  # type: ignore[arg-type]
    assert rows_of(world.app, ann.who.user.id)["user"]["display_name"] == "Erased user"


def test_the_sweep_scrubs_what_late_requests_audited(traced: World) -> None:
    world, ann = traced, traced.ann
    ok(erase(world, ann))
    with get_db(world.app).session() as sess:  # a token made by a request begun before
        sess.add(
            AuditLog(
                actor_id=ann.who.user.id,
                action="auth.token_created",
                target="token:late",
                ip="198.51.100.7",
                detail={"name": "Ann Lovelace's laptop"},
            )
        )
        sess.add(
            AuditLog(
                actor_id=None,
                action="auth.password_reset_requested",
                target=f"user:{ann.who.id}",
                ip="198.51.100.8",
            )
        )
    with world.app.app_context():
        sweep_erased_statements.fn(ann.who.user.id)
        db.session().close()
    text = everything(world.app)
    assert "198.51.100" not in text and "Lovelace" not in text


def test_a_job_error_quoting_the_address_loses_it(traced: World) -> None:
    world, ann = traced, traced.ann
    address = ann.who.user.email
    with get_db(world.app).session() as sess:
        sess.add(
            Job(
                message_id="other-job",
                queue="default",
                actor="plugin.something",
                message="{}",
                state="failed",
                error=f"Traceback ...\nValueError: no such mailbox {address.upper()}",
            )
        )
    ok(erase(world, ann))
    with get_db(world.app).session() as sess:
        error = sess.scalar(select(Job.error).where(Job.message_id == "other-job"))
    assert error == "Traceback ...\nValueError: no such mailbox (erased)"
