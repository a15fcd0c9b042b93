"""TOTP second factor (RFC 6238) and single-use recovery codes.

Codes are accepted one time step either side of now (pyotp's
``valid_window=1``), and each time step only once: the last accepted step is
kept in ``User.totp_last_step`` and moved forward with a conditional UPDATE,
so two concurrent requests cannot both spend one code.  Recovery codes are
stored as SHA-256 (80 random bits each, so no salt is needed) and spent the
same way.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any
from typing import cast

import pyotp
import segno
from sqlalchemy import CursorResult
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import Session

from core.db import utcnow
from core.models import RecoveryCode
from core.models import User

VALID_WINDOW = 1
RECOVERY_CODE_COUNT = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_GROUPS = 4
_RECOVERY_GROUP_LEN = 4


def new_secret() -> str:
    """A fresh base32 TOTP secret (160 bits)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The ``otpauth://`` URI authenticator apps import."""
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg_data_uri(uri: str) -> str:
    """An SVG QR code of ``uri`` as a ``data:`` URI for an ``<img src>``."""
    qr: Any = segno.make(uri, error="m")
    return str(qr.svg_data_uri(scale=4))


def normalise_code(code: str) -> str:
    """Drop the spaces and dashes people type inside codes."""
    return "".join(ch for ch in code if ch not in " -\t").lower()


def matching_step(secret: str, code: str, for_time: float | None = None) -> int | None:
    """The time step whose code equals ``code``, within the window, or None.

    :param secret: the base32 secret.
    :param code: what the user typed.
    :param for_time: Unix time to check at (now by default).
    """
    code = normalise_code(code)
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    now = totp.timecode(time.time() if for_time is None else for_time)
    found = None
    # Compare every candidate so the time taken does not depend on which matched.
    for step in range(now - VALID_WINDOW, now + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


def spend_totp(sess: Session, user: User, code: str) -> bool:
    """Accept ``code`` for ``user`` unless it is wrong or its time step was used.

    On success the step is recorded in the session's transaction (the caller
    commits); on failure nothing is changed.
    """
    if not user.totp_secret:
        return False
    step = matching_step(user.totp_secret, code)
    if step is None:
        return False
    result = cast(
        "CursorResult[Any]",
        sess.execute(
            update(User)
            .where(
                User.id == user.id,
                or_(User.totp_last_step.is_(None), User.totp_last_step < step),
            )
            .values(totp_last_step=step)
        ),
    )
    return result.rowcount == 1


def hash_recovery_code(code: str) -> str:
    """The stored form of a recovery code."""
    return hashlib.sha256(normalise_code(code).encode()).hexdigest()


def new_recovery_code() -> str:
    """A code such as ``k7pq-2xhm-r9ta-wcn4``."""
    groups = (
        "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_GROUP_LEN))
        for _ in range(_RECOVERY_GROUPS)
    )
    return "-".join(groups)


def replace_recovery_codes(sess: Session, user: User) -> list[str]:
    """Delete ``user``'s recovery codes and create a new set.

    :return: the plaintext codes, to show once.
    """
    sess.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    sess.add_all(RecoveryCode(user_id=user.id, code_hash=hash_recovery_code(c)) for c in codes)
    return codes


def delete_recovery_codes(sess: Session, user: User) -> None:
    """Remove every recovery code of ``user``."""
    sess.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))


def spend_recovery_code(sess: Session, user: User, code: str) -> bool:
    """Mark one unused recovery code of ``user`` as used; False if there is none."""
    if len(code) > 64:
        return False
    result = cast(
        "CursorResult[Any]",
        sess.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == user.id,
                RecoveryCode.code_hash == hash_recovery_code(code),
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=utcnow())
        ),
    )
    return result.rowcount == 1


def remaining_recovery_codes(sess: Session, user: User) -> int:
    """How many unused recovery codes ``user`` has left."""
    count = sess.scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    )
    return int(count or 0)
