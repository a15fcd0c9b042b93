"""Security headers on every response.

Pages set their own Content-Security-Policy when they need more than the
default; API responses are never framed or sniffed.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from typing import TYPE_CHECKING
from typing import Any

from flask import Flask

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

DEFAULT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
}
HSTS = "max-age=31536000; includeSubDomains"


def init_app(app: Flask, *, https: bool) -> None:
    """Add the default headers (and HSTS when the instance is served over https).

    A WSGI wrapper rather than an ``after_request`` function: it appends to the
    header list gunicorn is about to send, which costs a few microseconds where
    a dozen ``Headers.setdefault`` calls cost tens, and, installed around
    WhiteNoise, it also covers static files, which Flask never sees.  A
    response that already sets one of these headers keeps its own value.
    """
    defaults = dict(DEFAULT_HEADERS)
    if https:
        defaults["Strict-Transport-Security"] = HSTS
    extra = [(name, value) for name, value in defaults.items()]
    names = {name.lower() for name in defaults}
    inner = app.wsgi_app

    def secure_headers(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def start(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            present = {name.lower() for name, _ in headers} & names
            if present:
                headers.extend(h for h in extra if h[0].lower() not in present)
            else:
                headers.extend(extra)
            return start_response(status, headers, exc_info)

        return inner(environ, start)

    app.wsgi_app = secure_headers  # type: ignore[method-assign]
