"""Catalog sync lease per peer: one sync run of a peer at a time.

Revision ID: federation_0003
Revises: federation_0002
Create Date: 2026-11-21 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "federation_0003"
down_revision: str | Sequence[str] | None = "federation_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("federation_peers") as batch:
        batch.add_column(
            sa.Column("catalog_lease_until", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("federation_peers") as batch:
        batch.drop_column("catalog_lease_until")
