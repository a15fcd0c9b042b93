"""Catalog search on PostgreSQL: the weighted document as a stored column.

The GIN index was on an expression, so every row a search checked or ranked
outside the index had its document tokenised again (about a second for a
broad prefix in a million entries, when the planner scans the newest rows
first).  A generated, stored ``tsvector`` column holds it once per row; the
index is on that column.  SQLite (FTS5) is unchanged.

Adding the column rewrites the table under an exclusive lock: about a minute
per million entries on the 2-core reference machine, during which catalog
reads and syncs wait.  Run it when the index is large in a quiet hour.

Revision ID: core_0004
Revises: core_0003
Create Date: 2026-11-21 21:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "core_0004"
down_revision: str | Sequence[str] | None = "core_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same document as core.catalog's (a revision never imports application code).
PG_VECTOR = (
    "setweight(to_tsvector('simple'::regconfig, coalesce(title, '')), 'A') || "
    "setweight(to_tsvector('simple'::regconfig, coalesce(summary, '') || ' ' || "
    "coalesce(subject, '') || ' ' || coalesce(institution, '')), 'B') || "
    "setweight(to_tsvector('simple'::regconfig, coalesce(description, '')), 'C')"
)


def upgrade() -> None:
    """Apply this revision."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "ALTER TABLE catalog_entries ADD COLUMN IF NOT EXISTS search_vector tsvector "
        f"GENERATED ALWAYS AS ({PG_VECTOR}) STORED"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_catalog_entries_vector ON catalog_entries "
        "USING gin (search_vector)"
    )
    op.execute("DROP INDEX IF EXISTS ix_catalog_entries_search")


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_catalog_entries_search ON catalog_entries "
        f"USING gin (({PG_VECTOR}))"
    )
    op.execute("DROP INDEX IF EXISTS ix_catalog_entries_vector")
    op.execute("ALTER TABLE catalog_entries DROP COLUMN IF EXISTS search_vector")
