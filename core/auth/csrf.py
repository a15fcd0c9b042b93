"""CSRF protection for cookie-authenticated requests (Flask-WTF's ``CSRFProtect``).

Every POST/PUT/PATCH/DELETE must carry the token from ``GET /api/v1/auth/csrf``
in the ``X-CSRFToken`` header (forms: a ``csrf_token`` field), login and
registration included, so another site cannot log a browser into an account
of its choosing.  A request with ``Authorization: Bearer`` is exempt: another
site cannot make a browser send that header (it would need a CORS preflight
this app does not grant), and such a request is authenticated by its token
only (see :func:`core.auth.current_user`), never by a cookie that comes along.

The token is bound to the session, not to a clock: ``WTF_CSRF_TIME_LIMIT`` is
None, so a long-open page keeps working for the session's lifetime.  Starting
a new session (login) issues a new token, returned by the login response (see
:func:`rotate_csrf_token`); after logout the client fetches a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import TypeVar

from flask import Flask
from flask import Response
from flask import current_app
from flask import g
from flask import request
from flask_wtf.csrf import CSRFError
from flask_wtf.csrf import CSRFProtect
from flask_wtf.csrf import generate_csrf

from core.errors import BadRequest
from core.errors import problem_response

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class CsrfFailed(BadRequest):
    """An unsafe request came without a valid CSRF token for its session."""

    title = "CSRF check failed"
    type_slug = "csrf-failed"


def bearer_token(environ: Mapping[str, Any]) -> str:
    """The token of an ``Authorization: Bearer <token>`` header in ``environ``, else ``""``."""
    scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def has_bearer_token() -> bool:
    """True if the request carries ``Authorization: Bearer <something>``."""
    return bool(bearer_token(request.environ))


def csrf_token() -> str:
    """The session's CSRF token (created, and stored in the session, if needed)."""
    return str(generate_csrf())


def rotate_csrf_token() -> str:
    """A token for a session just started with ``login_session``.

    ``login_session`` clears the session, dropping the old token's secret;
    this makes a new one and returns it for the response.
    """
    field = current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    g.pop(field, None)
    return csrf_token()


CSRF_EXEMPT_ATTR = "_trivium_csrf_exempt"

V = TypeVar("V", bound=Callable[..., Any])


def csrf_exempt(view: V) -> V:
    """Mark a view that is never authenticated by the session cookie.

    For endpoints whose requests prove themselves otherwise (HTTP message
    signatures between instances, webhooks with their own signature).  The
    view must not call :func:`core.auth.current_user` expecting a cookie
    session: an exempt request could be forged by another site.

    .. versionadded:: 0.1
    """
    setattr(view, CSRF_EXEMPT_ATTR, True)
    return view


def _is_exempt(app: Flask) -> bool:
    view = app.view_functions.get(request.endpoint or "")
    return bool(getattr(view, CSRF_EXEMPT_ATTR, False))


def init_app(app: Flask) -> None:
    """Install CSRF checking on ``app`` and its problem+json error."""
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    protect: Any = CSRFProtect(app)

    @app.before_request
    def _check_csrf() -> None:
        if has_bearer_token() or _is_exempt(app):
            return
        if request.method in UNSAFE_METHODS:
            protect.protect()

    @app.errorhandler(CSRFError)
    def _csrf_failed(exc: CSRFError) -> Response:
        reason = exc.description or ""
        return problem_response(CsrfFailed(f"CSRF token missing or invalid: {reason}".strip()))
