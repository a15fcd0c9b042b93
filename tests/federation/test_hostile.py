"""``trivium peers add`` against a peer that lies, stalls or floods: refused, nothing stored.

B is a real instance peering with A.  The "peer" B's operator tries to add
is a tiny HTTP server of this test's own that serves a broken variant of a
valid instance document and JWK Set.  Each attempt must fail with a clear
error, within the configured timeouts, leave B's tables as they were, and
leave the A-B peering working.
"""

from __future__ import annotations

import http.server
import json
import socket
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from federation.keys import load_keys
from tests.conftest import Users
from tests.federation.conftest import Network
from tests.federation.instances import FAST
from tests.federation.instances import HostilePeer
from tests.federation.instances import Instance
from tests.federation.instances import documents_for
from tests.federation.instances import json_reply

DOC = "/.well-known/trivium"
JWKS = "/.well-known/jwks.json"
MAX_DOCUMENT = 8 * 1024
DEADLINE = 1.0


@dataclass
class Scene:
    """A and B approved both ways, and a hostile server with valid documents to spoil."""

    a: Instance
    b: Instance
    hostile: HostilePeer
    document: dict[str, Any]
    jwks: dict[str, Any]


@pytest.fixture(scope="module")
def module_scene(tmp_path_factory: pytest.TempPathFactory, key_sets: list[Path]) -> Iterator[Scene]:
    net = Network(tmp_path_factory.mktemp("hostile"), key_sets)
    try:
        a = net.start("Uni A")
        b = net.start("Uni B", max_document_bytes=MAX_DOCUMENT, request_deadline=DEADLINE)
        a.peer_with(b)
        b.peer_with(a)
        hostile = net.hostile_peer()
        document, jwks = documents_for(hostile.url, load_keys(key_sets[2]))
        yield Scene(a, b, hostile, document, jwks)
    finally:
        net.stop()


@pytest.fixture
def scene(module_scene: Scene) -> Scene:
    """The module's scene, with the hostile server's routes cleared."""
    module_scene.hostile.routes.clear()
    module_scene.hostile.hits.clear()
    return module_scene


def serve(scene: Scene, document: Any = None, jwks: Any = None) -> None:
    """Serve (possibly altered) documents from the hostile server."""
    scene.hostile.routes[DOC] = json_reply(scene.document if document is None else document)
    scene.hostile.routes[JWKS] = json_reply(scene.jwks if jwks is None else jwks)


def with_keys(scene: Scene, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    jwks: dict[str, Any] = json.loads(json.dumps(scene.jwks))
    for jwk in jwks["keys"]:
        change(jwk)
    return jwks


Setup = Callable[[Scene], None]

CASES: dict[str, tuple[Setup, str]] = {
    "id-mismatch": (
        lambda s: serve(s, {**s.document, "id": "http://127.0.0.1:1"}),
        "claims to be 'http://127.0.0.1:1'; they must be equal",
    ),
    "unknown-protocol": (
        lambda s: serve(s, {**s.document, "protocol_version": "2"}),
        "speaks protocol '2', not 1",
    ),
    "not-trivium": (
        lambda s: serve(s, {**s.document, "type": "Person"}),
        "instance document: type",
    ),
    "jwks-elsewhere": (
        lambda s: serve(s, {**s.document, "jwks_uri": "http://127.0.0.1:1/jwks.json"}),
        "jwks_uri 'http://127.0.0.1:1/jwks.json' is not under the instance",
    ),
    "malformed-json": (
        lambda s: s.hostile.routes.update({DOC: json_reply(None, raw=b'{"id": "x", ')}),
        "not JSON",
    ),
    "not-an-object": (
        lambda s: serve(s, ["not", "an", "object"]),
        "expected a JSON object, got list",
    ),
    "deeply-nested": (
        lambda s: s.hostile.routes.update({DOC: json_reply(None, raw=b"[" * 4000 + b"]" * 4000)}),
        "nested too deeply",
    ),
    "html": (
        lambda s: s.hostile.routes.update(
            {DOC: json_reply(None, raw=b"<html></html>", content_type="text/html")}
        ),
        "content type 'text/html' is not JSON",
    ),
    "error-status": (
        lambda s: s.hostile.routes.update({DOC: json_reply({"error": "no"}, status=500)}),
        "HTTP 500, expected 200",
    ),
    "redirect": (
        lambda s: s.hostile.routes.update({DOC: redirect_to(s.a.url + DOC)}),
        "redirects are refused",
    ),
    "oversized-jwks": (
        lambda s: serve(s, jwks={**s.jwks, "padding": "x" * MAX_DOCUMENT}),
        f"exceeds {MAX_DOCUMENT} bytes",
    ),
    "oversized-chunked-jwks": (
        lambda s: s.hostile.routes.update(
            {
                DOC: json_reply(s.document),
                JWKS: json_reply({**s.jwks, "padding": "x" * 10 * MAX_DOCUMENT}, chunked=True),
            }
        ),
        f"body exceeds {MAX_DOCUMENT} bytes",
    ),
    "private-key": (
        lambda s: serve(s, jwks=with_keys(s, lambda k: k.update(d="c2VjcmV0"))),
        "private key material",
    ),
    "foreign-kid": (
        lambda s: serve(
            s, jwks=with_keys(s, lambda k: k.update(kid="http://127.0.0.1:1/federation/keys/x"))
        ),
        "is not under",
    ),
    "kid-not-its-thumbprint": (
        lambda s: serve(
            s,
            jwks=with_keys(
                s, lambda k: k.update(kid=k["kid"].rsplit("/", 1)[0] + "/someone-elses")
            ),
        ),
        "does not name its key's thumbprint",
    ),
    "no-keys": (
        lambda s: serve(s, jwks={"keys": []}),
        "the JWK Set has no Ed25519 key",
    ),
}


def redirect_to(location: str) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return reply


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_peer_is_not_added(scene: Scene, case: str) -> None:
    setup, error = CASES[case]
    setup(scene)
    before = scene.b.tables()

    result = scene.b.cli("peers", "add", scene.hostile.url)

    assert result.exit_code == 1
    assert f"Error: cannot add {scene.hostile.url}: " in result.output
    assert error in result.output
    assert scene.b.tables() == before


def test_the_valid_documents_of_the_fake_peer_would_be_accepted(scene: Scene) -> None:
    """The cases above spoil documents that are otherwise fine (control)."""
    serve(scene)

    result = scene.b.cli("peers", "add", scene.hostile.url)

    assert result.exit_code == 0, result.output
    assert scene.b.cli("peers", "remove", scene.hostile.url, "--yes").exit_code == 0


def test_a_hanging_peer_costs_one_read_timeout(scene: Scene) -> None:
    scene.hostile.routes[DOC] = scene.hostile.hang()
    before = scene.b.tables()

    started = time.monotonic()
    result = scene.b.cli("peers", "add", scene.hostile.url)
    elapsed = time.monotonic() - started

    assert result.exit_code == 1
    assert "timed out (ReadTimeout)" in result.output
    # one read timeout, plus starting the CLI's app (generous: CI machines are busy)
    assert elapsed < float(FAST["read_timeout"]) + 10.0
    assert scene.b.tables() == before


def test_a_peer_dripping_its_keys_is_cut_off_at_the_deadline(scene: Scene) -> None:
    scene.hostile.routes[DOC] = json_reply(scene.document)
    scene.hostile.routes[JWKS] = scene.hostile.drip(scene.jwks, every=0.05)
    before = scene.b.tables()

    started = time.monotonic()
    result = scene.b.cli("peers", "add", scene.hostile.url)
    elapsed = time.monotonic() - started

    assert result.exit_code == 1
    assert "the body took longer than the deadline" in result.output
    assert elapsed < DEADLINE + 3.0
    assert scene.b.tables() == before


def test_an_unreachable_peer_is_not_added(scene: Scene) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    before = scene.b.tables()

    result = scene.b.cli("peers", "add", url)

    assert result.exit_code == 1
    assert "cannot connect" in result.output and "Connection refused" in result.output
    assert scene.b.tables() == before


@pytest.mark.parametrize(
    ("case", "status", "slug"),
    [("id-mismatch", 502, "peer-unavailable"), ("hang", 504, "peer-timeout")],
)
def test_the_admin_api_reports_a_hostile_peer(
    scene: Scene, case: str, status: int, slug: str
) -> None:
    if case == "hang":
        scene.hostile.routes[DOC] = scene.hostile.hang()
    else:
        CASES[case][0](scene)
    users = Users(scene.b.app)
    headers = users.headers(users.create(f"admin-{case}@example.org", admin=True))
    before = scene.b.tables()

    response = scene.b.app.test_client().post(
        "/api/v1/admin/peers", json={"url": scene.hostile.url}, headers=headers
    )

    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert (response.json or {})["type"].endswith("/" + slug)
    assert scene.b.tables() == before


def test_other_peers_are_unaffected(scene: Scene) -> None:
    for case in ("id-mismatch", "oversized-jwks", "malformed-json"):
        CASES[case][0](scene)
        assert scene.b.cli("peers", "add", scene.hostile.url).exit_code == 1

    delivered = scene.a.cli("peers", "notify", scene.b.url)

    assert delivered.exit_code == 0, delivered.output
    listed = scene.b.cli("peers", "list").output.splitlines()
    assert len(listed) == 2 and scene.a.url in listed[1] and "approved" in listed[1]
