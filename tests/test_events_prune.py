"""Retention of learning events: :func:`core.events.prune` and ``trivium events prune``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from click.testing import Result
from flask import Flask
from sqlalchemy import func
from sqlalchemy import select

from core import create_app
from core import events
from core.cli import cli
from core.db import get_db
from core.events import VERBS
from core.models import AuditLog
from core.models import Event
from tests.conftest import snapshot

NOW = datetime.now(UTC)


def add_events(app: Flask, rows: list[tuple[str, int]]) -> None:
    """Statements of ``(verb short name, age in days)``, oldest first as a server writes them."""
    with get_db(app).session() as sess:
        for n, (verb, days) in enumerate(rows):
            sess.add(
                Event(
                    public_id=f"{n:032x}",
                    timestamp=NOW - timedelta(days=days),
                    verb=VERBS[verb],
                    object_id=f"urn:item:{n}",
                    statement={"verb": {"id": VERBS[verb]}},
                )
            )


def stored(app: Flask) -> list[tuple[str, int]]:
    with get_db(app).session() as sess:
        rows = sess.execute(select(Event.verb, Event.timestamp).order_by(Event.id)).all()
    return [(verb.rsplit("/", 1)[1], (NOW - ts.replace(tzinfo=UTC)).days) for verb, ts in rows]


WORLD = [
    ("progressed", 400),
    ("completed", 390),
    ("progressed", 200),
    ("progressed", 100),
    ("passed", 95),
    ("progressed", 10),
    ("progressed", 1),
]


@pytest.mark.parametrize("batch", [1, 2, 5000])
def test_old_heartbeat_statements_go_and_everything_else_stays(app: Flask, batch: int) -> None:
    add_events(app, WORLD)
    before = NOW - timedelta(days=90)
    assert events.prune(get_db(app), before, dry_run=True) == 3
    assert stored(app) == [(v, d) for v, d in WORLD]  # a dry run deletes nothing
    assert events.prune(get_db(app), before, batch=batch) == 3
    assert stored(app) == [
        ("completed", 390),
        ("passed", 95),
        ("progressed", 10),
        ("progressed", 1),
    ]
    assert events.prune(get_db(app), before, batch=batch) == 0  # nothing left to do


def test_other_verbs_by_short_name_or_iri(app: Flask) -> None:
    add_events(app, WORLD)
    before = NOW - timedelta(days=90)
    removed = events.prune(get_db(app), before, ["completed", VERBS["passed"]])
    assert removed == 2
    assert [v for v, _ in stored(app)].count("progressed") == 5
    with pytest.raises(events.UnknownVerb):
        events.prune(get_db(app), before, ["not a verb"])


def test_an_empty_table_prunes_nothing(app: Flask) -> None:
    assert events.prune(get_db(app), NOW, dry_run=True) == 0
    assert events.prune(get_db(app), NOW) == 0


# ------------------------------------------------------------------ trivium events prune

CLI_ENV = {"TRIVIUM_INSTANCE_PATH": None, "TRIVIUM_ACCOUNTS_HASH_PROFILE": "cheapest"}


def run(path: Path, *args: str, answer: str | None = None) -> Result:
    return CliRunner(env=CLI_ENV).invoke(cli, ["--instance", str(path), *args], input=answer)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[tuple[Path, Flask]]:
    path = tmp_path / "uni"
    assert run(path, "init", str(path), "--name", "Uni U").exit_code == 0
    assert run(path, "db", "upgrade").exit_code == 0
    app = create_app(path)
    add_events(app, WORLD)
    yield path, app
    get_db(app).dispose()


def test_the_command_counts_asks_deletes_and_audits(instance: tuple[Path, Flask]) -> None:
    path, app = instance
    counted = run(path, "events", "prune", "--older-than", "90", "--dry-run")
    assert counted.exit_code == 0 and "3 statements" in counted.output
    before = snapshot(app)
    declined = run(path, "events", "prune", "--older-than", "90", answer="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert snapshot(app) == before

    done = run(path, "events", "prune", "--older-than", "90", "--yes")
    assert done.exit_code == 0, done.output
    assert "Deleted 3 statements" in done.output
    assert [v for v, _ in stored(app)] == ["completed", "passed", "progressed", "progressed"]
    with get_db(app).session() as sess:
        (detail,) = sess.scalars(
            select(AuditLog.detail).where(AuditLog.action == "events.prune")
        ).all()
    assert detail["removed"] == 3 and detail["via"] == "cli"
    assert detail["verbs"] == [VERBS["progressed"]]

    again = run(path, "events", "prune", "--older-than", "90", "--yes")
    assert again.exit_code == 0 and "Deleted 0 statements" in again.output
    asked = run(path, "events", "prune", "--older-than", "90")
    assert asked.exit_code == 0 and "No statements" in asked.output
    with get_db(app).session() as sess:  # runs that deleted nothing are not audited
        assert sess.scalar(select(func.count()).where(AuditLog.action == "events.prune")) == 1


def test_the_command_refuses_a_bad_verb_or_age(instance: tuple[Path, Flask]) -> None:
    path, app = instance
    before = snapshot(app)
    bad = run(path, "events", "prune", "--older-than", "90", "--verb", "not a verb", "--yes")
    assert bad.exit_code == 2 and "--verb" in bad.output
    zero = run(path, "events", "prune", "--older-than", "0", "--yes")
    assert zero.exit_code == 2
    missing = run(path, "events", "prune", "--yes")
    assert missing.exit_code == 2 and "--older-than" in missing.output
    assert snapshot(app) == before
    with get_db(app).session() as sess:
        assert not sess.scalar(select(func.count()).where(AuditLog.action == "events.prune"))


def test_a_heartbeat_written_late_is_judged_by_its_time_not_its_id(app: Flask) -> None:
    # a buffer writes an old heartbeat after a newer one: a higher id, an earlier time
    add_events(app, [("progressed", 400), ("progressed", 1), ("progressed", 300)])
    assert events.prune(get_db(app), NOW - timedelta(days=90), batch=5000) == 2
    assert stored(app) == [("progressed", 1)]  # inside the range of ids, kept by its time


def test_a_run_stopped_partway_is_audited_with_what_it_deleted(
    instance: tuple[Path, Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, app = instance
    monkeypatch.setattr(events, "PRUNE_BATCH", 1)
    real = events.prune

    def stops_after_one(*args: Any, **kwargs: Any) -> int:
        seen = kwargs.pop("done")
        calls = []

        def done(n: int) -> None:
            seen(n)
            calls.append(n)
            if len(calls) == 1:
                raise KeyboardInterrupt

        return real(*args, batch=1, done=done, **kwargs)

    monkeypatch.setattr(events, "prune", stops_after_one)
    result = run(path, "events", "prune", "--older-than", "90", "--yes")
    assert result.exit_code != 0
    with get_db(app).session() as sess:
        (detail,) = sess.scalars(
            select(AuditLog.detail).where(AuditLog.action == "events.prune")
        ).all()
    assert detail["interrupted"] is True and detail["removed"] == 1
    assert len(stored(app)) == len(WORLD) - 1
