"""Security headers on every response.

Pages set their own Content-Security-Policy when they need more than the
default; API responses are never framed or sniffed.
"""

from __future__ import annotations

from flask import Flask
from flask import Response

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
    """Add the default headers (and HSTS when the instance is served over https)."""
    headers = dict(DEFAULT_HEADERS)
    if https:
        headers["Strict-Transport-Security"] = HSTS

    @app.after_request
    def _secure(resp: Response) -> Response:
        for name, value in headers.items():
            resp.headers.setdefault(name, value)
        return resp
