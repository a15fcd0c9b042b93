"""Who is making this request: the session's user or a plugin-identified actor.

Sessions are Flask's signed cookies (HttpOnly, SameSite=Lax, Secure when
configured).  They hold the user's public id and a ``session_version``; bumping
the version (password change, "log out everywhere") invalidates every cookie.
"""

from __future__ import annotations

from flask import g
from flask import request
from flask import session as flask_session
from sqlalchemy import select

from core import db
from core.errors import Unauthorized
from core.models import User

SESSION_USER = "uid"
SESSION_VERSION = "sv"


def _plugins():  # type: ignore[no-untyped-def]
    from flask import current_app

    return current_app.extensions["trivium.plugins"]


def current_user() -> User | None:
    """The authenticated user of this request, or None (memoised per request)."""
    if "current_user" in g:
        user: User | None = g.current_user
        return user
    user = None
    uid = flask_session.get(SESSION_USER)
    if uid:
        found = db.session().scalar(select(User).where(User.public_id == uid))
        if (
            found is not None
            and found.is_active
            and flask_session.get(SESSION_VERSION) == found.session_version
        ):
            user = found
        else:
            flask_session.clear()
    if user is None:
        results = _plugins().call("actor_from_request", firstresult=True, request=request)
        user = results[0] if results else None
        if user is not None and not user.is_active:
            user = None
        g.auth_via = "plugin" if user is not None else None
    else:
        g.auth_via = "session"
    g.current_user = user
    return user


def require_user() -> User:
    """The current user.

    :raise Unauthorized: nobody is logged in.
    """
    user = current_user()
    if user is None:
        raise Unauthorized("log in or send an API token")
    return user


def login_session(user: User) -> None:
    """Start a fresh session for ``user`` (the old session id is dropped)."""
    flask_session.clear()
    flask_session[SESSION_USER] = user.public_id
    flask_session[SESSION_VERSION] = user.session_version
    flask_session.permanent = True
    g.current_user = user
    g.auth_via = "session"


def logout_session() -> None:
    """End the current session."""
    flask_session.clear()
    g.current_user = None
