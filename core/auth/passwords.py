"""Password hashing (argon2id) and the password policy.

The hash cost comes from ``[accounts] hash_profile``: RFC 9106's low-memory
profile in production, argon2-cffi's ``CHEAPEST`` for test suites.  Hashes made
with other parameters still verify and are replaced on the next login
(:meth:`PasswordService.needs_rehash`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError
from argon2.exceptions import VerificationError
from argon2.profiles import CHEAPEST
from argon2.profiles import RFC_9106_LOW_MEMORY
from flask import current_app

from core.config import AccountsSection
from core.errors import ValidationFailed

MAX_PASSWORD_LENGTH = 1024
"""Longer inputs are refused: nobody types them and they only cost hashing time."""

MIN_LOCAL_PART_CHECK = 3
"""E-mail local parts shorter than this are not searched for inside passwords."""

_EXTENSION_KEY = "trivium.auth.passwords"

# The most common passwords of public breach corpora, lower-case.  A short
# list is enough to stop the guesses an attacker tries first; the length rule
# does most of the remaining work.
COMMON_PASSWORDS = frozenset(
    (
        "000000000",
        "0123456789",
        "1111111111",
        "1122334455",
        "11223344",
        "112233445566",
        "12341234",
        "12344321",
        "12345678",
        "123456789",
        "1234567890",
        "12345678910",
        "123123123",
        "1234512345",
        "123456789a",
        "123456789q",
        "1234567890q",
        "1234qwer",
        "147258369",
        "1q2w3e4r",
        "1q2w3e4r5t",
        "1q2w3e4r5t6y",
        "1qaz2wsx",
        "1qaz2wsx3edc",
        "87654321",
        "987654321",
        "9876543210",
        "a12345678",
        "a123456789",
        "aa12345678",
        "abc12345",
        "abc123456",
        "abcd1234",
        "abcd123456",
        "abcdefgh",
        "abcdefghij",
        "administrator",
        "asdf1234",
        "asdfasdf",
        "asdfghjk",
        "asdfghjkl",
        "baseball",
        "baseball1",
        "changeme",
        "changeme123",
        "charlie1",
        "chocolate",
        "computer",
        "dragon123",
        "football",
        "football1",
        "iloveyou",
        "iloveyou1",
        "iloveyou12",
        "jennifer",
        "letmein1",
        "letmein123",
        "liverpool",
        "master123",
        "mercedes",
        "michael1",
        "monkey123",
        "mustang1",
        "passw0rd",
        "password",
        "password!",
        "password01",
        "password1",
        "password12",
        "password123",
        "password1234",
        "princess",
        "princess1",
        "q1w2e3r4",
        "q1w2e3r4t5",
        "q1w2e3r4t5y6",
        "qazwsxedc",
        "qwer1234",
        "qwerty12",
        "qwerty123",
        "qwerty1234",
        "qwerty12345",
        "qwerty123456",
        "qwertyui",
        "qwertyuiop",
        "secret123",
        "shadow123",
        "starwars",
        "summer2024",
        "summer2025",
        "sunshine",
        "superman",
        "trustno1",
        "welcome1",
        "welcome123",
        "whatever",
        "zaq12wsx",
        "zaq1zaq1",
        "zxcvbnm1",
        "zxcvbnm123",
    )
)


class PasswordRejected(ValidationFailed):
    """A new password breaks one of the policy rules; ``detail`` names the rule."""

    title = "Password rejected"
    type_slug = "password-rejected"


def check_password_policy(password: str, email: str, min_length: int) -> None:
    """Refuse a new password that is too short, too long, common or made of the e-mail.

    :param password: the proposed password, exactly as typed.
    :param email: the account's (normalised) e-mail address.
    :param min_length: ``[accounts] password_min_length``.
    :raise PasswordRejected: with a message naming the broken rule.
    """
    if len(password) < min_length:
        raise PasswordRejected(
            f"the password must be at least {min_length} characters long",
            errors=[{"loc": "password", "msg": "too short"}],
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRejected(
            f"the password must be at most {MAX_PASSWORD_LENGTH} characters long",
            errors=[{"loc": "password", "msg": "too long"}],
        )
    lowered = password.lower()
    local_part = email.partition("@")[0].lower()
    if lowered == email.lower() or (
        len(local_part) >= MIN_LOCAL_PART_CHECK and local_part in lowered
    ):
        raise PasswordRejected(
            "the password must not contain your e-mail address or its name part",
            errors=[{"loc": "password", "msg": "contains the e-mail address"}],
        )
    if len(set(password)) == 1:
        raise PasswordRejected(
            "the password must not be a single character repeated",
            errors=[{"loc": "password", "msg": "one repeated character"}],
        )
    if lowered in COMMON_PASSWORDS:
        raise PasswordRejected(
            "this password is one of the most common ones; choose another",
            errors=[{"loc": "password", "msg": "too common"}],
        )


@dataclass(frozen=True)
class PasswordService:
    """The app's hasher plus a dummy hash for timing-safe refusals."""

    hasher: PasswordHasher
    dummy_hash: str

    def hash(self, password: str) -> str:
        """Hash ``password`` with the configured argon2id parameters."""
        return self.hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """True if ``password`` matches ``stored_hash``.

        A missing or unparsable hash is checked against the dummy hash, so the
        time taken does not reveal whether the account has a password at all.
        """
        if stored_hash is None:
            self.burn(password)
            return False
        try:
            self.hasher.verify(stored_hash, password)
        except InvalidHashError:
            # Unparsable (e.g. a legacy scheme): refuse in the usual time.
            self.burn(password)
            return False
        except VerificationError:
            return False
        return True

    def burn(self, password: str) -> None:
        """Spend the time of one verification (unknown accounts)."""
        with contextlib.suppress(VerificationError):
            self.hasher.verify(self.dummy_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when ``stored_hash`` was made with other parameters than today's."""
        try:
            return self.hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True


def make_password_service(accounts: AccountsSection) -> PasswordService:
    """Build the service for ``[accounts] hash_profile``."""
    profile = CHEAPEST if accounts.hash_profile == "cheapest" else RFC_9106_LOW_MEMORY
    hasher = PasswordHasher.from_parameters(profile)
    return PasswordService(hasher, hasher.hash("trivium-dummy-password"))


def get_password_service() -> PasswordService:
    """The current app's :class:`PasswordService` (built on first use)."""
    service = current_app.extensions.get(_EXTENSION_KEY)
    if not isinstance(service, PasswordService):
        service = make_password_service(current_app.extensions["trivium.settings"].accounts)
        current_app.extensions[_EXTENSION_KEY] = service
    return service
