"""The ``trivium`` command: instances, schema, users, jobs, mail, serving, the demo.

Each group of commands lives in its own module and registers itself on the
root group (:data:`core.cli.base.cli`) when imported here; plugins add
theirs through ``register_commands``.
"""

from __future__ import annotations

from core.cli import catalog  # noqa: F401 - imported to register its commands
from core.cli import courses  # noqa: F401
from core.cli import demo  # noqa: F401
from core.cli import events  # noqa: F401
from core.cli import instance  # noqa: F401
from core.cli import jobs  # noqa: F401
from core.cli import mail  # noqa: F401
from core.cli import serving  # noqa: F401
from core.cli import users  # noqa: F401
from core.cli.base import cli


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="trivium")


__all__ = ["cli", "main"]
