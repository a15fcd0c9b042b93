"""The inbox job: what each stored activity leads to, and that a second run changes nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from core import db
from core.db import get_db
from core.db import utcnow
from federation.inbox import NoInbox
from federation.inbox import deliver
from federation.inbox import new_activity
from federation.inbox import process_inbox
from federation.inbox import register
from federation.models import FederationPeer
from federation.models import InboxActivity
from federation.peers import PeerNotApproved

PEER = "https://a.example"


def store(app: Flask, type_: str, *, state: str = "approved", age: timedelta = timedelta()) -> int:
    """A peer in ``state`` and one activity of ``type_`` it sent ``age`` ago."""
    with get_db(app).session() as sess:
        peer = sess.scalar(select(FederationPeer).where(FederationPeer.base_url == PEER))
        if peer is None:
            peer = FederationPeer(
                base_url=PEER, name="A", protocol_version="1", document={"id": PEER}
            )
            sess.add(peer)
        peer.state = state
        sess.flush()
        row = InboxActivity(
            peer_id=peer.id,
            activity_id=f"urn:uuid:{type_}-{state}-{age.total_seconds()}",
            type=type_,
            activity=new_activity(PEER, type_),
            keyid=PEER + "/federation/keys/k",
            nonce="n" * 22,
            signed_at=utcnow(),
            received_at=utcnow() - age,
        )
        sess.add(row)
        sess.flush()
        return row.id


def run(app: Flask, pk: int) -> tuple[str, str | None, Any]:
    with app.app_context():
        process_inbox(pk)
    with get_db(app).sessions() as sess:
        row = sess.get_one(InboxActivity, pk)
        return row.state, row.reason, row.peer.catalog_pull_due_at


def test_catalog_changed_marks_a_pull_due(app: Flask) -> None:
    pk = store(app, "catalog.changed")

    state, reason, due = run(app, pk)

    assert (state, reason) == ("processed", None)
    assert due is not None
    assert run(app, pk) == (state, reason, due)  # at least once: a second run changes nothing


@pytest.mark.parametrize(
    ("type_", "peer_state", "age", "reason"),
    [
        ("course.shared", "approved", timedelta(), "unknown activity type 'course.shared'"),
        ("catalog.changed", "suspended", timedelta(), "the peer is suspended"),
        ("catalog.changed", "approved", timedelta(days=2), "expired before it was processed"),
    ],
)
def test_other_activities_are_rejected_with_the_reason(
    app: Flask, type_: str, peer_state: str, age: timedelta, reason: str
) -> None:
    pk = store(app, type_, state=peer_state, age=age)

    state, why, due = run(app, pk)

    assert (state, why, due) == ("rejected", reason, None)


def test_a_job_for_a_removed_activity_does_nothing(app: Flask) -> None:
    with app.app_context():
        process_inbox(12345)


def test_the_job_declares_retries_and_a_time_limit() -> None:
    (spec,) = register()
    assert (spec.name, spec.queue) == ("federation.process_inbox", "federation")
    assert spec.max_retries == 5 and spec.time_limit_ms == 60_000


@pytest.mark.parametrize(
    ("state", "document", "error"),
    [
        ("pending", {"endpoints": {"inbox": PEER + "/federation/v1/inbox"}}, PeerNotApproved),
        ("approved", {"endpoints": {}}, NoInbox),
    ],
)
def test_activities_go_only_to_approved_peers_with_an_inbox(
    app: Flask, state: str, document: dict[str, Any], error: type[Exception]
) -> None:
    peer = FederationPeer(
        base_url=PEER, name="A", protocol_version="1", document=document, state=state
    )

    with app.app_context(), pytest.raises(error):
        deliver(db.session(), peer, new_activity("http://testserver", "catalog.changed"))
