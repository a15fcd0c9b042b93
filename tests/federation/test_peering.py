"""Peering end to end over loopback: add, pending, approve, deliver, process; rotation.

Each test starts its own instances (see ``tests/federation/instances.py``)
and drives them the way an operator would, through ``trivium peers``.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
import requests

from core import db
from federation import keys
from federation.inbox import deliver
from federation.inbox import new_activity
from federation.keys import key_url
from federation.signatures import HttpRequest
from federation.signatures import sign_request
from federation.wellknown import INBOX_PATH
from tests.conftest import BACKENDS
from tests.federation.conftest import Network
from tests.federation.instances import Instance
from tests.federation.instances import wait_for


def notify(sender: Instance, receiver: Instance) -> str:
    """``trivium peers notify``: the CLI's output (exit code checked by the caller)."""
    return sender.cli("peers", "notify", receiver.url).output


def post_as(sender: Instance, receiver: Instance, kid: str, private_key: object) -> int:
    """POST a fresh activity signed with an explicit key; the status."""
    body = json.dumps(new_activity(sender.url, "catalog.changed")).encode()
    request = sign_request(
        HttpRequest.build(
            "POST", receiver.url + INBOX_PATH, {"Content-Type": "application/json"}, body
        ),
        key=private_key,  # type: ignore[arg-type]
        keyid=kid,
        created=int(time.time()),
    )
    response = requests.post(
        receiver.url + INBOX_PATH, data=body, headers=dict(request.headers), timeout=5
    )
    return response.status_code


@pytest.mark.parametrize("backend", BACKENDS)
def test_add_approve_deliver_and_process(
    network: Network, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    a = network.start("Uni A", backend=backend)
    b = network.start("Uni B", backend=backend)
    b.start_worker()

    # B's operator adds A: document and keys pinned, pending.
    added = b.cli("peers", "add", a.url + "/")
    assert added.exit_code == 0, added.output
    peer = b.peer(a)
    assert peer is not None
    assert (peer.state, peer.name, peer.document["id"]) == ("pending", "Uni A", a.url)
    assert sorted(k.alg for k in peer.keys) == ["Ed25519", "RS256"]
    assert a.signer().keyid in {k.kid for k in peer.keys}
    listed = b.cli("peers", "list").output
    assert peer.public_id in listed and "pending" in listed

    # A peers with B (it must know B's keys to check B's answers) ...
    a.peer_with(b)
    # ... but B has not approved A yet: refused, nothing stored.
    refused = a.cli("peers", "notify", b.url)
    assert refused.exit_code == 1
    assert "HTTP 403" in refused.output and b.inbox() == []

    # B approves A: A's catalog is pulled at once, not at B's next scheduler tick ...
    assert b.cli("peers", "approve", peer.public_id).exit_code == 0
    first = wait_for(
        lambda: (p := b.peer(a)) is not None and p.catalog_synced_at is not None and p,
        what="first catalog pull",
    )
    assert first.catalog_pull_due_at is None and first.catalog_error is None
    # ... and the same notification is accepted and processed by the job,
    # which makes the next pull of A due and queues it.
    with caplog.at_level(logging.INFO, logger="federation"):
        accepted = a.cli("peers", "notify", b.url)
        assert accepted.exit_code == 0, accepted.output
        assert "(HTTP 202)" in accepted.output
        rows = wait_for(
            lambda: [r for r in b.inbox() if r.state == "processed"], what="processed activity"
        )
    assert [r.type for r in rows] == ["catalog.changed"]
    assert rows[0].processed_at is not None
    assert f"action=catalog_pull_due peer={a.url}" in caplog.text
    pulled = wait_for(
        lambda: (
            (p := b.peer(a)) is not None
            and p.catalog_pull_due_at is None
            and p.catalog_synced_at is not None
            and p.catalog_synced_at > first.catalog_synced_at
            and p
        ),
        what="catalog pulled again",
    )
    assert pulled.catalog_pull_due_at is None and pulled.catalog_error is None

    # A type B does not know is stored, and the job rejects it with the reason.
    with a.app.app_context():
        remote = a.peer(b)
        assert remote is not None
        response = deliver(
            db.session(), db.session().merge(remote), new_activity(a.url, "course.shared")
        )
    assert response.status == 202
    rejected = wait_for(
        lambda: [r for r in b.inbox() if r.state == "rejected"], what="rejected activity"
    )
    assert rejected[0].reason == "unknown activity type 'course.shared'"

    # Suspended: refused again (403); approved again: accepted.
    assert b.cli("peers", "suspend", a.url).exit_code == 0
    assert "HTTP 403" in a.cli("peers", "notify", b.url).output
    assert b.cli("peers", "approve", a.url).exit_code == 0
    assert a.cli("peers", "notify", b.url).exit_code == 0

    # Removed: B forgets A, its keys and what it sent; A is now unknown (401).
    assert b.cli("peers", "remove", a.url, "--yes").exit_code == 0
    assert b.peer(a) is None and b.inbox() == []
    assert "HTTP 401" in a.cli("peers", "notify", b.url).output


def test_an_instance_cannot_peer_with_itself_or_twice(network: Network) -> None:
    a = network.start("Uni A")
    b = network.start("Uni B")

    itself = a.cli("peers", "add", a.url)
    assert itself.exit_code == 1 and "is this instance" in itself.output
    assert a.cli("peers", "add", b.url).exit_code == 0
    twice = a.cli("peers", "add", b.url + "/")
    assert twice.exit_code == 1 and "is a peer already" in twice.output
    unknown = a.cli("peers", "approve", "nope")
    assert unknown.exit_code == 1 and "no peer 'nope'" in unknown.output


def test_a_rotated_key_is_refetched_once_and_a_withdrawn_key_refused(
    network: Network, caplog: pytest.LogCaptureFixture
) -> None:
    a = network.start("Uni A")
    b = network.start("Uni B", key_refetch_interval=3600)
    a.peer_with(b)
    b.peer_with(a)
    old = a.signer()

    # A rotates, and withdraws the old key from its JWK Set altogether.
    new = keys.rotate_key(a.path)
    index = keys.keys_dir(a.path) / keys.INDEX_FILE
    records = json.loads(index.read_text())
    records["keys"] = [k for k in records["keys"] if old.keyid.rsplit("/", 1)[1] != k["id"]]
    index.write_text(json.dumps(records))
    new_kid = key_url(a.url, new.id)
    before = b.peer(a)
    assert before is not None and new_kid not in {k.kid for k in before.keys}

    # A signs with the new key: B does not know it, refetches A's keys once, accepts.
    with caplog.at_level(logging.INFO, logger="federation"):
        accepted = a.cli("peers", "notify", b.url)
    assert accepted.exit_code == 0, accepted.output
    after = b.peer(a)
    assert after is not None
    pinned = {k.kid for k in after.keys}
    assert new_kid in pinned and old.keyid not in pinned
    assert f"action=refreshed peer={a.url} added=1 removed=1" in caplog.text

    # The withdrawn key no longer verifies (no second refetch within the interval).
    before = b.tables()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="federation"):
        status = post_as(a, b, old.keyid, old.key)
    assert status == 401
    assert f"federation=refused peer={a.url} reason=unknown-key status=401" in caplog.text
    assert f"action=refetch_skipped peer={a.url} reason=rate_limited" in caplog.text
    assert b.tables() == before  # nothing stored, no keys changed


def test_the_client_refetches_a_rotated_response_key(network: Network) -> None:
    a = network.start("Uni A")
    b = network.start("Uni B")
    a.peer_with(b)
    b.peer_with(a)

    new = keys.rotate_key(b.path)  # B now signs its answers with a key A has not pinned

    accepted = a.cli("peers", "notify", b.url)
    assert accepted.exit_code == 0, accepted.output
    peer = a.peer(b)
    assert peer is not None and key_url(b.url, new.id) in {k.kid for k in peer.keys}


def test_a_made_up_key_id_costs_the_peer_one_fetch_per_interval(network: Network) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    a = network.start("Uni A")
    b = network.start("Uni B", key_refetch_interval=3600)
    b.peer_with(a)
    fake = Ed25519PrivateKey.generate()

    def fetched_at() -> float:
        peer = b.peer(a)
        assert peer is not None
        return peer.keys_fetched_at.timestamp()

    added = fetched_at()
    first = post_as(a, b, f"{a.url}/federation/keys/made-up-0", fake)
    refetched = fetched_at()
    more = [post_as(a, b, f"{a.url}/federation/keys/made-up-{n}", fake) for n in (1, 2, 3)]

    assert [first, *more] == [401] * 4
    assert refetched > added  # the first unknown key id refetched A's keys ...
    assert fetched_at() == refetched  # ... the next ones, within the interval, did not
