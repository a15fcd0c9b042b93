"""Errors as ``application/problem+json`` (RFC 9457), never with a stack trace.

Each failure mode is its own exception class with its own status; views raise
them and one handler turns them into a problem document.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask import Response
from flask import current_app
from flask import g
from flask import json
from flask import request
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

PROBLEM_MIME = "application/problem+json"


class Problem(Exception):
    """Base of every error a client may see; ``status`` and ``title`` per subclass."""

    status = 400
    title = "Bad request"
    type_slug = "bad-request"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        """The problem document body."""
        body: dict[str, Any] = {
            "type": f"https://trivium.invalid/problems/{self.type_slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body


class BadRequest(Problem):
    """The request is malformed: unparsable JSON, wrong types, missing fields."""


class ValidationFailed(Problem):
    """The request is well-formed but a value is not acceptable."""

    status = 422
    title = "Validation failed"
    type_slug = "validation-failed"


class Unauthorized(Problem):
    """No valid credentials were presented."""

    status = 401
    title = "Authentication required"
    type_slug = "unauthorized"


class Forbidden(Problem):
    """The caller is known but lacks the role for this action."""

    status = 403
    title = "Forbidden"
    type_slug = "forbidden"


class NotFound(Problem):
    """No such resource, or the caller may not know it exists."""

    status = 404
    title = "Not found"
    type_slug = "not-found"


class Conflict(Problem):
    """The request conflicts with stored state (duplicate, wrong state)."""

    status = 409
    title = "Conflict"
    type_slug = "conflict"


class ChangedMeanwhile(Conflict):
    """A row this request read was changed by another before this one wrote it."""

    title = "Changed meanwhile"
    type_slug = "changed-meanwhile"


class PayloadTooLarge(Problem):
    """The request body exceeds the instance's limit."""

    status = 413
    title = "Payload too large"
    type_slug = "payload-too-large"


class UnsupportedMediaType(Problem):
    """The body is not of a type this endpoint accepts."""

    status = 415
    title = "Unsupported media type"
    type_slug = "unsupported-media-type"


class TooManyRequests(Problem):
    """Throttled: too many attempts in the window."""

    status = 429
    title = "Too many requests"
    type_slug = "too-many-requests"


def problem_response(problem: Problem) -> Response:
    """Render a :class:`Problem` as ``application/problem+json``."""
    resp = Response(json.dumps(problem.to_dict()), status=problem.status, mimetype=PROBLEM_MIME)
    retry = problem.extra.get("retry_after")
    if retry is not None:
        resp.headers["Retry-After"] = str(int(retry))
    return resp


def wants_problem_json() -> bool:
    """True when the client is an API caller rather than a browser page.

    Everything under ``/api/`` is API.  Elsewhere only a client that names
    ``text/html`` in its ``Accept`` header and prefers it to JSON (a browser)
    gets an HTML page; ``*/*`` (peers, scripts) gets problem+json.
    """
    if request.path.startswith("/api/"):
        return True
    accept = request.accept_mimetypes
    if not any(mime == "text/html" for mime, _ in accept):
        return True
    best = accept.best_match([PROBLEM_MIME, "application/json", "text/html"])
    return best != "text/html"


#: ``app.extensions`` key of the HTML error page renderer (``core.web`` installs it).
HTML_ERROR_PAGE = "trivium.html_error_page"


def _html_page(status: int, title: str, detail: str) -> Response | None:
    """The friendly HTML page for a browser, if the web pages are installed."""
    render = current_app.extensions.get(HTML_ERROR_PAGE)
    if render is None:
        return None
    page: Response = render(status, title, detail)
    return page


_HTTP_TO_PROBLEM: dict[int, type[Problem]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: TooManyRequests,
}


def init_app(app: Flask) -> None:
    """Install the error handlers."""

    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        if not wants_problem_json():
            page = _html_page(exc.status, exc.title, exc.detail)
            if page is not None:
                return page
        return problem_response(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response | HTTPException:
        code = exc.code or 500
        if not wants_problem_json():
            page = _html_page(code, exc.name, exc.description or exc.name)
            return exc if page is None else page
        cls = _HTTP_TO_PROBLEM.get(code)
        if cls is None:
            generic = Problem(exc.description or exc.name)
            generic.status = code
            generic.title = exc.name
            generic.type_slug = exc.name.lower().replace(" ", "-")
            return problem_response(generic)
        return problem_response(cls(exc.description or cls.title))

    @app.errorhandler(StaleDataError)
    def _stale(exc: StaleDataError) -> Response:
        log.warning("stale_write path=%s error=%s", request.path, exc)
        sess = g.get("db_session")
        if sess is not None:
            sess.rollback()  # the page's layout reads the session again
        return _problem(
            ChangedMeanwhile(
                "what this request changes was changed or removed meanwhile (the account "
                "may have been erased); nothing was saved: reload and try again"
            )
        )

    @app.errorhandler(Exception)
    def _unhandled(exc: Exception) -> Response:
        log.exception("unhandled error path=%s", request.path)
        generic = Problem("An internal error occurred; it has been logged.")
        generic.status = 500
        generic.title = "Internal server error"
        generic.type_slug = "internal-error"
        if wants_problem_json():
            return problem_response(generic)
        page = _html_page(500, generic.title, generic.detail)
        if page is not None:
            return page
        return Response(
            "<!doctype html><title>Server error</title><h1>Something went wrong</h1>"
            "<p>The error has been logged.</p>",
            status=500,
            mimetype="text/html",
        )


def last_line(text: str, width: int) -> str:
    """The last non-blank line of an error text (a traceback's exception), at most ``width`` long.

    What the operators' lists (``trivium jobs list``, ``mail outbox``, the
    Jobs and Mail pages) show of a stored error; a longer line ends in "…".
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= width else line[: width - 1] + "…"
