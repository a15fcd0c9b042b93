"""``trivium keys``: list and rotate the instance's keys."""

from __future__ import annotations

import click
from flask import current_app

from core.config import Settings
from federation.keys import ALGORITHMS
from federation.keys import Algorithm
from federation.keys import KeyIndexInvalid
from federation.keys import KeysMissing
from federation.keys import key_url
from federation.keys import load_keys
from federation.keys import rotate_key

__all__ = ["keys"]


def _settings() -> Settings:
    settings: Settings = current_app.extensions["trivium.settings"]
    return settings


@click.group()
def keys() -> None:
    """The instance's signing keys (Ed25519 for requests, RSA for JWTs)."""


@keys.command("list")
def list_keys() -> None:
    """List every key, newest first, with its kid URL."""
    settings = _settings()
    try:
        key_set = load_keys(settings.path)
    except (KeysMissing, KeyIndexInvalid) as exc:
        raise click.ClickException(str(exc)) from exc
    rows = [
        (
            k.record.status,
            k.record.alg,
            k.record.created.strftime("%Y-%m-%d %H:%M:%S"),
            key_url(settings.instance.base_url, k.id),
        )
        for k in reversed(key_set.keys)
    ]
    header = ("status", "alg", "created (UTC)", "kid")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@keys.command("rotate")
@click.option(
    "--alg",
    type=click.Choice(ALGORITHMS),
    default="Ed25519",
    show_default=True,
    help="Ed25519 signs requests; RS256 signs JWTs.",
)
def rotate(alg: Algorithm) -> None:
    """Add a new active key; the previous one is retired but still verifies."""
    settings = _settings()
    try:
        record = rotate_key(settings.path, alg)
    except (KeysMissing, KeyIndexInvalid) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"New active {alg} key: {key_url(settings.instance.base_url, record.id)}")
    click.echo("The previous key is retired and stays in the JWKS for verification.")
