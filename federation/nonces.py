"""Nonces already used by a peer's key, remembered in core's cache.

With the default in-process cache this protects one process; a scaled-out
instance must use a Redis cache (``[cache] url``) so that every web process
sees every nonce.
"""

from __future__ import annotations

import hashlib

from core.cache import Cache

__all__ = ["CacheNonceStore"]


class CacheNonceStore:
    """A :class:`~federation.signatures.NonceStore` on :mod:`core.cache`.

    Two entries per nonce: a counter whose atomic increment decides which of
    two concurrent copies wins (:meth:`claim`), and a marker that
    :meth:`seen` can read cheaply before a signature is checked (a counter
    cannot be read back through every cache backend).
    """

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    @staticmethod
    def _key(kind: str, keyid: str, nonce: str) -> str:
        digest = hashlib.sha256(f"{keyid}\n{nonce}".encode()).hexdigest()
        return f"federation:nonce:{kind}:{digest}"

    def seen(self, keyid: str, nonce: str) -> bool:
        """Whether ``keyid`` already used ``nonce``."""
        return self._cache.get(self._key("seen", keyid, nonce)) is not None

    def claim(self, keyid: str, nonce: str, ttl: int) -> bool:
        """Record the nonce for ``ttl`` seconds; False if it was already claimed."""
        if self._cache.incr(self._key("claim", keyid, nonce), ttl) != 1:
            return False
        self._cache.set(self._key("seen", keyid, nonce), b"1", ttl)
        return True
