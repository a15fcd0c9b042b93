"""``trivium backup`` and ``trivium restore``: one archive of an instance, unpacked elsewhere."""

from __future__ import annotations

import io
import json
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from core import create_app
from core.backup import MANIFEST
from core.cli import cli
from core.db import get_db
from core.models import User
from tests.conftest import PG_URL

ENV = {"TRIVIUM_INSTANCE_PATH": None, "TRIVIUM_ACCOUNTS_HASH_PROFILE": "cheapest"}
PASSWORD = "correct horse battery"


def run(*args: str) -> Any:
    return CliRunner(env=ENV).invoke(cli, list(args))


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    path = tmp_path / "uni"
    assert run("init", str(path), "--name", "Uni U").exit_code == 0
    assert run("--instance", str(path), "db", "upgrade").exit_code == 0
    for n in range(3):
        made = run(
            "--instance", str(path), "users", "create", f"u{n}@uni.example", "--password", PASSWORD
        )
        assert made.exit_code == 0, made.output
    (path / "run").mkdir(exist_ok=True)
    (path / "run" / "counters").write_bytes(b"\0" * 16)  # this machine's: left out
    return path


def users_in(path: Path) -> list[str]:
    app = create_app(path)
    try:
        with get_db(app).session() as sess:
            return list(sess.scalars(select(User.email).order_by(User.email)))
    finally:
        get_db(app).dispose()


def test_a_backup_restores_into_a_working_instance(instance: Path, tmp_path: Path) -> None:
    archive = tmp_path / "uni.tar.gz"
    app = create_app(instance)  # the instance is open meanwhile, its WAL in use
    try:
        with get_db(app).session() as sess:
            sess.add(User(email="late@uni.example", display_name="Late"))
        result = run("--instance", str(instance), "backup", str(archive))
    finally:
        get_db(app).dispose()

    assert result.exit_code == 0, result.output
    assert f"Wrote {archive}" in result.output and "passed its check" in result.output
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600  # it holds the secret key
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
    assert {"instance.toml", "secrets.toml", "trivium.db", MANIFEST} <= names
    assert any(n.startswith("keys/") for n in names)
    assert not any(n.startswith("run") or n.endswith(("-wal", "-shm")) for n in names)
    assert manifest["instance"] == "Uni U" and manifest["database"] == "sqlite"

    target = tmp_path / "restored"
    restored = run("restore", str(archive), str(target))

    assert restored.exit_code == 0, restored.output
    assert "Restored Uni U" in restored.output and "db upgrade" in restored.output
    assert (target / "secrets.toml").read_bytes() == (instance / "secrets.toml").read_bytes()
    assert stat.S_IMODE((target / "secrets.toml").stat().st_mode) == 0o600
    for key in (instance / "keys").iterdir():
        assert (target / "keys" / key.name).read_bytes() == key.read_bytes()
    assert run("--instance", str(target), "db", "upgrade").exit_code == 0
    assert users_in(target) == users_in(instance)
    assert "late@uni.example" in users_in(target)


def test_backup_refuses_to_replace_a_file_or_to_write_inside_the_instance(
    instance: Path, tmp_path: Path
) -> None:
    existing = tmp_path / "old.tar.gz"
    existing.write_bytes(b"precious")

    replaced = run("--instance", str(instance), "backup", str(existing))
    inside = run("--instance", str(instance), "backup", str(instance / "b.tar.gz"))

    assert replaced.exit_code == 1 and "exists: choose a new file name" in replaced.output
    assert existing.read_bytes() == b"precious"
    assert inside.exit_code == 1 and "lies inside the instance folder" in inside.output
    assert not (instance / "b.tar.gz").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".trivium-backup-")]


def test_a_database_that_fails_its_check_writes_no_archive(
    instance: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import backup

    def torn(source: Path, target: Path) -> int:
        raise backup.BackupFailed(f"{source}: the copy fails SQLite's integrity check: page 3")

    monkeypatch.setattr(backup, "_snapshot", torn)
    archive = tmp_path / "uni.tar.gz"

    result = run("--instance", str(instance), "backup", str(archive))

    assert result.exit_code == 1 and "integrity check" in result.output
    assert not archive.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["uni"]


def test_restore_wants_an_empty_folder(instance: Path, tmp_path: Path) -> None:
    archive = tmp_path / "uni.tar.gz"
    assert run("--instance", str(instance), "backup", str(archive)).exit_code == 0
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")

    result = run("restore", str(archive), str(busy))

    assert result.exit_code == 1 and "is not an empty folder" in result.output
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]


def _archive(path: Path, members: dict[str, bytes], manifest: dict[str, Any] | None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        if manifest is not None:
            members = {MANIFEST: json.dumps(manifest).encode(), **members}
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


GOOD = {
    "format": 1,
    "instance": "Odd U",
    "base_url": "http://odd.example",
    "created_at": "2026-11-22T00:00:00+00:00",
    "database": "sqlite",
}


@pytest.mark.parametrize(
    ("members", "manifest", "message"),
    [
        ({"instance.toml": b""}, None, "is not a Trivium backup"),
        ({"instance.toml": b""}, {**GOOD, "format": 99}, "unknown backup format 99"),
        ({"instance.toml": b""}, {"format": 1}, "lacks instance, base_url"),
        ({"../escaped.toml": b"x"}, GOOD, "could not be unpacked"),
    ],
)
def test_restore_refuses_what_is_not_a_sound_backup(
    tmp_path: Path, members: dict[str, bytes], manifest: dict[str, Any] | None, message: str
) -> None:
    archive = _archive(tmp_path / "odd.tar.gz", members, manifest)
    target = tmp_path / "new"

    result = run("restore", str(archive), str(target))

    assert result.exit_code == 1 and message in result.output
    assert not target.exists()  # nothing half-restored
    assert not (tmp_path / "escaped.toml").exists()


def test_an_absolute_member_lands_inside_the_folder(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "odd.tar.gz", {"/tmp/escaped.toml": b"x"}, GOOD)
    target = tmp_path / "new"

    result = run("restore", str(archive), str(target))

    assert result.exit_code == 0, result.output
    assert (target / "tmp" / "escaped.toml").read_bytes() == b"x"
    assert not Path("/tmp/escaped.toml").exists()


def test_restore_refuses_a_file_that_is_no_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not gzip at all")

    result = run("restore", str(junk), str(tmp_path / "new"))

    assert result.exit_code == 1 and "is not a Trivium backup" in result.output
    assert not (tmp_path / "new").exists()


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="TRIVIUM_TEST_DATABASE_URL not set")
def test_a_postgresql_database_is_left_to_its_own_tools(tmp_path: Path) -> None:
    path = tmp_path / "uni"
    assert run("init", str(path), "--name", "Uni U").exit_code == 0
    archive = tmp_path / "uni.tar.gz"

    env = {**ENV, "TRIVIUM_DATABASE_URL": PG_URL}
    result = CliRunner(env=env).invoke(cli, ["--instance", str(path), "backup", str(archive)])

    assert result.exit_code == 0, result.output
    assert "The postgresql database is not in it" in result.output
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
    assert "instance.toml" in names and "trivium.db" not in names
    assert manifest["database"] == "postgresql" and manifest["database_file"] is None
