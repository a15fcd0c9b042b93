"""Signed server-to-server messages: HTTP Message Signatures (RFC 9421), Content-Digest (RFC 9530).

Small functions over typed values.  Nothing here touches the network, the
clock or a cache: callers pass the time (``now``), the peers and keys they
trust (:class:`TrustStore`) and where nonces are remembered
(:class:`NonceStore`).  The profile implemented here, and the reasons for each
choice, are in ``docs/federation.md`` ("Signed messages").

In short, a request carries::

    Content-Digest: sha-256=:<base64 SHA-256 of the body>:
    Signature-Input: trivium=("@method" "@target-uri" "content-digest");created=<unix time>\
;keyid="<kid URL>";alg="ed25519";nonce="<random>";tag="trivium"
    Signature: trivium=:<base64 Ed25519 signature of the signature base>:

and a response signs its status and body digest together with the method,
target URI and signature of the request it answers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from functools import cached_property
from functools import lru_cache
from typing import ClassVar
from typing import Protocol
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from federation import sfv

__all__ = [
    "ALGORITHM",
    "LABEL",
    "REQUEST_COMPONENTS",
    "RESPONSE_COMPONENTS",
    "TAG",
    "BadSignature",
    "BlockedPeer",
    "Component",
    "DigestMismatch",
    "HttpRequest",
    "HttpResponse",
    "KeyOwnerMismatch",
    "MalformedSignature",
    "MessageTooLarge",
    "NonceStore",
    "Peer",
    "PinnedKey",
    "ReplayedSignature",
    "SignatureError",
    "SignatureExpired",
    "SignatureFromFuture",
    "SignatureInput",
    "TrustStore",
    "UnknownKey",
    "UnknownKeyOwner",
    "UnsupportedAlgorithm",
    "Verified",
    "VerifyPolicy",
    "content_digest",
    "new_nonce",
    "parse_signature",
    "sign_base",
    "sign_request",
    "sign_response",
    "signature_base",
    "verify_base",
    "verify_content_digest",
    "verify_request",
    "verify_response",
]

LABEL = "trivium"
"""The signature's label in ``Signature-Input`` and ``Signature``."""
TAG = "trivium"
"""The ``tag`` parameter naming this profile (RFC 9421 section 2.3)."""
ALGORITHM = "ed25519"
"""The only signature algorithm accepted (RFC 9421 section 3.3.6)."""
DIGEST_ALGORITHM = "sha-256"
"""The Content-Digest algorithm that must be present (RFC 9530)."""

_PROFILE_PARAMS = frozenset({"created", "keyid", "alg", "nonce", "tag"})
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_DEFAULT_PORTS = {"http": 80, "https": 443}


# ---------------------------------------------------------------- errors


class SignatureError(Exception):
    """Base of the reasons a signed message is refused; each has its own status."""

    status: ClassVar[int] = 401
    slug: ClassVar[str] = "signature-invalid"


class MessageTooLarge(SignatureError):
    """The body or a signature field exceeds the configured limit."""

    status = 413
    slug = "message-too-large"


class MalformedSignature(SignatureError):
    """A signature or digest field is missing, unparsable, or not this profile."""

    status = 400
    slug = "signature-malformed"


class UnknownKeyOwner(SignatureError):
    """The key id does not belong to any instance we peer with."""

    status = 401
    slug = "unknown-key-owner"


class BlockedPeer(SignatureError):
    """The key id belongs to an instance the operator has blocked."""

    status = 403
    slug = "peer-blocked"


class DigestMismatch(SignatureError):
    """The body does not match its ``Content-Digest``."""

    status = 400
    slug = "digest-mismatch"


class SignatureExpired(SignatureError):
    """The signature was created longer ago than the allowed window."""

    status = 401
    slug = "signature-expired"


class SignatureFromFuture(SignatureError):
    """The signature claims a creation time beyond the allowed clock skew."""

    status = 401
    slug = "signature-from-future"


class ReplayedSignature(SignatureError):
    """This key already used this nonce: the message is a replay."""

    status = 401
    slug = "signature-replayed"


class UnsupportedAlgorithm(SignatureError):
    """The ``alg`` parameter names an algorithm other than ``ed25519``."""

    status = 400
    slug = "algorithm-unsupported"


class UnknownKey(SignatureError):
    """No key with this id is pinned for the peer."""

    status = 401
    slug = "unknown-key"


class KeyOwnerMismatch(SignatureError):
    """The key is pinned, but for another peer than the one claimed."""

    status = 401
    slug = "key-owner-mismatch"


class BadSignature(SignatureError):
    """The signature does not verify over the message's signature base."""

    status = 401
    slug = "signature-bad"


# ---------------------------------------------------------------- messages


Headers = tuple[tuple[str, str], ...]


def _headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Headers:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((name, value) for name, value in pairs)


def _field(headers: Headers, name: str) -> str | None:
    """A field's value as RFC 9421 section 2.1 covers it: lines trimmed, joined by ", "."""
    wanted = name.lower()
    values = [value.strip() for key, value in headers if key.lower() == wanted]
    return ", ".join(values) if values else None


def _with_fields(headers: Headers, fields: Mapping[str, str]) -> Headers:
    replaced = {name.lower() for name in fields}
    kept = tuple((name, value) for name, value in headers if name.lower() not in replaced)
    return kept + tuple(fields.items())


@dataclass(frozen=True)
class HttpRequest:
    """A request as signed: method, absolute target URI, header fields, body."""

    method: str
    target_uri: str
    headers: Headers = ()
    body: bytes = b""

    @classmethod
    def build(
        cls,
        method: str,
        target_uri: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> HttpRequest:
        """Make a request from a mapping or a list of header pairs."""
        return cls(method, target_uri, _headers(headers), body)

    def field(self, name: str) -> str | None:
        """The value of header field ``name`` (case-insensitive), or None."""
        return _field(self.headers, name)


@dataclass(frozen=True)
class HttpResponse:
    """A response as signed, with the request it answers (for ``;req`` components)."""

    status: int
    request: HttpRequest
    headers: Headers = ()
    body: bytes = b""

    @classmethod
    def build(
        cls,
        status: int,
        request: HttpRequest,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> HttpResponse:
        """Make a response from a mapping or a list of header pairs."""
        return cls(status, request, _headers(headers), body)

    def field(self, name: str) -> str | None:
        """The value of header field ``name`` (case-insensitive), or None."""
        return _field(self.headers, name)


Message = HttpRequest | HttpResponse


# ---------------------------------------------------------------- components


@dataclass(frozen=True)
class Component:
    """A covered component: a field name or a derived ``@name``, with parameters."""

    name: str
    params: sfv.Params = ()

    @cached_property
    def identity(self) -> tuple[str, frozenset[tuple[str, sfv.BareItem]]]:
        """Two identifiers are the same component whatever their parameter order."""
        return self.name, frozenset(self.params)

    def identifier(self) -> str:
        """The serialised component identifier, e.g. ``"@method";req``."""
        if not self.params:
            return _bare_identifier(self.name)
        return sfv.serialize_item(sfv.Item(self.name, self.params))


@lru_cache(maxsize=64)
def _bare_identifier(name: str) -> str:
    # Keyed by the name alone: parameters are never part of the key, where
    # True and 1 would be the same.
    return sfv.serialize_bare_item(name)


@lru_cache(maxsize=64)
def _bare_component(name: str) -> Component:
    # Components are immutable: one instance per name serves every message.
    return Component(name)


@lru_cache(maxsize=8)
def _identities(
    components: tuple[Component, ...],
) -> frozenset[tuple[str, frozenset[tuple[str, sfv.BareItem]]]]:
    return frozenset(c.identity for c in components)


REQUEST_COMPONENTS = (
    Component("@method"),
    Component("@target-uri"),
    Component("content-digest"),
)
"""What a request signature covers, in this order."""

RESPONSE_COMPONENTS = (
    Component("@status"),
    Component("content-digest"),
    Component("@method", (("req", True),)),
    Component("@target-uri", (("req", True),)),
    Component("signature", (("req", True), ("key", LABEL))),
)
"""What a response signature covers: its own status and digest, and the
request's method, target URI and signature, so that a response cannot be
replayed as the answer to another request (RFC 9421 section 2.4)."""


def _derived(name: str, message: Message) -> str:
    if name == "@status":
        if not isinstance(message, HttpResponse):
            raise MalformedSignature("@status is only defined for responses")
        return f"{message.status:03d}"
    if not isinstance(message, HttpRequest):
        raise MalformedSignature(f"{name} of a response must be marked ;req")
    if name == "@method":
        return message.method
    if name == "@target-uri":
        return message.target_uri
    parts = urlsplit(message.target_uri)
    scheme = parts.scheme.lower()
    if name == "@scheme":
        return scheme
    if name == "@authority":
        host = (parts.hostname or "").lower()
        if ":" in host:
            host = f"[{host}]"
        port = parts.port
        return host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    if name == "@path":
        return parts.path or "/"
    if name == "@query":
        return "?" + parts.query
    raise MalformedSignature(f"unsupported derived component {name}")


def component_value(component: Component, message: Message) -> str:
    """The value ``component`` contributes to the signature base (RFC 9421 section 2).

    :raise MalformedSignature: the component is absent or not supported.
    """
    if not component.params:  # the usual case: the message's own field or derived value
        if component.name.startswith("@"):
            return _derived(component.name, message)
        plain = message.field(component.name)
        if plain is None:
            raise MalformedSignature(f"covered field {component.name!r} is absent")
        return plain
    params = dict(component.params)
    unsupported = set(params) - {"req", "key"}
    if unsupported:
        raise MalformedSignature(f"unsupported component parameters {sorted(unsupported)}")
    source: Message = message
    if params.get("req") is True:
        if not isinstance(message, HttpResponse):
            raise MalformedSignature(";req is only defined for responses")
        source = message.request
    if component.name.startswith("@"):
        if "key" in params:
            raise MalformedSignature(f"{component.name} takes no key parameter")
        return _derived(component.name, source)
    value = source.field(component.name)
    if value is None:
        raise MalformedSignature(f"covered field {component.name!r} is absent")
    key = params.get("key")
    if key is None:
        return value
    if not isinstance(key, str):
        raise MalformedSignature("the key parameter must be a string")
    try:
        members = dict(sfv.parse_dictionary(value))
    except sfv.StructuredFieldError as exc:
        raise MalformedSignature(f"{component.name}: {exc}") from exc
    if key not in members:
        raise MalformedSignature(f"{component.name} has no member {key!r}")
    member = members[key]
    if isinstance(member, sfv.InnerList):
        return sfv.serialize_inner_list(member)
    return sfv.serialize_item(member)


def signature_base(components: Sequence[Component], params: sfv.Params, message: Message) -> bytes:
    """Build the signature base of RFC 9421 section 2.5.

    :param components: the covered components, in signature order.
    :param params: the signature parameters, in the order they are serialised.
    :param message: the request or response being signed or verified.
    :raise MalformedSignature: a component repeats, is absent or unsupported,
        or a value cannot appear in a signature base.
    """
    lines = []
    identifiers = []
    seen: set[tuple[str, frozenset[tuple[str, sfv.BareItem]]]] = set()
    for component in components:
        identity = component.identity
        if identity in seen:
            raise MalformedSignature(f"component {component.identifier()} appears twice")
        seen.add(identity)
        value = component_value(component, message)
        identifier = component.identifier()
        if "\n" in value or "\r" in value:
            raise MalformedSignature(f"{identifier} contains a line break")
        lines.append(f"{identifier}: {value}")
        identifiers.append(identifier)
    try:
        # The inner list of the covered components with the parameters, as
        # sfv.serialize_inner_list writes it, from the identifiers above.
        inner = "(" + " ".join(identifiers) + ")" + sfv.serialize_params(params)
        lines.append(f'"@signature-params": {inner}')
    except sfv.StructuredFieldError as exc:
        raise MalformedSignature(f"signature parameters: {exc}") from exc
    base = "\n".join(lines)
    if not base.isascii():
        raise MalformedSignature("the signature base must be ASCII")
    return base.encode("ascii")


def sign_base(key: Ed25519PrivateKey, base: bytes) -> bytes:
    """Sign a signature base with Ed25519 (RFC 9421 section 3.3.6)."""
    return key.sign(base)


def verify_base(key: Ed25519PublicKey, base: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``key``'s Ed25519 signature of ``base``."""
    try:
        key.verify(signature, base)
    except InvalidSignature:
        return False
    return True


# ---------------------------------------------------------------- Content-Digest


def content_digest(body: bytes) -> str:
    """The ``Content-Digest`` field value for ``body``: ``sha-256=:<base64>:``."""
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
    return f"{DIGEST_ALGORITHM}=:{digest}:"


def _parse_content_digest(value: str | None) -> bytes:
    """The SHA-256 digest a ``Content-Digest`` value carries (other algorithms ignored)."""
    if value is None:
        raise MalformedSignature("no Content-Digest field")
    try:
        members = dict(sfv.parse_dictionary(value))
    except sfv.StructuredFieldError as exc:
        raise MalformedSignature(f"Content-Digest: {exc}") from exc
    member = members.get(DIGEST_ALGORITHM)
    if not isinstance(member, sfv.Item) or not isinstance(member.value, bytes):
        raise MalformedSignature("Content-Digest has no sha-256 byte sequence")
    if len(member.value) != hashlib.sha256().digest_size:
        raise MalformedSignature("the sha-256 digest must be 32 bytes")
    return member.value


def verify_content_digest(value: str | None, body: bytes) -> None:
    """Check a ``Content-Digest`` field value against ``body``.

    :raise MalformedSignature: the field is missing or has no sha-256 member.
    :raise DigestMismatch: the digest is not that of ``body``.
    """
    expected = _parse_content_digest(value)
    if not hmac.compare_digest(expected, hashlib.sha256(body).digest()):
        raise DigestMismatch("the body does not match its Content-Digest")


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class SignatureInput:
    """One signature of a message: its covered components, parameters and value."""

    label: str
    components: tuple[Component, ...]
    params: sfv.Params
    signature: bytes

    def param(self, name: str) -> sfv.BareItem | None:
        """The value of signature parameter ``name``, or None."""
        return dict(self.params).get(name)


def parse_signature(signature_input: str, signature: str, label: str = LABEL) -> SignatureInput:
    """Find the signature labelled ``label`` in the two fields (RFC 9421 section 4).

    :raise MalformedSignature: a field is not a Dictionary, or the member is
        missing or of the wrong type.
    """
    try:
        inputs = dict(sfv.parse_dictionary(signature_input))
        values = dict(sfv.parse_dictionary(signature))
    except sfv.StructuredFieldError as exc:
        raise MalformedSignature(f"signature fields: {exc}") from exc
    member = inputs.get(label)
    value = values.get(label)
    if member is None or value is None:
        raise MalformedSignature(f"no signature labelled {label!r}")
    if not isinstance(member, sfv.InnerList):
        raise MalformedSignature("Signature-Input member must be an inner list")
    if not isinstance(value, sfv.Item) or not isinstance(value.value, bytes):
        raise MalformedSignature("Signature member must be a byte sequence")
    components = []
    for item in member.items:
        if not isinstance(item.value, str) or item.value != item.value.lower():
            raise MalformedSignature("component identifiers are lower-case strings")
        if item.params:
            components.append(Component(item.value, item.params))
        else:
            components.append(_bare_component(item.value))
    return SignatureInput(label, tuple(components), member.params, value.value)


@dataclass(frozen=True)
class _Profile:
    """The parameters this profile requires, checked for presence and type."""

    created: int
    keyid: str
    alg: str
    nonce: str


def _profile(sig: SignatureInput, expected: Sequence[Component]) -> _Profile:
    covered = [c.identity for c in sig.components]
    if len(set(covered)) != len(covered) or set(covered) != _identities(tuple(expected)):
        wanted = " ".join(c.identifier() for c in expected)
        raise MalformedSignature(f"the signature must cover exactly ({wanted})")
    params = dict(sig.params)
    if len(params) != len(sig.params) or params.keys() != _PROFILE_PARAMS:
        raise MalformedSignature(f"signature parameters must be {sorted(_PROFILE_PARAMS)}")
    created, keyid = params["created"], params["keyid"]
    alg, nonce, tag = params["alg"], params["nonce"], params["tag"]
    if isinstance(created, bool) or not isinstance(created, int) or created < 0:
        raise MalformedSignature("created must be a non-negative integer")
    if not isinstance(keyid, str) or not keyid.startswith(("https://", "http://")):
        raise MalformedSignature("keyid must be an absolute http(s) URL")
    if not isinstance(alg, str):
        raise MalformedSignature("alg must be a string")
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise MalformedSignature("nonce must be 16-128 base64url characters")
    if tag != TAG:
        raise MalformedSignature(f"tag must be {TAG!r}")
    return _Profile(created, keyid, alg, nonce)


# ---------------------------------------------------------------- signing


def new_nonce() -> str:
    """A fresh nonce: 128 random bits, base64url."""
    return secrets.token_urlsafe(16)


def _signature_fields(
    components: Sequence[Component],
    message: Message,
    *,
    key: Ed25519PrivateKey,
    keyid: str,
    created: int,
    nonce: str,
) -> dict[str, str]:
    params: sfv.Params = (
        ("created", created),
        ("keyid", keyid),
        ("alg", ALGORITHM),
        ("nonce", nonce),
        ("tag", TAG),
    )
    base = signature_base(components, params, message)
    inner = sfv.InnerList(tuple(sfv.Item(c.name, c.params) for c in components), params)
    return {
        "Signature-Input": f"{LABEL}={sfv.serialize_inner_list(inner)}",
        "Signature": f"{LABEL}={sfv.serialize_bare_item(sign_base(key, base))}",
    }


def sign_request(
    request: HttpRequest,
    *,
    key: Ed25519PrivateKey,
    keyid: str,
    created: int,
    nonce: str | None = None,
) -> HttpRequest:
    """Return ``request`` with ``Content-Digest``, ``Signature-Input`` and ``Signature`` set.

    :param key: the instance's active Ed25519 key.
    :param keyid: that key's ``kid`` URL.
    :param created: the current Unix time.
    :param nonce: a fresh nonce (:func:`new_nonce` when omitted).
    """
    digested = replace(
        request,
        headers=_with_fields(request.headers, {"Content-Digest": content_digest(request.body)}),
    )
    fields = _signature_fields(
        REQUEST_COMPONENTS,
        digested,
        key=key,
        keyid=keyid,
        created=created,
        nonce=nonce or new_nonce(),
    )
    return replace(digested, headers=_with_fields(digested.headers, fields))


def sign_response(
    response: HttpResponse,
    *,
    key: Ed25519PrivateKey,
    keyid: str,
    created: int,
    nonce: str | None = None,
) -> HttpResponse:
    """Return ``response`` with its digest and a signature bound to its (signed) request.

    :raise MalformedSignature: the request carries no ``trivium`` signature.
    """
    digested = replace(
        response,
        headers=_with_fields(response.headers, {"Content-Digest": content_digest(response.body)}),
    )
    fields = _signature_fields(
        RESPONSE_COMPONENTS,
        digested,
        key=key,
        keyid=keyid,
        created=created,
        nonce=nonce or new_nonce(),
    )
    return replace(digested, headers=_with_fields(digested.headers, fields))


# ---------------------------------------------------------------- verifying


@dataclass(frozen=True)
class Peer:
    """An instance we know, identified by its base URL (its instance document's ``id``)."""

    id: str
    blocked: bool = False


@dataclass(frozen=True)
class PinnedKey:
    """A public key pinned for a peer when the peering was approved."""

    keyid: str
    owner: str
    public_key: Ed25519PublicKey


class TrustStore(Protocol):
    """The peers and keys a verifier trusts; answers from stored state only."""

    def peer_for_keyid(self, keyid: str) -> Peer | None:
        """The known (or blocked) peer whose base URL the key id lies under."""

    def pinned_key(self, keyid: str) -> PinnedKey | None:
        """The pinned key with this id, or None."""


class NonceStore(Protocol):
    """Remembers nonces used by each key until no signature carrying them can be valid."""

    def seen(self, keyid: str, nonce: str) -> bool:
        """Whether ``keyid`` already used ``nonce`` (a read, no side effect)."""

    def claim(self, keyid: str, nonce: str, ttl: int) -> bool:
        """Record the nonce atomically; False if another message claimed it first."""


@dataclass(frozen=True)
class VerifyPolicy:
    """Limits a verifier enforces."""

    max_age: int = 300
    """Seconds a signature stays valid after ``created``; also the clock skew
    tolerated for a ``created`` in the future."""
    max_body_bytes: int = 1024 * 1024
    max_field_bytes: int = 4096
    """Largest ``Signature-Input``, ``Signature`` or ``Content-Digest`` value."""

    @property
    def nonce_ttl(self) -> int:
        """How long a nonce must be remembered: a signature is acceptable from
        ``created - max_age`` to ``created + max_age``."""
        return 2 * self.max_age + 1


_DEFAULT_POLICY = VerifyPolicy()
_SIGNATURE_FIELDS = {
    "signature-input": "Signature-Input",
    "signature": "Signature",
    "content-digest": "Content-Digest",
}


def _signature_fields_of(headers: Headers) -> dict[str, str | None]:
    """The three fields a verifier reads, as :func:`_field` gives each, in one pass."""
    found: dict[str, list[str]] = {name: [] for name in _SIGNATURE_FIELDS.values()}
    for key, value in headers:
        name = _SIGNATURE_FIELDS.get(key.lower())
        if name is not None:
            found[name].append(value.strip())
    return {name: ", ".join(values) if values else None for name, values in found.items()}


@dataclass(frozen=True)
class Verified:
    """A message that passed verification: who signed it, with which key, when."""

    peer: str
    keyid: str
    created: int
    nonce: str


def _verify(
    message: Message,
    components: Sequence[Component],
    *,
    trust: TrustStore,
    nonces: NonceStore | None,
    now: int,
    policy: VerifyPolicy,
    expected_peer: str | None,
) -> Verified:
    # 1. Size: refuse oversized input before parsing any of it.
    if len(message.body) > policy.max_body_bytes:
        raise MessageTooLarge(f"body larger than {policy.max_body_bytes} bytes")
    fields = _signature_fields_of(message.headers)
    for name, value in fields.items():
        if value is not None and len(value) > policy.max_field_bytes:
            raise MessageTooLarge(f"{name} larger than {policy.max_field_bytes} bytes")

    # 2. Parse: both signature fields, this profile's components and
    #    parameters, and the digest field.
    if fields["Signature-Input"] is None or fields["Signature"] is None:
        raise MalformedSignature("the message is not signed")
    sig = parse_signature(fields["Signature-Input"], fields["Signature"])
    profile = _profile(sig, components)
    digest = _parse_content_digest(fields["Content-Digest"])

    # 3. Owner: the key id must lie under a peer we know and have not blocked,
    #    decided from stored state before anything is fetched from anyone.
    peer = trust.peer_for_keyid(profile.keyid)
    if peer is None:
        raise UnknownKeyOwner(f"{profile.keyid} belongs to no known peer")
    if peer.blocked:
        raise BlockedPeer(f"{peer.id} is blocked")

    # 4. Digest: the body is the one the signature will vouch for.
    if not hmac.compare_digest(digest, hashlib.sha256(message.body).digest()):
        raise DigestMismatch("the body does not match its Content-Digest")

    # 5. Time window, then a cheap look for a replay (the atomic claim is
    #    step 9, once the signature is known to be genuine).
    if profile.created > now + policy.max_age:
        raise SignatureFromFuture(f"created {profile.created - now} s in the future")
    if profile.created < now - policy.max_age:
        raise SignatureExpired(f"created {now - profile.created} s ago")
    if nonces is not None and nonces.seen(profile.keyid, profile.nonce):
        raise ReplayedSignature("nonce already used")

    # 6. Algorithm allow-list.
    if profile.alg != ALGORITHM:
        raise UnsupportedAlgorithm(f"alg {profile.alg!r} is not {ALGORITHM!r}")

    # 7. The key must be pinned, and pinned for the peer that claims it.
    pinned = trust.pinned_key(profile.keyid)
    if pinned is None:
        raise UnknownKey(f"no pinned key {profile.keyid}")
    if pinned.owner != peer.id or (expected_peer is not None and peer.id != expected_peer):
        raise KeyOwnerMismatch(f"{profile.keyid} is not a key of {expected_peer or peer.id}")

    # 8. Signature over the base rebuilt from the message as received.
    base = signature_base(sig.components, sig.params, message)
    if not verify_base(pinned.public_key, base, sig.signature):
        raise BadSignature("the signature does not verify")

    # 9. Claim the nonce atomically: of two concurrent copies, one wins.  Only
    #    genuine messages are recorded, so forgeries cannot fill the store or
    #    burn a nonce before its real message arrives.
    if nonces is not None and not nonces.claim(profile.keyid, profile.nonce, policy.nonce_ttl):
        raise ReplayedSignature("nonce already used")
    return Verified(peer.id, profile.keyid, profile.created, profile.nonce)


def verify_request(
    request: HttpRequest,
    *,
    trust: TrustStore,
    nonces: NonceStore,
    now: int,
    policy: VerifyPolicy | None = None,
    expected_peer: str | None = None,
) -> Verified:
    """Verify a signed request, in the order of STYLE.md item 19.

    Size, parse, owner known and not blocked, digest, time window and replay,
    algorithm, key pinned for that owner, signature; then the nonce is claimed.

    :param request: the request as received, ``target_uri`` rebuilt from our
        own base URL (never from a ``Host`` header).
    :param trust: the peers and keys we pinned.
    :param nonces: where used nonces are remembered.
    :param now: the current Unix time.
    :param expected_peer: when the route knows who must have sent it.
    :return: who signed it.
    :raise SignatureError: a subclass naming the first check that failed.
    """
    return _verify(
        request,
        REQUEST_COMPONENTS,
        trust=trust,
        nonces=nonces,
        now=now,
        policy=policy or _DEFAULT_POLICY,
        expected_peer=expected_peer,
    )


def verify_response(
    response: HttpResponse,
    *,
    trust: TrustStore,
    now: int,
    expected_peer: str,
    policy: VerifyPolicy | None = None,
) -> Verified:
    """Verify a signed response to our signed ``response.request``.

    Same order as :func:`verify_request`.  No nonce store: the signature
    covers our request's signature, whose nonce is unique, so the response
    cannot be replayed for another request.

    :param expected_peer: the instance the request was sent to.
    :raise SignatureError: a subclass naming the first check that failed.
    """
    return _verify(
        response,
        RESPONSE_COMPONENTS,
        trust=trust,
        nonces=None,
        now=now,
        policy=policy or _DEFAULT_POLICY,
        expected_peer=expected_peer,
    )
