"""The inbox over real HTTP between instances on loopback.

Three instances: A and B peer with each other (approved both ways); B knows
C but has not approved it.  Each refusal is checked for its status and
problem type, for a log line naming the peer, for a signed answer, and for
leaving B's tables exactly as they were.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.keys import OwnTrust
from federation.keys import load_keys
from federation.signatures import HttpRequest
from federation.signatures import HttpResponse
from federation.signatures import new_nonce
from federation.signatures import sign_request
from federation.signatures import verify_response
from federation.wellknown import INBOX_PATH
from tests.conftest import BACKENDS
from tests.federation.conftest import Network
from tests.federation.instances import Instance

MAX_BODY = 16 * 1024


@dataclass
class Trio:
    """A and B approved both ways; C pending at B (and approving B itself)."""

    a: Instance
    b: Instance
    c: Instance


@pytest.fixture(scope="module", params=BACKENDS)
def trio(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, key_sets: list[Path]
) -> Iterator[Trio]:
    net = Network(tmp_path_factory.mktemp("trio"), key_sets)
    try:
        backend = str(request.param)
        a = net.start("Uni A", backend=backend)
        b = net.start("Uni B", backend=backend, max_message_bytes=MAX_BODY)
        c = net.start("Uni C", backend=backend)
        a.peer_with(b)
        b.peer_with(a)
        assert b.cli("peers", "add", c.url).exit_code == 0
        c.peer_with(b)
        yield Trio(a, b, c)
    finally:
        net.stop()


def activity(sender: Instance, **changes: Any) -> dict[str, Any]:
    """A fresh ``catalog.changed`` activity of ``sender``."""
    base = {
        "id": f"urn:uuid:test-{time.time_ns()}",
        "type": "catalog.changed",
        "actor": sender.url,
        "published": datetime.now(UTC).isoformat(),
    }
    return {**base, **changes}


def signed(
    sender: Instance,
    receiver: Instance,
    body: bytes,
    *,
    key: Ed25519PrivateKey | None = None,
    keyid: str | None = None,
    created: int | None = None,
    target: str | None = None,
    content_type: str = "application/json",
    nonce: str | None = None,
) -> HttpRequest:
    """A request to ``receiver``'s inbox signed as ``sender`` (or with the key given)."""
    me = sender.signer()
    request = HttpRequest.build(
        "POST", target or receiver.url + INBOX_PATH, {"Content-Type": content_type}, body
    )
    return sign_request(
        request,
        key=key or me.key,
        keyid=keyid or me.keyid,
        created=int(time.time()) if created is None else created,
        nonce=nonce,
    )


def send(receiver: Instance, request: HttpRequest, body: bytes | None = None) -> requests.Response:
    """POST a prepared request to ``receiver``'s inbox (optionally with another body)."""
    return requests.post(
        receiver.url + INBOX_PATH,
        data=request.body if body is None else body,
        headers=dict(request.headers),
        timeout=5,
    )


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def check_signed_by(receiver: Instance, request: HttpRequest, response: requests.Response) -> None:
    """The response carries ``receiver``'s signature, bound to ``request``."""
    message = HttpResponse.build(
        response.status_code, request, tuple(response.headers.items()), response.content
    )
    trust = OwnTrust(receiver.url, load_keys(receiver.path))
    verified = verify_response(
        message, trust=trust, now=int(time.time()), expected_peer=trust.base_url
    )
    assert verified.peer == receiver.url


def assert_refused(
    response: requests.Response, status: int, slug: str, log: str, peer: str
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/" + slug)
    assert problem["status"] == status
    assert f"federation=refused peer={peer} reason={slug} status={status}" in log


# ---------------------------------------------------------------- accepted


def test_a_signed_activity_is_stored_and_answered_202(
    trio: Trio, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = trio.a, trio.b
    jobs_before = len(b.tables()["jobs"])
    sent = activity(a)
    request = signed(a, b, encode(sent))

    with caplog.at_level(logging.INFO, logger="federation"):
        response = send(b, request)

    assert response.status_code == 202, response.text
    assert response.json()["id"] == sent["id"]
    assert response.json()["state"] == "received"
    check_signed_by(b, request, response)
    row = next(r for r in b.inbox() if r.activity_id == sent["id"])
    assert (row.type, row.state, row.activity) == ("catalog.changed", "received", sent)
    assert row.public_id == response.json()["receipt"]
    assert row.keyid == a.signer().keyid
    assert len(b.tables()["jobs"]) == jobs_before + 1  # processing enqueued with it
    assert f"action=stored peer={a.url}" in caplog.text


def test_a_second_delivery_of_an_activity_is_accepted_and_stored_once(trio: Trio) -> None:
    a, b = trio.a, trio.b
    sent = activity(a)
    first = send(b, signed(a, b, encode(sent)))
    before = b.tables()

    again = send(b, signed(a, b, encode(sent)))  # a retry: new signature, same activity

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert b.tables() == before


def test_an_unknown_activity_type_is_accepted_for_the_job_to_reject(trio: Trio) -> None:
    a, b = trio.a, trio.b
    sent = activity(a, type="course.shared", object={"x": 1})

    response = send(b, signed(a, b, encode(sent)))

    assert response.status_code == 202
    row = next(r for r in b.inbox() if r.activity_id == sent["id"])
    assert row.state == "received"


def test_the_client_delivers_and_verifies_the_answer(trio: Trio) -> None:
    from core import db
    from federation.inbox import deliver
    from federation.inbox import new_activity

    a, b = trio.a, trio.b
    with a.app.app_context():
        peer = a.peer(b)
        assert peer is not None
        sent = new_activity(a.url, "catalog.changed")
        response = deliver(db.session(), db.session().merge(peer), sent)

    assert response.status == 202
    assert response.verified is not None and response.verified.peer == b.url
    assert response.json()["id"] == sent["id"]


# ---------------------------------------------------------------- refused by signature


def test_an_unknown_instance_is_refused(trio: Trio, caplog: pytest.LogCaptureFixture) -> None:
    a, c = trio.a, trio.c  # A has never heard of C
    before = a.tables()
    request = signed(c, a, encode(activity(c)))

    response = send(a, request)

    assert_refused(response, 401, "unknown-key-owner", caplog.text, "-")
    assert a.tables() == before


def test_an_unapproved_peer_is_refused(trio: Trio, caplog: pytest.LogCaptureFixture) -> None:
    b, c = trio.b, trio.c
    assert b.peer(c) is not None and b.peer(c).state == "pending"  # type: ignore[union-attr]
    before = b.tables()
    request = signed(c, b, encode(activity(c)))

    response = send(b, request)

    assert_refused(response, 403, "peer-blocked", caplog.text, c.url)
    check_signed_by(b, request, response)
    assert b.tables() == before


def test_a_forged_signature_is_refused(trio: Trio, caplog: pytest.LogCaptureFixture) -> None:
    a, b = trio.a, trio.b
    before = b.tables()
    forged = signed(a, b, encode(activity(a)), key=Ed25519PrivateKey.generate())

    response = send(b, forged)

    assert_refused(response, 401, "signature-bad", caplog.text, a.url)
    assert b.tables() == before


def test_a_replayed_request_is_refused(trio: Trio, caplog: pytest.LogCaptureFixture) -> None:
    a, b = trio.a, trio.b
    request = signed(a, b, encode(activity(a)))
    assert send(b, request).status_code == 202
    before = b.tables()

    replayed = send(b, request)

    assert_refused(replayed, 401, "signature-replayed", caplog.text, a.url)
    assert b.tables() == before


@pytest.mark.parametrize(
    ("offset", "slug"), [(-1000, "signature-expired"), (1000, "signature-from-future")]
)
def test_a_stale_or_future_request_is_refused(
    trio: Trio, caplog: pytest.LogCaptureFixture, offset: int, slug: str
) -> None:
    a, b = trio.a, trio.b
    before = b.tables()
    request = signed(a, b, encode(activity(a)), created=int(time.time()) + offset)

    response = send(b, request)

    assert_refused(response, 401, slug, caplog.text, a.url)
    assert b.tables() == before


def test_a_request_signed_for_another_instance_is_refused(
    trio: Trio, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = trio.a, trio.b
    before = b.tables()
    # Signed for C's inbox, then sent to B: B rebuilds the target URI from its own base URL.
    request = signed(a, b, encode(activity(a)), target=trio.c.url + INBOX_PATH)

    response = send(b, request)

    assert_refused(response, 401, "signature-bad", caplog.text, a.url)
    assert b.tables() == before


def test_a_body_that_does_not_match_its_digest_is_refused(
    trio: Trio, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = trio.a, trio.b
    before = b.tables()
    request = signed(a, b, encode(activity(a)))

    response = send(b, request, body=encode(activity(a, type="something.else")))

    assert_refused(response, 400, "digest-mismatch", caplog.text, a.url)
    assert b.tables() == before


def test_an_oversized_body_is_refused(trio: Trio, caplog: pytest.LogCaptureFixture) -> None:
    a, b = trio.a, trio.b
    before = b.tables()
    request = signed(a, b, encode(activity(a, padding="x" * MAX_BODY)))

    response = send(b, request)

    assert_refused(response, 413, "message-too-large", caplog.text, a.url)
    assert b.tables() == before


def test_an_oversized_chunked_body_is_refused_after_the_cap(
    trio: Trio, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = trio.a, trio.b
    before = b.tables()
    request = signed(a, b, encode(activity(a, padding="x" * 4 * MAX_BODY)))
    headers = {k: v for k, v in request.headers if k.lower() != "content-length"}

    def pieces() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        for start in range(0, len(request.body), 4096):
            yield request.body[start : start + 4096]

    response = requests.post(b.url + INBOX_PATH, data=pieces(), headers=headers, timeout=5)

    assert_refused(response, 413, "message-too-large", caplog.text, a.url)
    assert "body larger than 16384 bytes" in response.json()["detail"]
    assert b.tables() == before


def test_an_unsigned_request_is_refused(trio: Trio, caplog: pytest.LogCaptureFixture) -> None:
    b = trio.b
    before = b.tables()

    response = requests.post(
        b.url + INBOX_PATH, json=activity(trio.a), timeout=5, headers={"Cookie": "x=1"}
    )

    assert_refused(response, 400, "signature-malformed", caplog.text, "-")
    assert "Signature" not in response.headers  # nothing to bind an answer to
    assert b.tables() == before


# ---------------------------------------------------------------- refused after verification


@pytest.mark.parametrize(
    ("body", "content_type", "status", "slug"),
    [
        (b'{"id": "urn:uuid:1", "type": ', "application/json", 400, "activity-malformed"),
        (b"[1, 2, 3]", "application/json", 400, "activity-malformed"),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400, "activity-malformed"),
        (b'{"id": NaN}', "application/json", 400, "activity-malformed"),
        (b"\xff\xfe{}", "application/json", 400, "activity-malformed"),
        (b'{"id": "urn:uuid:1"}', "application/json", 422, "activity-invalid"),
        (b"id=1", "application/x-www-form-urlencoded", 415, "unsupported-media-type"),
    ],
    ids=["truncated", "array", "deep", "nan", "not-utf8", "not-an-activity", "form"],
)
def test_a_signed_body_that_is_not_an_activity_is_refused(
    trio: Trio,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    content_type: str,
    status: int,
    slug: str,
) -> None:
    a, b = trio.a, trio.b
    before = b.tables()
    request = signed(a, b, body, content_type=content_type)

    response = send(b, request)

    assert_refused(response, status, slug, caplog.text, a.url)
    check_signed_by(b, request, response)
    assert b.tables() == before


def test_an_activity_in_the_name_of_another_instance_is_refused(
    trio: Trio, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = trio.a, trio.b
    before = b.tables()
    request = signed(a, b, encode(activity(a, actor=trio.c.url)))

    response = send(b, request)

    assert_refused(response, 403, "actor-mismatch", caplog.text, a.url)
    assert b.tables() == before


def test_a_forgery_does_not_burn_the_nonce_of_the_genuine_message(trio: Trio) -> None:
    a, b = trio.a, trio.b
    nonce = new_nonce()
    genuine = signed(a, b, encode(activity(a)), nonce=nonce)
    forged = signed(a, b, genuine.body, key=Ed25519PrivateKey.generate(), nonce=nonce)

    assert send(b, forged).status_code == 401
    assert send(b, genuine).status_code == 202
