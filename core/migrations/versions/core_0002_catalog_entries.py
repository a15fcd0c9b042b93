"""Catalog search index: catalog_entries with SQLite FTS5 / PostgreSQL full text.

Revision ID: core_0002
Revises: core_0001
Create Date: 2026-11-21 09:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "core_0002"
down_revision: str | Sequence[str] | None = "core_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same statements as core.catalog's (a revision never imports application code).
PG_VECTOR = (
    "setweight(to_tsvector('simple'::regconfig, coalesce(title, '')), 'A') || "
    "setweight(to_tsvector('simple'::regconfig, coalesce(summary, '') || ' ' || "
    "coalesce(subject, '') || ' ' || coalesce(institution, '')), 'B') || "
    "setweight(to_tsvector('simple'::regconfig, coalesce(description, '')), 'C')"
)
SQLITE_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS catalog_entries_fts USING fts5("
    "title, summary, description, subject, institution, "
    "content='catalog_entries', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2', prefix='2 3 4')",
    "CREATE TRIGGER IF NOT EXISTS catalog_entries_fts_ai AFTER INSERT ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(rowid, title, summary, description, subject, institution) "
    "VALUES (new.id, new.title, new.summary, new.description, new.subject, new.institution); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS catalog_entries_fts_ad AFTER DELETE ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(catalog_entries_fts, rowid, title, summary, description, "
    "subject, institution) VALUES ('delete', old.id, old.title, old.summary, old.description, "
    "old.subject, old.institution); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS catalog_entries_fts_au AFTER UPDATE OF title, summary, "
    "description, subject, institution ON catalog_entries BEGIN "
    "INSERT INTO catalog_entries_fts(catalog_entries_fts, rowid, title, summary, description, "
    "subject, institution) VALUES ('delete', old.id, old.title, old.summary, old.description, "
    "old.subject, old.institution); "
    "INSERT INTO catalog_entries_fts(rowid, title, summary, description, subject, institution) "
    "VALUES (new.id, new.title, new.summary, new.description, new.subject, new.institution); "
    "END",
)


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "catalog_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=500), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("federated", sa.Boolean(), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("summary", sa.String(length=1000), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("language", sa.String(length=35), nullable=False),
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column("level", sa.String(length=50), nullable=False),
        sa.Column("institution", sa.String(length=200), nullable=False),
        sa.Column("url", sa.String(length=1000), nullable=False),
        sa.Column("image", sa.String(length=1000), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_entries")),
        sa.UniqueConstraint(
            "source", "external_id", name=op.f("uq_catalog_entries_source_external_id")
        ),
    )
    op.create_index(
        "ix_catalog_entries_source_seq", "catalog_entries", ["source", "seq"], unique=False
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX IF NOT EXISTS ix_catalog_entries_search ON catalog_entries "
            f"USING gin (({PG_VECTOR}))"
        )
    else:
        for statement in SQLITE_DDL:
            op.execute(statement)
    # Index the public courses that exist already (the institution, the
    # instance's name, is filled in when a course next changes; until then
    # search shows the instance's name for it).
    op.execute(
        "INSERT INTO catalog_entries (source, external_id, seq, deleted, federated, shared, "
        "title, summary, description, language, subject, level, institution, url, image, "
        "data, updated_at) "
        "SELECT '', public_id, id, false, visibility = 'federated', visibility = 'federated', "
        "title, summary, description, language, subject, level, '', '/courses/' || public_id, "
        "'', '{}', updated_at FROM courses "
        "WHERE status = 'published' AND visibility IN ('instance', 'federated')"
    )


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_catalog_entries_search")
    else:
        op.execute("DROP TABLE IF EXISTS catalog_entries_fts")
    op.drop_index("ix_catalog_entries_source_seq", table_name="catalog_entries")
    op.drop_table("catalog_entries")
