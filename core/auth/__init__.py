"""Who is making this request: the session's user or a plugin-identified actor.

Sessions are Flask's signed cookies (HttpOnly, SameSite=Lax, Secure when
configured).  They hold the user's public id and a ``session_version``; bumping
the version (password change, "log out everywhere") invalidates every cookie.

A request that carries an ``Authorization`` header is authenticated by that
header alone (through ``actor_from_request``); a cookie sent along with it is
ignored.  That is what lets such requests skip the CSRF check safely.
"""

from __future__ import annotations

from flask import current_app
from flask import g
from flask import request
from flask import session as flask_session
from sqlalchemy import bindparam
from sqlalchemy import select

from core import db
from core.errors import Unauthorized
from core.models import User
from core.plugins import PluginHost

SESSION_USER = "uid"
SESSION_VERSION = "sv"

_USER_BY_PUBLIC_ID = select(User).where(User.public_id == bindparam("public_id"))


def has_authorization_header() -> bool:
    """True if the request authenticates with a header rather than the session."""
    return bool(request.environ.get("HTTP_AUTHORIZATION", "").strip())


def _user_from_session() -> User | None:
    uid = flask_session.get(SESSION_USER)
    if not uid:
        return None
    found = db.session().scalar(_USER_BY_PUBLIC_ID, {"public_id": uid})
    if (
        found is not None
        and found.is_active
        and flask_session.get(SESSION_VERSION) == found.session_version
    ):
        return found
    flask_session.clear()
    return None


def _user_from_plugins() -> User | None:
    host: PluginHost = current_app.extensions["trivium.plugins"]
    results = host.call("actor_from_request", firstresult=True, request=request)
    user = results[0] if results else None
    if not isinstance(user, User) or not user.is_active:
        return None
    return user


def current_user(*, attach: bool = True) -> User | None:
    """The authenticated user of this request, or None (memoised per request).

    The user belongs to the request's session (:func:`core.db.session`).

    :param attach: False leaves an owner that was authenticated from cached
        state (an API token) detached until the request's session begins a
        transaction, which saves both on requests served from caches alone.
        Until then only the columns the token cache holds may be read: not
        ``password_hash``, ``session_version``, the second-factor fields or
        relationships.
    """
    if "current_user" in g:
        user: User | None = g.current_user
    else:
        if has_authorization_header():
            user, via = _user_from_plugins(), "header"
        else:
            user, via = _user_from_session(), "session"
            if user is None:
                user, via = _user_from_plugins(), "plugin"
        g.current_user = user
        g.auth_via = via if user is not None else None
    if user is not None:
        if attach:
            db.adopt(db.session(), user)
        else:
            db.adopt_on_begin(db.session(), user)
    return user


def require_user(*, attach: bool = True) -> User:
    """The current user (see :func:`current_user` for ``attach``).

    :raise Unauthorized: nobody is logged in.
    """
    user = current_user(attach=attach)
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
