"""Friendly HTML error pages for browsers.

:mod:`core.errors` decides who gets what: API callers (``/api/``, or any
client that does not prefer ``text/html``) get ``application/problem+json``;
browsers get the page rendered here.  Neither ever shows a stack trace.
"""

from __future__ import annotations

import logging

from flask import Flask
from flask import Response
from flask import render_template
from flask_babel import gettext
from flask_wtf.csrf import CSRFError

from core.auth.csrf import CsrfFailed
from core.errors import HTML_ERROR_PAGE
from core.errors import problem_response
from core.errors import wants_problem_json

log = logging.getLogger(__name__)


def _headline(status: int) -> str:
    """A short, translated headline for ``status``."""
    headlines = {
        400: gettext("This request could not be handled"),
        401: gettext("Please log in"),
        403: gettext("You do not have access to this page"),
        404: gettext("Page not found"),
        405: gettext("This action is not allowed here"),
        409: gettext("This conflicts with the current state"),
        413: gettext("What you sent is too large"),
        429: gettext("Too many attempts"),
    }
    if status >= 500:
        return str(gettext("Something went wrong on our side"))
    return str(headlines.get(status, gettext("This request could not be handled")))


def _explanation(status: int, detail: str) -> str:
    """What the visitor can do; server errors never show their detail."""
    if status >= 500:
        return str(gettext("The error has been logged. Please try again in a moment."))
    if status == 404:
        return str(gettext("The address may be mistyped, or the page was moved or removed."))
    if status == 403:
        return str(gettext("If you think you should have access, ask the course's instructor."))
    return detail


def render_error_page(status: int, title: str, detail: str) -> Response:
    """The HTML page for an error; ``title``/``detail`` of 4xx errors are shown.

    :param status: the HTTP status.
    :param title: the error's short title (logged, not shown for 5xx).
    :param detail: the error's explanation (shown for 4xx other than 403/404).
    """
    try:
        body = render_template(
            "errors/error.html",
            status=status,
            headline=_headline(status),
            explanation=_explanation(status, detail),
        )
    except Exception:
        # The layout itself failed (a broken slot, a missing build): still answer.
        log.exception("error_page status=%s render=failed", status)
        body = (
            f"<!doctype html><html lang=en><title>{status}</title>"
            f"<h1>{status}</h1><p>{_headline(status)}</p></html>"
        )
    return Response(body, status=status, mimetype="text/html")


def init_app(app: Flask) -> None:
    """Install the HTML renderer used by :mod:`core.errors` and the CSRF page."""
    app.extensions[HTML_ERROR_PAGE] = render_error_page

    # Replaces core.auth.csrf's handler so that a stale form gets a page, not JSON.
    @app.errorhandler(CSRFError)
    def _csrf_failed(exc: CSRFError) -> Response:
        reason = exc.description or ""
        if wants_problem_json():
            return problem_response(CsrfFailed(f"CSRF token missing or invalid: {reason}".strip()))
        return render_error_page(
            400,
            CsrfFailed.title,
            gettext(
                "This form has expired or was sent from another site. "
                "Go back, reload the page and try again."
            ),
        )
