"""Federation's hook implementations: how it plugs into core, like any plugin."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from flask import Blueprint
from flask import Flask

from core import hookimpl
from core.config import Settings
from core.tasks import ActorSpec
from federation import admin
from federation import cli
from federation import inbox
from federation import models  # noqa: F401  (declares federation's tables on core.db.Base)
from federation import wellknown
from federation.config import federation_settings
from federation.keys import ensure_keys

__all__ = [
    "init_instance",
    "register_actors",
    "register_blueprints",
    "register_commands",
    "register_migrations",
    "startup",
]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"


@hookimpl
def init_instance(path: str, settings: Settings) -> None:
    """Generate the new instance's keys (kept if they exist: ``init --force``)."""
    ensure_keys(path)


@hookimpl
def startup(app: Flask) -> None:
    """Check ``[plugins.federation]``, let signed requests past the CSRF check, and give
    an instance that predates its keys a key set."""
    settings: Settings = app.extensions["trivium.settings"]
    federation_settings(settings)
    if settings.testing:
        # Test apps get their keys on first use: an RSA key costs ~0.1 s.
        return
    if ensure_keys(settings.path):
        log.warning("federation=keys action=generated reason=missing_at_startup")


@hookimpl
def register_migrations() -> list[str]:
    """The ``federation`` Alembic branch: peers, pinned keys, inbox."""
    return [str(MIGRATIONS)]


@hookimpl
def register_blueprints() -> list[Blueprint]:
    """Well-known documents and key URLs, the signed inbox, the peers admin API."""
    return [wellknown.bp, inbox.bp, admin.bp]


@hookimpl
def register_actors() -> list[ActorSpec]:
    """The inbox's processing job."""
    return inbox.register()


@hookimpl
def register_commands() -> list[click.Command]:
    """``trivium keys list|rotate`` and ``trivium peers ...``."""
    return [cli.keys, cli.peers]
