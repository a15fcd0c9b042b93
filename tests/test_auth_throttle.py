"""Login throttling on both cache backends: in-process and Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from core.auth.throttle import LoginThrottle
from core.auth.throttle import LoginThrottled
from core.cache import Cache
from core.cache import MemoryCache
from core.cache import RedisCache
from core.config import AccountsSection
from tests.auth_helpers import PASSWORD
from tests.auth_helpers import Api
from tests.auth_helpers import assert_problem
from tests.conftest import REDIS_URL
from tests.conftest import Users
from tests.conftest import snapshot

LIMITS = AccountsSection(
    login_max_attempts_per_account=3, login_max_attempts_per_ip=5, login_window_seconds=60
)


def _redis_cache() -> Iterator[RedisCache]:
    if not REDIS_URL:
        pytest.skip("TRIVIUM_TEST_REDIS_URL not set")
    import redis

    prefix = f"trivium-test-{uuid.uuid4().hex}:"
    yield RedisCache(REDIS_URL, prefix=prefix)
    conn = redis.Redis.from_url(REDIS_URL)
    keys = list(conn.scan_iter(match=prefix + "*"))
    if keys:
        conn.delete(*keys)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    """Each cache backend (Redis with a key prefix of the test's own)."""
    if request.param == "memory":
        yield MemoryCache()
    else:
        yield from _redis_cache()


def test_failures_lock_the_account(cache: Cache) -> None:
    throttle = LoginThrottle(cache, LIMITS)
    for _ in range(2):
        throttle.check("ada@example.org", "10.0.0.1")
        throttle.record_failure("ada@example.org", "10.0.0.1")
    throttle.check("ada@example.org", "10.0.0.1")
    throttle.record_failure("ada@example.org", "10.0.0.1")
    with pytest.raises(LoginThrottled) as info:
        throttle.check("ADA@example.org ", "10.0.0.2")
    assert 0 < info.value.extra["retry_after"] <= 60
    throttle.check("grace@example.org", "10.0.0.1")  # others are unaffected


def test_clearing_the_account_unlocks_it(cache: Cache) -> None:
    throttle = LoginThrottle(cache, LIMITS)
    for _ in range(3):
        throttle.record_failure("ada@example.org", None)
    with pytest.raises(LoginThrottled):
        throttle.check("ada@example.org", None)
    throttle.clear_account("ada@example.org")
    throttle.check("ada@example.org", None)


def test_failures_lock_the_address(cache: Cache) -> None:
    throttle = LoginThrottle(cache, LIMITS)
    for n in range(5):
        throttle.record_failure(f"user{n}@example.org", "10.0.0.9")
    with pytest.raises(LoginThrottled):
        throttle.check("new@example.org", "10.0.0.9")
    throttle.check("new@example.org", "10.0.0.10")


def test_allow_once_limits_silently(cache: Cache) -> None:
    throttle = LoginThrottle(cache, LIMITS)
    assert [throttle.allow_once("reset", "ada", 2) for _ in range(4)] == [
        True,
        True,
        False,
        False,
    ]
    assert throttle.allow_once("reset", "grace", 2)


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    """Low limits."""
    config["accounts"].update(login_max_attempts_per_account=3, login_max_attempts_per_ip=5)
    return config


@pytest.fixture
def redis_app(app: Flask) -> Iterator[Flask]:
    """``app`` with its cache swapped for Redis (a key prefix of this test's own)."""
    for redis_cache in _redis_cache():
        app.extensions["trivium.cache"] = redis_cache
        yield app


@pytest.mark.redis
def test_http_login_throttling_on_redis(
    redis_app: Flask, client: FlaskClient, users: Users
) -> None:
    users.create("ada@example.org", password=PASSWORD)
    api = Api(client)
    before = snapshot(redis_app)
    for _ in range(3):
        assert_problem(api.login("ada@example.org", "wrong password!!"), 401)
    body = assert_problem(api.login("ada@example.org"), 429, "too many")
    assert body["retry_after"] > 0
    assert snapshot(redis_app) == before
    # A second web process sharing the Redis cache sees the same lock.
    assert isinstance(redis_app.extensions["trivium.cache"], RedisCache)
    other = Api(redis_app.test_client())
    assert_problem(other.login("ada@example.org"), 429)
