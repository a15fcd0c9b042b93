"""Registration: open, closed and invite-only; bad input stores nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.auth.views import _sha256
from core.db import get_db
from core.db import utcnow
from core.models import Identity
from core.models import Invitation
from core.models import User
from tests.auth_helpers import PASSWORD
from tests.auth_helpers import Api
from tests.auth_helpers import assert_problem
from tests.auth_helpers import audit_actions
from tests.auth_helpers import outbox
from tests.conftest import Users
from tests.conftest import snapshot


@pytest.fixture
def api(client: FlaskClient) -> Api:
    """A CSRF-aware JSON client."""
    return Api(client)


def _user(app: Flask, email: str) -> User | None:
    with get_db(app).session() as sess:
        user = sess.scalar(select(User).where(User.email == email))
        if user is not None:
            sess.expunge(user)
        return user


def test_register_creates_account_identity_audit_and_session(app: Flask, api: Api) -> None:
    resp = api.register("  Ada@Example.ORG ")
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["user"]["email"] == "ada@example.org"
    assert body["user"]["totp_enabled"] is False
    assert body["csrf_token"]
    user = _user(app, "ada@example.org")
    assert user is not None
    assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    with get_db(app).session() as sess:
        ident = sess.scalars(select(Identity)).one()
    assert (ident.provider, ident.subject, ident.user_id) == ("local", "ada@example.org", user.id)
    assert audit_actions(app) == ["auth.register"]
    assert api.logged_in()


def test_register_then_use_the_returned_csrf_token(api: Api) -> None:
    token = api.register("ada@example.org").get_json()["csrf_token"]
    resp = api.send(
        "POST", "/me/tokens", {"name": "cli"}, csrf=False, headers={"X-CSRFToken": token}
    )
    assert resp.status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"email": "not-an-email", "display_name": "A", "password": PASSWORD}, 422, "shape"),
        ({"email": "a@b", "display_name": "A", "password": PASSWORD}, 422, "shape"),
        ({"email": "a b@example.org", "display_name": "A", "password": PASSWORD}, 422, "shape"),
        ({"email": "x@example.org", "display_name": "  ", "password": PASSWORD}, 422, "shape"),
        ({"email": "x@example.org", "display_name": "a\x00b", "password": PASSWORD}, 422, "shape"),
        ({"email": "x@example.org", "display_name": "A"}, 422, "shape"),
        ({"email": 42, "display_name": "A", "password": PASSWORD}, 422, "shape"),
        ({"email": "x@example.org", "display_name": "A", "password": 12345678901}, 422, "shape"),
        (
            {"email": "x@example.org", "display_name": "A", "password": PASSWORD, "admin": True},
            422,
            "shape",
        ),
        ({"email": "x@example.org", "display_name": "A", "password": "short"}, 422, "at least"),
        ({"email": "x@example.org", "display_name": "A", "password": "a" * 1025}, 422, "at most"),
        ({"email": "x@example.org", "display_name": "A", "password": "password123"}, 422, "common"),
        (
            {"email": "x@example.org", "display_name": "A", "password": "Password1234"},
            422,
            "common",
        ),
        (
            {"email": "x@example.org", "display_name": "A", "password": "zzzzzzzzzzzz"},
            422,
            "repeated",
        ),
        (
            {"email": "jonathan@example.org", "display_name": "A", "password": "my-Jonathan-99"},
            422,
            "e-mail",
        ),
        ([], 422, "shape"),
    ],
)
def test_bad_registrations_are_refused_and_store_nothing(
    app: Flask, api: Api, body: Any, status: int, detail: str
) -> None:
    before = snapshot(app)
    assert_problem(api.post("/auth/register", body), status, detail)
    assert snapshot(app) == before
    assert not api.logged_in()


def test_malformed_json_and_wrong_content_type(app: Flask, api: Api) -> None:
    before = snapshot(app)
    token = api.csrf()
    resp = api.client.post(
        "/api/v1/auth/register",
        data=b'{"email": ',
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert_problem(resp, 400, "not valid JSON")
    resp = api.client.post(
        "/api/v1/auth/register",
        data="email=a@b.org",
        content_type="application/x-www-form-urlencoded",
        headers={"X-CSRFToken": token},
    )
    assert_problem(resp, 415)
    assert snapshot(app) == before


def test_duplicate_email_is_a_conflict_and_stores_nothing(app: Flask, api: Api) -> None:
    assert api.register("ada@example.org").status_code == 201
    before = snapshot(app)
    other = Api(app.test_client())
    assert_problem(other.register(" ADA@example.org"), 409, "already exists")
    assert snapshot(app) == before
    assert not other.logged_in()


@pytest.fixture
def closed_config(config: dict[str, Any]) -> dict[str, Any]:
    config["accounts"]["registration"] = "closed"
    return config


@pytest.fixture
def invite_config(config: dict[str, Any]) -> dict[str, Any]:
    config["accounts"]["registration"] = "invite"
    return config


@pytest.mark.usefixtures("closed_config")
def test_closed_registration_is_forbidden(app: Flask, api: Api) -> None:
    before = snapshot(app)
    assert_problem(api.register("ada@example.org"), 403, "does not accept new registrations")
    assert snapshot(app) == before


def _invite(app: Flask, code: str, email: str | None = None, days: int = 7) -> None:
    with get_db(app).session() as sess:
        sess.add(
            Invitation(
                code_hash=_sha256(code), email=email, expires_at=utcnow() + timedelta(days=days)
            )
        )


@pytest.mark.usefixtures("invite_config")
def test_invite_only_needs_a_valid_code(app: Flask, api: Api) -> None:
    _invite(app, "open-code")
    _invite(app, "bound-code", email="grace@example.org")
    _invite(app, "old-code", days=-1)
    before = snapshot(app)
    assert_problem(api.register("ada@example.org"), 403, "needs an invitation code")
    assert_problem(api.register("ada@example.org", invite_code="nope"), 403, "unknown")
    assert_problem(api.register("ada@example.org", invite_code="old-code"), 403, "expired")
    assert_problem(
        api.register("ada@example.org", invite_code="bound-code"), 403, "different e-mail"
    )
    assert snapshot(app) == before

    resp = api.register("grace@example.org", invite_code="bound-code")
    assert resp.status_code == 201
    grace = _user(app, "grace@example.org")
    assert grace is not None
    with get_db(app).session() as sess:
        inv = sess.scalar(select(Invitation).where(Invitation.email == "grace@example.org"))
        assert inv is not None
        assert inv.used_at is not None and inv.used_by_id == grace.id

    other = Api(app.test_client())
    before = snapshot(app)
    assert_problem(other.register("eve@example.org", invite_code="bound-code"), 403, "used")
    assert snapshot(app) == before
    assert other.register("ada@example.org", invite_code="open-code").status_code == 201


@pytest.mark.usefixtures("invite_config")
def test_admin_invitation_round_trip(app: Flask, api: Api, users: Users) -> None:
    admin = users.create("root@example.org", admin=True)
    headers = users.headers(admin)
    resp = api.post(
        "/admin/invitations", {"email": "Grace@Example.org", "days": 3}, headers=headers
    )
    assert resp.status_code == 201
    created = resp.get_json()
    assert created["email"] == "grace@example.org"
    assert created["mail_sent"] is True
    code = created["code"]
    with get_db(app).session() as sess:
        stored = sess.scalars(select(Invitation.code_hash)).one()
    assert stored == _sha256(code) and code not in stored
    mails = outbox(app)
    assert [m.to for m in mails] == ["grace@example.org"]
    assert code in mails[0].body

    unbound = api.post("/admin/invitations", {"days": 1}, headers=headers).get_json()
    assert unbound["email"] is None and unbound["mail_sent"] is False
    assert len(outbox(app)) == 1

    listing = api.get("/admin/invitations", headers=headers).get_json()
    assert [i["id"] for i in listing["items"]] == [unbound["id"], created["id"]]
    assert all("code" not in i for i in listing["items"])
    assert {i["status"] for i in listing["items"]} == {"open"}

    page1 = api.get("/admin/invitations?limit=1", headers=headers).get_json()
    assert len(page1["items"]) == 1 and page1["next_cursor"]
    page2 = api.get(
        f"/admin/invitations?limit=1&cursor={page1['next_cursor']}", headers=headers
    ).get_json()
    assert [i["id"] for i in page2["items"]] == [created["id"]]
    assert page2["next_cursor"] is None

    assert Api(app.test_client()).register("grace@example.org", invite_code=code).status_code == 201
    statuses = {
        i["id"]: i["status"]
        for i in api.get("/admin/invitations", headers=headers).get_json()["items"]
    }
    assert statuses[created["id"]] == "used"
    assert "auth.invitation_created" in audit_actions(app)


def test_invitations_are_for_admins_only(app: Flask, api: Api, users: Users) -> None:
    learner = users.create("learner@example.org")
    admin = users.create("root@example.org", admin=True)
    before = snapshot(app)
    assert_problem(api.post("/admin/invitations", {"days": 1}), 401)
    assert_problem(api.get("/admin/invitations"), 401)
    headers = users.headers(learner)
    after_token = snapshot(app)
    assert_problem(api.post("/admin/invitations", {"days": 1}, headers=headers), 403, "admin")
    assert_problem(api.get("/admin/invitations", headers=headers), 403, "admin")
    assert snapshot(app) == after_token
    admin_headers = users.headers(admin)
    after_token = snapshot(app)
    for bad in ({"days": 0}, {"days": "3"}, {"days": 400}, {"email": "nope", "days": 1}, {"x": 1}):
        assert_problem(api.post("/admin/invitations", bad, headers=admin_headers), 422)
    assert_problem(api.get("/admin/invitations?cursor=zzz", headers=admin_headers), 422)
    assert_problem(api.get("/admin/invitations?limit=0", headers=admin_headers), 422)
    assert snapshot(app) == after_token
    assert before != after_token  # only the test's own tokens were added
