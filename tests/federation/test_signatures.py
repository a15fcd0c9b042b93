"""HTTP message signatures: round trip, known-good vectors, one-field mutations, check order."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from core.cache import MemoryCache
from federation import signatures as sig
from federation.nonces import CacheNonceStore
from federation.signatures import HttpRequest
from federation.signatures import HttpResponse
from federation.signatures import Peer
from federation.signatures import PinnedKey

PEER = "https://a.example"
KEYID = f"{PEER}/federation/keys/k1"
OTHER_KEYID = f"{PEER}/federation/keys/k2"
NOW = 1_700_000_000
NONCE = "n0nce-n0nce-n0nce-123"

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


@dataclass
class Trust:
    """An in-memory trust store that records what it was asked."""

    peers: dict[str, Peer] = field(default_factory=lambda: {PEER: Peer(PEER)})
    keys: dict[str, PinnedKey] = field(
        default_factory=lambda: {
            KEYID: PinnedKey(KEYID, PEER, KEY.public_key()),
            OTHER_KEYID: PinnedKey(OTHER_KEYID, PEER, OTHER_KEY.public_key()),
        }
    )
    asked: list[str] = field(default_factory=list)

    def peer_for_keyid(self, keyid: str) -> Peer | None:
        self.asked.append("peer")
        for peer_id, peer in self.peers.items():
            if keyid.startswith(peer_id + "/"):
                return peer
        return None

    def pinned_key(self, keyid: str) -> PinnedKey | None:
        self.asked.append("key")
        return self.keys.get(keyid)


def fresh_nonces() -> CacheNonceStore:
    return CacheNonceStore(MemoryCache())


def request(body: bytes = b'{"hello": "world"}') -> HttpRequest:
    return HttpRequest.build(
        "POST",
        "https://b.example/federation/inbox?x=1",
        {"Content-Type": "application/json"},
        body,
    )


def signed(
    req: HttpRequest | None = None,
    *,
    key: Ed25519PrivateKey = KEY,
    keyid: str = KEYID,
    created: int = NOW,
    nonce: str = NONCE,
) -> HttpRequest:
    return sig.sign_request(req or request(), key=key, keyid=keyid, created=created, nonce=nonce)


def verify(
    req: HttpRequest,
    trust: Trust | None = None,
    *,
    nonces: sig.NonceStore | None = None,
    now: int = NOW,
    policy: sig.VerifyPolicy | None = None,
    expected_peer: str | None = None,
) -> sig.Verified:
    return sig.verify_request(
        req,
        trust=trust or Trust(),
        nonces=nonces or fresh_nonces(),
        now=now,
        policy=policy,
        expected_peer=expected_peer,
    )


def with_field(req: HttpRequest, name: str, value: str) -> HttpRequest:
    headers = tuple((k, v) for k, v in req.headers if k.lower() != name.lower())
    return replace(req, headers=(*headers, (name, value)))


def edit_input(req: HttpRequest, old: str, new: str) -> HttpRequest:
    value = req.field("Signature-Input")
    assert value is not None and old in value
    return with_field(req, "Signature-Input", value.replace(old, new))


# ---------------------------------------------------------------- round trip


def test_round_trip() -> None:
    req = signed()

    result = verify(req)

    assert result == sig.Verified(peer=PEER, keyid=KEYID, created=NOW, nonce=NONCE)
    assert req.field("Content-Digest") == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    assert req.field("Signature-Input") == (
        'trivium=("@method" "@target-uri" "content-digest");'
        f'created={NOW};keyid="{KEYID}";alg="ed25519";nonce="{NONCE}";tag="trivium"'
    )
    assert re.fullmatch(r"trivium=:[A-Za-z0-9+/]{86}==:", req.field("Signature") or "")


def test_round_trip_with_a_fresh_nonce_and_empty_body() -> None:
    req = sig.sign_request(
        HttpRequest.build("GET", "https://b.example/federation/feed"),
        key=KEY,
        keyid=KEYID,
        created=NOW,
    )
    result = verify(req)
    assert len(result.nonce) >= 22
    assert req.field("Content-Digest") == sig.content_digest(b"")


def test_the_target_uri_as_received_is_what_is_verified() -> None:
    req = signed()
    base = sig.signature_base(sig.REQUEST_COMPONENTS, (), req).decode()
    assert '"@target-uri": https://b.example/federation/inbox?x=1' in base
    assert '"@method": POST' in base


# ---------------------------------------------------------------- known-good vectors

# RFC 9421 Appendix B.1.4 test key and B.2 test request.
RFC_KEY = load_pem_private_key(
    b"-----BEGIN PRIVATE KEY-----\n"
    b"MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n"
    b"-----END PRIVATE KEY-----\n",
    password=None,
)
RFC_REQUEST = HttpRequest.build(
    "POST",
    "https://example.com/foo?param=Value&Pet=dog",
    [
        ("Host", "example.com"),
        ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
        ("Content-Type", "application/json"),
        (
            "Content-Digest",
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyeal"
            "dVLvRwEmTHWXvJwew==:",
        ),
        ("Content-Length", "18"),
    ],
    b'{"hello": "world"}',
)
# Appendix B.2.6, "Signing a Request Using ed25519".
RFC_B26_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
RFC_B26_SIGNATURE = (
    "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1"
    "u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
)
RFC_B26_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" '
    '"content-length");created=1618884473;keyid="test-key-ed25519"'
)


def test_rfc9421_b26_signature_base_and_signature_byte_for_byte() -> None:
    assert isinstance(RFC_KEY, Ed25519PrivateKey)
    parsed = sig.parse_signature(RFC_B26_INPUT, RFC_B26_SIGNATURE, label="sig-b26")

    base = sig.signature_base(parsed.components, parsed.params, RFC_REQUEST)

    assert base.decode() == RFC_B26_BASE
    # Ed25519 is deterministic: our signature is the RFC's, bit for bit.
    assert sig.sign_base(RFC_KEY, base) == parsed.signature
    assert sig.verify_base(RFC_KEY.public_key(), base, parsed.signature)


def test_rfc9421_b26_one_field_mutation_fails() -> None:
    assert isinstance(RFC_KEY, Ed25519PrivateKey)
    parsed = sig.parse_signature(RFC_B26_INPUT, RFC_B26_SIGNATURE, label="sig-b26")
    moved = replace(RFC_REQUEST, target_uri="https://example.com/bar?param=Value&Pet=dog")

    base = sig.signature_base(parsed.components, parsed.params, moved)

    assert not sig.verify_base(RFC_KEY.public_key(), base, parsed.signature)


def test_rfc9530_content_digest_vector() -> None:
    # RFC 9530 section 2: the sha-256 digest of {"hello": "world"}.
    expected = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    assert sig.content_digest(b'{"hello": "world"}') == expected
    sig.verify_content_digest(expected, b'{"hello": "world"}')
    # other algorithms alongside are ignored; sha-256 must be there
    sig.verify_content_digest("sha-512=:AAAA:, " + expected, b'{"hello": "world"}')
    with pytest.raises(sig.DigestMismatch):
        sig.verify_content_digest(expected, b'{"hello": "world!"}')
    with pytest.raises(sig.MalformedSignature):
        sig.verify_content_digest(RFC_REQUEST.field("Content-Digest"), b'{"hello": "world"}')


# ---------------------------------------------------------------- one-field mutations

Mutation = Callable[[HttpRequest], HttpRequest]

MUTATIONS: dict[str, tuple[Mutation, type[sig.SignatureError]]] = {
    "method": (lambda r: replace(r, method="PUT"), sig.BadSignature),
    "path": (
        lambda r: replace(r, target_uri="https://b.example/federation/outbox?x=1"),
        sig.BadSignature,
    ),
    "query": (
        lambda r: replace(r, target_uri="https://b.example/federation/inbox?x=2"),
        sig.BadSignature,
    ),
    "host": (
        lambda r: replace(r, target_uri="https://c.example/federation/inbox?x=1"),
        sig.BadSignature,
    ),
    "body": (lambda r: replace(r, body=b'{"hello": "World"}'), sig.DigestMismatch),
    "body and its digest": (
        lambda r: with_field(replace(r, body=b"{}"), "Content-Digest", sig.content_digest(b"{}")),
        sig.BadSignature,
    ),
    "digest": (
        lambda r: with_field(r, "Content-Digest", sig.content_digest(b"{}")),
        sig.DigestMismatch,
    ),
    "created": (lambda r: edit_input(r, f"created={NOW}", f"created={NOW - 1}"), sig.BadSignature),
    "keyid": (
        lambda r: edit_input(r, f'keyid="{KEYID}"', f'keyid="{OTHER_KEYID}"'),
        sig.BadSignature,
    ),
    "nonce": (lambda r: edit_input(r, NONCE, NONCE.upper()), sig.BadSignature),
    "alg": (
        lambda r: edit_input(r, 'alg="ed25519"', 'alg="rsa-pss-sha512"'),
        sig.UnsupportedAlgorithm,
    ),
    "tag": (lambda r: edit_input(r, 'tag="trivium"', 'tag="other"'), sig.MalformedSignature),
    "signature": (
        lambda r: with_field(
            r, "Signature", "trivium=:" + base64.b64encode(bytes(64)).decode() + ":"
        ),
        sig.BadSignature,
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_one_field_mutation_is_refused(name: str) -> None:
    mutate, error = MUTATIONS[name]
    req = signed()
    verify(req)  # the unmutated request is fine

    with pytest.raises(error):
        verify(mutate(req))


def test_a_key_pinned_for_another_peer_is_refused() -> None:
    trust = Trust()
    trust.peers["https://evil.example"] = Peer("https://evil.example")
    # evil published a key under a kid that lies in a.example's URL space
    trust.keys[KEYID] = PinnedKey(KEYID, "https://evil.example", KEY.public_key())

    with pytest.raises(sig.KeyOwnerMismatch):
        verify(signed(), trust)


def test_the_expected_peer_must_be_the_signer() -> None:
    with pytest.raises(sig.KeyOwnerMismatch):
        verify(signed(), expected_peer="https://c.example")
    assert verify(signed(), expected_peer=PEER).peer == PEER


def test_a_signature_by_an_unpinned_key_is_refused() -> None:
    unpinned = f"{PEER}/federation/keys/new"
    with pytest.raises(sig.UnknownKey):
        verify(signed(keyid=unpinned))


# ---------------------------------------------------------------- time window and replay


@pytest.mark.parametrize(
    ("now", "error"),
    [
        (NOW + 301, sig.SignatureExpired),
        (NOW + 86_400, sig.SignatureExpired),
        (NOW - 301, sig.SignatureFromFuture),
    ],
)
def test_stale_and_future_signatures_are_refused(now: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        verify(signed(), now=now)


@pytest.mark.parametrize("now", [NOW - 300, NOW, NOW + 300])
def test_the_window_is_inclusive(now: int) -> None:
    verify(signed(), now=now)


def test_the_window_is_configurable() -> None:
    policy = sig.VerifyPolicy(max_age=60)
    with pytest.raises(sig.SignatureExpired):
        verify(signed(), now=NOW + 61, policy=policy)
    assert policy.nonce_ttl == 121


def test_a_replay_is_refused() -> None:
    store = fresh_nonces()
    req = signed()
    verify(req, nonces=store)

    with pytest.raises(sig.ReplayedSignature):
        verify(req, nonces=store)
    # the same nonce from another key is another nonce
    verify(signed(key=OTHER_KEY, keyid=OTHER_KEYID), nonces=store)


def test_of_two_concurrent_copies_only_one_is_accepted() -> None:
    class Racing(CacheNonceStore):
        def seen(self, keyid: str, nonce: str) -> bool:
            return False  # both copies pass the early look...

    store = Racing(MemoryCache())
    verify(signed(), nonces=store)
    with pytest.raises(sig.ReplayedSignature):  # ...and the atomic claim decides
        verify(signed(), nonces=store)


def test_a_forgery_does_not_burn_the_nonce_of_the_real_message() -> None:
    store = fresh_nonces()
    forged = signed(key=OTHER_KEY)  # right keyid and nonce, wrong key

    with pytest.raises(sig.BadSignature):
        verify(forged, nonces=store)

    verify(signed(), nonces=store)


# ---------------------------------------------------------------- order and parsing


def test_fields_are_read_whatever_their_case_and_over_several_lines() -> None:
    req = signed()
    values = {name.lower(): value for name, value in req.headers}
    split = (
        ("content-type", values["content-type"]),
        ("CONTENT-DIGEST", values["content-digest"]),
        ("signature-input", 'other=("@method");created=1'),
        ("SIGNATURE-INPUT", values["signature-input"]),
        ("Signature", "  " + values["signature"] + " "),
    )
    assert verify(replace(req, headers=split)).keyid == KEYID
    # A second line is part of the field's value: its sha-256 member is the one checked.
    extra = (*split, ("content-digest", "sha-256=:" + "A" * 43 + "=:"))
    with pytest.raises(sig.DigestMismatch):
        verify(replace(req, headers=extra))


def test_size_is_checked_before_anything_else() -> None:
    policy = sig.VerifyPolicy(max_body_bytes=16)
    unsigned = request(b"x" * 17)
    with pytest.raises(sig.MessageTooLarge):
        verify(unsigned, policy=policy)
    huge = with_field(signed(), "Signature-Input", "trivium=" + "a" * 5000)
    with pytest.raises(sig.MessageTooLarge):
        verify(huge)


def test_an_unknown_owner_is_refused_before_any_key_lookup() -> None:
    trust = Trust(peers={})
    with pytest.raises(sig.UnknownKeyOwner):
        verify(signed(), trust)
    assert trust.asked == ["peer"]


def test_a_blocked_peer_is_refused_before_its_digest_or_key_is_looked_at() -> None:
    trust = Trust(peers={PEER: Peer(PEER, blocked=True)})
    bad_digest = with_field(signed(), "Content-Digest", sig.content_digest(b"{}"))
    with pytest.raises(sig.BlockedPeer):
        verify(bad_digest, trust)
    assert trust.asked == ["peer"]


def test_the_digest_is_checked_before_the_time_window() -> None:
    bad_digest = with_field(signed(), "Content-Digest", sig.content_digest(b"{}"))
    with pytest.raises(sig.DigestMismatch):
        verify(bad_digest, now=NOW + 10_000)


@pytest.mark.parametrize(
    "signature_input",
    [
        "",
        "not a dictionary ((",
        'other=("@method");created=1',
        'trivium="a string"',
        # a component missing, or one too many
        f'trivium=("@method" "content-digest");created={NOW};keyid="{KEYID}";alg="ed25519"'
        f';nonce="{NONCE}";tag="trivium"',
        f'trivium=("@method" "@target-uri" "content-digest" "date");created={NOW};keyid="{KEYID}"'
        f';alg="ed25519";nonce="{NONCE}";tag="trivium"',
        # a parameter missing, of the wrong type, or unknown
        f'trivium=("@method" "@target-uri" "content-digest");created={NOW};keyid="{KEYID}"'
        ';alg="ed25519";tag="trivium"',
        f'trivium=("@method" "@target-uri" "content-digest");created="{NOW}";keyid="{KEYID}"'
        f';alg="ed25519";nonce="{NONCE}";tag="trivium"',
        f'trivium=("@method" "@target-uri" "content-digest");created={NOW};keyid="{KEYID}"'
        f';alg="ed25519";nonce="{NONCE}";tag="trivium";expires={NOW + 60}',
        f'trivium=("@method" "@target-uri" "content-digest");created={NOW};keyid="k1"'
        f';alg="ed25519";nonce="{NONCE}";tag="trivium"',
        f'trivium=("@method" "@target-uri" "content-digest");created={NOW};keyid="{KEYID}"'
        ';alg="ed25519";nonce="short";tag="trivium"',
    ],
)
def test_malformed_signature_input_is_a_400(signature_input: str) -> None:
    req = with_field(signed(), "Signature-Input", signature_input)
    with pytest.raises(sig.MalformedSignature) as caught:
        verify(req)
    assert caught.value.status == 400


@pytest.mark.parametrize("name", ["Signature", "Signature-Input", "Content-Digest"])
def test_a_missing_field_is_a_400(name: str) -> None:
    req = signed()
    stripped = replace(req, headers=tuple((k, v) for k, v in req.headers if k != name))
    with pytest.raises(sig.MalformedSignature):
        verify(stripped)


def test_error_statuses() -> None:
    statuses = {cls.__name__: cls.status for cls in sig.SignatureError.__subclasses__()}
    assert statuses == {
        "MessageTooLarge": 413,
        "MalformedSignature": 400,
        "UnknownKeyOwner": 401,
        "BlockedPeer": 403,
        "DigestMismatch": 400,
        "SignatureExpired": 401,
        "SignatureFromFuture": 401,
        "ReplayedSignature": 401,
        "UnsupportedAlgorithm": 400,
        "UnknownKey": 401,
        "KeyOwnerMismatch": 401,
        "BadSignature": 401,
    }


# ---------------------------------------------------------------- responses


def signed_response(req: HttpRequest, status: int = 200, body: bytes = b"[]") -> HttpResponse:
    response = HttpResponse.build(status, req, {"Content-Type": "application/json"}, body)
    return sig.sign_response(response, key=KEY, keyid=KEYID, created=NOW, nonce=NONCE)


def verify_response(response: HttpResponse) -> sig.Verified:
    return sig.verify_response(response, trust=Trust(), now=NOW, expected_peer=PEER)


def test_response_round_trip_is_bound_to_its_request() -> None:
    req = signed()
    response = signed_response(req)

    assert verify_response(response).peer == PEER
    assert (response.field("Signature-Input") or "").startswith(
        'trivium=("@status" "content-digest" "@method";req "@target-uri";req '
        '"signature";req;key="trivium")'
    )


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda r: replace(r, status=500), sig.BadSignature),
        (lambda r: replace(r, body=b"[1]"), sig.DigestMismatch),
        # the same response presented as the answer to another request
        (lambda r: replace(r, request=signed(nonce="another-nonce-4567")), sig.BadSignature),
        (lambda r: replace(r, request=replace(r.request, method="PUT")), sig.BadSignature),
    ],
)
def test_response_mutation_is_refused(
    mutate: Callable[[HttpResponse], HttpResponse], error: type[Exception]
) -> None:
    response = signed_response(signed())
    with pytest.raises(error):
        verify_response(mutate(response))


def test_a_response_must_come_from_the_peer_we_called() -> None:
    response = signed_response(signed())
    with pytest.raises(sig.KeyOwnerMismatch):
        sig.verify_response(response, trust=Trust(), now=NOW, expected_peer="https://c.example")


def test_a_response_to_an_unsigned_request_cannot_be_signed() -> None:
    with pytest.raises(sig.MalformedSignature):
        signed_response(request())
