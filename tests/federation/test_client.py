"""The HTTP client against a local server: timeouts, size caps, refusals, signed answers."""

from __future__ import annotations

import gzip
import http.server
import json
import socket
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.cache import MemoryCache
from federation import client as fc
from federation.client import ClientPolicy
from federation.client import PeerClient
from federation.client import Signer
from federation.nonces import CacheNonceStore
from federation.signatures import BadSignature
from federation.signatures import HttpRequest
from federation.signatures import HttpResponse
from federation.signatures import Peer
from federation.signatures import PinnedKey
from federation.signatures import UnknownKey
from federation.signatures import Verified
from federation.signatures import sign_response
from federation.signatures import verify_request
from tests.federation.instances import HostilePeer
from tests.federation.instances import json_reply

POLICY = ClientPolicy(
    connect_timeout=0.3, read_timeout=0.3, deadline=0.6, max_document_bytes=4096,
    max_response_bytes=4096,
)  # fmt: skip
US = "https://us.example"
OUR_KEY = Ed25519PrivateKey.generate()
OUR_KEYID = f"{US}/federation/keys/ours"
PEER_KEY = Ed25519PrivateKey.generate()


@dataclass
class Trust:
    """Both sides' trust in one: the peer's keys (for us) and ours (for the peer)."""

    peers: dict[str, Peer] = field(default_factory=dict)
    keys: dict[str, PinnedKey] = field(default_factory=dict)

    def peer_for_keyid(self, keyid: str) -> Peer | None:
        return next((p for i, p in self.peers.items() if keyid.startswith(i + "/")), None)

    def pinned_key(self, keyid: str) -> PinnedKey | None:
        return self.keys.get(keyid)

    def pin(self, owner: str, keyid: str, key: Ed25519PrivateKey) -> None:
        self.peers[owner] = Peer(owner)
        self.keys[keyid] = PinnedKey(keyid, owner, key.public_key())


@pytest.fixture
def server() -> Iterator[HostilePeer]:
    peer = HostilePeer()
    try:
        yield peer
    finally:
        peer.stop()


def peer_kid(server: HostilePeer, name: str = "k1") -> str:
    return f"{server.url}/federation/keys/{name}"


def trust_for(server: HostilePeer) -> Trust:
    trust = Trust()
    trust.pin(server.url, peer_kid(server), PEER_KEY)
    trust.pin(US, OUR_KEYID, OUR_KEY)
    return trust


def client(trust: Trust | None = None, **kwargs: Any) -> PeerClient:
    return PeerClient(POLICY, signer=Signer(OUR_KEYID, OUR_KEY), trust=trust, **kwargs)


Handler = http.server.BaseHTTPRequestHandler


@dataclass
class Answer:
    """What the signing server answers, and what it saw."""

    status: int = 202
    body: dict[str, Any] = field(default_factory=lambda: {"ok": True})
    key: Ed25519PrivateKey = PEER_KEY
    kid: str = ""
    sign: bool = True
    seen: list[Verified] = field(default_factory=list)
    replay: dict[str, str] | None = None
    """Signature fields to send instead of fresh ones (an answer to another request)."""


def signing_reply(server: HostilePeer, answer: Answer, trust: Trust) -> Callable[[Handler], None]:
    """A peer endpoint: verifies our signed request, answers signed for it."""
    nonces = CacheNonceStore(MemoryCache())

    def reply(handler: Handler) -> None:
        length = int(handler.headers.get("Content-Length", "0"))
        body = handler.rfile.read(length)
        request = HttpRequest.build(
            handler.command, server.url + handler.path, tuple(handler.headers.items()), body
        )
        answer.seen.append(
            verify_request(request, trust=trust, nonces=nonces, now=int(time.time()))
        )
        payload = json.dumps(answer.body).encode()
        headers: dict[str, str] = {"Content-Type": "application/json"}
        if answer.sign:
            signed = sign_response(
                HttpResponse.build(answer.status, request, headers, payload),
                key=answer.key,
                keyid=answer.kid or peer_kid(server),
                created=int(time.time()),
            )
            headers = dict(signed.headers)
            if answer.replay is not None:
                headers.update(answer.replay)
        handler.send_response(answer.status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    return reply


# ---------------------------------------------------------------- public documents


def test_a_document_is_fetched(server: HostilePeer) -> None:
    server.routes["/doc"] = json_reply({"id": server.url}, content_type="application/jwk-set+json")

    assert client().get_document(server.url + "/doc") == {"id": server.url}


def test_a_hanging_peer_times_out_after_the_read_timeout(server: HostilePeer) -> None:
    server.routes["/doc"] = server.hang()

    started = time.monotonic()
    with pytest.raises(fc.PeerTimeout, match="timed out"):
        client().get_document(server.url + "/doc")
    assert time.monotonic() - started < POLICY.read_timeout + 2.0


def test_a_dripping_body_is_cut_off_at_the_deadline(server: HostilePeer) -> None:
    server.routes["/doc"] = server.drip({"padding": "x" * 1000}, every=0.05)

    started = time.monotonic()
    with pytest.raises(fc.PeerTimeout, match="deadline"):
        client().get_document(server.url + "/doc")
    assert time.monotonic() - started < POLICY.deadline + 2.0


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_body_is_refused_while_streaming(server: HostilePeer, chunked: bool) -> None:
    server.routes["/doc"] = json_reply({"padding": "x" * 100_000}, chunked=chunked)

    with pytest.raises(fc.ResponseTooLarge, match="4096 bytes"):
        client().get_document(server.url + "/doc")


def test_a_compressed_body_is_refused(server: HostilePeer) -> None:
    def reply(handler: Handler) -> None:
        body = gzip.compress(b"{}")
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    server.routes["/doc"] = reply

    with pytest.raises(fc.UnexpectedResponse, match="compressed"):
        client().get_document(server.url + "/doc")


@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        (json_reply({}, status=404), fc.UnexpectedResponse, "HTTP 404"),
        (json_reply({}, status=301), fc.UnexpectedResponse, "redirects are refused"),
        (json_reply({}, content_type="text/plain"), fc.UnexpectedResponse, "not JSON"),
        (json_reply(None, raw=b"{nope"), fc.MalformedResponse, "not JSON"),
        (json_reply([1, 2]), fc.MalformedResponse, "expected a JSON object"),
        (json_reply(None, raw=b'{"x": Infinity}'), fc.MalformedResponse, "not JSON"),
    ],
    ids=["404", "redirect", "text", "malformed", "array", "infinity"],
)
def test_an_unusable_document_is_refused(
    server: HostilePeer, reply: Any, error: type[Exception], match: str
) -> None:
    server.routes["/doc"] = reply

    with pytest.raises(error, match=match):
        client().get_document(server.url + "/doc")


def test_a_closed_port_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/doc"

    with pytest.raises(fc.PeerUnreachable, match="Connection refused"):
        client().get_document(url)


# ---------------------------------------------------------------- signed requests


def test_a_signed_request_and_its_signed_answer(server: HostilePeer) -> None:
    trust = trust_for(server)
    answer = Answer()
    server.routes["/inbox?x=1"] = signing_reply(server, answer, trust)

    response = client(trust).post_json(server.url + "/inbox?x=1", b'{"a": 1}', peer=server.url)

    assert response.status == 202
    assert response.json() == {"ok": True}
    assert response.verified is not None and response.verified.peer == server.url
    assert [v.peer for v in answer.seen] == [US]  # the peer verified our signature


def test_an_unsigned_answer_is_refused(server: HostilePeer) -> None:
    trust = trust_for(server)
    server.routes["/inbox"] = signing_reply(server, Answer(sign=False), trust)

    with pytest.raises(fc.ResponseSignatureInvalid, match="not signed"):
        client(trust).post_json(server.url + "/inbox", b"{}", peer=server.url)


def test_an_answer_signed_with_another_key_is_refused(server: HostilePeer) -> None:
    trust = trust_for(server)
    server.routes["/inbox"] = signing_reply(server, Answer(key=Ed25519PrivateKey.generate()), trust)

    with pytest.raises(fc.ResponseSignatureInvalid) as caught:
        client(trust).post_json(server.url + "/inbox", b"{}", peer=server.url)
    assert isinstance(caught.value.reason, BadSignature)


def test_an_answer_to_another_request_is_refused(server: HostilePeer) -> None:
    trust = trust_for(server)
    captured: dict[str, str] = {}
    # Remember the signed answer to a first request ...
    server.routes["/inbox"] = signing_reply(server, Answer(), trust)
    response = client(trust).post_json(server.url + "/inbox", b"{}", peer=server.url)
    for name, value in response.headers:
        if name.lower() in {"signature", "signature-input", "content-digest"}:
            captured[name] = value
    # ... and send it again as the answer to a second one.
    server.routes["/inbox"] = signing_reply(server, Answer(replay=captured), trust)

    with pytest.raises(fc.ResponseSignatureInvalid) as caught:
        client(trust).post_json(server.url + "/inbox", b"{}", peer=server.url)
    assert isinstance(caught.value.reason, BadSignature)


@pytest.mark.parametrize("sign", [True, False], ids=["signed", "unsigned"])
def test_an_error_answer_is_a_refusal(server: HostilePeer, sign: bool) -> None:
    trust = trust_for(server)
    problem = {"type": "x/signature-replayed", "status": 401, "detail": "nonce already used"}
    server.routes["/inbox"] = signing_reply(server, Answer(401, problem, sign=sign), trust)

    with pytest.raises(fc.PeerRefused, match="HTTP 401: nonce already used") as caught:
        client(trust).post_json(server.url + "/inbox", b"{}", peer=server.url)
    assert (caught.value.status, caught.value.signed) == (401, sign)
    assert caught.value.problem == problem


def test_an_unknown_answer_key_is_refetched_once(server: HostilePeer) -> None:
    trust = trust_for(server)
    rotated = Ed25519PrivateKey.generate()
    new_kid = peer_kid(server, "k2")
    server.routes["/inbox"] = signing_reply(server, Answer(key=rotated, kid=new_kid), trust)
    asked: list[str] = []

    def refetch(peer: str) -> bool:
        asked.append(peer)
        trust.pin(peer, new_kid, rotated)  # what refetching the peer's JWK Set would find
        return True

    response = client(trust, refetch=refetch).post_json(
        server.url + "/inbox", b"{}", peer=server.url
    )

    assert response.status == 202 and asked == [server.url]


def test_an_unknown_answer_key_without_a_refetch_is_refused(server: HostilePeer) -> None:
    trust = trust_for(server)
    server.routes["/inbox"] = signing_reply(
        server, Answer(key=Ed25519PrivateKey.generate(), kid=peer_kid(server, "k9")), trust
    )

    with pytest.raises(fc.ResponseSignatureInvalid) as caught:
        client(trust, refetch=lambda peer: False).post_json(
            server.url + "/inbox", b"{}", peer=server.url
        )
    assert isinstance(caught.value.reason, UnknownKey)


def test_an_oversized_answer_is_refused(server: HostilePeer) -> None:
    trust = trust_for(server)
    server.routes["/inbox"] = signing_reply(server, Answer(body={"x": "y" * 10_000}), trust)

    with pytest.raises(fc.ResponseTooLarge):
        client(trust).post_json(server.url + "/inbox", b"{}", peer=server.url)


def test_requests_go_only_to_the_peer_they_are_signed_for(server: HostilePeer) -> None:
    with pytest.raises(ValueError, match="is not an endpoint of"):
        client(trust_for(server)).post_json("https://elsewhere.example/inbox", b"{}", peer=US)
    with pytest.raises(ValueError, match="signer and a trust store"):
        PeerClient(POLICY).post_json(server.url + "/inbox", b"{}", peer=server.url)
