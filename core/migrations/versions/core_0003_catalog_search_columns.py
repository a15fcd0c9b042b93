"""Catalog search: SQLite's full-text table also indexes language and level; catalog_state.

Filters on language and level (like subject and institution already) are
then answered by the full-text index together with the words, and prefixes
of five or six characters read their own prefix index.  PostgreSQL's index
is unchanged.  ``catalog_state`` holds the index's version, under which
search caches facet counts.

Revision ID: core_0003
Revises: core_0002
Create Date: 2026-11-21 10:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "core_0003"
down_revision: str | Sequence[str] | None = "core_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGERS = ("catalog_entries_fts_ai", "catalog_entries_fts_ad", "catalog_entries_fts_au")

# The same statements as core.catalog's (a revision never imports application code).
NEW_DDL = (
    "CREATE VIRTUAL TABLE catalog_entries_fts USING fts5("
    "title, summary, description, subject, institution, language, level, "
    "content='catalog_entries', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2', prefix='2 3 4 5 6')",
    "CREATE TRIGGER catalog_entries_fts_ai AFTER INSERT ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(rowid, title, summary, description, subject, institution, "
    "language, level) VALUES (new.id, new.title, new.summary, new.description, new.subject, "
    "new.institution, new.language, new.level); "
    "END",
    "CREATE TRIGGER catalog_entries_fts_ad AFTER DELETE ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(catalog_entries_fts, rowid, title, summary, description, "
    "subject, institution, language, level) VALUES ('delete', old.id, old.title, old.summary, "
    "old.description, old.subject, old.institution, old.language, old.level); "
    "END",
    "CREATE TRIGGER catalog_entries_fts_au AFTER UPDATE OF title, summary, "
    "description, subject, institution, language, level ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(catalog_entries_fts, rowid, title, summary, description, "
    "subject, institution, language, level) VALUES ('delete', old.id, old.title, old.summary, "
    "old.description, old.subject, old.institution, old.language, old.level); "
    "INSERT INTO catalog_entries_fts(rowid, title, summary, description, subject, institution, "
    "language, level) VALUES (new.id, new.title, new.summary, new.description, new.subject, "
    "new.institution, new.language, new.level); "
    "END",
)
# core_0002's definition, for the downgrade.
OLD_DDL = (
    "CREATE VIRTUAL TABLE catalog_entries_fts USING fts5("
    "title, summary, description, subject, institution, "
    "content='catalog_entries', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2', prefix='2 3 4')",
    "CREATE TRIGGER catalog_entries_fts_ai AFTER INSERT ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(rowid, title, summary, description, subject, institution) "
    "VALUES (new.id, new.title, new.summary, new.description, new.subject, new.institution); "
    "END",
    "CREATE TRIGGER catalog_entries_fts_ad AFTER DELETE ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(catalog_entries_fts, rowid, title, summary, description, "
    "subject, institution) VALUES ('delete', old.id, old.title, old.summary, old.description, "
    "old.subject, old.institution); "
    "END",
    "CREATE TRIGGER catalog_entries_fts_au AFTER UPDATE OF title, summary, "
    "description, subject, institution ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(catalog_entries_fts, rowid, title, summary, description, "
    "subject, institution) VALUES ('delete', old.id, old.title, old.summary, old.description, "
    "old.subject, old.institution); "
    "INSERT INTO catalog_entries_fts(rowid, title, summary, description, subject, institution) "
    "VALUES (new.id, new.title, new.summary, new.description, new.subject, new.institution); "
    "END",
)


def _rebuild(statements: Sequence[str]) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for trigger in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS catalog_entries_fts")
    for statement in statements:
        op.execute(statement)
    # Index what the table holds now (an external-content table reads it).
    op.execute("INSERT INTO catalog_entries_fts(catalog_entries_fts) VALUES ('rebuild')")


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "catalog_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_state")),
    )
    op.execute("INSERT INTO catalog_state (id, version) VALUES (1, '0')")
    _rebuild(NEW_DDL)


def downgrade() -> None:
    """Revert this revision."""
    _rebuild(OLD_DDL)
    op.drop_table("catalog_state")
