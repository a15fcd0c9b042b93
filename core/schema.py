"""Database migrations: Alembic configured in code, one branch per owner.

Core's revisions live in ``core/migrations/versions`` (branch ``core``); each
plugin adds its own folders through ``register_migrations`` and owns a branch
named after itself.  ``upgrade heads`` brings every branch up to date, so there
is no ``alembic.ini``: use ``trivium db upgrade|current|downgrade``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import Connection

from core.db import get_db
from core.plugins import PluginHost

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
CORE_VERSIONS = MIGRATIONS_DIR / "versions"
CORE_BRANCH = "core"


class MigrationsFolderMissing(Exception):
    """A plugin's ``register_migrations`` named a folder that does not exist."""


def version_locations(app: Flask) -> list[str]:
    """Core's revision folder, then every plugin's.

    :raise MigrationsFolderMissing: a plugin returned a path that is not a folder.
    """
    host: PluginHost = app.extensions["trivium.plugins"]
    folders = [str(CORE_VERSIONS)]
    for plugin, folder in host.call_lists("register_migrations"):
        path = Path(folder)
        if not path.is_dir():
            raise MigrationsFolderMissing(
                f"plugin {plugin!r} hook register_migrations returned {folder!r}: not a folder"
            )
        resolved = str(path.resolve())
        if resolved not in folders:
            folders.append(resolved)
    return folders


def _escape(value: str) -> str:
    # Config values go through configparser interpolation.
    return value.replace("%", "%%")


def alembic_config(app: Flask, connection: Connection | None = None) -> Config:
    """An Alembic :class:`Config` for ``app``'s database and installed plugins.

    :param connection: run on this connection (and its transaction) instead of
        a new one from the app's engine.
    """
    db = get_db(app)
    cfg = Config()
    cfg.set_main_option("script_location", _escape(str(MIGRATIONS_DIR)))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", _escape(os.pathsep.join(version_locations(app))))
    cfg.set_main_option(
        "sqlalchemy.url", _escape(db.engine.url.render_as_string(hide_password=False))
    )
    cfg.attributes["engine"] = db.engine
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(app: Flask, target: str = "heads") -> None:
    """Apply migrations up to ``target`` (every branch's head by default)."""
    command.upgrade(alembic_config(app), target)
    log.info("db=upgrade target=%s revisions=%s", target, ",".join(current(app)) or "-")


def downgrade(app: Flask, target: str) -> None:
    """Revert migrations down to ``target`` (``base``, ``<branch>@base``, a revision)."""
    command.downgrade(alembic_config(app), target)
    log.info("db=downgrade target=%s revisions=%s", target, ",".join(current(app)) or "-")


def current(app: Flask) -> list[str]:
    """The revisions the database is at (one per branch; empty when unmigrated)."""
    with get_db(app).engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    return sorted(heads)


def heads(app: Flask) -> list[str]:
    """The newest revision of every branch known to the code."""
    script = ScriptDirectory.from_config(alembic_config(app))
    return sorted(script.get_heads())


def describe(app: Flask, revision: str) -> str:
    """``revision`` with its branch labels, for ``trivium db current``."""
    script = ScriptDirectory.from_config(alembic_config(app))
    rev = script.get_revision(revision)
    if rev is None:
        return f"{revision} (unknown to this code)"
    labels = ",".join(sorted(rev.branch_labels))
    head = " (head)" if rev.is_head else ""
    return f"{revision} [{labels}]{head}" if labels else f"{revision}{head}"
