"""``trivium catalog reindex``, run in-process with click's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from click.testing import Result
from sqlalchemy import select

from core import catalog
from core import courses
from core import create_app
from core.catalog import EntryData
from core.cli import cli
from core.db import get_db
from core.models import CatalogEntry
from core.models import User
from tests.test_migrations import database_url  # noqa: F401  (fixture)

ENV = {"TRIVIUM_INSTANCE_PATH": None, "TRIVIUM_ACCOUNTS_HASH_PROFILE": "cheapest"}


def run(*args: str) -> Result:
    return CliRunner(env=ENV).invoke(cli, list(args), catch_exceptions=False)


def seed(path: Path) -> None:
    """Two public courses, a private one and a peer's entry."""
    app = create_app(path)
    try:
        with app.app_context(), get_db(app).session() as sess:
            owner = User(email="o@example.org", display_name="O", can_create_courses=True)
            sess.add(owner)
            sess.flush()
            for title, visibility in [
                ("Federated geology", "federated"),
                ("Instance geology", "instance"),
                ("Private geology", "private"),
            ]:
                course = courses.create_course(
                    sess, owner, {"title": title, "visibility": visibility}
                )
                courses.change_status(sess, owner, course, "publish")
            catalog.apply_changes(
                sess, "peer-a", [EntryData("p1", "Peer geology", institution="Peer U")]
            )
    finally:
        get_db(app).dispose()


def institutions(path: Path) -> dict[str, str]:
    app = create_app(path)
    try:
        with get_db(app).sessions() as sess:
            rows = sess.execute(
                select(CatalogEntry.title, CatalogEntry.institution).where(
                    CatalogEntry.deleted.is_(False)
                )
            )
            return {title: institution for title, institution in rows}
    finally:
        get_db(app).dispose()


def test_catalog_reindex_brings_local_entries_in_line_with_the_instance(
    tmp_path: Path,
    database_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRIVIUM_DATABASE_URL", database_url)
    path = tmp_path / "inst"
    assert run("init", str(path), "--name", "Old U").exit_code == 0
    assert run("--instance", str(path), "db", "upgrade").exit_code == 0
    seed(path)
    assert institutions(path) == {
        "Federated geology": "Old U",
        "Instance geology": "Old U",
        "Peer geology": "Peer U",
    }

    # The instance is renamed: its courses' entries still carry the old name.
    settings = path / "instance.toml"
    settings.write_text(settings.read_text().replace("'Old U'", "'New U'"))
    result = run("--instance", str(path), "catalog", "reindex")
    assert result.exit_code == 0, result.output
    assert "2 entries changed; 2 of its courses and 3 entries in all" in result.output
    assert institutions(path) == {
        "Federated geology": "New U",
        "Instance geology": "New U",
        "Peer geology": "Peer U",
    }

    again = run("--instance", str(path), "catalog", "reindex", "--optimize")
    assert again.exit_code == 0, again.output
    assert "0 entries changed; 2 of its courses and 3 entries in all" in again.output
    app = create_app(path)
    try:
        sqlite = get_db(app).is_sqlite
        if sqlite:
            assert "Optimized the full-text index." in again.output
            with get_db(app).engine.begin() as conn:
                # Raises if the index and the entries disagree.
                conn.execute(
                    sa.text(
                        "INSERT INTO catalog_entries_fts(catalog_entries_fts, rank) "
                        "VALUES ('integrity-check', 1)"
                    )
                )
        else:
            assert "Nothing to optimize" in again.output
        with app.app_context(), get_db(app).sessions() as sess:
            found = catalog.search(sess, "geology")
            assert sorted(hit.title for hit in found.entries) == [
                "Federated geology",
                "Instance geology",
                "Peer geology",
            ]
    finally:
        get_db(app).dispose()


def test_catalog_reindex_needs_an_instance(tmp_path: Path) -> None:
    result = CliRunner(env=ENV).invoke(cli, ["catalog", "reindex"])
    assert result.exit_code == 2
    assert "no instance" in result.output
    result = run("--instance", str(tmp_path / "missing"), "catalog", "reindex")
    assert result.exit_code == 1
    assert "no instance.toml" in result.output
    assert not (tmp_path / "missing").exists()
