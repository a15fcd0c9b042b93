"""Structured (key=value) logging for the whole process."""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"


def configure() -> None:
    """Configure the root logger once (``TRIVIUM_LOG_LEVEL``, default INFO)."""
    root = logging.getLogger()
    if getattr(configure, "_done", False) or root.handlers:
        return
    logging.basicConfig(level=os.environ.get("TRIVIUM_LOG_LEVEL", "INFO"), format=FORMAT)
    configure._done = True  # type: ignore[attr-defined]
