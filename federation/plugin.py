"""Federation's hook implementations: how it plugs into core, like any plugin."""

from __future__ import annotations

import logging

import click
from flask import Blueprint
from flask import Flask

from core import hookimpl
from core.config import Settings
from federation import cli
from federation import wellknown
from federation.config import federation_settings
from federation.keys import ensure_keys

__all__ = ["init_instance", "register_blueprints", "register_commands", "startup"]

log = logging.getLogger(__name__)


@hookimpl
def init_instance(path: str, settings: Settings) -> None:
    """Generate the new instance's keys (kept if they exist: ``init --force``)."""
    ensure_keys(path)


@hookimpl
def startup(app: Flask) -> None:
    """Check ``[plugins.federation]``; give an instance that predates its keys a key set."""
    settings: Settings = app.extensions["trivium.settings"]
    federation_settings(settings)
    if settings.testing:
        # Test apps get their keys on first use: an RSA key costs ~0.1 s.
        return
    if ensure_keys(settings.path):
        log.warning("federation=keys action=generated reason=missing_at_startup")


@hookimpl
def register_blueprints() -> list[Blueprint]:
    """The well-known identity documents and key URLs."""
    return [wellknown.bp]


@hookimpl
def register_commands() -> list[click.Command]:
    """``trivium keys list|rotate``."""
    return [cli.keys]
