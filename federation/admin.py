"""Operator API for peering: ``/api/v1/admin/peers`` (site admins).

The same operations as ``trivium peers``: add a peer by URL (its document and
keys are fetched and pinned; it starts ``pending``), list and show peers,
approve, suspend, refresh its document and keys, remove it.  Every route
needs the ``federation.peers`` permission, which only site admins hold
unless a ``permission_allowed`` implementation grants it.  Every change is
recorded in the audit log (``federation.peer_*`` actions), as the operator
pages in :mod:`federation.pages` do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint
from flask import current_app
from flask.typing import ResponseReturnValue
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

from core import db
from core import rbac
from core.api import json_response
from core.api import operation
from core.api import parse_body
from core.auth import require_user
from core.auth.audit import audit
from core.config import Settings
from core.errors import Conflict
from core.errors import NotFound
from core.errors import Problem
from core.errors import ValidationFailed
from core.models import User
from federation.client import PeerClient
from federation.client import PeerRequestError
from federation.client import PeerTimeout
from federation.config import federation_settings
from federation.models import FederationPeer
from federation.peers import InvalidPeerUrl
from federation.peers import KeyChanges
from federation.peers import PeerAlreadyAdded
from federation.peers import PeerDocumentInvalid
from federation.peers import PeerError
from federation.peers import PeerKeysInvalid
from federation.peers import PeerNotFound
from federation.peers import add_peer
from federation.peers import approve_peer
from federation.peers import find_peer
from federation.peers import list_peers
from federation.peers import refresh_peer
from federation.peers import remove_peer
from federation.peers import suspend_peer
from federation.wellknown import base_url

__all__ = ["PERMISSION", "audit_peer", "bp", "key_changes", "problem_for"]

bp = Blueprint("federation_admin", __name__, url_prefix="/api/v1/admin/peers")

TAGS = ("federation",)
PERMISSION = "federation.peers"
"""The permission every route here requires."""


class PeerUnavailable(Problem):
    """The peer could not be reached, or sent a document or keys we refuse."""

    status = 502
    title = "Peer unavailable"
    type_slug = "peer-unavailable"


class PeerTimedOut(Problem):
    """The peer did not answer within the configured time."""

    status = 504
    title = "Peer timed out"
    type_slug = "peer-timeout"


class PeerKeyOut(BaseModel):
    """A key pinned for a peer."""

    kid: str
    alg: str
    pinned_at: datetime


class PeerOut(BaseModel):
    """A peer and its pinned keys."""

    id: str
    url: str
    name: str
    state: str = Field(description="pending, approved or suspended")
    protocol_version: str
    created_at: datetime
    state_changed_at: datetime
    keys_fetched_at: datetime
    catalog_pull_due_at: datetime | None
    keys: list[PeerKeyOut]

    @classmethod
    def of(cls, peer: FederationPeer) -> PeerOut:
        """The API view of ``peer``."""
        return cls(
            id=peer.public_id,
            url=peer.base_url,
            name=peer.name,
            state=peer.state,
            protocol_version=peer.protocol_version,
            created_at=peer.created_at,
            state_changed_at=peer.state_changed_at,
            keys_fetched_at=peer.keys_fetched_at,
            catalog_pull_due_at=peer.catalog_pull_due_at,
            keys=[PeerKeyOut(kid=k.kid, alg=k.alg, pinned_at=k.pinned_at) for k in peer.keys],
        )


class PeerList(BaseModel):
    """Every peer, oldest first."""

    items: list[PeerOut]


class AddPeer(BaseModel):
    """The base URL of the instance to peer with."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=500)


def _admin() -> User:
    """The current user, once allowed to manage peers."""
    user = require_user()
    rbac.require(user, PERMISSION)
    return user


def audit_peer(
    actor: User, action: str, peer: FederationPeer, detail: dict[str, Any] | None = None
) -> None:
    """Record a peering change in the audit log, in the change's own transaction.

    :param action: ``add``, ``approve``, ``suspend``, ``refresh`` or ``remove``
        (stored as ``federation.peer_<action>``).
    :param detail: extra facts beside the peer's URL and state.
    """
    audit(
        db.session(),
        actor,
        f"federation.peer_{action}",
        f"peer:{peer.public_id}",
        {"url": peer.base_url, "state": peer.state, **(detail or {})},
    )


def key_changes(changes: KeyChanges) -> dict[str, Any]:
    """The audit detail of a key refresh: the key ids pinned and unpinned."""
    return {"keys_added": list(changes.added), "keys_removed": list(changes.removed)}


def problem_for(exc: PeerError | PeerRequestError) -> Problem:
    """The problem an API client sees for a failed peering operation."""
    if isinstance(exc, InvalidPeerUrl):
        return ValidationFailed(str(exc), errors=[{"loc": "url", "msg": str(exc)}])
    if isinstance(exc, PeerAlreadyAdded):
        return Conflict(str(exc))
    if isinstance(exc, PeerNotFound):
        return NotFound(str(exc))
    if isinstance(exc, PeerTimeout):
        return PeerTimedOut(str(exc))
    if isinstance(exc, PeerRequestError | PeerDocumentInvalid | PeerKeysInvalid):
        return PeerUnavailable(str(exc))
    return Conflict(str(exc))


def _client() -> PeerClient:
    settings: Settings = current_app.extensions["trivium.settings"]
    return PeerClient(federation_settings(settings).client_policy())


def _find(peer_id: str) -> FederationPeer:
    try:
        return find_peer(db.session(), peer_id)
    except PeerNotFound as exc:
        raise problem_for(exc) from None


@bp.get("")
@operation("Peers of this instance (site admins)", tags=TAGS, response=PeerList)
def peers() -> ResponseReturnValue:
    """List every peer with its pinned keys."""
    _admin()
    return json_response(PeerList(items=[PeerOut.of(p) for p in list_peers(db.session())]))


@bp.post("")
@operation(
    "Add a peer by URL: fetch and pin its document and keys (site admins)",
    tags=TAGS,
    body=AddPeer,
    response=PeerOut,
    status=201,
    errors=(409, 502, 504),
)
def add() -> ResponseReturnValue:
    """Add a ``pending`` peer; 502/504 when its document or keys cannot be used."""
    user = _admin()
    body = parse_body(AddPeer)
    settings: Settings = current_app.extensions["trivium.settings"]
    sess = db.session()
    try:
        with _client() as client:
            peer = add_peer(
                sess,
                client,
                body.url,
                own_id=base_url(settings),
                allow_http=federation_settings(settings).allow_http_peers,
            )
    except (PeerError, PeerRequestError) as exc:
        raise problem_for(exc) from None
    audit_peer(user, "add", peer, {"keys": [k.kid for k in peer.keys]})
    sess.commit()
    return json_response(PeerOut.of(peer), 201)


@bp.get("/<peer_id>")
@operation("One peer and its pinned keys (site admins)", tags=TAGS, response=PeerOut, errors=(404,))
def show(peer_id: str) -> ResponseReturnValue:
    """Show a peer."""
    _admin()
    return json_response(PeerOut.of(_find(peer_id)))


@bp.post("/<peer_id>/approve")
@operation(
    "Approve a peer: accept its signed requests (site admins)",
    tags=TAGS,
    response=PeerOut,
    errors=(404,),
)
def approve(peer_id: str) -> ResponseReturnValue:
    """Approve a pending or suspended peer (approving an approved one changes nothing)."""
    user = _admin()
    peer = _find(peer_id)
    before = peer.state
    approve_peer(peer)
    audit_peer(user, "approve", peer, {"from": before})
    db.session().commit()
    return json_response(PeerOut.of(peer))


@bp.post("/<peer_id>/suspend")
@operation(
    "Suspend a peer: refuse its signed requests (site admins)",
    tags=TAGS,
    response=PeerOut,
    errors=(404,),
)
def suspend(peer_id: str) -> ResponseReturnValue:
    """Suspend a peer until it is approved again."""
    user = _admin()
    peer = _find(peer_id)
    before = peer.state
    suspend_peer(peer)
    audit_peer(user, "suspend", peer, {"from": before})
    db.session().commit()
    return json_response(PeerOut.of(peer))


@bp.post("/<peer_id>/refresh")
@operation(
    "Fetch a peer's document and keys again (site admins)",
    tags=TAGS,
    response=PeerOut,
    errors=(404, 502, 504),
)
def refresh(peer_id: str) -> ResponseReturnValue:
    """Re-pin the peer's keys from its JWK Set; its state does not change."""
    user = _admin()
    peer = _find(peer_id)
    sess = db.session()
    try:
        with _client() as client:
            changes = refresh_peer(sess, client, peer)
    except (PeerError, PeerRequestError) as exc:
        raise problem_for(exc) from None
    audit_peer(user, "refresh", peer, key_changes(changes))
    sess.commit()
    return json_response(PeerOut.of(peer))


@bp.delete("/<peer_id>")
@operation(
    "Remove a peer, its keys and its activities (site admins)",
    tags=TAGS,
    status=204,
    errors=(404,),
)
def remove(peer_id: str) -> ResponseReturnValue:
    """Forget a peer."""
    user = _admin()
    sess = db.session()
    peer = _find(peer_id)
    audit_peer(user, "remove", peer)
    remove_peer(sess, peer)
    sess.commit()
    return "", 204
