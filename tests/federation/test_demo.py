"""The demo network (``python -m federation.demo``): instances prepared once, each its own."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func
from sqlalchemy import select

from core import create_app
from core.db import get_db
from core.models import CatalogEntry
from core.models import Course
from federation.demo import NETWORK
from federation.demo import demo_network


def test_the_network_is_prepared_once_with_courses_of_its_own(tmp_path: Path) -> None:
    runner = CliRunner()
    for _ in range(2):  # a second run adds nothing
        result = runner.invoke(
            demo_network, ["--root", str(tmp_path), "--count", "2", "--port", "18901", "--no-serve"]
        )
        assert result.exit_code == 0, result.output
    for n, peer in enumerate(NETWORK[:2]):
        app = create_app(tmp_path / peer.slug, {"jobs": {"embedded_worker": False}})
        try:
            settings = app.extensions["trivium.settings"]
            assert settings.instance.name == peer.name
            assert settings.instance.base_url == f"http://127.0.0.1:{18901 + n}"
            with get_db(app).sessions() as sess:
                titles = set(sess.scalars(select(Course.title)))
                assert {title for title, *_ in peer.courses} <= titles
                shared = sess.scalar(
                    select(func.count())
                    .select_from(CatalogEntry)
                    .where(CatalogEntry.source == "", CatalogEntry.federated)
                )
                assert shared == len(peer.courses)
                institutions = set(sess.scalars(select(CatalogEntry.institution)))
                assert institutions == {peer.name}
        finally:
            get_db(app).dispose()
