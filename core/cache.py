"""A small cache with counters: in-process by default, Redis when scaled out.

Used for login throttling and hot lookups.  Values are bytes; counters are
integers that expire ``ttl`` seconds after they were first incremented.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from flask import Flask
from flask import current_app


class Cache(Protocol):
    """What core needs from a cache backend."""

    def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None."""

    def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store ``value`` for ``ttl`` seconds."""

    def delete(self, key: str) -> None:
        """Remove ``key``."""

    def incr(self, key: str, ttl: int) -> int:
        """Add one to a counter (created with expiry ``ttl``) and return it."""


class MemoryCache:
    """Thread-safe in-process cache (one per process; fine for one machine)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._data: dict[str, tuple[float, bytes | int]] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def _live(self, key: str, now: float) -> bytes | int | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._data[key]
            return None
        return entry[1]

    def _evict(self, now: float) -> None:
        if len(self._data) < self._max:
            return
        for key in [k for k, (exp, _) in self._data.items() if exp <= now]:
            del self._data[key]
        while len(self._data) >= self._max:
            self._data.pop(next(iter(self._data)))

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._live(key, time.monotonic())
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._evict(now)
            self._data[key] = (now + ttl, value)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def incr(self, key: str, ttl: int) -> int:
        with self._lock:
            now = time.monotonic()
            current = self._live(key, now)
            if isinstance(current, int):
                exp = self._data[key][0]
                self._data[key] = (exp, current + 1)
                return current + 1
            self._evict(now)
            self._data[key] = (now + ttl, 1)
            return 1


class RedisCache:
    """Redis-backed cache shared by every process of a scaled-out instance."""

    def __init__(self, url: str, prefix: str = "trivium:") -> None:
        import redis

        self._r = redis.Redis.from_url(url)
        self._p = prefix

    def get(self, key: str) -> bytes | None:
        value = self._r.get(self._p + key)
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl: int) -> None:
        self._r.set(self._p + key, value, ex=ttl)

    def delete(self, key: str) -> None:
        self._r.delete(self._p + key)

    def incr(self, key: str, ttl: int) -> int:
        pipe = self._r.pipeline()
        pipe.incr(self._p + key)
        pipe.expire(self._p + key, ttl, nx=True)
        count, _ = pipe.execute()
        return int(count)


def make_cache(url: str) -> Cache:
    """``memory://`` or a ``redis://`` URL."""
    if url.startswith("memory:"):
        return MemoryCache()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisCache(url)
    raise ValueError(f"unsupported cache URL {url!r}")


def init_app(app: Flask, url: str) -> None:
    """Attach the cache to ``app``."""
    app.extensions["trivium.cache"] = make_cache(url)


def get_cache() -> Cache:
    """The current app's cache."""
    cache: Cache = current_app.extensions["trivium.cache"]
    return cache
