"""Alembic environment of Trivium: run through :mod:`core.schema`, never from an ini file.

:func:`core.schema.alembic_config` passes the app's engine (or an open
connection) in ``config.attributes``; the target metadata is the one shared
declarative base of core and plugins.
"""

from __future__ import annotations

from typing import Any
from typing import Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection
from sqlalchemy import Engine

import core.models  # noqa: F401  (registers core's tables on Base.metadata)
from core.db import Base
from core.db import UTCDateTime

config = context.config


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render core's column types as plain SQLAlchemy types in revisions.

    A revision must not import application code that may change later;
    ``UTCDateTime`` stores exactly a ``DateTime(timezone=True)``.
    """
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run(connection: Connection) -> None:
    """Run the requested migrations on ``connection``."""
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Emit SQL for ``--sql`` runs."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    given: Connection | None = config.attributes.get("connection")
    if given is not None:
        run(given)
    else:
        engine: Engine = config.attributes["engine"]
        with engine.connect() as conn:
            run(conn)
