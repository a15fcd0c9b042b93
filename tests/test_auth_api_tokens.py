"""Personal API tokens through the API: create (secret once), list, revoke."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.auth.tokens import hash_token
from core.db import get_db
from core.db import utcnow
from core.models import ApiToken
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


def test_create_list_use_and_revoke(app: Flask, api: Api, users: Users) -> None:
    users.create("ada@example.org", password=PASSWORD)
    api.login("ada@example.org")
    resp = api.post("/me/tokens", {"name": " laptop ", "expires_in_days": 30})
    assert resp.status_code == 201
    created = resp.get_json()
    plaintext = created["token"]
    assert created["name"] == "laptop"
    assert plaintext.startswith(created["prefix"])
    expires = created["expires_at"]
    assert expires is not None
    with get_db(app).session() as sess:
        row = sess.scalars(select(ApiToken)).one()
        assert row.token_hash == hash_token(plaintext)
        assert row.expires_at is not None
        assert timedelta(days=29) < row.expires_at - utcnow() <= timedelta(days=30)

    listing = api.get("/me/tokens").get_json()["items"]
    assert [t["id"] for t in listing] == [created["id"]]
    assert "token" not in listing[0]

    bearer = {"Authorization": f"Bearer {plaintext}"}
    fresh = app.test_client()
    assert fresh.get("/api/v1/me/tokens", headers=bearer).status_code == 200
    # Token clients need no CSRF token.
    resp = fresh.post("/api/v1/me/tokens", json={"name": "ci"}, headers=bearer)
    assert resp.status_code == 201
    assert resp.get_json()["expires_at"] is None

    assert api.delete(f"/me/tokens/{created['id']}").status_code == 204
    assert fresh.get("/api/v1/me/tokens", headers=bearer).status_code == 401
    assert [t["name"] for t in api.get("/me/tokens").get_json()["items"]] == ["ci"]
    assert audit_actions(app).count("auth.token_created") == 2
    assert "auth.token_revoked" in audit_actions(app)

    before = snapshot(app)
    assert_problem(api.delete(f"/me/tokens/{created['id']}"), 404)
    assert snapshot(app) == before


def test_another_users_token_is_not_found(app: Flask, api: Api, users: Users) -> None:
    ada = users.create("ada@example.org", password=PASSWORD)
    eve = users.create("eve@example.org")
    eve_headers = users.headers(eve)
    ada_headers = users.headers(ada)
    with get_db(app).session() as sess:
        ada_token = sess.scalars(select(ApiToken).where(ApiToken.user_id == ada.id)).one()
    before = snapshot(app)
    resp = app.test_client().delete(f"/api/v1/me/tokens/{ada_token.public_id}", headers=eve_headers)
    assert_problem(resp, 404, "no API token")
    resp = app.test_client().delete("/api/v1/me/tokens/nope", headers=eve_headers)
    assert_problem(resp, 404)
    assert snapshot(app) == before
    listing = app.test_client().get("/api/v1/me/tokens", headers=eve_headers).get_json()
    assert ada_token.public_id not in {t["id"] for t in listing["items"]}
    assert app.test_client().get("/api/v1/me/tokens", headers=ada_headers).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": "tab\there"},
        {"name": "ok", "expires_in_days": 0},
        {"name": "ok", "expires_in_days": 4000},
        {"name": "ok", "expires_in_days": "30"},
        {"name": "ok", "scope": "all"},
    ],
)
def test_bad_token_requests(app: Flask, users: Users, body: object) -> None:
    headers = users.headers(users.create())
    before = snapshot(app)
    resp = app.test_client().post("/api/v1/me/tokens", json=body, headers=headers)
    assert_problem(resp, 422)
    assert snapshot(app) == before


def test_tokens_need_a_login(app: Flask, api: Api) -> None:
    before = snapshot(app)
    assert_problem(api.get("/me/tokens"), 401)
    assert_problem(api.post("/me/tokens", {"name": "x"}), 401)
    assert_problem(api.delete("/me/tokens/abc"), 401)
    assert_problem(
        app.test_client().get("/api/v1/me/tokens", headers={"Authorization": "Bearer trv_x"}), 401
    )
    assert snapshot(app) == before
