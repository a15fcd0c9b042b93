"""Federation's hook implementations: how it plugs into core, like any plugin."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
from flask import Blueprint
from flask import Flask
from sqlalchemy.orm import Session

from core import hookimpl
from core.config import Settings
from core.tasks import ActorSpec
from core.tasks import enqueue_on_commit
from federation import admin
from federation import cli
from federation import feed
from federation import inbox
from federation import models  # noqa: F401  (declares federation's tables on core.db.Base)
from federation import sync
from federation import wellknown
from federation.config import federation_settings
from federation.keys import ensure_keys

__all__ = [
    "catalog_changed",
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
        # Test apps get their keys on first use: an RSA key costs ~0.1 s; tests
        # run the catalog scheduler's jobs themselves.
        return
    if ensure_keys(settings.path):
        log.warning("federation=keys action=generated reason=missing_at_startup")
    armed = {"pid": 0}

    @app.before_request
    def _arm_catalog_scheduler() -> None:
        # Once per serving process (not in CLI commands): make sure the
        # catalog scheduler's chain of ticks runs; the jobs run wherever this
        # instance runs jobs (embedded worker, `trivium worker`).
        if armed["pid"] != os.getpid():
            armed["pid"] = os.getpid()
            sync.ensure_tick(app)


@hookimpl
def register_migrations() -> list[str]:
    """The ``federation`` Alembic branch: peers, pinned keys, inbox."""
    return [str(MIGRATIONS)]


@hookimpl
def register_blueprints() -> list[Blueprint]:
    """Well-known documents and key URLs, the signed inbox, the peers admin API."""
    return [wellknown.bp, inbox.bp, feed.bp, admin.bp]


@hookimpl
def register_actors() -> list[ActorSpec]:
    """The inbox's processing job; catalog sync, its scheduler tick and announcements."""
    return [*inbox.register(), *sync.register()]


@hookimpl
def catalog_changed(session: Session, external_ids: list[str]) -> None:
    """Tell approved peers (a job, once the change commits) that our catalog changed."""
    enqueue_on_commit(session, sync.ANNOUNCE)


@hookimpl
def register_commands() -> list[click.Command]:
    """``trivium keys list|rotate`` and ``trivium peers ...``."""
    return [cli.keys, cli.peers]
