"""Commands on an instance folder and its schema: ``init``, ``db``, ``plugins``."""

from __future__ import annotations

from pathlib import Path

import click

from core.cli.base import cli
from core.cli.base import startup_errors
from core.cli.base import state_of
from core.cli.base import table
from core.config import ConfigError
from core.config import write_instance


@cli.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default="Trivium", show_default=True, help="The instance's name.")
@click.option("--base-url", help="Public URL (default: http://BIND).")
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="Address to serve on.")
@click.option("--force", is_flag=True, help="Overwrite an existing instance.toml.")
def init(path: Path, name: str, base_url: str | None, bind: str, force: bool) -> None:
    """Create an instance folder: instance.toml and secrets.toml (mode 0600)."""
    try:
        root = write_instance(
            path, name=name, base_url=base_url or f"http://{bind}", bind=bind, force=force
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    _init_plugins(root)
    click.echo(f"Created {root / 'instance.toml'} and {root / 'secrets.toml'} (mode 0600).")
    click.echo(f"Next: trivium --instance {root} db upgrade")


def _init_plugins(root: Path) -> None:
    """Call ``init_instance`` on the new instance's plugins (no app is built)."""
    from core.plugins import init_instance

    try:
        init_instance(root)  # InitInstanceFailed is one of the start-up errors
    except startup_errors() as exc:
        raise click.ClickException(str(exc)) from exc


# ---------------------------------------------------------------- db


@cli.group()
def db() -> None:
    """Database schema (Alembic migrations of core and plugins)."""


@db.command("upgrade")
@click.argument("target", default="heads")
@click.pass_context
def db_upgrade(ctx: click.Context, target: str) -> None:
    """Apply migrations up to TARGET (default: every branch's head)."""
    from core import schema

    app = state_of(ctx).app()
    schema.upgrade(app, target)
    click.echo("Database at: " + (", ".join(schema.current(app)) or "(empty)"))


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Show the revisions the database is at."""
    from core import schema

    app = state_of(ctx).app()
    revisions = schema.current(app)
    if not revisions:
        click.echo("(empty: run 'trivium db upgrade')")
    for revision in revisions:
        click.echo(schema.describe(app, revision))


@db.command("downgrade")
@click.argument("target")
@click.pass_context
def db_downgrade(ctx: click.Context, target: str) -> None:
    """Revert migrations down to TARGET (base, BRANCH@base, or a revision id)."""
    from core import schema

    app = state_of(ctx).app()
    schema.downgrade(app, target)
    click.echo("Database at: " + (", ".join(schema.current(app)) or "(empty)"))


# ---------------------------------------------------------------- plugins


@cli.command("plugins")
@click.pass_context
def plugins_command(ctx: click.Context) -> None:
    """List the loaded plugins, their versions and the hooks they implement."""
    from core.plugins import PluginHost

    host: PluginHost = state_of(ctx).app().extensions["trivium.plugins"]
    rows = [
        (p.name, p.version or "-", "yes" if p.builtin else "no", ", ".join(p.hooks))
        for p in host.info()
    ]
    table(("name", "version", "builtin", "hooks"), rows)
