"""Our signature profile against an independent RFC 9421 implementation (http-message-signatures).

A request that library signs with our profile verifies with ours, and ours
verifies with it, request and response alike: evidence that another
implementation following docs/federation.md interoperates.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.cache import MemoryCache
from federation import signatures as sig
from federation.nonces import CacheNonceStore

hms = pytest.importorskip("http_message_signatures")

PEER = "https://a.example"
KEYID = f"{PEER}/federation/keys/k1"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
BODY = b'{"hello": "world"}'


@dataclass
class Message:
    """The request shape the library reads: method, url, a mutable header dict."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Reply:
    """The response shape the library reads."""

    status_code: int
    request: Message
    headers: dict[str, str] = field(default_factory=dict)


class Trust:
    def peer_for_keyid(self, keyid: str) -> sig.Peer | None:
        return sig.Peer(PEER) if keyid.startswith(PEER + "/") else None

    def pinned_key(self, keyid: str) -> sig.PinnedKey | None:
        return sig.PinnedKey(KEYID, PEER, KEY.public_key()) if keyid == KEYID else None


def library() -> tuple[Any, Any]:
    """The library's signer and verifier, holding our test key."""
    resolver = hms.MappingKeyResolver(
        public_keys={KEYID: KEY.public_key()}, private_keys={KEYID: KEY}
    )
    signer = hms.HTTPMessageSigner(
        signature_algorithm=hms.algorithms.ED25519, key_resolver=resolver
    )
    verifier = hms.HTTPMessageVerifier(
        signature_algorithm=hms.algorithms.ED25519, key_resolver=resolver
    )
    return signer, verifier


def test_a_request_signed_by_the_library_verifies_with_ours() -> None:
    signer, _ = library()
    message = Message(
        "POST",
        "https://b.example/federation/inbox?x=1",
        {"Content-Type": "application/json"},
    )
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    signer.sign(
        message,
        key_id=KEYID,
        created=now,
        nonce="interop-nonce-0123456789",
        label="trivium",
        tag="trivium",
        include_alg=True,
        covered_component_ids=("@method", "@target-uri"),
        body=BODY,  # the library adds and covers its own Content-Digest
    )
    assert message.headers["Content-Digest"] == sig.content_digest(BODY)

    ours = sig.HttpRequest.build(message.method, message.url, message.headers, BODY)
    verified = sig.verify_request(
        ours, trust=Trust(), nonces=CacheNonceStore(MemoryCache()), now=int(now.timestamp())
    )
    assert verified.nonce == "interop-nonce-0123456789"


def test_a_request_signed_by_us_verifies_with_the_library() -> None:
    _, verifier = library()
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    ours = sig.sign_request(
        sig.HttpRequest.build("POST", "https://b.example/federation/inbox", body=BODY),
        key=KEY,
        keyid=KEYID,
        created=now,
    )

    message = Message(ours.method, ours.target_uri, dict(ours.headers))
    (result,) = verifier.verify(
        message,
        expect_tag="trivium",
        require_components=("@method", "@target-uri", "content-digest"),
        body=BODY,
    )
    assert result.label == "trivium"
    assert result.parameters["keyid"] == KEYID
    assert result.parameters["alg"] == "ed25519"


def test_a_response_signed_by_us_verifies_with_the_library() -> None:
    _, verifier = library()
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    request = sig.sign_request(
        sig.HttpRequest.build("GET", "https://b.example/federation/feed"),
        key=KEY,
        keyid=KEYID,
        created=now,
    )
    response = sig.sign_response(
        sig.HttpResponse.build(200, request, {"Content-Type": "application/json"}, b"[]"),
        key=KEY,
        keyid=KEYID,
        created=now,
    )

    reply = Reply(
        response.status,
        Message(request.method, request.target_uri, dict(request.headers)),
        dict(response.headers),
    )
    (result,) = verifier.verify(reply, expect_tag="trivium", body=b"[]")
    assert '"signature";req;key="trivium"' in result.covered_components
