"""The session cookie: Flask's signed cookie, with its signer built once per key set.

Flask builds a new ``URLSafeTimedSerializer`` (and its key derivation) for
every request, although it depends only on the secret keys; on the API's hot
paths that was a visible share of the per-request work.  The cookie format,
salt and keys are Flask's own, so existing sessions stay valid.

A request that authenticates with a bearer token ignores the session cookie
(see :mod:`core.auth`; such requests skip the CSRF check too), so its cookie
is not even read: it gets an empty session of its own, which is never saved,
so whatever the request puts there (a CSRF token, a flash message) cannot
replace the browser's cookie and log its user out.
"""

from __future__ import annotations

from flask import Flask
from flask import Request
from flask import Response
from flask.sessions import SecureCookieSession
from flask.sessions import SecureCookieSessionInterface
from flask.sessions import SessionMixin
from itsdangerous import URLSafeTimedSerializer

from core.auth.csrf import bearer_token


class SessionCookies(SecureCookieSessionInterface):
    """Flask's cookie sessions, reusing the serializer while the keys are unchanged."""

    def __init__(self) -> None:
        self._keys: tuple[object, ...] | None = None
        self._serializer: URLSafeTimedSerializer | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        """The serializer for the app's current secret key and fallbacks."""
        keys = (app.secret_key, *(app.config["SECRET_KEY_FALLBACKS"] or ()))
        if keys != self._keys:
            # Built before it is published, so a concurrent request sees either
            # the old pair or the new one, never a mix.
            serializer = super().get_signing_serializer(app)
            self._serializer, self._keys = serializer, keys
        return self._serializer

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """The request's session: an unsaved, empty one for a bearer-token request."""
        if bearer_token(request.environ):
            return TokenRequestSession()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Set the cookie, except for a bearer-token request's session."""
        if isinstance(session, TokenRequestSession):
            return
        super().save_session(app, session, response)


class TokenRequestSession(SecureCookieSession):
    """The session of a request authenticated by a bearer token: never saved."""
