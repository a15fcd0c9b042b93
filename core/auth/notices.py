"""Security notices: the account holder is mailed when how they sign in changes.

A changed password or a second factor turned on or off is told to the
account's address, whoever made the change: the holder (a hijacked session
changing the password is then noticed) or an administrator helping someone
locked out.  The mail goes through :func:`core.auth.mail.send_mail` in the
caller's transaction, so a refused change mails nothing.  It says what
changed, by whom (the holder or an administrator) and when, and holds no
secret and no link that acts.
"""

from __future__ import annotations

import logging
from typing import Literal

from flask import current_app

from core.auth.mail import send_mail
from core.db import utcnow
from core.models import User

log = logging.getLogger(__name__)

#: What a notice can be about.
Change = Literal["password", "password_reset", "second_factor_on", "second_factor_off"]

_NOTICES: dict[str, tuple[str, str]] = {
    # change: (subject, what happened)
    "password": (
        "Your {name} password was changed",
        "The password of your {name} account was changed",
    ),
    "password_reset": (
        "Your {name} password was reset",
        "The password of your {name} account was reset with a link sent to this address",
    ),
    "second_factor_on": (
        "Two-factor authentication is on for your {name} account",
        "Two-factor authentication was turned on for your {name} account",
    ),
    "second_factor_off": (
        "Two-factor authentication is off for your {name} account",
        "Two-factor authentication was turned off for your {name} account",
    ),
}


def notify(user: User, change: Change, *, by_admin: bool) -> None:
    """Mail ``user`` that ``change`` happened to their account (in the caller's transaction).

    :param by_admin: an administrator made the change (the web page or the
        command line), not the account holder.
    """
    conf = current_app.extensions["trivium.settings"]
    name = conf.instance.name
    base = conf.instance.base_url.rstrip("/")
    subject, what = _NOTICES[change]
    if by_admin:
        who = " by an administrator"
    elif change == "password_reset":
        who = ""
    else:
        who = " by someone signed in to it"
    when = utcnow().strftime("%Y-%m-%d %H:%M UTC")
    first = f"{what.format(name=name)}{who} on {when}."
    lines = [first]
    if change in ("password", "password_reset") or (change == "second_factor_off" and by_admin):
        lines.append("Every signed-in session of the account has ended.")
    if by_admin:
        lines.append(
            "If you did not ask for this, tell the administrators of "
            f"{name} at once: someone may be trying to take over your account."
        )
    else:
        lines.append(
            'If this was not you, reset your password now with "Forgot your password?" '
            f"on the sign-in page ({base}/login), and tell the administrators of {name}."
        )
    send_mail(user.email, subject.format(name=name), "\n\n".join(lines) + "\n")
    log.info("security_notice user=%s change=%s by_admin=%s", user.public_id, change, by_admin)
