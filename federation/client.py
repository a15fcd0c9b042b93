"""Outgoing HTTP to peers: public documents, and signed requests with verified responses.

Every exchange is bounded: a connect timeout, a timeout on each read, a
deadline for the whole body, and a size cap enforced while streaming (the
body is read in pieces and the connection dropped as soon as the cap is
passed).  Redirects are never followed, and a compressed body is refused, so
what is measured and digested is what the peer sent.

A signed request is signed with :func:`federation.signatures.sign_request`;
its response must carry a signature bound to that request, checked with
:func:`federation.signatures.verify_response` against the keys pinned for the
peer.  Each way an exchange fails has its own exception, all subclasses of
:class:`PeerRequestError`.

Nothing here touches Flask or the database: the caller passes our signing
key, the trust store of pinned keys and, optionally, a callback that refetches
a peer's keys when it signed with one we do not know yet.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from federation.jsondoc import JsonInvalid
from federation.jsondoc import load_object
from federation.signatures import HttpRequest
from federation.signatures import HttpResponse
from federation.signatures import SignatureError
from federation.signatures import TrustStore
from federation.signatures import UnknownKey
from federation.signatures import Verified
from federation.signatures import VerifyPolicy
from federation.signatures import sign_request
from federation.signatures import verify_response

__all__ = [
    "ClientPolicy",
    "MalformedResponse",
    "PeerClient",
    "PeerRefused",
    "PeerRequestError",
    "PeerResponse",
    "PeerTimeout",
    "PeerUnreachable",
    "ResponseSignatureInvalid",
    "ResponseTooLarge",
    "Signer",
    "UnexpectedResponse",
]

log = logging.getLogger(__name__)

USER_AGENT = "Trivium-Federation/1"
JSON_TYPE = "application/json"
_CHUNK = 16 * 1024
_OBJECT_PREFIX = re.compile(r"<[^<>]* object at 0x[0-9a-f]+>: ")


# ---------------------------------------------------------------- errors


class PeerRequestError(Exception):
    """Base of the ways an exchange with a peer fails; nothing it sent is used."""


class PeerUnreachable(PeerRequestError):
    """The connection could not be made, or broke before the response was complete."""


class PeerTimeout(PeerRequestError):
    """The peer did not connect, answer or finish its body within the configured time."""


class ResponseTooLarge(PeerRequestError):
    """The response body is larger than the cap for its kind."""


class UnexpectedResponse(PeerRequestError):
    """A redirect, an error status, a compressed body or a content type other than JSON."""


class MalformedResponse(PeerRequestError):
    """The body is not a JSON object."""


class ResponseSignatureInvalid(PeerRequestError):
    """The response to a signed request is unsigned, or its signature does not verify.

    :ivar reason: the verification failure, when the response was signed.
    """

    def __init__(self, message: str, reason: SignatureError | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class PeerRefused(PeerRequestError):
    """The peer answered a signed request with an error status.

    :ivar status: the HTTP status.
    :ivar problem: the ``application/problem+json`` body, if it sent one.
    :ivar signed: whether the refusal itself carried a valid signature.
    """

    def __init__(self, status: int, problem: dict[str, Any] | None, *, signed: bool) -> None:
        detail = (problem or {}).get("detail") or (problem or {}).get("title") or ""
        super().__init__(f"HTTP {status}" + (f": {detail}" if detail else ""))
        self.status = status
        self.problem = problem
        self.signed = signed


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class ClientPolicy:
    """Timeouts (seconds) and size caps (bytes) of requests to peers."""

    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    deadline: float = 30.0
    """The whole exchange: connecting, the headers and the body."""
    max_document_bytes: int = 64 * 1024
    """Instance documents and JWK Sets."""
    max_response_bytes: int = 1024 * 1024
    """Responses to signed requests."""
    verify: VerifyPolicy = field(default_factory=VerifyPolicy)
    """Limits applied when verifying a signed response."""


@dataclass(frozen=True)
class Signer:
    """Our active Ed25519 key and its ``kid`` URL."""

    keyid: str
    key: Ed25519PrivateKey


@dataclass(frozen=True)
class PeerResponse:
    """A response read in full (within the caps) and, for signed requests, verified."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    verified: Verified | None = None
    """Who signed it; None for the unsigned public documents."""

    def json(self) -> dict[str, Any]:
        """The body as a JSON object.

        :raise MalformedResponse: it is not one.
        """
        try:
            return load_object(self.body)
        except JsonInvalid as exc:
            raise MalformedResponse(str(exc)) from None


def is_json_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` names JSON: ``application/json`` or ``application/*+json``."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime == JSON_TYPE or (mime.startswith("application/") and mime.endswith("+json"))


def _problem(response: PeerResponse) -> dict[str, Any] | None:
    try:
        return response.json()
    except MalformedResponse:
        return None


# ---------------------------------------------------------------- client


RefetchKeys = Callable[[str], bool]
"""Called with a peer's id when it signed with a key id we have not pinned;
returns True if the peer's keys were refetched (so verifying again may pass)."""


class PeerClient:
    """HTTP to peers with ``requests``, bounded in time and size.

    :param policy: timeouts and caps.
    :param signer: our signing key; needed for :meth:`signed_request`.
    :param trust: the pinned peers and keys; needed to verify signed responses.
    :param refetch: see :data:`RefetchKeys`; without it an unknown key fails at once.
    :param clock: the current Unix time (tests pass a fixed clock).
    :param session: a ``requests`` session to reuse (one is made otherwise).
    """

    def __init__(
        self,
        policy: ClientPolicy | None = None,
        *,
        signer: Signer | None = None,
        trust: TrustStore | None = None,
        refetch: RefetchKeys | None = None,
        clock: Callable[[], float] = time.time,
        session: requests.Session | None = None,
    ) -> None:
        self.policy = policy or ClientPolicy()
        self.signer = signer
        self.trust = trust
        self.refetch = refetch
        self.clock = clock
        self._session = session or requests.Session()

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def __enter__(self) -> PeerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ public documents

    def get_document(self, url: str) -> dict[str, Any]:
        """GET a public JSON document (instance document, JWK Set): 200, JSON, small.

        :raise PeerUnreachable, PeerTimeout: see the exceptions.
        :raise ResponseTooLarge: larger than ``max_document_bytes``.
        :raise UnexpectedResponse: not a 200, a redirect, or not JSON.
        :raise MalformedResponse: the body is not a JSON object.
        """
        prepared = requests.Request("GET", url, headers=self._headers()).prepare()
        response = self._exchange(prepared, self.policy.max_document_bytes)
        if response.status != 200:
            raise UnexpectedResponse(f"GET {url}: HTTP {response.status}, expected 200")
        content_type = _field(response.headers, "Content-Type")
        if not is_json_type(content_type):
            raise UnexpectedResponse(f"GET {url}: content type {content_type!r} is not JSON")
        try:
            return response.json()
        except MalformedResponse as exc:
            raise MalformedResponse(f"GET {url}: {exc}") from None

    # ------------------------------------------------------------ signed requests

    def signed_request(
        self,
        method: str,
        url: str,
        *,
        peer: str,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> PeerResponse:
        """Send a signed request to ``peer`` and verify the signed response.

        A response whose key id is unknown makes the client call ``refetch``
        once and verify again (the peer may have rotated its key).

        :param url: an absolute URL under the peer's id.
        :param peer: the peer's id (base URL); the response must be signed by it.
        :param extra_headers: more header fields (``If-None-Match``); not covered
            by the signature.
        :return: the verified 2xx (or 304, for a conditional request) response.
        :raise ValueError: ``url`` does not lie under ``peer``, or no signer or
            trust store was given.
        :raise PeerRefused: the peer answered with an error status.
        :raise ResponseSignatureInvalid: the response is unsigned or does not verify.
        :raise PeerRequestError: any other failure (see the subclasses).
        """
        if self.signer is None or self.trust is None:
            raise ValueError("a signed request needs a signer and a trust store")
        if not url.startswith(peer.rstrip("/") + "/"):
            raise ValueError(f"{url} is not an endpoint of {peer}")
        headers = self._headers()
        if content_type is not None:
            headers["Content-Type"] = content_type
        headers.update(extra_headers or {})
        prepared = requests.Request(method, url, headers=headers, data=body).prepare()
        # Sign the URL exactly as it goes on the wire (requests may re-quote it).
        assert prepared.url is not None
        message = sign_request(
            HttpRequest.build(method.upper(), prepared.url, headers, body),
            key=self.signer.key,
            keyid=self.signer.keyid,
            created=int(self.clock()),
        )
        for name in ("Content-Digest", "Signature-Input", "Signature"):
            value = message.field(name)
            assert value is not None
            prepared.headers[name] = value
        response = self._exchange(prepared, self.policy.max_response_bytes)
        verified = self._verify(response, message, peer)
        conditional = any(name.lower() == "if-none-match" for name in extra_headers or {})
        if verified is None:
            if 200 <= response.status < 300 or response.status == 304:
                raise ResponseSignatureInvalid(f"{method} {url}: the response is not signed")
            raise PeerRefused(response.status, _problem(response), signed=False)
        if not (200 <= response.status < 300 or (response.status == 304 and conditional)):
            raise PeerRefused(response.status, _problem(response), signed=True)
        return PeerResponse(response.status, response.headers, response.body, verified)

    def post_json(self, url: str, body: bytes, *, peer: str) -> PeerResponse:
        """POST a JSON body, signed (see :meth:`signed_request`)."""
        return self.signed_request("POST", url, peer=peer, body=body, content_type=JSON_TYPE)

    def _verify(self, response: PeerResponse, request: HttpRequest, peer: str) -> Verified | None:
        if _field(response.headers, "Signature-Input") is None:
            return None
        assert self.trust is not None
        message = HttpResponse.build(response.status, request, response.headers, response.body)

        def verify() -> Verified:
            assert self.trust is not None
            return verify_response(
                message,
                trust=self.trust,
                now=int(self.clock()),
                expected_peer=peer,
                policy=self.policy.verify,
            )

        try:
            try:
                return verify()
            except UnknownKey:
                # The peer may have rotated its key: refetch its keys once.
                if self.refetch is None or not self.refetch(peer):
                    raise
                return verify()
        except SignatureError as exc:
            raise ResponseSignatureInvalid(
                f"{request.method} {request.target_uri}: response signature: {exc} ({exc.slug})",
                exc,
            ) from exc

    # ------------------------------------------------------------ transport

    def _headers(self) -> dict[str, str]:
        return {
            "Accept": JSON_TYPE,
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
        }

    def _exchange(self, prepared: requests.PreparedRequest, limit: int) -> PeerResponse:
        """Send ``prepared`` and read the whole response within the time and size limits."""
        policy = self.policy
        deadline = time.monotonic() + policy.deadline
        what = f"{prepared.method} {prepared.url}"
        try:
            raw = self._session.send(
                prepared,
                stream=True,
                allow_redirects=False,
                timeout=(policy.connect_timeout, policy.read_timeout),
            )
        except requests.Timeout as exc:  # ConnectTimeout and ReadTimeout
            raise PeerTimeout(f"{what}: timed out ({exc.__class__.__name__})") from None
        except requests.ConnectionError as exc:
            raise PeerUnreachable(f"{what}: cannot connect ({_reason(exc)})") from None
        except requests.RequestException as exc:
            raise PeerUnreachable(f"{what}: {_reason(exc)}") from None
        with raw:
            # 304 answers a conditional request; it is no redirect.
            if raw.is_redirect or (300 <= raw.status_code < 400 and raw.status_code != 304):
                raise UnexpectedResponse(f"{what}: HTTP {raw.status_code}; redirects are refused")
            encoding = raw.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in {"", "identity"}:
                raise UnexpectedResponse(f"{what}: compressed response ({encoding}) refused")
            body = _read_capped(raw, limit, deadline, what)
            headers = tuple((name, value) for name, value in raw.headers.items())
            return PeerResponse(raw.status_code, headers, body)


def _read_capped(response: requests.Response, limit: int, deadline: float, what: str) -> bytes:
    """Read the body in pieces, stopping at ``limit`` bytes or at ``deadline``."""
    length = response.headers.get("Content-Length", "")
    if length.strip().isdigit() and int(length) > limit:
        raise ResponseTooLarge(f"{what}: Content-Length {int(length)} exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise PeerTimeout(f"{what}: the body took longer than the deadline")
        try:
            # read1: whatever the socket has (up to _CHUNK), so a slow body
            # cannot hold one read open past the deadline check.
            chunk = response.raw.read1(_CHUNK, decode_content=False)
        except ReadTimeoutError:
            raise PeerTimeout(f"{what}: timed out reading the body") from None
        except (Urllib3Error, OSError) as exc:
            raise PeerUnreachable(f"{what}: connection broken ({_reason(exc)})") from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"{what}: body exceeds {limit} bytes")
        chunks.append(chunk)


def _field(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    wanted = name.lower()
    values = [value for key, value in headers if key.lower() == wanted]
    return ", ".join(values) if values else None


def _reason(exc: BaseException) -> str:
    """The cause of a requests/urllib3 error, short enough for a log line."""
    inner: object = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    inner = getattr(inner, "reason", None) or inner  # urllib3's MaxRetryError wraps the cause
    text = _OBJECT_PREFIX.sub("", str(inner)) or inner.__class__.__name__
    return text if len(text) <= 200 else text[:197] + "..."
