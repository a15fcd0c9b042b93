"""Commands on an instance folder: ``init``, ``backup``, ``restore``, ``db``, ``plugins``."""

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


# ---------------------------------------------------------------- backup


@cli.command()
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def backup(ctx: click.Context, archive: Path) -> None:
    """Write the instance to ARCHIVE (.tar.gz, mode 0600): settings, keys, database snapshot.

    The embedded database is copied consistently while the instance runs; a
    PostgreSQL database is not included (use pg_dump), and a SQLite database
    outside the instance folder is refused.  Every file's SHA-256 is recorded.
    Restore with `trivium restore ARCHIVE FOLDER`.
    """
    from core.backup import BackupFailed
    from core.backup import BackupRefused
    from core.backup import backup_instance

    settings = state_of(ctx).app().extensions["trivium.settings"]
    try:
        report = backup_instance(settings, archive)
    except (BackupRefused, BackupFailed) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Wrote {report.archive}: {report.files} files, each with its SHA-256.")
    if report.database == "sqlite":
        click.echo(f"The database snapshot ({report.database_bytes:,} bytes) passed its check.")
    else:
        click.echo(
            f"The {report.database} database is not in it: back it up with its own tools "
            "(pg_dump, base backups)."
        )


@cli.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def restore(archive: Path, folder: Path) -> None:
    """Unpack the backup ARCHIVE into FOLDER, which must be new or empty.

    Every file is checked against the archive's manifest (size, SHA-256) and
    the database against SQLite's integrity check; on any failure FOLDER is
    left as it was found.
    """
    from core.backup import RestoreRefused
    from core.backup import restore_instance

    try:
        manifest = restore_instance(archive, folder)
    except RestoreRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"Restored {manifest['instance']} ({manifest['base_url']}), "
        f"backed up at {manifest['created_at']}, into {folder}: "
        f"{len(manifest['members'])} files and folders, all verified."
    )
    if manifest["database"] != "sqlite":
        click.echo(f"Restore its {manifest['database']} database with its own tools.")
    click.echo(f"Next: trivium --instance {folder} db upgrade")


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
