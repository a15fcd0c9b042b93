"""Signed server-to-server HTTP on the Flask side: verifying requests, signing responses.

A federation endpoint is wrapped in :func:`signed_endpoint`::

    @bp.post("/inbox")
    @signed_endpoint
    def inbox(signed: SignedRequest) -> ResponseReturnValue:
        ...

The wrapper rebuilds the request as the signer saw it (the target URI from
*our* configured base URL, never the ``Host`` header), verifies it with
:func:`verify_signed_request` in the order of docs/federation.md, and turns
each refusal into an ``application/problem+json`` response with that check's
status, logged as ``federation=refused peer=<id> reason=<slug>``.  Every
response, refusals included, is signed and bound to the request it answers
whenever that request carried a parsable ``trivium`` signature.

:func:`peer_client` gives the app's outgoing client: our signing key, the
pinned peers as trust store, and the rate-limited key refetch.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from flask import Flask
from flask import Response
from flask import current_app
from flask import request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import RequestEntityTooLarge

from core import db
from core.auth.csrf import csrf_exempt
from core.cache import get_cache
from core.config import Settings
from core.errors import Problem
from core.errors import problem_response
from federation.client import PeerClient
from federation.client import Signer
from federation.config import FederationSettings
from federation.config import federation_settings
from federation.keys import key_url
from federation.models import FederationPeer
from federation.nonces import CacheNonceStore
from federation.peers import KeyRefetcher
from federation.peers import PeerRegistry
from federation.signatures import HttpRequest
from federation.signatures import HttpResponse
from federation.signatures import MessageTooLarge
from federation.signatures import Peer
from federation.signatures import PinnedKey
from federation.signatures import SignatureError
from federation.signatures import UnknownKey
from federation.signatures import Verified
from federation.signatures import parse_signature
from federation.signatures import sign_response
from federation.signatures import verify_request
from federation.wellknown import base_url
from federation.wellknown import current_keys

__all__ = [
    "SignatureRefused",
    "SignedRequest",
    "incoming_request",
    "peer_client",
    "sign_response_to",
    "signed_endpoint",
    "signer",
    "verify_signed_request",
]

log = logging.getLogger(__name__)

SIGNATURE_FIELDS = ("Content-Digest", "Signature-Input", "Signature")
_SAFE_PATH = "/!$&'()*+,;=:@-._~"


class SignatureRefused(Problem):
    """A signed request failed verification: the status and type of its check.

    :ivar error: the failed check.
    :ivar message: the request as received (its header fields at least), so
        that the refusal can be signed for it.
    """

    def __init__(self, error: SignatureError, message: HttpRequest) -> None:
        super().__init__(str(error))
        self.error = error
        self.message = message
        self.status = error.status
        self.type_slug = error.slug
        self.title = error.slug.replace("-", " ").capitalize()


@dataclass(frozen=True)
class SignedRequest:
    """A request that passed verification: who sent it, and what, as received."""

    verified: Verified
    peer: FederationPeer
    message: HttpRequest

    @property
    def body(self) -> bytes:
        """The request body (at most ``max_message_bytes``)."""
        return self.message.body


def _settings(app: Flask | None = None) -> Settings:
    settings: Settings = (app or current_app).extensions["trivium.settings"]
    return settings


def _federation(app: Flask | None = None) -> FederationSettings:
    return federation_settings(_settings(app))


def signer(app: Flask | None = None) -> Signer:
    """Our active Ed25519 key and its ``kid`` URL."""
    target = app or current_app
    keys = current_keys(target)
    active = keys.active("Ed25519")
    return Signer(key_url(base_url(_settings(target)), active.id), keys.signing_key())


def _headers_only() -> HttpRequest:
    """The current request without its body: method, target URI (ours), header fields."""
    target = base_url(_settings()) + quote(request.path, safe=_SAFE_PATH)
    if request.query_string:
        target += "?" + request.query_string.decode("latin-1")
    return HttpRequest.build(request.method, target, tuple(request.headers.items()))


def incoming_request(max_body: int) -> HttpRequest:
    """The current request as its signer built it, the body read up to ``max_body + 1`` bytes.

    The target URI is our configured base URL plus the path and query: a
    request signed for another instance (or another ``Host``) cannot verify.

    :raise MessageTooLarge: ``Content-Length`` announces more than ``max_body``
        (refused before any of the body is read).
    """
    length = request.content_length
    if length is not None and length > max_body:
        raise MessageTooLarge(f"Content-Length {length} exceeds {max_body} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        # A read may return less than asked: read until the end or one byte past the cap.
        while size <= max_body:
            chunk = request.stream.read(max_body + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except RequestEntityTooLarge:
        raise MessageTooLarge(f"body larger than {max_body} bytes") from None
    return replace(_headers_only(), body=b"".join(chunks))


class _RecordingTrust:
    """Asks the registry and remembers which peer the key id pointed at (for logs)."""

    def __init__(self, registry: PeerRegistry) -> None:
        self.registry = registry
        self.peer: Peer | None = None

    def peer_for_keyid(self, keyid: str) -> Peer | None:
        self.peer = self.registry.peer_for_keyid(keyid)
        return self.peer

    def pinned_key(self, keyid: str) -> PinnedKey | None:
        return self.registry.pinned_key(keyid)


def _claimed(message: HttpRequest, trust: _RecordingTrust, max_field: int) -> tuple[str, str]:
    """The peer and key id a refused request claims, for the log line ("-" if unknown)."""
    keyid = "-"
    fields = message.field("Signature-Input"), message.field("Signature")
    if fields[0] and fields[1] and max(len(fields[0]), len(fields[1])) <= max_field:
        try:
            claimed = parse_signature(fields[0], fields[1]).param("keyid")
        except SignatureError:
            claimed = None
        if isinstance(claimed, str):
            keyid = claimed
            if trust.peer is None:
                trust.peer_for_keyid(claimed)
    return (trust.peer.id if trust.peer else "-"), keyid


def peer_client(sess: Session) -> PeerClient:
    """The current app's client for peers: signs with our key, trusts the pinned peers.

    A response signed with a key id we have not pinned triggers one
    rate-limited refetch of that peer's keys (committed in ``sess``).
    """
    settings = _federation()
    client = PeerClient(settings.client_policy(), signer=signer(), trust=PeerRegistry(sess))
    client.refetch = KeyRefetcher(sess, client, get_cache(), settings.key_refetch_interval)
    return client


def verify_signed_request(*, expected_peer: str | None = None) -> SignedRequest:
    """Verify the current request's signature against the pinned peers.

    Size, parse, owner known and approved, digest, time window and replay,
    algorithm, key pinned for that owner, signature; then the nonce is
    claimed (see :func:`federation.signatures.verify_request`).  If the only
    problem is a key id we have not pinned, the peer's keys are refetched
    once (rate-limited) and the request verified again.

    Reads the body (at most ``max_message_bytes``); use
    :attr:`SignedRequest.body` afterwards.

    :param expected_peer: the peer that must have signed, when the route knows.
    :raise SignatureRefused: a problem carrying the first failed check
        (logged with the claimed peer and the reason).
    """
    settings = _federation()
    policy = settings.verify_policy()
    sess = db.session()
    trust = _RecordingTrust(PeerRegistry(sess))
    nonces = CacheNonceStore(get_cache())
    message: HttpRequest | None = None
    try:
        # 1. (size, announced) Refuse a body we would not accept before reading it.
        message = incoming_request(policy.max_body_bytes)
        received = message

        def verify() -> Verified:
            return verify_request(
                received,
                trust=trust,
                nonces=nonces,
                now=int(time.time()),
                policy=policy,
                expected_peer=expected_peer,
            )

        try:
            verified = verify()
        except UnknownKey:
            # Steps 1-6 passed for an approved peer: it may have rotated its
            # key.  Refetch its keys once (rate-limited), then verify again.
            assert trust.peer is not None
            with PeerClient(settings.client_policy()) as client:
                refetch = KeyRefetcher(sess, client, get_cache(), settings.key_refetch_interval)
                if not refetch(trust.peer.id):
                    raise
            verified = verify()
    except SignatureError as exc:
        seen = message or _headers_only()
        peer, keyid = _claimed(seen, trust, policy.max_field_bytes)
        log.warning(
            "federation=refused peer=%s reason=%s status=%d method=%s path=%s keyid=%r detail=%r",
            peer,
            exc.slug,
            exc.status,
            request.method,
            request.path,
            keyid,
            str(exc),
        )
        raise SignatureRefused(exc, seen) from None
    row = sess.scalar(select(FederationPeer).where(FederationPeer.base_url == verified.peer))
    assert row is not None  # the registry found it a moment ago
    return SignedRequest(verified, row, received)


def sign_response_to(response: Response, message: HttpRequest) -> Response:
    """Sign ``response`` as the answer to ``message`` (status, digest, the request's signature).

    Left unsigned when the request carried no parsable ``trivium`` signature
    to bind to, or when the body is streamed.
    """
    if response.is_streamed:
        return response
    body = response.get_data()
    me = signer()
    try:
        signed = sign_response(
            HttpResponse.build(response.status_code, message, (), body),
            key=me.key,
            keyid=me.keyid,
            created=int(time.time()),
        )
    except SignatureError:
        return response
    for name in SIGNATURE_FIELDS:
        value = signed.field(name)
        if value is not None:
            response.headers[name] = value
    return response


SignedView = Callable[..., ResponseReturnValue]


def signed_endpoint(view: SignedView) -> Callable[..., Response]:
    """Make ``view`` a signed federation endpoint.

    The view is called as ``view(signed, **url_args)`` with a
    :class:`SignedRequest`, only for requests that verified.  Refusals, and
    :class:`~core.errors.Problem` errors the view raises, become problem
    responses; every response is signed for the request it answers.
    """

    @functools.wraps(view)
    def wrapper(**kwargs: Any) -> Response:
        try:
            signed = verify_signed_request()
        except SignatureRefused as refused:
            return sign_response_to(problem_response(refused), refused.message)
        try:
            response = current_app.make_response(view(signed, **kwargs))
        except Problem as problem:
            log.warning(
                "federation=refused peer=%s reason=%s status=%d method=%s path=%s detail=%r",
                signed.verified.peer,
                problem.type_slug,
                problem.status,
                request.method,
                request.path,
                problem.detail,
            )
            response = problem_response(problem)
        return sign_response_to(response, signed.message)

    # Authenticated by its signature, never by a cookie: no CSRF token applies.
    return csrf_exempt(wrapper)
