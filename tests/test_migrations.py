"""Alembic migrations: core's branch matches the models; plugins add their own branches."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask

from core import create_app
from core import hookimpl
from core import models
from core import schema
from core.db import Base
from core.db import get_db
from tests.conftest import PG_URL
from tests.conftest import base_config

#: The newest revision of core's branch.
CORE_HEAD = "core_0008"

CORE_TABLES = {
    m.class_.__tablename__ for m in Base.registry.mappers if m.class_.__module__ == models.__name__
}

PLUGIN_REVISION = '''\
"""tmpnotes: one table of a temporary plugin."""

import sqlalchemy as sa
from alembic import op

revision = "tmpnotes_0001"
down_revision = None
branch_labels = ("tmpnotes",)
depends_on = "core_0001"


def upgrade():
    op.create_table(
        "tmpnotes_notes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE")),
        sa.Column("text", sa.Text, nullable=False),
    )


def downgrade():
    op.drop_table("tmpnotes_notes")
'''


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not PG_URL, reason="TRIVIUM_TEST_DATABASE_URL not set"),
            ],
        ),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a PostgreSQL schema of this xdist worker."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mig.db'}"
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"trivium_mig_{worker}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


def make_app(tmp_path: Path, url: str, **plugins: object) -> Flask:
    config: dict[str, Any] = base_config(tmp_path)
    config["database"] = {"url": url}
    return create_app(tmp_path, config, extra_plugins=plugins)


def table_names(app: Flask) -> set[str]:
    with get_db(app).engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def with_migrations(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Compare every table some branch creates (other test modules may add models to Base)."""
    if type_ == "table":
        return name in CORE_TABLES or name in BRANCH_TABLES
    if type_ == "column":
        return name not in FULL_TEXT_COLUMNS
    return not (type_ == "index" and name in FULL_TEXT_INDEXES)


#: Dialect-specific full-text machinery core.catalog creates with DDL (tests/test_catalog.py
#: searches a migrated database to prove the revision creates it).
FULL_TEXT_INDEXES = {
    "ix_catalog_entries_search",
    "ix_catalog_entries_vector",
    "ix_catalog_entries_keys",
}
FULL_TEXT_COLUMNS = {"search_vector"}


#: Tables of the built-in plugins that ship Alembic branches.
BRANCH_TABLES = {"federation_peers", "federation_peer_keys", "federation_inbox"}


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> Iterator[Flask]:
    application = make_app(tmp_path, database_url)
    yield application
    get_db(application).dispose()


def test_upgrade_matches_the_models(app: Flask) -> None:
    schema.upgrade(app)
    assert CORE_HEAD in schema.current(app)
    assert schema.current(app) == schema.heads(app)
    assert CORE_TABLES | BRANCH_TABLES | {"alembic_version"} <= table_names(app)
    with get_db(app).engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": with_migrations}
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent_and_downgrade_to_base_works(app: Flask) -> None:
    schema.upgrade(app)
    schema.upgrade(app)
    assert schema.current(app) == schema.heads(app)
    assert CORE_HEAD in schema.current(app)
    schema.downgrade(app, "base")
    assert schema.current(app) == []
    assert table_names(app) <= {"alembic_version"}


def test_core_0006_gives_existing_outbox_mail_a_state_and_an_id(app: Flask) -> None:
    schema.upgrade(app, "core_0005")
    outbox = sa.table(
        "outbox_mail",
        sa.column("id"),
        sa.column("to"),
        sa.column("subject"),
        sa.column("body"),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("sent_at", sa.DateTime(timezone=True)),
    )
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with get_db(app).engine.begin() as conn:
        for n, sent in enumerate((True, False, False)):
            conn.execute(
                sa.insert(outbox).values(
                    id=n + 1,
                    to=f"m{n}@uni.example",
                    subject="s",
                    body="b",
                    created_at=now,
                    sent_at=now if sent else None,
                )
            )

        # mail 2 waits for its delivery job, mail 3's failed; mail 4 was kept only
        conn.execute(
            sa.insert(outbox).values(
                id=4, to="m3@uni.example", subject="s", body="b", created_at=now, sent_at=None
            )
        )
        jobs = sa.table(
            "jobs",
            *(sa.column(c) for c in ("message_id", "queue", "actor", "message", "state")),
            sa.column("attempts"),
            sa.column("error"),
            *(
                sa.column(c, sa.DateTime(timezone=True))
                for c in ("available_at", "created_at", "updated_at")
            ),
        )
        for n, (mail_id, state, error) in enumerate(
            ((2, "queued", ""), (3, "failed", "Traceback ...\nMailRefused: 550 no such user\n"))
        ):
            message = {"queue_name": "mail", "actor_name": "core.deliver_mail", "args": [mail_id]}
            conn.execute(
                sa.insert(jobs).values(
                    message_id=f"m{n}",
                    queue="mail",
                    actor="core.deliver_mail",
                    message=json.dumps(message),
                    state=state,
                    attempts=1,
                    error=error,
                    available_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )

    schema.upgrade(app)

    with get_db(app).engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT id, state, attempts, last_error, public_id FROM outbox_mail ORDER BY id"
            )
        ).all()
    assert [(r.id, r.state, r.attempts, r.last_error) for r in rows] == [
        (1, "sent", 0, ""),
        (2, "queued", 0, ""),
        (3, "failed", 0, "MailRefused: 550 no such user"),
        (4, "outbox", 0, ""),
    ]
    ids = [r.public_id for r in rows]
    assert len(set(ids)) == 4 and all(len(i) == 32 for i in ids)

    schema.downgrade(app, "core_0005")
    with get_db(app).engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT id, sent_at IS NOT NULL FROM outbox_mail")).all()
        columns = {c["name"] for c in sa.inspect(conn).get_columns("outbox_mail")}
    assert sorted((r[0], bool(r[1])) for r in kept) == [
        (1, True),
        (2, False),
        (3, False),
        (4, False),
    ]
    assert "state" not in columns and "public_id" not in columns


def test_revisions_render_core_types_as_plain_sqlalchemy() -> None:
    text = (schema.CORE_VERSIONS / "core_0001_core_tables.py").read_text()
    assert "core.db" not in text
    assert "sa.DateTime(timezone=True)" in text
    assert 'branch_labels: str | Sequence[str] | None = ("core",)' in text


def test_hook_register_migrations(tmp_path: Path, database_url: str) -> None:
    folder = tmp_path / "tmpnotes_migrations"
    folder.mkdir()
    (folder / "tmpnotes_0001.py").write_text(textwrap.dedent(PLUGIN_REVISION))

    class TmpNotes:
        @hookimpl
        def register_migrations(self) -> list[str]:
            return [str(folder)]

    app = make_app(tmp_path, database_url, tmpnotes=TmpNotes())
    try:
        locations = schema.version_locations(app)
        assert locations[0] == str(schema.CORE_VERSIONS) and str(folder) in locations
        schema.upgrade(app)
        assert {"users", "tmpnotes_notes"} <= table_names(app)
        assert {CORE_HEAD, "tmpnotes_0001"} <= set(schema.heads(app))
        assert schema.describe(app, "tmpnotes_0001") == "tmpnotes_0001 [tmpnotes] (head)"

        schema.downgrade(app, "tmpnotes@base")
        assert "tmpnotes_notes" not in table_names(app)
        assert "users" in table_names(app)
        assert "tmpnotes_0001" not in schema.current(app)
        assert CORE_HEAD in schema.current(app)

        schema.upgrade(app)
        schema.downgrade(app, "base")
        assert table_names(app) <= {"alembic_version"}
    finally:
        get_db(app).dispose()


def test_a_missing_plugin_folder_is_refused_naming_the_plugin(tmp_path: Path) -> None:
    class Broken:
        @hookimpl
        def register_migrations(self) -> list[str]:
            return [str(tmp_path / "nowhere")]

    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", broken=Broken())
    with pytest.raises(schema.MigrationsFolderMissing, match="'broken'"):
        schema.upgrade(app)
