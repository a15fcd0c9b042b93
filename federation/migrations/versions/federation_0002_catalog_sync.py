"""Catalog sync state per peer: cursor, ETag, schedule and failures.

Revision ID: federation_0002
Revises: federation_0001
Create Date: 2026-11-21 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "federation_0002"
down_revision: str | Sequence[str] | None = "federation_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("federation_peers") as batch:
        batch.add_column(
            sa.Column("catalog_cursor", sa.String(length=20), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("catalog_etag", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("catalog_synced_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("catalog_next_sync_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column("catalog_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("catalog_error", sa.Text(), nullable=True))
    with op.batch_alter_table("federation_peers") as batch:
        batch.alter_column("catalog_cursor", server_default=None)
        batch.alter_column("catalog_failures", server_default=None)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("federation_peers") as batch:
        for name in (
            "catalog_error",
            "catalog_failures",
            "catalog_next_sync_at",
            "catalog_synced_at",
            "catalog_etag",
            "catalog_cursor",
        ):
            batch.drop_column(name)
