"""The instance key set: files and modes, JWKS export, rotation, refusing broken or exposed keys."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from joserfc import jwt
from joserfc.jwk import KeySet as JoseKeySet
from joserfc.jwk import RSAKey
from joserfc.jwk import import_key

from core.cache import MemoryCache
from federation import keys
from federation import signatures as sig
from federation.nonces import CacheNonceStore

BASE = "https://a.example"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def index(folder: Path) -> list[dict[str, str]]:
    data = json.loads((keys.keys_dir(folder) / "index.json").read_text())
    records: list[dict[str, str]] = data["keys"]
    return records


def test_generated_keys_are_private_files(tmp_path: Path) -> None:
    created = keys.ensure_keys(tmp_path)

    folder = keys.keys_dir(tmp_path)
    assert [r.alg for r in created] == ["Ed25519", "RS256"]
    assert mode(folder) == 0o700
    files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert files == sorted(["index.json", *(f"{r.id}.pem" for r in created)])
    assert all(mode(folder / name) == 0o600 for name in files)
    assert [(r["alg"], r["status"]) for r in index(tmp_path)] == [
        ("Ed25519", "active"),
        ("RS256", "active"),
    ]
    loaded = keys.load_keys(tmp_path)
    assert isinstance(loaded.active("Ed25519").private_key, Ed25519PrivateKey)
    rsa_key = loaded.active("RS256").private_key
    assert isinstance(rsa_key, RSAPrivateKey) and rsa_key.key_size >= 2048


def test_ensure_keys_keeps_what_exists(keyed: Path) -> None:
    before = index(keyed)
    assert keys.ensure_keys(keyed) == []
    assert index(keyed) == before


def test_ensure_keys_completes_a_partial_set(keyed: Path) -> None:
    path = keys.keys_dir(keyed) / "index.json"
    data = json.loads(path.read_text())
    data["keys"] = [k for k in data["keys"] if k["alg"] == "RS256"]
    path.write_text(json.dumps(data))

    created = keys.ensure_keys(keyed)

    assert [r.alg for r in created] == ["Ed25519"]
    assert {r["alg"] for r in index(keyed)} == {"Ed25519", "RS256"}


def test_key_ids_are_thumbprints_and_kids_resolvable_urls(keyed: Path) -> None:
    key_set = keys.load_keys(keyed)
    for key in key_set.keys:
        jwk = key.public_jwk(BASE + "/")
        assert jwk["kid"] == f"{BASE}/federation/keys/{key.id}"
        assert keys.key_id_from_url(BASE, jwk["kid"]) == key.id
        assert import_key(jwk).thumbprint() == key.id
    assert keys.key_id_from_url(BASE, "https://b.example/federation/keys/x") is None
    assert keys.key_id_from_url(BASE, f"{BASE}/federation/keys/a/b") is None


def test_jwks_holds_public_keys_only(keyed: Path) -> None:
    jwks = keys.load_keys(keyed).jwks(BASE)

    assert len(jwks["keys"]) == 2
    for jwk in jwks["keys"]:
        assert not PRIVATE_MEMBERS & jwk.keys(), jwk
        assert jwk["use"] == "sig"
    okp, rsa = sorted(jwks["keys"], key=lambda k: str(k["kty"]))
    assert (okp["kty"], okp["crv"], okp["alg"]) == ("OKP", "Ed25519", "Ed25519")
    assert set(okp) == {"kty", "crv", "x", "kid", "use", "alg"}
    assert (rsa["kty"], rsa["alg"], rsa["e"]) == ("RSA", "RS256", "AQAB")
    assert set(rsa) == {"kty", "n", "e", "kid", "use", "alg"}


def test_an_rs256_jwt_verifies_against_the_published_jwks(keyed: Path) -> None:
    key_set = keys.load_keys(keyed)
    signer = key_set.active("RS256")
    kid = keys.key_url(BASE, signer.id)
    token = jwt.encode(
        {"alg": "RS256", "kid": kid},
        {"iss": BASE, "sub": "learner"},
        RSAKey.import_key(signer.private_key),
    )

    # a verifier that has nothing but our JWKS document
    published = JoseKeySet.import_key_set(json.loads(json.dumps(key_set.jwks(BASE))))
    decoded = jwt.decode(token, published, algorithms=["RS256"])

    assert decoded.claims == {"iss": BASE, "sub": "learner"}
    assert decoded.header["kid"] == kid


def test_rotate_retires_the_old_key_and_keeps_it_for_verification(keyed: Path) -> None:
    old_set = keys.load_keys(keyed)
    old = old_set.active("Ed25519")
    old_signed = sig.sign_request(
        sig.HttpRequest.build("POST", "https://b.example/inbox", body=b"{}"),
        key=old_set.signing_key(),
        keyid=keys.key_url(BASE, old.id),
        created=1_700_000_000,
    )

    new = keys.rotate_key(keyed)

    key_set = keys.load_keys(keyed)
    assert key_set.active("Ed25519").id == new.id != old.id
    assert key_set.get(old.id).record.status == "retired"
    assert key_set.get(old.id).record.retired is not None
    assert key_set.active("RS256").record.status == "active"
    kids = [k["kid"] for k in key_set.jwks(BASE)["keys"]]
    assert kids[0] == keys.key_url(BASE, new.id)  # newest first
    assert keys.key_url(BASE, old.id) in kids
    assert len(kids) == 3
    verified = sig.verify_request(
        old_signed,
        trust=keys.OwnTrust(BASE, key_set),
        nonces=CacheNonceStore(MemoryCache()),
        now=1_700_000_000,
    )
    assert verified.keyid == keys.key_url(BASE, old.id)


def test_rotate_rsa(keyed: Path) -> None:
    old = keys.load_keys(keyed).active("RS256").id
    new = keys.rotate_key(keyed, "RS256")
    key_set = keys.load_keys(keyed)
    assert key_set.active("RS256").id == new.id != old
    assert key_set.get(old).record.status == "retired"


def test_own_trust_knows_only_our_ed25519_keys(keyed: Path) -> None:
    key_set = keys.load_keys(keyed)
    trust = keys.OwnTrust(BASE, key_set)
    ed = key_set.active("Ed25519").id
    rsa = key_set.active("RS256").id

    assert trust.peer_for_keyid(keys.key_url(BASE, ed)) == sig.Peer(BASE)
    assert trust.pinned_key(keys.key_url(BASE, ed)) is not None
    assert trust.pinned_key(keys.key_url(BASE, rsa)) is None
    assert trust.pinned_key(keys.key_url(BASE, "nope")) is None
    assert trust.peer_for_keyid("https://b.example/federation/keys/" + ed) is None


def test_missing_keys_are_reported(tmp_path: Path) -> None:
    with pytest.raises(keys.KeysMissing):
        keys.load_keys(tmp_path)
    with pytest.raises(keys.KeysMissing):
        keys.rotate_key(tmp_path)


def test_a_key_file_others_can_read_is_refused(keyed: Path) -> None:
    pem = next(keys.keys_dir(keyed).glob("*.pem"))
    os.chmod(pem, 0o644)
    with pytest.raises(keys.InsecureKeyFile, match="chmod 600"):
        keys.load_keys(keyed)


def test_a_corrupt_index_is_refused_and_left_alone(keyed: Path) -> None:
    path = keys.keys_dir(keyed) / "index.json"
    path.write_text("{not json")
    with pytest.raises(keys.KeyIndexInvalid):
        keys.load_keys(keyed)
    with pytest.raises(keys.KeyIndexInvalid):
        keys.ensure_keys(keyed)
    assert path.read_text() == "{not json"


def test_a_key_file_that_does_not_match_its_id_is_refused(keyed: Path) -> None:
    folder = keys.keys_dir(keyed)
    ed, rsa = (folder / f"{r['id']}.pem" for r in index(keyed))
    ed_pem = ed.read_bytes()
    ed.write_bytes(rsa.read_bytes())
    with pytest.raises(keys.KeyIndexInvalid):
        keys.load_keys(keyed)
    ed.write_bytes(ed_pem)
    keys.load_keys(keyed)
