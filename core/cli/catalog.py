"""``trivium catalog``: the search index of this instance's courses."""

from __future__ import annotations

import logging

import click
from sqlalchemy import func
from sqlalchemy import select

from core.cli.base import cli
from core.cli.base import state_of

log = logging.getLogger(__name__)


@cli.group()
def catalog() -> None:
    """The catalog's search index."""


@catalog.command("reindex")
@click.option(
    "--optimize",
    is_flag=True,
    help="Then merge SQLite's full-text index into one segment (takes a while on a large index).",
)
@click.pass_context
def catalog_reindex(ctx: click.Context, optimize: bool) -> None:
    """Bring this instance's courses' catalog entries in line with the courses."""
    from core import catalog as index
    from core.db import get_db
    from core.models import CatalogEntry

    app = state_of(ctx).app()
    with app.app_context(), get_db(app).session() as sess:
        changed = index.reindex_local(sess)
        listed = select(func.count()).where(CatalogEntry.deleted.is_(False))
        local = sess.scalar(listed.where(CatalogEntry.source == index.LOCAL)) or 0
        total = sess.scalar(listed) or 0
    click.echo(
        f"Re-indexed this instance's courses: {changed} entries changed; "
        f"{local} of its courses and {total} entries in all are in the catalog."
    )
    if optimize:
        with get_db(app).session() as sess:
            optimized = index.optimize_index(sess)
        click.echo(
            "Optimized the full-text index."
            if optimized
            else "Nothing to optimize: PostgreSQL's index needs no merging."
        )
