"""Personal API tokens authenticate requests; bad ones never do."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event
from sqlalchemy import select

from core import create_app
from core import db
from core.auth import current_user
from core.auth import tokens
from core.auth.tokens import create_token
from core.auth.tokens import forget_user_tokens
from core.auth.tokens import hash_token
from core.db import get_db
from core.db import utcnow
from core.models import ApiToken
from core.models import User
from tests.conftest import Users
from tests.conftest import reset_schema


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
        # A change made straight in the database reaches a cached token within
        # [accounts] token_cache_seconds; forget_user_tokens makes it immediate.
        with app.app_context():
            forget_user_tokens(sess, user.id)
    assert _whoami(app, {"Authorization": f"Bearer {live_text}"}) is None


def test_a_cached_token_needs_no_lookup_and_still_expires_on_time(
    app: Flask, users: Users, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = users.create()
    with get_db(app).session() as sess:
        owner = sess.get_one(User, user.id)
        _, plaintext = create_token(sess, owner, "soon", utcnow() + timedelta(minutes=1))
    headers = {"Authorization": f"Bearer {plaintext}"}
    # a process's first lookup notes the owner (whose counter it then reads
    # before each load); the second is kept
    assert _whoami(app, headers) == user.email
    assert _whoami(app, headers) == user.email
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = get_db(app).engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert _whoami(app, headers) == user.email
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert not any("api_tokens" in s for s in statements)
    # the cached entry carries the expiry
    later = utcnow() + timedelta(minutes=2)
    monkeypatch.setattr(tokens, "utcnow", lambda: later)
    assert _whoami(app, headers) is None


def test_session_and_password_fields_are_never_cached(app: Flask, users: Users) -> None:
    user = users.create()
    headers = users.headers(user)
    assert _whoami(app, headers) == user.email
    with get_db(app).session() as sess:
        sess.get_one(User, user.id).session_version = 7
    with app.test_request_context("/api/v1/me", headers=headers):
        found = current_user()
        assert found is not None
        assert found.session_version == 7


def test_a_deferred_owner_waits_for_the_first_query_and_is_attached_before_it(
    app: Flask, users: Users
) -> None:
    user = users.create("ada@example.org")
    headers = users.headers(user)
    assert _whoami(app, headers) == user.email
    assert _whoami(app, headers) == user.email  # kept by now
    begun: list[object] = []

    def created(sess: Any, transaction: Any) -> None:
        begun.append(transaction)

    factory = get_db(app).sessions
    event.listen(factory, "after_transaction_create", created)
    try:
        with app.test_request_context("/api/v1/me", headers=headers):
            owner = current_user(attach=False)
            assert owner is not None and owner.email == user.email
            sess = db.session()
            assert owner not in sess and not begun  # from the cache, no transaction yet
            # the first query attaches the owner before it runs: a row it
            # loads is that very object, and secrets load through it
            same = sess.scalars(select(User).where(User.id == user.id)).one()
            assert same is owner and owner in sess
            assert owner.session_version == 1
            again = current_user()  # asking again, attached: the same object
            assert again is owner
    finally:
        event.remove(factory, "after_transaction_create", created)
    assert begun


def test_an_owner_is_attached_when_asked_for_after_its_session_began(
    app: Flask, users: Users
) -> None:
    user = users.create()
    headers = users.headers(user)
    with app.test_request_context("/api/v1/me", headers=headers):
        sess = db.session()
        sess.execute(select(1))  # the session's transaction has begun
        owner = current_user(attach=False)
        assert owner is not None and owner in sess
        assert owner.password_hash is None or isinstance(owner.password_hash, str)


def test_without_the_cache_a_deactivation_applies_at_once(config: dict[str, Any]) -> None:
    config["accounts"]["token_cache_seconds"] = 0
    app = create_app(config["path"], config)
    reset_schema(app)
    try:
        users = Users(app)
        user = users.create()
        headers = users.headers(user)
        assert _whoami(app, headers) == user.email
        with get_db(app).session() as sess:
            sess.get_one(User, user.id).is_active = False
        assert _whoami(app, headers) is None
    finally:
        get_db(app).dispose()
