"""The inbox: ``POST /federation/v1/inbox`` verifies, stores and answers 202; a job processes.

An approved peer POSTs one activity per request, signed::

    {"id": "urn:uuid:…", "type": "catalog.changed",
     "actor": "https://lms.uni-a.example", "published": "2025-01-01T12:00:00Z"}

The view does nothing but check and store it (idempotently: a second
delivery of the same ``id`` from the same peer is answered 202 again and
stored once), then enqueues :data:`process_inbox` in the same transaction.
The job decides what the activity means: ``catalog.changed`` marks a catalog
pull as due for the peer; a type this instance does not know is kept, marked
``rejected`` with the reason.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from flask import Blueprint
from flask import request
from flask.typing import ResponseReturnValue
from pydantic import AwareDatetime
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import db
from core.db import utcnow
from core.errors import Problem
from core.errors import UnsupportedMediaType
from core.tasks import ActorSpec
from core.tasks import actor
from core.tasks import enqueue_on_commit
from federation.client import PeerResponse
from federation.client import is_json_type
from federation.jsondoc import JsonInvalid
from federation.jsondoc import load_object
from federation.models import FederationPeer
from federation.models import InboxActivity
from federation.peers import CATALOG_SYNC
from federation.peers import PeerError
from federation.peers import PeerNotApproved
from federation.signed import SignedRequest
from federation.signed import peer_client
from federation.signed import signed_endpoint
from federation.wellknown import INBOX_PATH

__all__ = [
    "ACTIVITY_TYPES",
    "Activity",
    "ActivityInvalid",
    "ActivityMalformed",
    "ActorMismatch",
    "NoInbox",
    "bp",
    "deliver",
    "new_activity",
    "process_inbox",
]

log = logging.getLogger(__name__)

bp = Blueprint("federation_inbox", __name__)

PROCESS_INBOX = "federation.process_inbox"
INBOX_EXPIRY = timedelta(days=1)
"""An activity still unprocessed this long after it arrived is rejected as expired."""


class ActivityMalformed(Problem):
    """The signed body is not a JSON object."""

    status = 400
    title = "Activity malformed"
    type_slug = "activity-malformed"


class ActivityInvalid(Problem):
    """The body is JSON but not an activity (see ``errors``)."""

    status = 422
    title = "Activity invalid"
    type_slug = "activity-invalid"


class ActorMismatch(Problem):
    """The activity's ``actor`` is not the peer that signed the request."""

    status = 403
    title = "Actor mismatch"
    type_slug = "actor-mismatch"


class NoInbox(PeerError):
    """The peer's pinned document names no inbox endpoint."""


class Activity(BaseModel):
    """The members every activity has; others are kept as sent."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1, max_length=500, pattern=r"^\S+$")
    """Unique among the sender's activities (``urn:uuid:…`` recommended)."""
    type: str = Field(max_length=100, pattern=r"^[a-z][a-z0-9]*(?:[._-][a-z0-9]+)*$")
    actor: str = Field(max_length=500)
    """The sender's id; must be the peer that signed the request."""
    published: AwareDatetime
    object: dict[str, Any] | None = None


# ---------------------------------------------------------------- receiving


def _parse(signed: SignedRequest) -> tuple[Activity, dict[str, Any]]:
    """The verified body as an activity of the signing peer.

    :raise UnsupportedMediaType: the body is not declared as JSON.
    :raise ActivityMalformed: it is not a JSON object.
    :raise ActivityInvalid: it lacks a member or one has the wrong form.
    :raise ActorMismatch: its ``actor`` is another instance.
    """
    if not is_json_type(request.headers.get("Content-Type")):
        raise UnsupportedMediaType("an activity is sent as application/json")
    try:
        raw = load_object(signed.body)
    except JsonInvalid as exc:
        raise ActivityMalformed(str(exc)) from None
    try:
        activity = Activity.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]) or "body", "msg": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        raise ActivityInvalid("the body is not an activity", errors=errors) from None
    if activity.actor != signed.verified.peer:
        raise ActorMismatch(f"actor {activity.actor!r} did not sign this request")
    return activity, raw


def _store(sess: Session, signed: SignedRequest, activity: Activity, raw: dict[str, Any]) -> bool:
    """Store the activity and enqueue its processing; False if it was stored already."""
    row = InboxActivity(
        peer_id=signed.peer.id,
        activity_id=activity.id,
        type=activity.type,
        activity=raw,
        keyid=signed.verified.keyid,
        nonce=signed.verified.nonce,
        signed_at=datetime.fromtimestamp(signed.verified.created, UTC),
    )
    sess.add(row)
    try:
        sess.flush()
    except IntegrityError:
        sess.rollback()  # a concurrent delivery of the same activity won
        return False
    enqueue_on_commit(sess, PROCESS_INBOX, row.id)
    sess.commit()
    return True


def _stored(sess: Session, peer_pk: int, activity_id: str) -> InboxActivity | None:
    return sess.scalar(
        select(InboxActivity).where(
            InboxActivity.peer_id == peer_pk, InboxActivity.activity_id == activity_id
        )
    )


@bp.post(INBOX_PATH)
@signed_endpoint
def inbox(signed: SignedRequest) -> ResponseReturnValue:
    """Accept one activity from an approved peer: 202 once it is stored."""
    activity, raw = _parse(signed)
    sess = db.session()
    peer_pk, peer_id = signed.peer.id, signed.peer.base_url
    existing = _stored(sess, peer_pk, activity.id)
    duplicate = existing is not None or not _store(sess, signed, activity, raw)
    row = existing or _stored(sess, peer_pk, activity.id)
    assert row is not None
    log.info(
        "federation=inbox action=%s peer=%s activity=%r type=%s receipt=%s",
        "duplicate" if duplicate else "stored",
        peer_id,
        activity.id,
        activity.type,
        row.public_id,
    )
    body = {"id": activity.id, "receipt": row.public_id, "state": row.state}
    return body, 202


# ---------------------------------------------------------------- processing


Handler = Callable[[Session, InboxActivity], None]


def _catalog_changed(sess: Session, row: InboxActivity) -> None:
    # Mark the peer's pull due and queue it (federation.sync), only if no pull was
    # due already (a compare-and-set): notifications arriving while one is pending
    # add nothing, so a peer's notifications never cause more than one pull at a time.
    marked = sess.execute(
        update(FederationPeer)
        .where(FederationPeer.id == row.peer_id, FederationPeer.catalog_pull_due_at.is_(None))
        .values(catalog_pull_due_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    first = int(getattr(marked, "rowcount", 0) or 0) == 1
    if first:
        enqueue_on_commit(sess, CATALOG_SYNC, row.peer_id)
    log.info(
        "federation=inbox action=%s peer=%s activity=%r",
        "catalog_pull_due" if first else "catalog_pull_pending",
        row.peer.base_url,
        row.activity_id,
    )


ACTIVITY_TYPES: Mapping[str, Handler] = MappingProxyType({"catalog.changed": _catalog_changed})
"""What each activity type this instance understands does when processed."""


@actor(PROCESS_INBOX, queue="federation", max_retries=5, time_limit_ms=60_000)
def process_inbox(activity_pk: int) -> None:
    """Process one stored activity; a second run of the same job changes nothing."""
    sess = db.session()
    row = sess.get(InboxActivity, activity_pk)
    if row is None or row.state != "received":
        return  # removed with its peer, or processed by an earlier delivery of this job
    now = utcnow()
    handler = ACTIVITY_TYPES.get(row.type)
    if now - row.received_at > INBOX_EXPIRY:
        row.state, row.reason = "rejected", "expired before it was processed"
    elif not row.peer.approved:
        row.state, row.reason = "rejected", f"the peer is {row.peer.state}"
    elif handler is None:
        row.state, row.reason = "rejected", f"unknown activity type {row.type!r}"
    else:
        handler(sess, row)
        row.state = "processed"
    row.processed_at = now
    sess.commit()
    log.info(
        "federation=inbox action=%s peer=%s activity=%r type=%s%s",
        row.state,
        row.peer.base_url,
        row.activity_id,
        row.type,
        f" reason={row.reason!r}" if row.reason else "",
    )


def register() -> list[ActorSpec]:
    """The inbox's background jobs."""
    return [process_inbox]


# ---------------------------------------------------------------- sending


def new_activity(own_id: str, type_: str, object_: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fresh activity of this instance (``own_id``) with a new ``urn:uuid`` id."""
    activity: dict[str, Any] = {
        "id": f"urn:uuid:{uuid.uuid4()}",
        "type": type_,
        "actor": own_id,
        "published": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    if object_ is not None:
        activity["object"] = object_
    return activity


def deliver(sess: Session, peer: FederationPeer, activity: dict[str, Any]) -> PeerResponse:
    """POST ``activity`` to an approved peer's inbox, signed; its answer verified.

    :raise PeerNotApproved: the peer is pending or suspended.
    :raise NoInbox: the peer's document names no inbox.
    :raise federation.client.PeerRequestError: the delivery failed (see the subclasses).
    """
    if not peer.approved:
        raise PeerNotApproved(f"{peer.base_url} is {peer.state}")
    url = peer.endpoint("inbox")
    if url is None:
        raise NoInbox(f"{peer.base_url} publishes no inbox")
    body = json.dumps(activity, separators=(",", ":")).encode()
    with peer_client(sess) as client:
        return client.post_json(url, body, peer=peer.base_url)
