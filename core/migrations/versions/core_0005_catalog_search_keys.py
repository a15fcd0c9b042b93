"""Catalog search on PostgreSQL: the GIN index keys each word by its entry's id bucket.

A search reads its newest matches (at most 2,001).  The index on
``search_vector`` hands out every match of the words, in no useful order, so
a broad prefix (tens of thousands of matches in a million entries) either
read all of them or walked the table down from the newest entry: 50 to 300
ms.  The new index keys each word of an entry as ``<bucket>|<word>``, the
bucket being ``id >> 15``, with the entry's filter values
(``<bucket>|=<code><value>``) beside them, so a search asks for the matches
of the newest buckets first and reads no others.  It replaces the index on
``search_vector``; the column itself is unchanged.  SQLite (FTS5) is
unchanged.

Building the index reads the whole table and blocks writes to it (reads go
on): about 35 seconds per million entries on the 2-core reference machine.

Revision ID: core_0005
Revises: core_0004
Create Date: 2026-11-21 22:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "core_0005"
down_revision: str | Sequence[str] | None = "core_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same statements as core.catalog's (a revision never imports application code).
KEYS_FUNCTION = """\
CREATE OR REPLACE FUNCTION catalog_search_keys(
    doc tsvector, bucket integer, language text, subject text, level text, institution text
) RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT array_to_tsvector(ARRAY(
    SELECT bucket::text || '|' || left(lexeme, 256) FROM unnest(doc)
    UNION ALL
    SELECT bucket::text || '|=' || facet FROM unnest(ARRAY[
        'l' || lower(coalesce(language, '')), 's' || lower(coalesce(subject, '')),
        'v' || lower(coalesce(level, '')), 'i' || lower(coalesce(institution, ''))
    ]) AS facet
))
$$"""
KEYS = "catalog_search_keys(search_vector, id >> 15, language, subject, level, institution)"


def upgrade() -> None:
    """Apply this revision."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(KEYS_FUNCTION)
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_catalog_entries_keys ON catalog_entries "
        f"USING gin (({KEYS})) WITH (gin_pending_list_limit = 256)"
    )
    op.execute("DROP INDEX IF EXISTS ix_catalog_entries_vector")


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_catalog_entries_vector ON catalog_entries "
        "USING gin (search_vector)"
    )
    op.execute("DROP INDEX IF EXISTS ix_catalog_entries_keys")
    op.execute(
        "DROP FUNCTION IF EXISTS catalog_search_keys(tsvector, integer, text, text, text, text)"
    )
