"""The ``federation`` Alembic branch: it creates exactly the tables the models declare."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask

from core import schema
from core.db import Base
from core.db import get_db
from federation import models
from federation.plugin import MIGRATIONS
from tests.test_migrations import CORE_TABLES
from tests.test_migrations import FULL_TEXT_COLUMNS
from tests.test_migrations import FULL_TEXT_INDEXES
from tests.test_migrations import database_url  # noqa: F401  (the fixture)
from tests.test_migrations import make_app
from tests.test_migrations import table_names

FEDERATION_TABLES = {
    m.class_.__tablename__ for m in Base.registry.mappers if m.class_.__module__ == models.__name__
}


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> Iterator[Flask]:  # noqa: F811
    application = make_app(tmp_path, database_url)
    yield application
    get_db(application).dispose()


def core_and_federation(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Compare core's and federation's tables (other tests may add models to Base)."""
    if type_ == "table":
        return name in CORE_TABLES | FEDERATION_TABLES
    # core.catalog's dialect-specific full-text machinery (tests/test_migrations.py)
    if type_ == "column":
        return name not in FULL_TEXT_COLUMNS
    return not (type_ == "index" and name in FULL_TEXT_INDEXES)


def test_the_branch_is_registered() -> None:
    assert {"federation_peers", "federation_peer_keys", "federation_inbox"} == FEDERATION_TABLES
    assert (MIGRATIONS / "federation_0001_peers_inbox.py").is_file()


def test_upgrade_heads_matches_the_models(app: Flask) -> None:
    assert str(MIGRATIONS) in schema.version_locations(app)

    schema.upgrade(app)

    assert "federation_0003" in set(schema.current(app))
    assert any(rev.startswith("core_") for rev in schema.current(app))
    assert schema.current(app) == schema.heads(app)
    assert schema.describe(app, "federation_0003") == "federation_0003 [federation] (head)"
    assert table_names(app) >= FEDERATION_TABLES
    with get_db(app).engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": core_and_federation}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_the_branch_downgrades_on_its_own(app: Flask) -> None:
    schema.upgrade(app)

    schema.downgrade(app, "federation@base")

    assert not FEDERATION_TABLES & table_names(app)
    assert "users" in table_names(app)
    assert not {"federation_0001", "federation_0002", "federation_0003"} & set(schema.current(app))
    schema.upgrade(app)
    assert table_names(app) >= FEDERATION_TABLES
    schema.downgrade(app, "base")
    assert table_names(app) <= {"alembic_version"}
