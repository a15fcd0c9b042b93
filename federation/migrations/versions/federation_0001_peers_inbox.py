"""Federation tables: peers, their pinned keys, the inbox.

Revision ID: federation_0001
Revises:
Create Date: 2025-01-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "federation_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("federation",)
# No foreign key into core's tables: the branch stands on its own.
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "federation_peers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("base_url", sa.String(length=500), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("protocol_version", sa.String(length=20), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("keys_fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("catalog_pull_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federation_peers")),
        sa.UniqueConstraint("base_url", name=op.f("uq_federation_peers_base_url")),
        sa.UniqueConstraint("public_id", name=op.f("uq_federation_peers_public_id")),
    )
    op.create_table(
        "federation_peer_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("peer_id", sa.Integer(), nullable=False),
        sa.Column("kid", sa.String(length=700), nullable=False),
        sa.Column("alg", sa.String(length=20), nullable=False),
        sa.Column("jwk", sa.JSON(), nullable=False),
        sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["peer_id"],
            ["federation_peers.id"],
            name=op.f("fk_federation_peer_keys_peer_id_federation_peers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federation_peer_keys")),
        sa.UniqueConstraint("kid", name=op.f("uq_federation_peer_keys_kid")),
    )
    op.create_index(
        op.f("ix_federation_peer_keys_peer_id"), "federation_peer_keys", ["peer_id"], unique=False
    )
    op.create_table(
        "federation_inbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("peer_id", sa.Integer(), nullable=False),
        sa.Column("activity_id", sa.String(length=500), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("activity", sa.JSON(), nullable=False),
        sa.Column("keyid", sa.String(length=700), nullable=False),
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["peer_id"],
            ["federation_peers.id"],
            name=op.f("fk_federation_inbox_peer_id_federation_peers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federation_inbox")),
        sa.UniqueConstraint(
            "peer_id", "activity_id", name=op.f("uq_federation_inbox_peer_id_activity_id")
        ),
        sa.UniqueConstraint("public_id", name=op.f("uq_federation_inbox_public_id")),
    )
    op.create_index(
        "ix_federation_inbox_state_received_at",
        "federation_inbox",
        ["state", "received_at"],
        unique=False,
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_federation_inbox_state_received_at", table_name="federation_inbox")
    op.drop_table("federation_inbox")
    op.drop_index(op.f("ix_federation_peer_keys_peer_id"), table_name="federation_peer_keys")
    op.drop_table("federation_peer_keys")
    op.drop_table("federation_peers")
