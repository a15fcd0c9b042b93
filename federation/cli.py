"""``trivium keys``: the instance's own keys; ``trivium peers``: the instances it peers with."""

from __future__ import annotations

from collections.abc import Sequence

import click
from flask import current_app

from core import db
from core.config import Settings
from federation.client import PeerClient
from federation.client import PeerRequestError
from federation.config import federation_settings
from federation.inbox import deliver
from federation.inbox import new_activity
from federation.keys import ALGORITHMS
from federation.keys import Algorithm
from federation.keys import KeyIndexInvalid
from federation.keys import KeysMissing
from federation.keys import key_url
from federation.keys import load_keys
from federation.keys import rotate_key
from federation.models import FederationPeer
from federation.peers import PeerError
from federation.peers import add_peer
from federation.peers import approve_peer
from federation.peers import find_peer
from federation.peers import list_peers
from federation.peers import refresh_peer
from federation.peers import remove_peer
from federation.peers import suspend_peer
from federation.wellknown import base_url

__all__ = ["keys", "peers"]


def _settings() -> Settings:
    settings: Settings = current_app.extensions["trivium.settings"]
    return settings


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@click.group()
def keys() -> None:
    """The instance's signing keys (Ed25519 for requests, RSA for JWTs).

    trivium init makes them, and the instance does not start without them.
    A new identity's keys: python -m federation keys generate.
    """


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
    _table(("status", "alg", "created (UTC)", "kid"), rows)


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


# ---------------------------------------------------------------- peers


def _client() -> PeerClient:
    return PeerClient(federation_settings(_settings()).client_policy())


def _find(ref: str) -> FederationPeer:
    try:
        return find_peer(db.session(), ref)
    except PeerError as exc:
        raise click.ClickException(str(exc)) from exc


def _show(peer: FederationPeer) -> None:
    click.echo(f"{peer.public_id}  {peer.state}  {peer.name}  {peer.base_url}")
    for key in peer.keys:
        click.echo(f"  pinned {key.alg:<8} {key.kid}")


@click.group()
def peers() -> None:
    """The instances this one federates with: add by URL, then approve."""


@peers.command("add")
@click.argument("url")
def add(url: str) -> None:
    """Fetch URL's instance document and keys, pin them, and add it as a pending peer."""
    settings = _settings()
    sess = db.session()
    try:
        with _client() as client:
            peer = add_peer(
                sess,
                client,
                url,
                own_id=base_url(settings),
                allow_http=federation_settings(settings).allow_http_peers,
            )
    except (PeerError, PeerRequestError) as exc:
        raise click.ClickException(f"cannot add {url}: {exc}") from exc
    sess.commit()
    click.echo("Added a pending peer:")
    _show(peer)
    click.echo(f"Check the keys with its operator, then: trivium peers approve {peer.public_id}")


@peers.command("list")
def list_() -> None:
    """List every peer: id, state, keys pinned, name, URL."""
    rows = [
        (p.public_id, p.state, str(len(p.keys)), p.name, p.base_url)
        for p in list_peers(db.session())
    ]
    if not rows:
        click.echo("No peers yet: trivium peers add URL")
        return
    _table(("id", "state", "keys", "name", "url"), rows)


@peers.command("show")
@click.argument("peer")
def show(peer: str) -> None:
    """Show PEER (its id or URL) with its pinned keys."""
    _show(_find(peer))


@peers.command("approve")
@click.argument("peer")
def approve(peer: str) -> None:
    """Accept signed requests from PEER (its id or URL) with the keys pinned."""
    found = _find(peer)
    approve_peer(found)
    db.session().commit()
    click.echo(f"Approved {found.base_url}")


@peers.command("suspend")
@click.argument("peer")
def suspend(peer: str) -> None:
    """Refuse signed requests from PEER (its id or URL) until approved again."""
    found = _find(peer)
    suspend_peer(found)
    db.session().commit()
    click.echo(f"Suspended {found.base_url}")


@peers.command("remove")
@click.argument("peer")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def remove(peer: str, yes: bool) -> None:
    """Forget PEER (its id or URL), its keys and the activities it sent."""
    found = _find(peer)
    if not yes:
        click.confirm(f"Remove {found.base_url} and everything it sent?", abort=True)
    sess = db.session()
    url = found.base_url
    remove_peer(sess, found)
    sess.commit()
    click.echo(f"Removed {url}")


@peers.command("refresh")
@click.argument("peer")
def refresh(peer: str) -> None:
    """Fetch PEER's document and keys again and pin what changed."""
    found = _find(peer)
    sess = db.session()
    try:
        with _client() as client:
            changes = refresh_peer(sess, client, found)
    except (PeerError, PeerRequestError) as exc:
        raise click.ClickException(f"cannot refresh {found.base_url}: {exc}") from exc
    sess.commit()
    click.echo(
        f"Refreshed {found.base_url}: {len(changes.added)} key(s) pinned, "
        f"{len(changes.removed)} unpinned"
    )


@peers.command("notify")
@click.argument("peer")
def notify(peer: str) -> None:
    """Send PEER a signed catalog.changed activity (checks the signed link both ways)."""
    found = _find(peer)
    activity = new_activity(base_url(_settings()), "catalog.changed")
    try:
        response = deliver(db.session(), found, activity)
    except (PeerError, PeerRequestError) as exc:
        raise click.ClickException(f"{found.base_url} did not accept it: {exc}") from exc
    click.echo(f"{found.base_url} accepted {activity['id']} (HTTP {response.status})")
