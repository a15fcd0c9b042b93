"""Personal API tokens authenticate requests; bad ones never do."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from sqlalchemy import select

from core.auth import current_user
from core.auth.tokens import create_token
from core.auth.tokens import hash_token
from core.db import get_db
from core.db import utcnow
from core.models import ApiToken
from core.models import User
from tests.conftest import Users


def _whoami(app: Flask, headers: dict[str, str]) -> str | None:
    with app.test_request_context("/api/v1/me", headers=headers):
        user = current_user()
        return user.email if user else None


def test_valid_token_identifies_its_owner(app: Flask, users: Users) -> None:
    user = users.create("ada@example.org")
    assert _whoami(app, users.headers(user)) == "ada@example.org"


def test_only_the_hash_is_stored(app: Flask, users: Users) -> None:
    user = users.create()
    with get_db(app).session() as sess:
        _, plaintext = create_token(sess, sess.get_one(User, user.id), "cli")
    with get_db(app).session() as sess:
        stored = sess.scalars(select(ApiToken.token_hash)).all()
    assert plaintext not in stored
    assert hash_token(plaintext) in stored


def test_forged_expired_revoked_and_inactive_tokens_are_refused(app: Flask, users: Users) -> None:
    user = users.create()
    assert _whoami(app, {"Authorization": "Bearer trv_forged"}) is None
    assert _whoami(app, {"Authorization": "Basic abc"}) is None
    with get_db(app).session() as sess:
        owner = sess.get_one(User, user.id)
        _, expired_text = create_token(sess, owner, "old", utcnow() - timedelta(seconds=1))
        revoked, revoked_text = create_token(sess, owner, "revoked")
        revoked.revoked_at = utcnow()
        _, live_text = create_token(sess, owner, "live")
    assert _whoami(app, {"Authorization": f"Bearer {expired_text}"}) is None
    assert _whoami(app, {"Authorization": f"Bearer {revoked_text}"}) is None
    assert _whoami(app, {"Authorization": f"Bearer {live_text}"}) == user.email
    with get_db(app).session() as sess:
        sess.get_one(User, user.id).is_active = False
    assert _whoami(app, {"Authorization": f"Bearer {live_text}"}) is None
