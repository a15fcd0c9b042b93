"""The ``quiz`` Alembic branch creates exactly the tables the models declare."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask

from core import schema
from core.db import Base
from core.db import get_db
from plugins.quiz import models
from tests.test_migrations import CORE_TABLES
from tests.test_migrations import database_url  # noqa: F401  (fixture)
from tests.test_migrations import make_app

QUIZ_TABLES = {
    m.class_.__tablename__ for m in Base.registry.mappers if m.class_.__module__ == models.__name__
}


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> Iterator[Flask]:  # noqa: F811
    application = make_app(tmp_path, database_url)
    yield application
    get_db(application).dispose()


def only_quiz(obj: object, name: str | None, type_: str, *_: object) -> bool:
    """Compare the quiz tables and what belongs to them (core's own test covers core)."""
    if type_ == "table":
        return name in QUIZ_TABLES
    table = getattr(obj, "table", None)
    return table is None or table.name in QUIZ_TABLES


def test_the_quiz_branch_matches_the_models(app: Flask) -> None:
    assert {"quiz_questions", "quiz_attempts", "quiz_answers"} == QUIZ_TABLES
    schema.upgrade(app)
    assert "quiz_0001" in schema.current(app)
    with get_db(app).engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) >= QUIZ_TABLES
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": only_quiz}
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_the_quiz_branch_downgrades_on_its_own(app: Flask) -> None:
    schema.upgrade(app)
    schema.downgrade(app, "quiz@base")
    assert "quiz_0001" not in schema.current(app)
    with get_db(app).engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    assert not names & QUIZ_TABLES
    assert names >= CORE_TABLES
