"""Federation's tables: peers, the keys pinned for them, and the activities they sent.

Declared on :class:`core.db.Base`; the Alembic branch ``federation`` in
``federation/migrations/versions`` creates them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey
from sqlalchemy import Index
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import Text
from sqlalchemy import UniqueConstraint
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.orm import relationship

from core.db import Base
from core.db import new_public_id
from core.db import utcnow

__all__ = [
    "ACTIVITY_STATES",
    "PEER_STATES",
    "FederationPeer",
    "InboxActivity",
    "PeerKey",
]

PEER_STATES = ("pending", "approved", "suspended")
"""A peer starts ``pending``; only an ``approved`` peer's signed requests are accepted."""
ACTIVITY_STATES = ("received", "processed", "rejected")


class FederationPeer(Base):
    """An instance we peer with, identified by its base URL (its document's ``id``)."""

    __tablename__ = "federation_peers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    base_url: Mapped[str] = mapped_column(String(500), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20), default="pending")
    protocol_version: Mapped[str] = mapped_column(String(20))
    document: Mapped[dict[str, Any]]
    """The instance document as fetched when the peer was added (or last refreshed)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    state_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    keys_fetched_at: Mapped[datetime] = mapped_column(default=utcnow)
    catalog_pull_due_at: Mapped[datetime | None]
    """Set when the peer was approved or announced a catalog change (only if unset: a
    pending pull absorbs further announcements); a sync run clears it when it starts."""
    catalog_cursor: Mapped[str] = mapped_column(String(20), default="0")
    """The feed cursor to ask for next (the ``next`` of the last page stored)."""
    catalog_etag: Mapped[str | None] = mapped_column(String(200))
    """The feed's ETag when the last run read it to the end (sent as ``If-None-Match``)."""
    catalog_synced_at: Mapped[datetime | None]
    catalog_next_sync_at: Mapped[datetime | None]
    """When the next pull is due (the interval after a success, the backoff after a failure)."""
    catalog_failures: Mapped[int] = mapped_column(Integer, default=0)
    """Consecutive failed pulls (the backoff doubles with each)."""
    catalog_error: Mapped[str | None] = mapped_column(Text)
    """Why the last pull failed."""
    catalog_lease_until: Mapped[datetime | None]
    """Set while a sync run holds the peer (until then, or until the run ends): one run
    at a time; its value is the run's fencing token."""

    keys: Mapped[list[PeerKey]] = relationship(
        back_populates="peer", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def approved(self) -> bool:
        """Whether the operator approved this peer (and did not suspend it since)."""
        return self.state == "approved"

    def endpoint(self, name: str) -> str | None:
        """An absolute URL from the pinned document's ``endpoints``, or None."""
        endpoints = self.document.get("endpoints")
        value = endpoints.get(name) if isinstance(endpoints, dict) else None
        return value if isinstance(value, str) else None


class PeerKey(Base):
    """A public key pinned for a peer, from its JWK Set."""

    __tablename__ = "federation_peer_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    peer_id: Mapped[int] = mapped_column(
        ForeignKey("federation_peers.id", ondelete="CASCADE"), index=True
    )
    kid: Mapped[str] = mapped_column(String(700), unique=True)
    alg: Mapped[str] = mapped_column(String(20))
    jwk: Mapped[dict[str, Any]]
    """The public JWK, public members only."""
    pinned_at: Mapped[datetime] = mapped_column(default=utcnow)

    peer: Mapped[FederationPeer] = relationship(back_populates="keys")


class InboxActivity(Base):
    """An activity a peer POSTed to our inbox: stored on receipt, processed by a job."""

    __tablename__ = "federation_inbox"
    __table_args__ = (
        UniqueConstraint("peer_id", "activity_id"),
        Index("ix_federation_inbox_state_received_at", "state", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    peer_id: Mapped[int] = mapped_column(ForeignKey("federation_peers.id", ondelete="CASCADE"))
    activity_id: Mapped[str] = mapped_column(String(500))
    """The sender's id for the activity: a second delivery of it is not stored again."""
    type: Mapped[str] = mapped_column(String(100))
    activity: Mapped[dict[str, Any]]
    keyid: Mapped[str] = mapped_column(String(700))
    nonce: Mapped[str] = mapped_column(String(128))
    signed_at: Mapped[datetime]
    """The signature's ``created`` time."""
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(20), default="received")
    reason: Mapped[str | None] = mapped_column(Text)
    """Why it was rejected."""
    processed_at: Mapped[datetime | None]

    peer: Mapped[FederationPeer] = relationship()
