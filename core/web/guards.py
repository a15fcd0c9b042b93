"""Who may see a page: log-in redirects and safe ``next`` targets."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec
from typing import TypeVar
from urllib.parse import urlsplit

from flask import redirect
from flask import request
from flask import url_for
from werkzeug.wrappers.response import Response as BaseResponse

from core.auth import current_user
from core.auth import require_user
from core.models import User

P = ParamSpec("P")
R = TypeVar("R")


def safe_next(target: str | None, default: str) -> str:
    """``target`` if it is a path on this site, else ``default`` (no open redirects)."""
    if not target or len(target) > 2000:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(ch) < 32 for ch in target):
        return default
    return target


def login_url() -> str:
    """The log-in page, returning here afterwards."""
    target = request.full_path if request.method == "GET" else request.path
    return url_for("account.login", next=target.rstrip("?"))


def login_required(view: Callable[P, R]) -> Callable[P, R | BaseResponse]:
    """Send anonymous visitors to the log-in page (and back here afterwards)."""

    @wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | BaseResponse:
        if current_user() is None:
            return redirect(login_url())
        return view(*args, **kwargs)

    return wrapped


def user() -> User:
    """The logged-in user of a :func:`login_required` page."""
    return require_user()
