"""Personal API tokens: ``Authorization: Bearer trv_<random>``; only a SHA-256 is stored.

Registered as a core default plugin: its ``actor_from_request`` is ``trylast``
so an SSO plugin can claim a request first.

Verified tokens are cached for ``[accounts] token_cache_seconds`` (30 by
default), keyed by the token's hash, so a client calling the API in a loop
costs no token lookup: in the instance cache when it is Redis, else in each
process (decoded, checked against the token's change counter of
:mod:`core.generations`).  What that means for changes:

* expiry is exact: the entry carries the token's ``expires_at``;
* revoking through the API (``DELETE /me/tokens/<id>``) calls
  :func:`forget_token`, which takes effect at once in every process sharing a
  Redis cache; with the in-process cache, at once in every process of the
  machine (and within ``token_cache_seconds`` on other machines);
* with the in-process cache, any committed change to the owner's user row
  (rights, deactivation) applies at once on the machine too;
* a deactivation or privilege change made directly in the database reaches
  requests within ``token_cache_seconds`` (call :func:`forget_user_tokens`
  after such a change to make it immediate where the cache is shared);
* ``session_version``, password and second-factor fields are never taken from
  the cache: they load from the database when a request reads them, and
  cookie sessions do not use this cache at all.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from datetime import datetime
from typing import Any

from flask import Request
from flask import current_app
from flask import has_app_context
from sqlalchemy import bindparam
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import db
from core import readcache
from core.auth.csrf import bearer_token
from core.cache import MemoryCache
from core.cache import get_cache
from core.db import detached
from core.db import read_first
from core.db import utcnow
from core.generations import Generations
from core.generations import slot_of
from core.hookspecs import hookimpl
from core.models import ApiToken
from core.models import User

TOKEN_PREFIX = "trv_"  # noqa: S105 (a marker, not a secret)

_CACHE_PREFIX = "apitoken:"
_LOCAL_KEY = "trivium.tokens.local"

#: The owner's columns a token request gets without a further query (the
#: rest load on first access, always fresh).
_USER_COLUMNS = (
    User.id,
    User.public_id,
    User.email,
    User.display_name,
    User.is_admin,
    User.can_create_courses,
    User.is_active,
    User.created_at,
)

_LOOKUP = (
    select(ApiToken.expires_at, ApiToken.revoked_at, *_USER_COLUMNS)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)

_USER_TOKEN_HASHES = select(ApiToken.token_hash).where(ApiToken.user_id == bindparam("user_id"))


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


def _cache_seconds() -> int:
    if not has_app_context():
        return 0
    seconds: int = current_app.extensions["trivium.settings"].accounts.token_cache_seconds
    return seconds


def _encode(user: dict[str, Any], expires_at: datetime | None) -> bytes:
    fields = dict(user, created_at=user["created_at"].isoformat())
    return json.dumps(
        {"user": fields, "expires_at": expires_at.isoformat() if expires_at else None}
    ).encode()


def _decode(raw: bytes) -> tuple[dict[str, Any], datetime | None] | None:
    try:
        data = json.loads(raw)
        user: dict[str, Any] = data["user"]
        user["created_at"] = datetime.fromisoformat(user["created_at"])
        expires = data["expires_at"]
        return user, datetime.fromisoformat(expires) if expires else None
    except (ValueError, KeyError, TypeError):  # written by another version: look it up
        return None


def _lookup(sess: Session, digest: str) -> tuple[dict[str, Any], datetime | None] | None:
    row = read_first(sess, _LOOKUP, {"token_hash": digest})
    if row is None or row.revoked_at is not None or not row.is_active:
        return None
    user = {column.key: getattr(row, column.key) for column in _USER_COLUMNS}
    return user, row.expires_at


def user_for_token(sess: Session, plaintext: str) -> User | None:
    """The active owner of a valid (unexpired, unrevoked) token, else None.

    The owner is detached (see :func:`core.db.detached`;
    :func:`core.auth.current_user` puts it in the request's session); ``sess``
    is only read from on a cache miss.  Within a request, verified tokens
    come from the cache described in the module docstring.
    """
    if not plaintext.startswith(TOKEN_PREFIX) or len(plaintext) > 200:
        return None
    digest = hash_token(plaintext)
    ttl = _cache_seconds()
    local = _local_table() if ttl else None
    found = None
    if local is not None:
        found = local.get(digest)
        if found is None:
            stamps = local.stamps(digest)
            found = _lookup(sess, digest)
            if found is None:
                return None
            local.keep(digest, found, stamps, ttl)
    else:
        if ttl:
            raw = get_cache().get(_CACHE_PREFIX + digest)
            found = _decode(raw) if raw is not None else None
        if found is None:
            moved = _token_counter(digest)
            found = _lookup(sess, digest)
            if found is None:
                return None
            # not if the token was revoked (forget_token) during the lookup
            if ttl and _token_counter(digest) == moved:
                get_cache().set(_CACHE_PREFIX + digest, _encode(*found), ttl)
    user, expires_at = found
    if expires_at is not None and expires_at <= utcnow():
        return None
    return detached(User, dict(user))


class _LocalTokens:
    """Decoded token owners, for a process whose instance cache is in-process anyway.

    Saves decoding the cached bytes on every request.  An entry is checked
    against two change counters (:mod:`core.generations`), read before its
    owner was loaded: the token's, which :func:`forget_token` moves, and its
    owner's, which any committed change to the user row moves (rights,
    deactivation).  The owner is known from an earlier load in this process
    (the first load only notes it), so a change is never missed, on any
    process of the machine.
    """

    def __init__(self, generations: Generations) -> None:
        self.generations = generations
        # digest -> (owner and expiry, kept until, stamps, their slots)
        self.entries: dict[
            str,
            tuple[tuple[dict[str, Any], datetime | None], float, tuple[int, ...], tuple[int, ...]],
        ] = {}
        self.owners: dict[str, int] = {}

    def _slots(self, digest: str) -> tuple[int, ...] | None:
        owner = self.owners.get(digest)
        return None if owner is None else _counter_slots(digest, owner)

    def get(self, digest: str) -> tuple[dict[str, Any], datetime | None] | None:
        entry = self.entries.get(digest)
        if entry is None:
            return None
        found, until, stamps, slots = entry
        if until <= time.monotonic() or tuple(map(self.generations.read, slots)) != stamps:
            return None
        return found

    def stamps(self, digest: str) -> tuple[int, ...] | None:
        slots = self._slots(digest)
        return None if slots is None else tuple(map(self.generations.read, slots))

    def keep(
        self,
        digest: str,
        found: tuple[dict[str, Any], datetime | None],
        stamps: tuple[int, ...] | None,
        ttl: int,
    ) -> None:
        owner: int = found[0]["id"]
        if stamps is None or self.owners.get(digest) != owner:
            if len(self.owners) >= 100_000:
                self.owners.clear()
            self.owners[digest] = owner
            return
        slots = _counter_slots(digest, owner)  # those ``stamps`` were read from
        if len(self.entries) >= 100_000:
            self.entries.clear()
        self.entries[digest] = (found, time.monotonic() + ttl, stamps, slots)


def _counter_slots(digest: str, owner: int) -> tuple[int, ...]:
    """The counters a token's entry depends on: the token's and its owner's."""
    return _slot(digest), slot_of(readcache.user_key(owner))


def _token_counter(digest: str) -> int | None:
    cache = readcache.current() if has_app_context() else None
    return None if cache is None else cache.generations.read(_slot(digest))


def _slot(digest: str) -> int:
    return slot_of(("token", int(digest[:15], 16)))


def _local_table() -> _LocalTokens | None:
    """This app's decoded-token layer, when its instance cache is in-process."""
    table: _LocalTokens | None = current_app.extensions.get(_LOCAL_KEY)
    if table is None and _LOCAL_KEY not in current_app.extensions:
        cache = readcache.current()
        if isinstance(get_cache(), MemoryCache) and cache is not None:
            table = _LocalTokens(cache.generations)
        current_app.extensions[_LOCAL_KEY] = table
    return table


def _moved(digests: list[str]) -> None:
    cache = readcache.current() if has_app_context() else None
    if cache is not None:
        cache.generations.bump(_slot(d) for d in digests)


def forget_token(token_hash: str) -> None:
    """Drop a token from the cache (call after revoking it, once committed)."""
    if has_app_context():
        _moved([token_hash])  # first: a lookup running now then does not store
        get_cache().delete(_CACHE_PREFIX + token_hash)


def forget_user_tokens(sess: Session, user_id: int) -> None:
    """Drop every token of a user from the cache (after deactivating them, say)."""
    if not has_app_context():
        return
    forget_token_hashes(list(sess.scalars(_USER_TOKEN_HASHES, {"user_id": user_id})))


def forget_token_hashes(hashes: list[str]) -> None:
    """Drop these tokens from the cache (after deleting their rows, once committed)."""
    if not has_app_context():
        return
    cache = get_cache()
    _moved(hashes)
    for token_hash in hashes:
        cache.delete(_CACHE_PREFIX + token_hash)


@hookimpl(trylast=True)
def actor_from_request(request: Request) -> User | None:
    """Authenticate ``Authorization: Bearer <token>``."""
    token = bearer_token(request.environ)
    if not token:
        return None
    return user_for_token(db.session(), token)
