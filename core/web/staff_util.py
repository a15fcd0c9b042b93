"""Helpers shared by the teaching and operator pages (``core.web.staff``, ``core.web.admin``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import redirect
from flask import request
from flask_babel import gettext
from pydantic import BaseModel
from pydantic import ValidationError
from werkzeug.wrappers.response import Response as BaseResponse

from core.api import decode_cursor
from core.api import encode_cursor
from core.auth import current_user
from core.errors import Unauthorized
from core.errors import ValidationFailed
from core.web import has_endpoint
from core.web.forms import FormState
from core.web.guards import login_url

#: Keys are 64-bit integers; a cursor outside that range was not made by us.
MAX_KEY = 2**63


class InvalidCursor(ValidationFailed):
    """A page link's ``cursor`` was not made by this server."""

    type_slug = "invalid-cursor"


def login_redirect() -> BaseResponse | None:
    """A redirect to the log-in page for anonymous visitors (``before_request``).

    :return: None when someone is logged in.
    """
    if current_user() is not None:
        return None
    if has_endpoint("account.login"):
        return redirect(login_url())
    raise Unauthorized(gettext("Please log in."))


def cursor_arg(name: str = "cursor") -> int | None:
    """The internal key of the page link's cursor in the query string.

    :raise InvalidCursor: it was tampered with.
    """
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        key = decode_cursor(raw[:100])
    except ValidationFailed:
        raise InvalidCursor(gettext("This page link is not valid.")) from None
    if key is not None and not 0 < key < MAX_KEY:
        raise InvalidCursor(gettext("This page link is not valid."))
    return key


def cursor_for(key: int | None) -> str | None:
    """The page-link cursor of an internal key (None at the end)."""
    return encode_cursor(key) if key is not None else None


def validation_errors(exc: ValidationError) -> dict[str, list[str]]:
    """pydantic errors by the first element of their location."""
    out: dict[str, list[str]] = {}
    for err in exc.errors():
        loc = str(err["loc"][0]) if err["loc"] else ""
        msg = err["msg"].removeprefix("Value error, ")
        out.setdefault(loc, []).append(msg)
    return out


def validate_form(
    model: type[BaseModel], data: Mapping[str, Any], state: FormState
) -> BaseModel | None:
    """Validate ``data`` with ``model``; on failure record each error on ``state``.

    :return: the model, or None when ``state`` now holds errors.
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        for name, messages in validation_errors(exc).items():
            for message in messages:
                state.add(name or None, message)
        return None


def status_label(status: str) -> str:
    """A course status for people."""
    labels: dict[str, str] = {
        "draft": gettext("Draft"),
        "published": gettext("Published"),
        "archived": gettext("Archived"),
    }
    return labels.get(status, status)


def role_label(role: str) -> str:
    """A staff role for people."""
    labels: dict[str, str] = {
        "instructor": gettext("Instructor"),
        "ta": gettext("Teaching assistant"),
    }
    return labels.get(role, role)


def progress_label(status: str) -> str:
    """A learner's progress status on an item, for people."""
    labels: dict[str, str] = {
        "not_started": gettext("not started"),
        "in_progress": gettext("in progress"),
        "completed": gettext("completed"),
    }
    return labels.get(status, status)


def label_helpers() -> dict[str, Any]:
    """Template helpers of the staff and operator pages (a context processor)."""
    return {
        "status_label": status_label,
        "role_label": role_label,
        "progress_label": progress_label,
    }


def wants_json() -> bool:
    """True for script requests (``fetch`` with ``Accept: application/json``)."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


__all__ = [
    "InvalidCursor",
    "cursor_arg",
    "cursor_for",
    "label_helpers",
    "login_redirect",
    "progress_label",
    "role_label",
    "status_label",
    "validate_form",
    "validation_errors",
    "wants_json",
]
