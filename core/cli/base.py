"""The ``trivium`` root group, its state, and what its commands share.

Commands that need an instance take it from ``--instance PATH`` or
``TRIVIUM_INSTANCE_PATH``.  Plugins add commands through ``register_commands``;
those run inside an application context of that instance.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import click
from flask import Flask

from core.config import ConfigError

log = logging.getLogger(__name__)


def startup_errors() -> tuple[type[Exception], ...]:
    """Errors of a broken instance or plugin set, shown without a traceback."""
    from core.plugins import DuplicateContentType
    from core.plugins import InitInstanceFailed
    from core.plugins import PluginLoadError
    from core.plugins import StartupError
    from core.schema import MigrationsFolderMissing
    from core.tasks import DuplicateActor
    from core.tasks import JobsConfigError

    return (
        ConfigError,
        PluginLoadError,
        DuplicateContentType,
        DuplicateActor,
        JobsConfigError,
        MigrationsFolderMissing,
        StartupError,
        InitInstanceFailed,
    )


@dataclass
class CliState:
    """What the ``trivium`` group passes to its commands: the instance and its app."""

    instance: Path | None = None
    _app: Flask | None = None
    _plugin_commands: dict[str, click.Command] | None = field(default=None, repr=False)

    def app(self) -> Flask:
        """The instance's app, created on first use.

        :raise click.UsageError: no instance was given.
        :raise click.ClickException: the instance or a plugin is broken.
        """
        if self._app is None:
            if self.instance is None:
                raise click.UsageError(
                    "no instance: pass --instance PATH or set TRIVIUM_INSTANCE_PATH"
                )
            from core import create_app

            try:
                self._app = create_app(self.instance)
            except startup_errors() as exc:
                raise click.ClickException(str(exc)) from exc
        return self._app

    def close(self) -> None:
        """Stop the app's job worker and close its database connections."""
        if self._app is not None:
            close_app(self._app)
            self._app = None

    def plugin_commands(self) -> dict[str, click.Command]:
        """Commands from ``register_commands`` (none without a loadable instance)."""
        if self._plugin_commands is None:
            self._plugin_commands = {}
            if self.instance is None:
                return self._plugin_commands
            from core.plugins import PluginHost

            host: PluginHost = self.app().extensions["trivium.plugins"]
            for plugin, command in host.call_lists("register_commands"):
                if not isinstance(command, click.Command) or not command.name:
                    log.error("plugin=%s hook=register_commands error=not_a_click_command", plugin)
                    continue
                if command.name in cli.commands or command.name in self._plugin_commands:
                    log.warning(
                        "plugin=%s command=%s status=ignored reason=name_taken",
                        plugin,
                        command.name,
                    )
                    continue
                self._plugin_commands[command.name] = command
        return self._plugin_commands


def close_app(app: Flask) -> None:
    """Release what an app holds: its job worker, broker and database pools."""
    from core.db import get_db
    from core.tasks import get_jobs

    get_jobs(app).close()
    get_db(app).dispose()


def state_of(ctx: click.Context) -> CliState:
    state = ctx.find_root().ensure_object(CliState)
    if state.instance is None and os.environ.get("TRIVIUM_INSTANCE_PATH"):
        # --help is handled before the envvar default is applied.
        state.instance = Path(os.environ["TRIVIUM_INSTANCE_PATH"])
    return state


def _remember_instance(
    ctx: click.Context, param: click.Parameter, value: Path | None
) -> Path | None:
    if value is not None:
        state_of(ctx).instance = value
    return value


class TriviumGroup(click.Group):
    """The root group: built-in commands, then the instance's plugin commands."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Built-ins, plus plugin commands when the instance loads."""
        names = super().list_commands(ctx)
        try:
            names += sorted(state_of(ctx).plugin_commands())
        except click.ClickException as exc:
            log.debug("cli=plugin_commands status=unavailable error=%s", exc.message)
        return names

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A built-in command, or one a plugin registered."""
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        state = state_of(ctx)
        if state.instance is None:
            return None
        return state.plugin_commands().get(cmd_name)


@click.group(cls=TriviumGroup)
@click.option(
    "--instance",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="TRIVIUM_INSTANCE_PATH",
    is_eager=True,
    callback=_remember_instance,
    help="The instance folder (default: $TRIVIUM_INSTANCE_PATH).",
)
@click.pass_context
def cli(ctx: click.Context, instance: Path | None) -> None:
    """Trivium, a federated plugin-based learning management system."""
    state = state_of(ctx)
    ctx.call_on_close(state.close)
    if ctx.invoked_subcommand is not None and ctx.invoked_subcommand not in cli.commands:
        ctx.with_resource(state.app().app_context())


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        click.echo("  ".join(cells).rstrip())


def new_private_file(path: Path) -> int:
    """Create ``path`` for writing, readable by its owner only; never over an existing file.

    :raise click.ClickException: it exists or cannot be created.
    """
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{path} exists; name a new file") from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from exc
