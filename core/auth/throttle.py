"""Login throttling with cache counters, per account and per client IP.

Only failures are counted, in the cache (never the database, so a refused
login stores nothing).  When an account or an IP reaches its limit within
``[accounts] login_window_seconds`` a lock is set for one window; while it is
there every attempt is refused with 429 and ``retry_after``, even with the
right password.  A successful login clears the account's counter; the IP's
counter runs out on its own, so one good login cannot reset a guessing run
from the same address.

The cache's counters cannot be read without incrementing them on every
backend, so the lock is a separate key holding its expiry time.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from core.cache import Cache
from core.config import AccountsSection
from core.errors import TooManyRequests

log = logging.getLogger(__name__)


class LoginThrottled(TooManyRequests):
    """Too many failed logins for this account or from this address."""

    title = "Too many login attempts"
    type_slug = "login-throttled"


def _account_id(email: str) -> str:
    # Hashed so cache keys hold no addresses and have a bounded length.
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def _ip_id(ip: str | None) -> str:
    return (ip or "unknown")[:64]


class LoginThrottle:
    """Failure counters and locks for logins (and password re-checks).

    :param cache: the app's cache (in-process or Redis).
    :param accounts: the ``[accounts]`` settings with the limits.
    """

    def __init__(self, cache: Cache, accounts: AccountsSection) -> None:
        self.cache = cache
        self.max_per_account = accounts.login_max_attempts_per_account
        self.max_per_ip = accounts.login_max_attempts_per_ip
        self.window = accounts.login_window_seconds

    def _retry_after(self, lock_key: str) -> int | None:
        raw = self.cache.get(lock_key)
        if raw is None:
            return None
        try:
            until = float(raw.decode())
        except (UnicodeDecodeError, ValueError):
            return self.window
        return min(self.window, max(1, math.ceil(until - time.time())))

    def check(self, email: str, ip: str | None) -> None:
        """Refuse the attempt if the account or the address is locked.

        :raise LoginThrottled: with ``retry_after`` (seconds) in the problem.
        """
        for kind, ident in (("ip", _ip_id(ip)), ("account", _account_id(email))):
            retry = self._retry_after(f"login:lock:{kind}:{ident}")
            if retry is not None:
                log.warning("login status=throttled scope=%s ip=%s", kind, _ip_id(ip))
                raise LoginThrottled(
                    f"too many failed attempts; try again in {retry} seconds",
                    retry_after=retry,
                )

    def _count(self, kind: str, ident: str, limit: int) -> None:
        count = self.cache.incr(f"login:fail:{kind}:{ident}", self.window)
        if count >= limit:
            until = time.time() + self.window
            self.cache.set(f"login:lock:{kind}:{ident}", f"{until:.3f}".encode(), self.window)
            log.warning("login status=locked scope=%s failures=%d", kind, count)

    def record_failure(self, email: str, ip: str | None) -> None:
        """Count one failed attempt against the account and the address."""
        self._count("account", _account_id(email), self.max_per_account)
        self._count("ip", _ip_id(ip), self.max_per_ip)

    def clear_account(self, email: str) -> None:
        """Forget the account's failures (and lock) after a proven success."""
        ident = _account_id(email)
        self.cache.delete(f"login:fail:account:{ident}")
        self.cache.delete(f"login:lock:account:{ident}")

    def allow_once(self, scope: str, key: str, limit: int) -> bool:
        """Count one use of a rate-limited action; False once ``limit`` is exceeded.

        Used for actions that must answer the same either way (password-reset
        mail): the caller skips the work silently instead of refusing.
        """
        ident = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.cache.incr(f"limit:{scope}:{ident}", self.window) <= limit
