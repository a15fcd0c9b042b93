"""A demo network: three demo instances on 127.0.0.1, peered, sharing their catalogs.

    .venv/bin/python -m federation.demo    # ports 8101-8103, folders in instances/demo-network

Each instance is core's demo instance (the same accounts and sample course,
see ``trivium demo``) under its own name and port, plus federated courses of
its own.  The instances are served by ``trivium serve`` processes this
command starts (and stops, by their ids, on Ctrl-C), peered and approved both
ways, and told that their peers' catalogs changed, so within seconds a
learner on any of them finds every instance's courses in its catalog.

Running it again reuses the folders: nothing is added twice.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import click
from flask import Flask
from sqlalchemy import select

from core import catalog
from core import courses
from core import demo as core_demo
from core.config import write_instance
from core.db import get_db
from core.models import Course
from core.models import User
from federation.client import PeerRequestError
from federation.config import federation_settings
from federation.inbox import deliver
from federation.inbox import new_activity
from federation.models import FederationPeer
from federation.peers import PeerError
from federation.peers import add_peer
from federation.peers import approve_peer
from federation.signed import peer_client

__all__ = ["NETWORK", "demo_network"]

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("instances") / "demo-network"


@dataclass(frozen=True)
class DemoPeer:
    """One instance of the demo network and the courses it federates."""

    slug: str
    name: str
    courses: tuple[tuple[str, str, str, str, str], ...]
    """``(title, summary, subject, language, level)``."""


NETWORK = (
    DemoPeer(
        "north",
        "Northern University",
        (
            (
                "Marine Biology",
                "Life in the oceans, from plankton to whales.",
                "Biology",
                "en",
                "beginner",
            ),
            (
                "Introduction to Statistics",
                "Data, uncertainty and inference.",
                "Mathematics",
                "en",
                "beginner",
            ),
        ),
    ),
    DemoPeer(
        "south",
        "Southern Institute of Technology",
        (
            (
                "Applied Cryptography",
                "Signatures, key exchange and protocols in practice.",
                "Computing",
                "en",
                "advanced",
            ),
            (
                "Robotik für Einsteiger",
                "Sensoren, Motoren und Regelung.",
                "Engineering",
                "de",
                "beginner",
            ),
        ),
    ),
    DemoPeer(
        "east",
        "Eastern College of Arts",
        (
            ("Medieval History", "Europe from 500 to 1500.", "History", "en", "intermediate"),
            (
                "Histoire de l'art moderne",
                "De l'impressionnisme au cubisme.",
                "Art",
                "fr",
                "intermediate",
            ),
        ),
    ),
)


def _prepare(peer: DemoPeer, root: Path, port: int) -> Flask:
    path = root / peer.slug
    if not (path / "instance.toml").exists():
        url = f"http://127.0.0.1:{port}"
        write_instance(path, name=peer.name, base_url=url, bind=f"127.0.0.1:{port}")
        with (path / "instance.toml").open("a") as toml:
            toml.write(
                "\n[plugins.federation]\nallow_http_peers = true\ncatalog_sync_interval = 60\n"
            )
    instance = core_demo.prepare(path, bind=f"127.0.0.1:{port}")
    app = instance.app
    with app.app_context(), get_db(app).session() as sess:
        instructor = sess.scalar(select(User).where(User.email == core_demo.INSTRUCTOR))
        assert instructor is not None
        for title, summary, subject, language, level in peer.courses:
            if sess.scalar(select(Course.id).where(Course.title == title)) is not None:
                continue
            course = courses.create_course(
                sess,
                instructor,
                {
                    "title": title,
                    "summary": summary,
                    "subject": subject,
                    "language": language,
                    "level": level,
                    "visibility": "federated",
                },
            )
            courses.change_status(sess, instructor, course, "publish")
        catalog.reindex_local(sess)
    return app


def _serve(path: Path, port: int) -> subprocess.Popen[bytes]:
    trivium = Path(sys.executable).parent / "trivium"
    command = [str(trivium), "--instance", str(path), "serve", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", "1", "--threads", "4"]
    return subprocess.Popen(command, start_new_session=True)  # noqa: S603 (our own CLI)


def _wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):  # noqa: S310 (loopback)
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise click.ClickException(f"{url} did not start within {timeout:.0f} s")


def _peer_all(apps: list[Flask], urls: list[str]) -> None:
    for app, own in zip(apps, urls, strict=True):
        policy = federation_settings(app.extensions["trivium.settings"])
        with app.app_context(), get_db(app).session() as sess, peer_client(sess) as client:
            for other in urls:
                if other == own:
                    continue
                peer = sess.scalar(select(FederationPeer).where(FederationPeer.base_url == other))
                if peer is None:
                    peer = add_peer(
                        sess, client, other, own_id=own, allow_http=policy.allow_http_peers
                    )
                approve_peer(peer)
    # Everyone approved everyone: now say "my catalog changed" so each pulls at once.
    for app, own in zip(apps, urls, strict=True):
        with app.app_context(), get_db(app).session() as sess:
            for peer in sess.scalars(select(FederationPeer)):
                try:
                    deliver(sess, peer, new_activity(own, "catalog.changed"))
                except (PeerRequestError, PeerError) as exc:
                    click.echo(f"  {own} could not notify {peer.base_url}: {exc}", err=True)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@click.command("demo-network", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_ROOT,
    show_default=True,
    help="Folder holding one instance folder per peer.",
)
@click.option("--port", default=8101, show_default=True, help="Port of the first instance.")
@click.option(
    "--count", type=click.IntRange(2, len(NETWORK)), default=len(NETWORK), show_default=True
)
@click.option("--serve/--no-serve", "serve_it", default=True, help="Serve them afterwards.")
def demo_network(root: Path, port: int, count: int, serve_it: bool) -> None:
    """Start peered demo instances on 127.0.0.1 that share their course catalogs."""
    peers = NETWORK[:count]
    urls = [f"http://127.0.0.1:{port + n}" for n in range(count)]
    apps = [_prepare(peer, root, port + n) for n, peer in enumerate(peers)]
    for app in apps:
        get_db(app).dispose()
    if not serve_it:
        click.echo(f"Prepared {count} instances in {root}.")
        return
    processes = [_serve(root / peer.slug, port + n) for n, peer in enumerate(peers)]
    # A SIGTERM stops the servers as Ctrl-C does (they run in sessions of their own).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for url in urls:
            _wait_ready(url)
        _peer_all(apps, urls)
        click.echo("\nTrivium demo network (peered, catalogs shared):")
        for peer, url in zip(peers, urls, strict=True):
            click.echo(f"  {peer.name:<34} {url}")
        click.echo(f"Password of every demo account: {core_demo.DEMO_PASSWORD}")
        for role, email in core_demo.logins():
            click.echo(f"  {role:<10}  {email}")
        click.echo("Each catalog lists every instance's federated courses. Ctrl-C stops them.")
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        raise click.ClickException("an instance's server exited")
    except KeyboardInterrupt:
        click.echo("\nStopping.")
    finally:
        _stop(processes)
        for app in apps:
            get_db(app).dispose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    demo_network()
