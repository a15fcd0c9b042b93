"""The ``trivium`` command, run in-process with click's CliRunner."""

from __future__ import annotations

import stat
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from click.testing import Result
from flask import current_app
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import update

from core import create_app
from core import hookimpl
from core.cli import cli
from core.db import get_db
from core.models import AuditLog
from core.models import Course
from core.models import Enrolment
from core.models import Identity
from core.models import Item
from core.models import Job
from core.models import Progress
from core.models import User
from core.tasks import enqueue
from core.tasks import get_jobs

ENV = {"TRIVIUM_INSTANCE_PATH": None, "TRIVIUM_ACCOUNTS_HASH_PROFILE": "cheapest"}


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner(env=ENV).invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    """An initialised, migrated instance folder."""
    path = tmp_path / "inst"
    assert run("init", str(path), "--name", "CLI U").exit_code == 0
    assert run("--instance", str(path), "db", "upgrade").exit_code == 0
    return path


def count(path: Path, model: Any) -> int:
    app = create_app(path)
    try:
        with get_db(app).sessions() as sess:
            return int(sess.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        get_db(app).dispose()


# ---------------------------------------------------------------- init and db


def test_init_writes_the_settings_and_private_secrets(tmp_path: Path) -> None:
    path = tmp_path / "new"
    result = run("init", str(path), "--name", "New U", "--bind", "127.0.0.1:9000")

    assert result.exit_code == 0, result.output
    assert "instance.toml" in result.output
    settings = (path / "instance.toml").read_text()
    assert "name = 'New U'" in settings
    assert "base_url = 'http://127.0.0.1:9000'" in settings
    assert "bind = '127.0.0.1:9000'" in settings
    secrets = path / "secrets.toml"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert "secret_key" in secrets.read_text()


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "twice"
    run("init", str(path))
    key = (path / "secrets.toml").read_text()

    refused = run("init", str(path))
    assert refused.exit_code == 1
    assert "--force" in refused.output
    assert (path / "secrets.toml").read_text() == key

    assert run("init", str(path), "--force").exit_code == 0
    assert (path / "secrets.toml").read_text() != key


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    path = tmp_path / "db"
    run("init", str(path))
    assert "empty" in run("--instance", str(path), "db", "current").output

    upgraded = run("--instance", str(path), "db", "upgrade")

    assert upgraded.exit_code == 0, upgraded.output
    assert "core_0008" in upgraded.output
    current = run("--instance", str(path), "db", "current").output.splitlines()
    assert "core_0008 [core] (head)" in current
    assert count(path, User) == 0
    assert run("--instance", str(path), "db", "downgrade", "base").exit_code == 0
    assert "empty" in run("--instance", str(path), "db", "current").output


def test_commands_needing_an_instance_say_so(tmp_path: Path) -> None:
    result = CliRunner(env=ENV).invoke(cli, ["db", "current"])
    assert result.exit_code == 2
    assert "--instance" in result.output

    missing = run("--instance", str(tmp_path / "nowhere"), "db", "current")
    assert missing.exit_code == 1
    assert "trivium init" in missing.output


# ---------------------------------------------------------------- plugins


@click.command("hello")
@click.argument("who")
def hello(who: str) -> None:
    """A plugin's command: runs inside the instance's app context."""
    click.echo(f"hello {who} from {current_app.extensions['trivium.settings'].instance.name}")


class CliPlugin:
    """A temporary plugin loaded through a fake entry point."""

    @hookimpl
    def register_commands(self) -> list[click.Command]:
        return [hello]


cli_plugin = CliPlugin()


@pytest.fixture
def with_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    ep = metadata.EntryPoint(
        name="clitest", value="tests.test_cli:cli_plugin", group="trivium.plugins"
    )
    real = metadata.entry_points

    def entry_points(**params: Any) -> Any:
        if params.get("group") == "trivium.plugins":
            return [ep]
        return real(**params)

    monkeypatch.setattr("core.plugins.metadata.entry_points", entry_points)
    yield


def test_plugins_lists_every_plugin_with_its_hooks(instance: Path, with_plugin: None) -> None:
    result = run("--instance", str(instance), "plugins")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["name", "version", "builtin", "hooks"]
    rows = {line.split()[0]: line.split(maxsplit=3) for line in lines[1:]}
    assert rows["core.page"][2:] == ["yes", "register_content_types"]
    assert rows["clitest"][1:] == ["-", "no", "register_commands"]


def test_hook_register_commands(instance: Path, with_plugin: None) -> None:
    result = run("--instance", str(instance), "hello", "world")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "hello world from CLI U"

    listing = run("--instance", str(instance), "--help")
    assert "hello" in listing.output
    assert "hello" not in run("--help").output  # no instance, no plugin commands


# ---------------------------------------------------------------- users


def test_users_create_hashes_the_password_with_argon2id(instance: Path) -> None:
    result = run(
        "--instance",
        str(instance),
        "users",
        "create",
        "Boss@Example.org",
        "--admin",
        input="a-long-password\na-long-password\n",
    )

    assert result.exit_code == 0, result.output
    assert "administrator boss@example.org" in result.output
    app = create_app(instance)
    try:
        with get_db(app).sessions() as sess:
            user = sess.scalars(select(User)).one()
            audit = sess.scalars(select(AuditLog)).one()
            identity = sess.scalars(select(Identity)).one()
    finally:
        get_db(app).dispose()
    assert user.email == "boss@example.org"
    assert user.is_admin and user.can_create_courses
    assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
    assert "a-long-password" not in user.password_hash
    assert (audit.action, audit.target) == ("user.create", user.public_id)
    assert (identity.user_id, identity.provider, identity.subject) == (
        user.id,
        "local",
        "boss@example.org",
    )


def test_users_create_refuses_duplicates_and_short_passwords(instance: Path) -> None:
    args = ("--instance", str(instance), "users", "create")
    assert (
        run(*args, "t@example.org", "--creator", input="pass-word-1\npass-word-1\n").exit_code == 0
    )

    duplicate = run(*args, "T@example.org", input="pass-word-2\npass-word-2\n")
    assert duplicate.exit_code == 1
    assert "already exists" in duplicate.output

    short = run(*args, "s@example.org", input="short\nshort\n")
    assert short.exit_code == 2
    assert "at least 10 characters" in short.output
    assert count(instance, User) == 1


# ---------------------------------------------------------------- jobs


def test_jobs_list_and_retry(instance: Path) -> None:
    assert run("--instance", str(instance), "jobs", "list").output.strip() == "No jobs."
    app = create_app(instance)
    try:
        with app.app_context():
            message = enqueue("core.send_mail", "x@example.org", "Subject", "Body")
        with get_db(app).engine.begin() as conn:
            conn.execute(
                update(Job)
                .where(Job.message_id == message.message_id)
                .values(state="failed", attempts=6, error="Traceback...\nSMTPError: mailbox full")
            )
        job_id = get_jobs(app).list_jobs()[0].id
    finally:
        get_db(app).dispose()

    failed = run("--instance", str(instance), "jobs", "list", "--state", "failed")
    assert failed.exit_code == 0
    header, row = failed.output.splitlines()
    assert header.split()[:5] == ["id", "state", "actor", "queue", "attempts"]
    assert row.split()[:5] == [str(job_id), "failed", "core.send_mail", "default", "6"]
    assert row.endswith("SMTPError: mailbox full")

    retried = run("--instance", str(instance), "jobs", "retry", str(job_id))
    assert retried.exit_code == 0, retried.output
    queued = run("--instance", str(instance), "jobs", "list", "--state", "queued")
    assert queued.output.splitlines()[1].split()[:5] == [
        str(job_id),
        "queued",
        "core.send_mail",
        "default",
        "0",
    ]
    again = run("--instance", str(instance), "jobs", "retry", str(job_id))
    assert again.exit_code == 1
    assert "queued, not failed" in again.output
    assert run("--instance", str(instance), "jobs", "retry", "999").exit_code == 1


# ---------------------------------------------------------------- demo


def test_demo_creates_its_data_once(tmp_path: Path) -> None:
    path = tmp_path / "demo"

    first = run("demo", "--path", str(path), "--no-serve")

    assert first.exit_code == 0, first.output
    assert "Created the demo instance" in first.output
    assert "demo-password-123" in first.output
    assert "admin@demo.test" in first.output and "instructor@demo.test" in first.output
    assert "http://127.0.0.1:8000" in first.output
    counts = {m.__name__: count(path, m) for m in (User, Course, Item, Enrolment, Progress)}
    assert counts == {"User": 5, "Course": 1, "Item": 4, "Enrolment": 3, "Progress": 6}

    second = run("demo", "--path", str(path), "--no-serve")

    assert second.exit_code == 0, second.output
    assert "already present" in second.output
    assert {m.__name__: count(path, m) for m in (User, Course, Item, Enrolment, Progress)} == counts
    app = create_app(path)
    try:
        with get_db(app).sessions() as sess:
            course = sess.scalars(select(Course)).one()
            items = sess.scalars(select(Item).order_by(Item.module_id, Item.position)).all()
    finally:
        get_db(app).dispose()
    assert course.status == "published" and course.published_at is not None
    assert {i.type for i in items} == {"page"}
    assert items[0].config["body"].startswith("<h2>Welcome</h2>")


def test_a_new_demo_instance_is_marked_as_one(tmp_path: Path) -> None:
    path = tmp_path / "demo"

    assert run("demo", "--path", str(path), "--no-serve").exit_code == 0

    assert tomllib.loads((path / "instance.toml").read_text())["instance"]["demo"] is True


@pytest.mark.parametrize("peers", [None, "2"])
def test_the_demo_adds_no_accounts_to_an_instance_it_did_not_make(
    tmp_path: Path, peers: str | None
) -> None:
    """Its accounts share a published password: an operator's instance keeps out of it."""
    root = tmp_path / "demo-network" if peers else tmp_path / "uni"
    path = root / "north" if peers else root
    assert run("init", str(path), "--name", "One U").exit_code == 0
    assert run("--instance", str(path), "db", "upgrade").exit_code == 0
    before = {m.__name__: count(path, m) for m in (User, Course, Enrolment, Progress)}
    toml_before = (path / "instance.toml").read_text()

    args = ["--peers", peers, "--path", str(root)] if peers else ["--path", str(path)]
    result = run("demo", *args, "--no-serve")

    assert result.exit_code == 1, result.output
    assert "was not made by `trivium demo`" in result.output
    assert "demo-password-123" not in result.output
    assert {m.__name__: count(path, m) for m in (User, Course, Enrolment, Progress)} == before
    assert (path / "instance.toml").read_text() == toml_before


def test_the_demo_runs_on_an_instance_marked_as_one(tmp_path: Path) -> None:
    path = tmp_path / "copy"
    assert run("init", str(path), "--name", "Copy U").exit_code == 0
    text = (path / "instance.toml").read_text()
    (path / "instance.toml").write_text(text.replace("[instance]\n", "[instance]\ndemo = true\n"))

    result = run("--instance", str(path), "demo", "--no-serve")

    assert result.exit_code == 0, result.output
    assert "Added the sample data." in result.output
    assert count(path, User) == 5
