"""Personal API tokens: ``Authorization: Bearer trv_<random>``; only a SHA-256 is stored.

Registered as a core default plugin: its ``actor_from_request`` is ``trylast``
so an SSO plugin can claim a request first.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from flask import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import db
from core.db import utcnow
from core.hookspecs import hookimpl
from core.models import ApiToken
from core.models import User

TOKEN_PREFIX = "trv_"  # noqa: S105 (a marker, not a secret)


def hash_token(plaintext: str) -> str:
    """The stored form of a token (tokens are random, so no salt is needed)."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_token(
    sess: Session, user: User, name: str, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """Create a token for ``user``; the plaintext is returned once and never stored."""
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=hash_token(plaintext),
        prefix=plaintext[:10],
        expires_at=expires_at,
    )
    sess.add(token)
    sess.flush()
    return token, plaintext


def user_for_token(sess: Session, plaintext: str) -> User | None:
    """The active owner of a valid (unexpired, unrevoked) token, else None."""
    if not plaintext.startswith(TOKEN_PREFIX) or len(plaintext) > 200:
        return None
    row = sess.execute(
        select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == hash_token(plaintext))
    ).first()
    if row is None:
        return None
    token, user = row
    now = utcnow()
    if token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now):
        return None
    if not user.is_active:
        return None
    return user


@hookimpl(trylast=True)
def actor_from_request(request: Request) -> User | None:
    """Authenticate ``Authorization: Bearer <token>``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        return None
    return user_for_token(db.session(), value.strip())
