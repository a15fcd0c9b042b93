"""Jobs: an index on (state, id) for the operators' lists and counts by state.

The Jobs page and ``trivium jobs list --state`` ask for the newest jobs of
one state, and the overview counts jobs by state; without it both read the
whole table, which holds a week of finished jobs by default.

Revision ID: core_0007
Revises: core_0006
Create Date: 2026-11-22 01:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "core_0007"
down_revision: str | Sequence[str] | None = "core_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_state_id", "jobs", ["state", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_id", table_name="jobs")
