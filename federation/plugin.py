"""Federation's hook implementations: how it plugs into core, like any plugin."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import click
from flask import Blueprint
from flask import Flask
from markupsafe import Markup
from sqlalchemy.orm import Session
from sqlalchemy.orm import SessionTransaction

from core import hookimpl
from core import process
from core.config import Settings
from core.tasks import ActorSpec
from core.tasks import enqueue_on_commit
from federation import admin
from federation import cli
from federation import feed
from federation import inbox
from federation import models  # noqa: F401  (declares federation's tables on core.db.Base)
from federation import pages
from federation import sync
from federation import wellknown
from federation.config import federation_settings
from federation.keys import ensure_keys

if TYPE_CHECKING:
    from core.demo import DemoInstance

__all__ = [
    "catalog_changed",
    "demo_instances_started",
    "init_instance",
    "register_actors",
    "register_blueprints",
    "register_commands",
    "register_migrations",
    "startup",
    "template_slot",
]


MIGRATIONS = Path(__file__).parent / "migrations" / "versions"
_ANNOUNCE_QUEUED = "federation.catalog_announce_queued"
"""``Session.info`` key: the transaction in which an announcement job was queued."""


@hookimpl
def init_instance(path: str, settings: Settings) -> None:
    """Generate the new instance's keys (kept if they exist: ``init --force``)."""
    ensure_keys(path)


@hookimpl
def demo_instances_started(instances: list[DemoInstance]) -> list[str]:
    """Make the instances of ``trivium demo --peers N`` a network (federation/demo.py)."""
    from federation import demo  # only the demo command needs it

    return demo.join_network(instances)


@hookimpl
def startup(app: Flask) -> None:
    """Read the instance's keys, check ``[plugins.federation]``, arm the catalog scheduler.

    :raise federation.keys.KeysUnusable: ``keys/`` is missing or broken; the
        instance does not start (keys are never made here: see federation/keys.py).
    """
    settings: Settings = app.extensions["trivium.settings"]
    wellknown.current_keys(app)
    federation_settings(settings)
    if settings.testing:
        return  # tests run the catalog scheduler's jobs themselves
    armed = {"pid": 0}

    @app.before_request
    def _arm_catalog_scheduler() -> None:
        # Once per serving process (not in CLI commands): make sure the
        # catalog scheduler's chain of ticks runs; the jobs run wherever this
        # instance runs jobs (embedded worker, `trivium worker`).
        if armed["pid"] != process.pid():
            armed["pid"] = process.pid()
            sync.ensure_tick(app)


@hookimpl
def register_migrations() -> list[str]:
    """The ``federation`` Alembic branch: peers, pinned keys, inbox."""
    return [str(MIGRATIONS)]


@hookimpl
def register_blueprints() -> list[Blueprint]:
    """Well-known documents and key URLs, the signed inbox, the peers admin API and pages."""
    return [wellknown.bp, inbox.bp, feed.bp, admin.bp, pages.bp]


@hookimpl
def register_actors() -> list[ActorSpec]:
    """The inbox's processing job; catalog sync, its scheduler tick and announcements."""
    return [*inbox.register(), *sync.register()]


@hookimpl
def catalog_changed(session: Session, external_ids: list[str]) -> None:
    """Tell approved peers (a job, once the change commits) that our catalog changed.

    One job per transaction, however many courses it changed: the notification
    carries no data, so one tells the peers all there is to know.
    """
    transaction = session.get_nested_transaction() or session.get_transaction()
    queued_in = session.info.get(_ANNOUNCE_QUEUED)
    if (
        isinstance(queued_in, SessionTransaction)
        and queued_in is transaction
        and queued_in.is_active
    ):
        return
    enqueue_on_commit(session, sync.ANNOUNCE)
    session.info[_ANNOUNCE_QUEUED] = transaction


@hookimpl
def register_commands() -> list[click.Command]:
    """``trivium keys list|rotate`` and ``trivium peers ...``."""
    return [cli.keys, cli.peers]


@hookimpl
def template_slot(slot: str, context: dict[str, Any]) -> Markup | None:
    """The "Peers" tab of the administration pages."""
    if slot == "admin_nav":
        return pages.admin_nav(context)
    return None
