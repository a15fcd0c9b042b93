"""Peering: adding an instance by URL, pinning its document and keys, approving it.

An operator adds a peer by its base URL.  Its instance document and JWK Set
are fetched (bounded, see :mod:`federation.client`), checked, and pinned:
the document's ``id`` must be exactly that URL, and every key's ``kid`` must
be ``<id>/federation/keys/<the key's RFC 7638 thumbprint>``, so a key id
always names the same key material.  The peer starts ``pending``; only once
the operator approves it are its signed requests accepted.  Suspending it
refuses them again; removing it forgets it and what it sent.

:class:`PeerRegistry` is the :class:`~federation.signatures.TrustStore` the
verifier asks, answering from these tables only.  :class:`KeyRefetcher`
implements the one refetch allowed when an approved peer signs with a key id
we have not pinned (it may have rotated), at most once per peer and interval.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from typing import Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationError
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm import object_session

from core import catalog
from core.cache import Cache
from core.db import utcnow
from core.tasks import enqueue_on_commit
from federation.client import PeerClient
from federation.client import PeerRequestError
from federation.keys import KEY_PATH
from federation.models import FederationPeer
from federation.models import PeerKey
from federation.signatures import ALGORITHM
from federation.signatures import Peer
from federation.signatures import PinnedKey

__all__ = [
    "MAX_KEYS",
    "PROTOCOL_VERSIONS",
    "FetchedKey",
    "InstanceDocument",
    "InvalidPeerUrl",
    "KeyChanges",
    "KeyRefetcher",
    "PeerAlreadyAdded",
    "PeerDocumentInvalid",
    "PeerError",
    "PeerIdentity",
    "PeerKeysInvalid",
    "PeerNotApproved",
    "PeerNotFound",
    "PeerRegistry",
    "SelfPeering",
    "add_peer",
    "approve_peer",
    "fetch_identity",
    "fetch_keys",
    "find_peer",
    "list_peers",
    "normalize_peer_url",
    "parse_document",
    "parse_jwks",
    "refresh_peer",
    "refresh_peer_keys",
    "remove_peer",
    "suspend_peer",
    "thumbprint",
]

log = logging.getLogger(__name__)

CATALOG_SYNC = "federation.catalog_sync"
"""The name of the catalog sync job (:func:`federation.sync.catalog_sync`), which an
approval and a ``catalog.changed`` notification queue."""

PROTOCOL_VERSIONS = frozenset({"1"})
"""Protocol versions this implementation speaks."""
MAX_KEYS = 50
"""A JWK Set with more keys than this is refused."""
_MAX_URL = 500
_MAX_PREFIXES = 8
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


# ---------------------------------------------------------------- errors


class PeerError(Exception):
    """Base of the reasons a peering operation is refused."""


class InvalidPeerUrl(PeerError):
    """The URL is not an absolute https URL of an instance (http only when allowed)."""


class SelfPeering(InvalidPeerUrl):
    """The URL is this instance's own."""


class PeerAlreadyAdded(PeerError):
    """A peer with this URL exists already."""


class PeerNotFound(PeerError):
    """No peer has this id or URL."""


class PeerNotApproved(PeerError):
    """The peer is pending or suspended: we send it nothing signed."""


class PeerDocumentInvalid(PeerError):
    """The instance document is not a Trivium document for the URL it came from."""


class PeerKeysInvalid(PeerError):
    """The JWK Set is malformed, holds private members or a key whose ``kid`` is not its own."""


# ---------------------------------------------------------------- URLs


def normalize_peer_url(url: str, *, allow_http: bool = False) -> str:
    """The canonical form of an instance's base URL, as its ``id`` must read.

    Lower-case scheme and host, no default port, no trailing slash, no user
    info, query or fragment.

    :param allow_http: accept ``http://`` (test networks).
    :raise InvalidPeerUrl: the URL is not usable as an instance id.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidPeerUrl(f"{url!r} is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidPeerUrl(f"{url!r}: a peer URL starts with https://")
    if scheme == "http" and not allow_http:
        raise InvalidPeerUrl(
            f"{url!r}: peers are reached over https "
            "(set [plugins.federation] allow_http_peers = true on a test network)"
        )
    host = parts.hostname or ""
    if not host or parts.username is not None or parts.password is not None:
        raise InvalidPeerUrl(f"{url!r}: a peer URL has a host and no user name")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise InvalidPeerUrl(f"{url!r}: a peer URL has no query or fragment")
    path = parts.path.rstrip("/")
    if any(segment in {".", ".."} for segment in path.split("/")):
        raise InvalidPeerUrl(f"{url!r}: the path holds dot segments")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    result = f"{scheme}://{netloc}{path}"
    if len(result) > _MAX_URL or not result.isascii() or any(c.isspace() for c in result):
        raise InvalidPeerUrl(f"{url!r}: too long, or not plain ASCII")
    return result


def _under(url: str, base: str) -> bool:
    return url.startswith(base + "/")


def _prefixes(keyid: str) -> list[str]:
    """The base URLs a key id could lie under: its origin, then each path prefix."""
    try:
        parts = urlsplit(keyid)
    except ValueError:
        return []
    if not parts.scheme or not parts.netloc:
        return []
    origin = f"{parts.scheme}://{parts.netloc}"
    segments = parts.path.split("/")[1:-1]  # the last segment is the key's own id
    found = [origin]
    for segment in segments[:_MAX_PREFIXES]:
        found.append(found[-1] + "/" + segment)
    return found


# ---------------------------------------------------------------- documents and keys


class _SignatureProfile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    algorithms: list[str] = Field(max_length=20)


class InstanceDocument(BaseModel):
    """The members of ``/.well-known/trivium`` a peer relies on (others are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(max_length=_MAX_URL)
    type: Literal["TriviumInstance"]
    name: str = Field(min_length=1, max_length=200)
    protocol_version: str = Field(max_length=20)
    jwks_uri: str = Field(max_length=2000)
    endpoints: dict[str, str] = Field(default_factory=dict, max_length=50)
    http_signatures: _SignatureProfile


@dataclass(frozen=True)
class FetchedKey:
    """A public key from a peer's JWK Set, checked against its ``kid``."""

    kid: str
    alg: Literal["Ed25519", "RS256"]
    jwk: dict[str, Any]
    """Public members only: what is pinned."""


@dataclass(frozen=True)
class PeerIdentity:
    """What adding a peer pins: its document and its keys."""

    document: InstanceDocument
    raw_document: dict[str, Any]
    keys: tuple[FetchedKey, ...]


def _b64url(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value or "=" in value:
        raise PeerKeysInvalid(f"{what} must be unpadded base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise PeerKeysInvalid(f"{what} is not base64url") from None


def thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of an OKP or RSA public JWK, base64url."""
    members = ("crv", "kty", "x") if jwk.get("kty") == "OKP" else ("e", "kty", "n")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def _public_jwk(jwk: dict[str, Any], kid: str) -> FetchedKey | None:
    """Check one JWK; None for a key type this protocol does not use (ignored)."""
    if jwk.get("use", "sig") != "sig":
        return None
    kty, alg = jwk.get("kty"), jwk.get("alg")
    if kty == "OKP" and jwk.get("crv") == "Ed25519" and alg in {"Ed25519", "EdDSA", None}:
        raw = _b64url(jwk.get("x"), f"{kid}: x")
        try:
            Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise PeerKeysInvalid(f"{kid}: not an Ed25519 public key") from None
        public = {"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]}
        return FetchedKey(kid, "Ed25519", {**public, "kid": kid, "alg": "Ed25519", "use": "sig"})
    if kty == "RSA" and alg == "RS256":
        n = int.from_bytes(_b64url(jwk.get("n"), f"{kid}: n"), "big")
        e = int.from_bytes(_b64url(jwk.get("e"), f"{kid}: e"), "big")
        if n.bit_length() < 2048:
            raise PeerKeysInvalid(f"{kid}: RSA keys have at least 2048 bits")
        try:
            rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError:
            raise PeerKeysInvalid(f"{kid}: not an RSA public key") from None
        public = {"kty": "RSA", "n": jwk["n"], "e": jwk["e"]}
        return FetchedKey(kid, "RS256", {**public, "kid": kid, "alg": "RS256", "use": "sig"})
    return None


def parse_jwks(jwks: dict[str, Any], peer_id: str) -> tuple[FetchedKey, ...]:
    """Check a peer's JWK Set and return the keys to pin.

    Keys of types this protocol does not use are skipped; anything that
    could only come from a broken or hostile peer refuses the whole set.

    :raise PeerKeysInvalid: see the exception; also when no Ed25519 key is left.
    """
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        raise PeerKeysInvalid("the JWK Set has no keys array")
    if len(keys) > MAX_KEYS:
        raise PeerKeysInvalid(f"the JWK Set holds {len(keys)} keys; at most {MAX_KEYS}")
    found: dict[str, FetchedKey] = {}
    seen: set[str] = set()
    prefix = peer_id + KEY_PATH
    for jwk in keys:
        if not isinstance(jwk, dict):
            raise PeerKeysInvalid("a JWK Set member is not an object")
        if _PRIVATE_MEMBERS & jwk.keys():
            raise PeerKeysInvalid("the JWK Set holds private key material")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid.startswith(prefix):
            raise PeerKeysInvalid(f"key id {kid!r} is not under {prefix}")
        if kid in seen:
            raise PeerKeysInvalid(f"key id {kid} appears twice")
        seen.add(kid)
        key = _public_jwk(jwk, kid)
        if key is None:
            continue
        if kid[len(prefix) :] != thumbprint(key.jwk):
            raise PeerKeysInvalid(f"key id {kid} does not name its key's thumbprint")
        found[kid] = key
    if not any(key.alg == "Ed25519" for key in found.values()):
        raise PeerKeysInvalid("the JWK Set has no Ed25519 key")
    return tuple(found.values())


def parse_document(raw: dict[str, Any], url: str) -> InstanceDocument:
    """Check an instance document fetched from ``url``'s well-known path.

    :raise PeerDocumentInvalid: its ``id`` is not ``url``, a version we do not
        speak, an endpoint outside the instance, or a shape we cannot read.
    """
    try:
        document = InstanceDocument.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise PeerDocumentInvalid(f"{url}: instance document: {problems}") from None
    if document.id != url:
        raise PeerDocumentInvalid(
            f"the document fetched from {url} claims to be {document.id!r}; they must be equal"
        )
    if document.protocol_version not in PROTOCOL_VERSIONS:
        raise PeerDocumentInvalid(f"{url} speaks protocol {document.protocol_version!r}, not 1")
    if ALGORITHM not in document.http_signatures.algorithms:
        raise PeerDocumentInvalid(f"{url} does not sign with {ALGORITHM}")
    for name, endpoint in {"jwks_uri": document.jwks_uri, **document.endpoints}.items():
        if not _under(endpoint, url):
            raise PeerDocumentInvalid(f"{url}: {name} {endpoint!r} is not under the instance")
    return document


def fetch_identity(client: PeerClient, url: str) -> PeerIdentity:
    """Fetch and check a peer's instance document, then its JWK Set.

    :param url: the normalized base URL (:func:`normalize_peer_url`).
    :raise PeerRequestError: the peer is unreachable, slow, or sends too much
        or something that is not a JSON object.
    :raise PeerDocumentInvalid: see :func:`parse_document`.
    :raise PeerKeysInvalid: see :func:`parse_jwks`.
    """
    raw = client.get_document(url + "/.well-known/trivium")
    document = parse_document(raw, url)
    keys = parse_jwks(client.get_document(document.jwks_uri), url)
    return PeerIdentity(document, raw, keys)


def fetch_keys(client: PeerClient, peer: FederationPeer) -> tuple[FetchedKey, ...]:
    """Fetch a peer's JWK Set again from its pinned ``jwks_uri``.

    :raise PeerRequestError: see :func:`fetch_identity`.
    :raise PeerKeysInvalid: see :func:`parse_jwks`.
    """
    jwks_uri = peer.document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not _under(jwks_uri, peer.base_url):
        raise PeerKeysInvalid(f"{peer.base_url}: the pinned document has no usable jwks_uri")
    return parse_jwks(client.get_document(jwks_uri), peer.base_url)


# ---------------------------------------------------------------- operations


@dataclass(frozen=True)
class KeyChanges:
    """What a key refresh changed."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def _sync_keys(sess: Session, peer: FederationPeer, fetched: Sequence[FetchedKey]) -> KeyChanges:
    """Pin new keys, unpin the ones the peer no longer publishes; never alter a pinned key."""
    wanted = {key.kid: key for key in fetched}
    current = {key.kid: key for key in peer.keys}
    removed = sorted(set(current) - set(wanted))
    for kid in removed:
        peer.keys.remove(current[kid])
    added = [kid for kid in wanted if kid not in current]
    for kid in added:
        key = wanted[kid]
        peer.keys.append(PeerKey(kid=key.kid, alg=key.alg, jwk=key.jwk))
    peer.keys_fetched_at = utcnow()
    sess.flush()
    return KeyChanges(tuple(added), tuple(removed))


def list_peers(sess: Session) -> list[FederationPeer]:
    """Every peer, oldest first."""
    return list(sess.scalars(select(FederationPeer).order_by(FederationPeer.id)))


def find_peer(sess: Session, ref: str) -> FederationPeer:
    """A peer by its public id or its base URL.

    :raise PeerNotFound: no such peer.
    """
    ref = ref.strip()
    peer = sess.scalar(
        select(FederationPeer).where(
            or_(FederationPeer.public_id == ref, FederationPeer.base_url == ref.rstrip("/"))
        )
    )
    if peer is None:
        raise PeerNotFound(f"no peer {ref!r}")
    return peer


def add_peer(
    sess: Session, client: PeerClient, url: str, *, own_id: str, allow_http: bool = False
) -> FederationPeer:
    """Fetch, check and pin a new peer, ``pending`` until the operator approves it.

    Nothing is written unless every check passed.  The caller commits.

    :param own_id: this instance's id, which cannot be its own peer.
    :raise InvalidPeerUrl, SelfPeering, PeerAlreadyAdded: see the exceptions.
    :raise PeerRequestError, PeerDocumentInvalid, PeerKeysInvalid: see :func:`fetch_identity`.
    """
    base = normalize_peer_url(url, allow_http=allow_http)
    if base == normalize_peer_url(own_id, allow_http=True):
        raise SelfPeering(f"{base} is this instance")
    if sess.scalar(select(FederationPeer.id).where(FederationPeer.base_url == base)) is not None:
        raise PeerAlreadyAdded(f"{base} is a peer already")
    identity = fetch_identity(client, base)
    peer = FederationPeer(
        base_url=base,
        name=identity.document.name,
        state="pending",
        protocol_version=identity.document.protocol_version,
        document=identity.raw_document,
        keys=[PeerKey(kid=k.kid, alg=k.alg, jwk=k.jwk) for k in identity.keys],
    )
    sess.add(peer)
    try:
        sess.flush()
    except IntegrityError:
        sess.rollback()  # a concurrent add of the same URL won
        raise PeerAlreadyAdded(f"{base} is a peer already, or one of its keys is pinned") from None
    log.info("federation=peers action=added peer=%s keys=%d", base, len(identity.keys))
    return peer


def _lock(sess: Session, peer: FederationPeer) -> None:
    """Lock the peer's row before removing its catalog entries.

    A sync run stores each page in a transaction that first updates this row
    under its lease (federation.sync): with the row locked here (PostgreSQL;
    SQLite serialises writers anyway), a page either committed before, and its
    entries are removed with the rest, or waits and then finds the peer no
    longer approved, and stores nothing.
    """
    sess.execute(
        update(FederationPeer)
        .where(FederationPeer.id == peer.id)
        .values(catalog_lease_until=None)
        .execution_options(synchronize_session=False)
    )


def _set_state(peer: FederationPeer, state: str, now: datetime | None = None) -> None:
    if peer.state != state:
        log.info("federation=peers action=%s peer=%s from=%s", state, peer.base_url, peer.state)
        peer.state = state
        peer.state_changed_at = now or utcnow()


def approve_peer(peer: FederationPeer) -> None:
    """Accept the peer's signed requests, with the keys pinned when it was added.

    Its catalog pull is due at once and queued when the approval commits, so
    its courses reach the search without waiting for the scheduler's next
    tick (if the pull fails, the peer's backoff decides when it is tried next).
    """
    if peer.state != "approved":
        peer.catalog_pull_due_at = utcnow()
        sess = object_session(peer)
        if sess is not None:
            enqueue_on_commit(sess, CATALOG_SYNC, peer.id)
    _set_state(peer, "approved")


def suspend_peer(peer: FederationPeer) -> None:
    """Refuse the peer's signed requests (403) until it is approved again.

    Its catalog entries leave the search index (a new approval pulls them
    again from the start).
    """
    sess = object_session(peer)
    if sess is not None and peer.state != "suspended":
        _lock(sess, peer)
        catalog.delete_source(sess, peer.public_id)
        peer.catalog_cursor, peer.catalog_etag = "0", None
    _set_state(peer, "suspended")


def remove_peer(sess: Session, peer: FederationPeer) -> None:
    """Forget the peer, its keys, what it sent and its catalog entries."""
    log.info("federation=peers action=removed peer=%s", peer.base_url)
    _lock(sess, peer)
    catalog.delete_source(sess, peer.public_id)
    sess.delete(peer)
    sess.flush()


def refresh_peer_keys(sess: Session, client: PeerClient, peer: FederationPeer) -> KeyChanges:
    """Fetch the peer's JWK Set again and pin what changed.

    :raise PeerRequestError, PeerKeysInvalid: see :func:`fetch_keys`; nothing changes.
    """
    changes = _sync_keys(sess, peer, fetch_keys(client, peer))
    log.info(
        "federation=keys action=refreshed peer=%s added=%d removed=%d",
        peer.base_url,
        len(changes.added),
        len(changes.removed),
    )
    return changes


def refresh_peer(sess: Session, client: PeerClient, peer: FederationPeer) -> KeyChanges:
    """Fetch the peer's document and keys again; the document must keep its ``id``.

    The state does not change.

    :raise PeerRequestError, PeerDocumentInvalid, PeerKeysInvalid: see
        :func:`fetch_identity`; nothing changes.
    """
    identity = fetch_identity(client, peer.base_url)
    peer.name = identity.document.name
    peer.protocol_version = identity.document.protocol_version
    peer.document = identity.raw_document
    return _sync_keys(sess, peer, identity.keys)


# ---------------------------------------------------------------- trust store


def _ed25519(jwk: dict[str, Any]) -> Ed25519PublicKey | None:
    try:
        return Ed25519PublicKey.from_public_bytes(_b64url(jwk.get("x"), "x"))
    except (PeerKeysInvalid, ValueError):
        return None


class PeerRegistry:
    """The :class:`~federation.signatures.TrustStore` of our peers, from the tables.

    A peer that is not ``approved`` (pending or suspended) is reported as
    blocked, so the verifier refuses it before looking at anything else.
    """

    def __init__(self, sess: Session) -> None:
        self.sess = sess

    def peer_for_keyid(self, keyid: str) -> Peer | None:
        """The peer whose base URL the key id lies under (the longest such), or None."""
        candidates = _prefixes(keyid)
        if not candidates:
            return None
        rows = self.sess.execute(
            select(FederationPeer.base_url, FederationPeer.state).where(
                FederationPeer.base_url.in_(candidates)
            )
        ).all()
        if not rows:
            return None
        base_url, state = max(rows, key=lambda row: len(row[0]))
        return Peer(base_url, blocked=state != "approved")

    def pinned_key(self, keyid: str) -> PinnedKey | None:
        """The pinned Ed25519 key with this id, with the peer it is pinned for."""
        row = self.sess.execute(
            select(PeerKey.alg, PeerKey.jwk, FederationPeer.base_url)
            .join(FederationPeer, FederationPeer.id == PeerKey.peer_id)
            .where(PeerKey.kid == keyid)
        ).first()
        if row is None or row[0] != "Ed25519":
            return None
        public_key = _ed25519(row[1])
        return None if public_key is None else PinnedKey(keyid, row[2], public_key)


class KeyRefetcher:
    """Refetch an approved peer's keys when it signs with an unknown key id.

    At most once per peer per ``interval`` seconds (a counter in the shared
    cache), so a stream of messages naming made-up key ids costs the peer at
    most one fetch per interval.  Changes are committed at once.

    :param sess: the session whose pinned keys are updated (and committed).
    :param client: fetches the JWK Set (unsigned, size-capped).
    :param cache: holds the per-peer rate limit.
    :param interval: seconds between two refetches of one peer.
    """

    def __init__(self, sess: Session, client: PeerClient, cache: Cache, interval: int) -> None:
        self.sess = sess
        self.client = client
        self.cache = cache
        self.interval = interval

    def __call__(self, peer_id: str) -> bool:
        """Refetch ``peer_id``'s keys if allowed now; True if a key was added."""
        peer = self.sess.scalar(select(FederationPeer).where(FederationPeer.base_url == peer_id))
        if peer is None or not peer.approved:
            return False
        slot = hashlib.sha256(peer.base_url.encode()).hexdigest()
        if self.cache.incr(f"federation:key-refetch:{slot}", self.interval) != 1:
            log.info("federation=keys action=refetch_skipped peer=%s reason=rate_limited", peer_id)
            return False
        try:
            changes = refresh_peer_keys(self.sess, self.client, peer)
        except (PeerRequestError, PeerKeysInvalid) as exc:
            # Nothing was changed: the keys are checked before any is pinned.
            log.warning("federation=keys action=refetch_failed peer=%s error=%s", peer_id, exc)
            return False
        self.sess.commit()
        return bool(changes.added)
