"""Accounts can be erased; user rows carry a version; the audit log has indexes by actor and target.

``users.erased_at`` records when an account was erased (:mod:`core.erasure`).
``users.row_version`` is the row's version for SQLAlchemy, moved by an
erasure only: a change written from a copy read before the erasure (a
request racing it) is refused instead of restoring what the erasure removed.
A person's data export and an erasure look up the audit entries a person
made or that were about them; without the indexes on ``actor_id`` and
``target`` both read the whole log, as does the administration's audit page
filtered by either.

Revision ID: core_0008
Revises: core_0007
Create Date: 2026-11-22 03:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "core_0008"
down_revision: str | Sequence[str] | None = "core_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("row_version", sa.Integer(), nullable=False, server_default="1"))
    op.create_index("ix_audit_log_actor_id", "audit_log", ["actor_id"])
    op.create_index("ix_audit_log_target", "audit_log", ["target"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_target", table_name="audit_log")
    op.drop_index("ix_audit_log_actor_id", table_name="audit_log")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("row_version")
        batch.drop_column("erased_at")
