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
        self._last = ("", "", _digest("", ""))

    def _digest(self, keyid: str, nonce: str) -> str:
        # A verifier asks seen() then claim() for the same pair: hash it once.
        last = self._last
        if last[0] == keyid and last[1] == nonce:
            return last[2]
        digest = _digest(keyid, nonce)
        self._last = (keyid, nonce, digest)
        return digest

    def _key(self, kind: str, keyid: str, nonce: str) -> str:
        return f"federation:nonce:{kind}:{self._digest(keyid, nonce)}"

    def seen(self, keyid: str, nonce: str) -> bool:
        """Whether ``keyid`` already used ``nonce``."""
        return self._cache.get(self._key("seen", keyid, nonce)) is not None

    def claim(self, keyid: str, nonce: str, ttl: int) -> bool:
        """Record the nonce for ``ttl`` seconds; False if it was already claimed."""
        digest = self._digest(keyid, nonce)  # both keys name the same (key, nonce) pair
        if self._cache.incr(f"federation:nonce:claim:{digest}", ttl) != 1:
            return False
        self._cache.set(f"federation:nonce:seen:{digest}", b"1", ttl)
        return True


def _digest(keyid: str, nonce: str) -> str:
    return hashlib.sha256(f"{keyid}\n{nonce}".encode()).hexdigest()
