"""``python -m federation keys generate``: a new key set, for an instance that cannot start.

``trivium`` builds the instance's app before it runs a plugin's command, and an
instance without keys refuses to start (:class:`federation.keys.KeysUnusable`),
so the one command that makes keys outside ``trivium init`` works on the
instance folder alone, without loading the instance.
"""

from __future__ import annotations

from pathlib import Path

import click

from federation.keys import KeysExist
from federation.keys import generate_keys

__all__ = ["main"]


@click.group()
def main() -> None:
    """Federation commands that run without starting the instance."""


@main.group()
def keys() -> None:
    """The instance's signing keys."""


@keys.command("generate")
@click.option(
    "--instance",
    "instance",
    required=True,
    envvar="TRIVIUM_INSTANCE_PATH",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The instance folder (default: $TRIVIUM_INSTANCE_PATH).",
)
def generate(instance: Path) -> None:
    """Give an instance that has no keys a new key set: a new identity.

    Only for an instance no peer knows yet.  An instance that runs on other
    machines takes a copy of their keys/ folder instead: peers accept only the
    keys they pinned.  Refuses to touch a keys/ folder that holds any key.
    """
    if not (instance / "instance.toml").is_file():
        raise click.ClickException(f"{instance} is not an instance folder (no instance.toml)")
    try:
        created = generate_keys(instance)
    except KeysExist as exc:
        raise click.ClickException(str(exc)) from exc
    for record in created:
        click.echo(f"New active {record.alg} key {record.id}")
    click.echo(f"Wrote {instance / 'keys'}. trivium keys list shows the keys' kid URLs.")


if __name__ == "__main__":
    main(prog_name="python -m federation")
