"""The peer registry: URLs, documents and keys checked before pinning; the trust store; refetch."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import OKPKey
from joserfc.jwk import RSAKey
from sqlalchemy import select

from core import db
from core.cache import MemoryCache
from core.db import get_db
from core.models import Job
from federation import peers
from federation.client import PeerClient
from federation.client import PeerTimeout
from federation.keys import KeySet
from federation.keys import load_keys
from federation.models import FederationPeer
from federation.models import PeerKey
from federation.nonces import CacheNonceStore
from federation.peers import CATALOG_SYNC
from federation.signatures import BlockedPeer
from federation.signatures import HttpRequest
from federation.signatures import KeyOwnerMismatch
from federation.signatures import Peer
from federation.signatures import sign_request
from federation.signatures import verify_request
from tests.conftest import Users
from tests.federation.instances import HostilePeer
from tests.federation.instances import documents_for
from tests.federation.instances import json_reply

A = "https://a.example"


@pytest.fixture
def key_set(key_sets: list[Path]) -> KeySet:
    return load_keys(key_sets[0])


@pytest.fixture
def jwks(key_set: KeySet) -> dict[str, Any]:
    return key_set.jwks(A)


@pytest.fixture
def document(key_set: KeySet) -> dict[str, Any]:
    return documents_for(A, key_set)[0]


class FakeFetch(PeerClient):
    """A client that serves documents from a dict and counts fetches."""

    def __init__(self, documents: dict[str, Any]) -> None:
        super().__init__()
        self.documents = documents
        self.fetched: list[str] = []

    def get_document(self, url: str) -> dict[str, Any]:
        self.fetched.append(url)
        found = self.documents[url]
        if isinstance(found, Exception):
            raise found
        return json.loads(json.dumps(found))  # type: ignore[no-any-return]


def fake(document: dict[str, Any], jwks: dict[str, Any]) -> FakeFetch:
    return FakeFetch({A + "/.well-known/trivium": document, document["jwks_uri"]: jwks})


# ---------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("https://LMS.Example.org/", "https://lms.example.org"),
        (" https://lms.example.org:443/lms/ ", "https://lms.example.org/lms"),
        ("https://lms.example.org:8443", "https://lms.example.org:8443"),
        ("https://[::1]:8443/", "https://[::1]:8443"),
        ("HTTP://127.0.0.1:80", "http://127.0.0.1"),
    ],
)
def test_peer_urls_are_normalised(url: str, canonical: str) -> None:
    assert peers.normalize_peer_url(url, allow_http=True) == canonical


@pytest.mark.parametrize(
    "url",
    [
        "lms.example.org",
        "ftp://lms.example.org",
        "https://",
        "https://user:pw@lms.example.org",
        "https://lms.example.org/?x=1",
        "https://lms.example.org/#top",
        "https://lms.example.org/a/../b",
        "https://lms.example.org:99999",
        "https://lms.exa mple.org",
        "https://lms.example.org/" + "x" * 500,
        "http://lms.example.org",  # http is for test networks only
    ],
)
def test_unusable_peer_urls_are_refused(url: str) -> None:
    with pytest.raises(peers.InvalidPeerUrl):
        peers.normalize_peer_url(url)


# ---------------------------------------------------------------- documents and keys


def test_our_own_jwks_is_accepted_with_every_key(jwks: dict[str, Any], key_set: KeySet) -> None:
    fetched = peers.parse_jwks(jwks, A)

    assert sorted(k.alg for k in fetched) == ["Ed25519", "RS256"]
    for key in fetched:
        assert not {"d", "p", "q"} & key.jwk.keys()
        assert key.kid == f"{A}/federation/keys/{peers.thumbprint(key.jwk)}"


def test_thumbprints_match_an_independent_implementation(jwks: dict[str, Any]) -> None:
    for jwk in jwks["keys"]:
        theirs = (OKPKey if jwk["kty"] == "OKP" else RSAKey).import_key(jwk).thumbprint()
        assert peers.thumbprint(jwk) == theirs


def _first(jwks: dict[str, Any], kty: str) -> dict[str, Any]:
    return next(k for k in jwks["keys"] if k["kty"] == kty)


JWKS_MUTATIONS: dict[str, tuple[Any, str]] = {
    "private-member": (lambda j: _first(j, "OKP").update(d="AAAA"), "private key material"),
    "kid-elsewhere": (
        lambda j: _first(j, "OKP").update(kid="https://b.example/federation/keys/x"),
        "is not under",
    ),
    "kid-of-another-key": (
        lambda j: _first(j, "OKP").update(x=_first(j, "OKP")["x"][::-1]),
        "thumbprint",
    ),
    "short-x": (lambda j: _first(j, "OKP").update(x="AAAA"), "not an Ed25519 public key"),
    "padded-x": (lambda j: _first(j, "OKP").update(x=_first(j, "OKP")["x"] + "="), "unpadded"),
    "duplicate": (lambda j: j["keys"].append(dict(_first(j, "OKP"))), "appears twice"),
    "no-ed25519": (
        lambda j: j.update(keys=[k for k in j["keys"] if k["kty"] != "OKP"]),
        "no Ed25519 key",
    ),
    "small-rsa": (lambda j: _first(j, "RSA").update(n="AQAB"), "at least 2048 bits"),
    "too-many": (lambda j: j.update(keys=j["keys"] * 30), "at most 50"),
    "not-a-list": (lambda j: j.update(keys={"a": 1}), "no keys array"),
    "not-objects": (lambda j: j.update(keys=["x"]), "not an object"),
}


@pytest.mark.parametrize("mutation", sorted(JWKS_MUTATIONS))
def test_a_jwks_with_one_bad_field_is_refused(jwks: dict[str, Any], mutation: str) -> None:
    change, error = JWKS_MUTATIONS[mutation]
    change(jwks)

    with pytest.raises(peers.PeerKeysInvalid, match=error):
        peers.parse_jwks(jwks, A)


def test_keys_of_other_types_are_ignored(jwks: dict[str, Any]) -> None:
    jwks["keys"].append({"kty": "EC", "crv": "P-256", "kid": f"{A}/federation/keys/ec"})
    jwks["keys"].append({**_first(jwks, "OKP"), "use": "enc", "kid": f"{A}/federation/keys/e"})

    assert len(peers.parse_jwks(jwks, A)) == 2


DOCUMENT_MUTATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "id": ({"id": "https://evil.example"}, "claims to be 'https://evil.example'"),
    "trailing-slash-id": ({"id": A + "/"}, "they must be equal"),
    "version": ({"protocol_version": "2"}, "speaks protocol '2'"),
    "type": ({"type": "Person"}, "type"),
    "name": ({"name": ""}, "name"),
    "algorithms": ({"http_signatures": {"algorithms": ["rsa-v1_5-sha256"]}}, "ed25519"),
    "jwks-elsewhere": ({"jwks_uri": "https://evil.example/jwks"}, "jwks_uri"),
    "inbox-elsewhere": ({"endpoints": {"inbox": "https://evil.example/in"}}, "inbox"),
    "endpoint-not-a-string": ({"endpoints": {"inbox": 5}}, "endpoints.inbox"),
}


@pytest.mark.parametrize("mutation", sorted(DOCUMENT_MUTATIONS))
def test_a_document_with_one_bad_field_is_refused(document: dict[str, Any], mutation: str) -> None:
    change, error = DOCUMENT_MUTATIONS[mutation]

    with pytest.raises(peers.PeerDocumentInvalid, match=error):
        peers.parse_document({**document, **change}, A)


def test_unknown_document_members_are_ignored(document: dict[str, Any]) -> None:
    document["catalog"] = {"feed": A + "/feed"}
    document["endpoints"]["future"] = A + "/future"

    assert peers.parse_document(document, A).name == "Fake U"


# ---------------------------------------------------------------- operations and trust


def add(app: Flask, document: dict[str, Any], jwks: dict[str, Any]) -> str:
    with app.app_context():
        sess = db.session()
        peer = peers.add_peer(sess, fake(document, jwks), A, own_id="https://us.example")
        sess.commit()
        return peer.public_id


def test_adding_pins_document_and_keys_pending(
    app: Flask, document: dict[str, Any], jwks: dict[str, Any]
) -> None:
    peer_id = add(app, document, jwks)

    with get_db(app).sessions() as sess:
        peer = sess.scalar(select(FederationPeer).where(FederationPeer.public_id == peer_id))
        assert peer is not None
        assert (peer.base_url, peer.state, peer.name) == (A, "pending", "Fake U")
        assert peer.document == document
        assert peer.endpoint("inbox") == A + "/federation/v1/inbox"
        assert {k.kid for k in peer.keys} == {k["kid"] for k in jwks["keys"]}


def test_nothing_is_stored_when_the_keys_are_refused(
    app: Flask, document: dict[str, Any], jwks: dict[str, Any]
) -> None:
    _first(jwks, "OKP")["d"] = "AAAA"

    with app.app_context(), pytest.raises(peers.PeerKeysInvalid):
        peers.add_peer(db.session(), fake(document, jwks), A, own_id="https://us.example")

    with get_db(app).sessions() as sess:
        assert sess.scalars(select(FederationPeer)).all() == []
        assert sess.scalars(select(PeerKey)).all() == []


def registry_of(app: Flask) -> Iterator[peers.PeerRegistry]:
    with app.app_context():
        yield peers.PeerRegistry(db.session())


def set_state(app: Flask, state: str) -> None:
    with get_db(app).session() as sess:
        for peer in sess.scalars(select(FederationPeer)):
            peer.state = state


@pytest.mark.parametrize(
    ("state", "blocked"), [("pending", True), ("approved", False), ("suspended", True)]
)
def test_only_an_approved_peer_is_trusted(
    app: Flask, document: dict[str, Any], jwks: dict[str, Any], state: str, blocked: bool
) -> None:
    add(app, document, jwks)
    set_state(app, state)
    kid = _first(jwks, "OKP")["kid"]

    for registry in registry_of(app):
        assert registry.peer_for_keyid(kid) == Peer(A, blocked=blocked)
        assert registry.peer_for_keyid("https://b.example/federation/keys/x") is None
        assert registry.peer_for_keyid("not a url") is None
        pinned = registry.pinned_key(kid)
        assert pinned is not None and pinned.owner == A
        assert registry.pinned_key(_first(jwks, "RSA")["kid"]) is None  # not for HTTP signatures
        assert registry.pinned_key(A + "/federation/keys/other") is None


def test_a_key_belongs_to_the_longest_matching_peer(
    app: Flask, document: dict[str, Any], jwks: dict[str, Any], key_sets: list[Path]
) -> None:
    add(app, document, jwks)
    nested = A + "/sub"
    doc2, jwks2 = documents_for(nested, load_keys(key_sets[1]))
    with app.app_context():
        sess = db.session()
        client = FakeFetch({nested + "/.well-known/trivium": doc2, doc2["jwks_uri"]: jwks2})
        peers.add_peer(sess, client, nested, own_id="https://us.example")
        sess.commit()
    set_state(app, "approved")

    for registry in registry_of(app):
        assert registry.peer_for_keyid(_first(jwks2, "OKP")["kid"]) == Peer(nested)
        assert registry.peer_for_keyid(_first(jwks, "OKP")["kid"]) == Peer(A)


def test_a_request_verifies_against_the_registry(
    app: Flask, document: dict[str, Any], jwks: dict[str, Any], key_set: KeySet
) -> None:
    add(app, document, jwks)
    kid = _first(jwks, "OKP")["kid"]
    request = sign_request(
        HttpRequest.build("POST", "https://us.example/federation/v1/inbox", {}, b"{}"),
        key=key_set.signing_key(),
        keyid=kid,
        created=int(time.time()),
    )

    def verify() -> str:
        for registry in registry_of(app):
            nonces = CacheNonceStore(MemoryCache())
            return verify_request(request, trust=registry, nonces=nonces, now=int(time.time())).peer
        raise AssertionError

    with pytest.raises(BlockedPeer):  # pending
        verify()
    set_state(app, "approved")
    assert verify() == A
    with pytest.raises(KeyOwnerMismatch):  # the one field that must match: the owner
        for registry in registry_of(app):
            verify_request(
                request,
                trust=registry,
                nonces=CacheNonceStore(MemoryCache()),
                now=int(time.time()),
                expected_peer="https://b.example",
            )


def test_refetching_is_rate_limited_and_syncs_the_keys(
    app: Flask, document: dict[str, Any], jwks: dict[str, Any]
) -> None:
    add(app, document, jwks)
    rotated = json.loads(json.dumps(jwks))
    new_key = OKPKey.import_key(Ed25519PrivateKey.generate())
    new_jwk = {**new_key.as_dict(private=False), "alg": "Ed25519", "use": "sig"}
    new_jwk["kid"] = f"{A}/federation/keys/{peers.thumbprint(new_jwk)}"
    old_kid = _first(rotated, "OKP")["kid"]
    rotated["keys"] = [new_jwk, *[k for k in rotated["keys"] if k["kid"] != old_kid]]
    client = fake(document, rotated)
    cache = MemoryCache()

    with app.app_context():
        refetch = peers.KeyRefetcher(db.session(), client, cache, interval=60)
        assert refetch(A) is False  # pending: never fetched
        assert client.fetched == []
        set_state(app, "approved")
        db.session().expire_all()
        assert refetch(A) is True
        assert refetch(A) is False  # within the interval
        assert client.fetched == [document["jwks_uri"]]

    with get_db(app).sessions() as sess:
        kids = set(sess.scalars(select(PeerKey.kid)))
    assert new_jwk["kid"] in kids and old_kid not in kids


def test_a_failed_refetch_changes_nothing(
    app: Flask, document: dict[str, Any], jwks: dict[str, Any]
) -> None:
    add(app, document, jwks)
    set_state(app, "approved")
    client = FakeFetch({document["jwks_uri"]: PeerTimeout("slow")})

    with app.app_context():
        assert peers.KeyRefetcher(db.session(), client, MemoryCache(), 60)(A) is False

    with get_db(app).sessions() as sess:
        assert set(sess.scalars(select(PeerKey.kid))) == {k["kid"] for k in jwks["keys"]}


# ---------------------------------------------------------------- admin API


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    """Test instances may peer over http, with small timeouts."""
    config["plugins"] = {
        "federation": {"allow_http_peers": True, "connect_timeout": 0.5, "read_timeout": 0.5}
    }
    return config


@pytest.fixture
def fake_peer(key_sets: list[Path]) -> Iterator[HostilePeer]:
    """An honest peer's documents, served on loopback."""
    server = HostilePeer()
    document, jwks = documents_for(server.url, load_keys(key_sets[1]))
    server.routes["/.well-known/trivium"] = json_reply(document)
    server.routes["/.well-known/jwks.json"] = json_reply(jwks)
    try:
        yield server
    finally:
        server.stop()


def test_the_admin_api_needs_a_site_admin(client: FlaskClient, users: Users) -> None:
    learner = users.headers(users.create())

    assert client.get("/api/v1/admin/peers").status_code == 401
    assert client.get("/api/v1/admin/peers", headers=learner).status_code == 403
    assert (
        client.post(
            "/api/v1/admin/peers", json={"url": "https://x.example"}, headers=learner
        ).status_code
        == 403
    )


def test_the_admin_api_manages_peers(
    app: Flask, client: FlaskClient, users: Users, fake_peer: HostilePeer
) -> None:
    admin = users.headers(users.create(admin=True))
    url = "/api/v1/admin/peers"

    created = client.post(url, json={"url": fake_peer.url + "/"}, headers=admin)
    assert created.status_code == 201, created.json
    body = created.json or {}
    assert (body["url"], body["state"], body["name"]) == (fake_peer.url, "pending", "Fake U")
    assert sorted(k["alg"] for k in body["keys"]) == ["Ed25519", "RS256"]
    peer = f"{url}/{body['id']}"

    assert [p["id"] for p in (client.get(url, headers=admin).json or {})["items"]] == [body["id"]]
    assert (client.get(peer, headers=admin).json or {})["state"] == "pending"
    assert _queued_pulls(app) == []
    approved = client.post(f"{peer}/approve", headers=admin)
    assert (approved.json or {})["state"] == "approved"
    # the approval queued the peer's first catalog pull (the tests run no job worker)
    pk = _peer_pk(app, fake_peer.url)
    assert _queued_pulls(app) == [[pk]]
    assert (client.post(f"{peer}/approve", headers=admin).json or {})["state"] == "approved"
    assert _queued_pulls(app) == [[pk]]  # approving an approved peer queues nothing
    assert (client.post(f"{peer}/suspend", headers=admin).json or {})["state"] == "suspended"
    refreshed = client.post(f"{peer}/refresh", headers=admin)
    assert refreshed.status_code == 200 and (refreshed.json or {})["state"] == "suspended"
    assert client.post(url, json={"url": fake_peer.url}, headers=admin).status_code == 409

    assert client.delete(peer, headers=admin).status_code == 204
    assert client.get(peer, headers=admin).status_code == 404
    with get_db(app).sessions() as sess:
        assert sess.scalars(select(PeerKey)).all() == []


def _queued_pulls(app: Flask) -> list[list[int]]:
    """The arguments of the catalog sync jobs waiting in ``app``'s queue."""
    with get_db(app).sessions() as sess:
        messages = sess.scalars(
            select(Job.message).where(Job.actor == CATALOG_SYNC, Job.state == "queued")
        )
        return [json.loads(message)["args"] for message in messages]


def _peer_pk(app: Flask, url: str) -> int:
    with get_db(app).sessions() as sess:
        pk = sess.scalar(select(FederationPeer.id).where(FederationPeer.base_url == url))
    assert pk is not None
    return pk


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"url": "ftp://x.example"}, 422),
        ({"url": "https://x.example", "extra": 1}, 422),
        ({}, 422),
        ({"url": "http://testserver"}, 422),  # ourselves
        ({"url": "http://127.0.0.1:{closed}"}, 502),
    ],
)
def test_the_admin_api_refuses_bad_additions(
    app: Flask, client: FlaskClient, users: Users, body: dict[str, Any], status: int
) -> None:
    admin = users.headers(users.create(admin=True))
    if "{closed}" in body.get("url", ""):
        with socket.socket() as sock:  # a port nobody listens on
            sock.bind(("127.0.0.1", 0))
            body = {"url": body["url"].format(closed=sock.getsockname()[1])}

    response = client.post("/api/v1/admin/peers", json=body, headers=admin)

    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    with get_db(app).sessions() as sess:
        assert sess.scalars(select(FederationPeer)).all() == []


def test_unknown_peers_are_404(client: FlaskClient, users: Users) -> None:
    admin = users.headers(users.create(admin=True))

    for method, path in [
        ("GET", ""),
        ("POST", "/approve"),
        ("POST", "/suspend"),
        ("POST", "/refresh"),
        ("DELETE", ""),
    ]:
        response = client.open(f"/api/v1/admin/peers/nope{path}", method=method, headers=admin)
        assert response.status_code == 404, (method, path)


def test_only_the_signed_inbox_skips_the_csrf_check(client: FlaskClient) -> None:
    # A cookie client still needs a CSRF token everywhere else ...
    admin = client.post("/api/v1/admin/peers", json={"url": "https://x.example"})
    assert admin.status_code == 400
    assert (admin.json or {})["type"].endswith("/csrf-failed")
    # ... while the inbox answers for itself: its requests carry no cookies, only signatures.
    inbox = client.post("/federation/v1/inbox", json={})
    assert inbox.status_code == 400
    assert (inbox.json or {})["type"].endswith("/signature-malformed")
