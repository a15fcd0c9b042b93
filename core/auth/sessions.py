"""The session cookie: Flask's signed cookie, with its signer built once per key set.

Flask builds a new ``URLSafeTimedSerializer`` (and its key derivation) for
every request, although it depends only on the secret keys; on the API's hot
paths that was a visible share of the per-request work.  The cookie format,
salt and keys are Flask's own, so existing sessions stay valid.
"""

from __future__ import annotations

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer


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
