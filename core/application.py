"""The Flask class Trivium apps are made of."""

from __future__ import annotations

import weakref
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # weak: a function made for one request (after_this_request) goes with it
        self._sync_functions: weakref.WeakKeyDictionary[Callable[..., Any], bool] = (
            weakref.WeakKeyDictionary()
        )

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` itself if it is a plain function, else Flask's sync wrapper of it."""
        known = self._sync_functions
        try:
            if known.get(func):
                return func
        except TypeError:  # not weakly referable or not hashable: ask Flask every time
            return super().ensure_sync(func)
        wrapped = super().ensure_sync(func)
        if wrapped is func:
            known[func] = True
        return wrapped
