"""The Flask class Trivium apps are made of."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask


class Trivium(Flask):
    """Flask, remembering which handlers are plain functions.

    Flask passes every view, ``before_request``, ``after_request`` and teardown
    function through :meth:`ensure_sync` on every request, and each pass asks
    :func:`inspect.iscoroutinefunction`: half a dozen introspections per
    request for an answer that never changes.  The answer is kept per
    function (coroutine functions are still wrapped on every call, as Flask
    does).
    """

    _MAX_KNOWN = 10_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync_functions: dict[Callable[..., Any], bool] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` itself if it is a plain function, else Flask's sync wrapper of it."""
        known = self._sync_functions
        try:
            if known.get(func):
                return func
        except TypeError:  # an unhashable callable: ask Flask every time
            return super().ensure_sync(func)
        wrapped = super().ensure_sync(func)
        if wrapped is func:
            if len(known) >= self._MAX_KNOWN:
                known.clear()
            known[func] = True
        return wrapped
