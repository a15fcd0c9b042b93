"""Real instances on loopback for federation tests: each an app served by a thread.

Every :class:`Instance` has its own folder (``instance.toml``, secrets, keys,
SQLite database migrated with ``trivium``'s Alembic branches) and its own
Werkzeug server on ``127.0.0.1`` with a port chosen by the kernel, so peers
talk over real sockets.  :class:`HostilePeer` is a tiny HTTP server of our
own that misbehaves on purpose.  Everything started here is stopped by the
object that started it, never by name.
"""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from click.testing import Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import Connection
from sqlalchemy import create_engine
from sqlalchemy import select
from sqlalchemy import text
from werkzeug.serving import BaseWSGIServer
from werkzeug.serving import make_server

from core import create_app
from core import schema
from core import tasks
from core.cli import cli
from core.config import write_instance
from core.db import Base
from core.db import get_db
from core.tasks import JobsOptions
from federation.client import PeerClient
from federation.client import Signer
from federation.keys import KeySet
from federation.keys import key_url
from federation.keys import keys_dir
from federation.keys import load_keys
from federation.models import FederationPeer
from federation.models import InboxActivity
from federation.models import PeerKey
from tests.conftest import PG_URL

FEDERATION_TABLES = (FederationPeer.__tablename__, PeerKey.__tablename__, "federation_inbox")
WAIT = 10.0
"""Upper bound of every wait in these tests (seconds)."""

FAST = {
    "allow_http_peers": True,
    "connect_timeout": 2.0,
    "read_timeout": 3.0,
    "request_deadline": 6.0,
}
"""Federation settings of test instances: loopback http, timeouts short enough for
hanging-peer tests yet long enough for a fresh instance's first answer (its keys
load then) on a busy CI machine."""


@contextmanager
def pg_admin() -> Iterator[Connection]:
    """A connection to the PostgreSQL test database, outside any instance."""
    engine = create_engine(PG_URL)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def wait_for(check: Callable[[], Any], *, timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.02)


class Instance:
    """A Trivium instance served on ``127.0.0.1`` by a Werkzeug thread."""

    def __init__(
        self,
        root: Path,
        name: str,
        keys_from: Path,
        federation: dict[str, Any] | None = None,
        *,
        backend: str = "sqlite",
    ) -> None:
        self.name = name
        self.path = root / name.lower().replace(" ", "-")
        self._app: Flask | None = None
        self.pg_schema = ""
        # Port 0: the kernel picks a free port, with no window for a race.
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        write_instance(self.path, name=name, base_url=self.url)
        if backend == "postgresql":
            # A schema of this instance's own, named in instance.toml so that
            # the CLI (a separate app) uses the same database.
            self.pg_schema = f"trivium_fed_{uuid.uuid4().hex[:12]}"
            with pg_admin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{self.pg_schema}"'))
            sep = "&" if "?" in PG_URL else "?"
            url = f"{PG_URL}{sep}options=-csearch_path%3D{self.pg_schema}"
            toml = self.path / "instance.toml"
            toml.write_text(toml.read_text().replace('url = ""', f"url = {json.dumps(url)}", 1))
        settings = {**FAST, **(federation or {})}
        with (self.path / "instance.toml").open("a") as fh:
            fh.write("\n[plugins.federation]\n")
            for key, value in settings.items():
                fh.write(f"{key} = {json.dumps(value)}\n")
        shutil.copytree(keys_dir(keys_from), keys_dir(self.path))
        self.app = create_app(
            self.path,
            {
                "testing": True,
                "jobs": {"embedded_worker": False},
                "accounts": {"hash_profile": "cheapest"},
            },
        )
        self._app = self.app
        schema.upgrade(self.app)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        assert self._app is not None
        return self._app(environ, start_response)

    # ------------------------------------------------------------ helpers

    def cli(self, *args: str, input: str | None = None) -> Result:
        """Run ``trivium --instance <this> ARGS`` (a separate app on the same folder)."""
        runner = CliRunner(env={"TRIVIUM_INSTANCE_PATH": None})
        return runner.invoke(cli, ["--instance", str(self.path), *args], input=input)

    def peer(self, other: Instance) -> FederationPeer | None:
        """The peer row this instance keeps for ``other``, keys loaded."""
        with get_db(self.app).sessions() as sess:
            peer = sess.scalar(select(FederationPeer).where(FederationPeer.base_url == other.url))
            if peer is not None:
                list(peer.keys)
                sess.expunge_all()
            return peer

    def inbox(self) -> list[InboxActivity]:
        """Every stored activity, oldest first."""
        with get_db(self.app).sessions() as sess:
            rows = list(sess.scalars(select(InboxActivity).order_by(InboxActivity.id)))
            sess.expunge_all()
            return rows

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of federation's tables and the jobs table, to check nothing changed."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        with get_db(self.app).engine.connect() as conn:
            for name in (*FEDERATION_TABLES, "jobs"):
                rows = conn.execute(Base.metadata.tables[name].select()).all()
                out[name] = sorted((tuple(r) for r in rows), key=repr)
        return out

    def signer(self) -> Signer:
        """This instance's active Ed25519 key, as it signs with it."""
        key_set = load_keys(self.path)
        return Signer(key_url(self.url, key_set.active("Ed25519").id), key_set.signing_key())

    def private_key(self) -> Ed25519PrivateKey:
        """This instance's active Ed25519 private key."""
        return load_keys(self.path).signing_key()

    def start_worker(self) -> None:
        """Run the job worker in this process, polling fast."""
        tasks.init_app(
            self.app,
            JobsOptions(poll_interval=0.05, worker_timeout_ms=100, stop_timeout_ms=5000),
        )
        tasks.get_jobs(self.app).start_worker(queues=["federation"], threads=1)

    def peer_with(self, other: Instance) -> None:
        """Add ``other`` as a peer and approve it, through the CLI."""
        added = self.cli("peers", "add", other.url)
        assert added.exit_code == 0, added.output
        approved = self.cli("peers", "approve", other.url)
        assert approved.exit_code == 0, approved.output

    def client(self) -> PeerClient:
        """A bare client with this instance's test timeouts (unsigned documents)."""
        from federation.config import FederationSettings

        return PeerClient(FederationSettings.model_validate(FAST).client_policy())

    def stop(self) -> None:
        """Stop the server thread and the job worker; close database connections."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=WAIT)
        tasks.get_jobs(self.app).close()
        get_db(self.app).dispose()
        if self.pg_schema:
            with pg_admin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.pg_schema}" CASCADE'))


# ---------------------------------------------------------------- a hostile peer


Reply = Callable[[http.server.BaseHTTPRequestHandler], None]


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hang up on purpose here (size caps, timeouts): not worth a traceback."""


class HostilePeer:
    """A loopback HTTP server answering each path with a chosen (mis)behaviour.

    :ivar routes: path -> function writing the response on the handler.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Reply] = {}
        self.hits: list[str] = []
        self._release = threading.Event()
        routes, hits = self.routes, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                hits.append(self.path)
                reply = routes.get(self.path) or routes.get(self.path.split("?", 1)[0])
                if reply is None:
                    self.send_error(404)
                    return
                reply(self)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def hang(self) -> Reply:
        """A reply that never comes (until :meth:`stop`)."""

        def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
            self._release.wait(WAIT)

        return reply

    def drip(self, document: dict[str, Any], every: float) -> Reply:
        """Send headers at once, then the body one byte every ``every`` seconds."""

        def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
            body = json.dumps(document).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            for byte in body:
                if self._release.wait(every):
                    return
                try:
                    handler.wfile.write(bytes([byte]))
                    handler.wfile.flush()
                except OSError:
                    return

        return reply

    def stop(self) -> None:
        """Release hanging replies and stop the server."""
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=WAIT)


def json_reply(
    document: Any,
    *,
    status: int = 200,
    content_type: str = "application/json",
    raw: bytes | None = None,
    chunked: bool = False,
) -> Reply:
    """A reply with a JSON (or ``raw``) body."""

    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        body = raw if raw is not None else json.dumps(document).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        if chunked:
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for start in range(0, len(body), 4096):
                piece = body[start : start + 4096]
                handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
            return
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return reply


def documents_for(
    url: str, key_set: KeySet, name: str = "Fake U"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid instance document and JWK Set for ``url``, as a Trivium instance serves them."""
    document = {
        "id": url,
        "type": "TriviumInstance",
        "name": name,
        "protocol_version": "1",
        "jwks_uri": url + "/.well-known/jwks.json",
        "endpoints": {
            "instance": url + "/.well-known/trivium",
            "jwks": url + "/.well-known/jwks.json",
            "key": url + "/federation/keys/{key_id}",
            "inbox": url + "/federation/v1/inbox",
            "catalog": url + "/federation/v1/catalog",
        },
        "http_signatures": {
            "label": "trivium",
            "tag": "trivium",
            "algorithms": ["ed25519"],
            "digest_algorithms": ["sha-256"],
            "max_age": 300,
        },
    }
    return document, key_set.jwks(url)
