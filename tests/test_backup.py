"""``trivium backup`` and ``trivium restore``: one archive of an instance, unpacked elsewhere."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import sqlite3
import stat
import tarfile
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from core import backup
from core import create_app
from core.backup import MANIFEST
from core.backup import BackupFailed
from core.backup import backup_instance
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


def test_a_file_that_is_no_database_fails_the_check_and_writes_no_archive(
    instance: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "uni.tar.gz"
    (instance / "trivium.db").write_bytes(b"not a database at all" * 200)

    result = run("--instance", str(instance), "backup", str(archive))

    assert result.exit_code == 1 and "could not be copied" in result.output
    assert isinstance(result.exception, SystemExit)  # a message, no traceback
    assert not archive.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["uni"]


def test_a_sqlite_database_that_is_not_trivium_s_is_refused(instance: Path, tmp_path: Path) -> None:
    settings = create_app(instance).extensions["trivium.settings"]
    (instance / "trivium.db").unlink()
    other = sqlite3.connect(instance / "trivium.db")
    other.execute("CREATE TABLE notes (body TEXT)")
    other.commit()
    other.close()

    with pytest.raises(BackupFailed, match="not a Trivium database"):
        backup_instance(settings, tmp_path / "uni.tar.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["uni"]


def test_a_missing_database_file_is_refused_and_not_created(instance: Path, tmp_path: Path) -> None:
    settings = create_app(instance).extensions["trivium.settings"]
    (instance / "trivium.db").unlink()

    with pytest.raises(BackupFailed, match="there is no database file"):
        backup_instance(settings, tmp_path / "uni.tar.gz")
    assert not (instance / "trivium.db").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["uni"]


def test_a_database_outside_the_instance_folder_is_refused(instance: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.db"
    shutil.copy(instance / "trivium.db", outside)
    env = {**ENV, "TRIVIUM_DATABASE_URL": f"sqlite:///{outside}"}
    archive = tmp_path / "uni.tar.gz"

    result = CliRunner(env=env).invoke(cli, ["--instance", str(instance), "backup", str(archive)])

    assert result.exit_code == 1
    assert f"the database lives outside the instance folder at {outside}" in result.output
    assert not archive.exists()


def test_a_database_named_by_the_settings_is_refused(instance: Path, tmp_path: Path) -> None:
    # even the folder's own trivium.db: a restored copy's settings would open this one
    text = (instance / "instance.toml").read_text()
    head, _, rest = text.partition("[database]")
    named = f'url = "sqlite:///{instance / "trivium.db"}"'
    (instance / "instance.toml").write_text(
        head + "[database]" + rest.replace('url = ""', named, 1)
    )
    archive = tmp_path / "uni.tar.gz"

    result = run("--instance", str(instance), "backup", str(archive))

    assert result.exit_code == 1, result.output
    assert "[database] url names the SQLite file" in result.output
    assert not archive.exists()


def test_linked_secrets_and_keys_are_archived_as_their_content(
    instance: Path, tmp_path: Path
) -> None:
    vault = tmp_path / "vault"
    vault.mkdir()
    (instance / "secrets.toml").rename(vault / "secrets.toml")
    (instance / "secrets.toml").symlink_to(vault / "secrets.toml")
    (instance / "keys").rename(vault / "keys")
    (instance / "keys").symlink_to(vault / "keys")
    (instance / "plugin-data").mkdir()
    (instance / "plugin-data" / "loop").symlink_to(tmp_path)  # a parent: not followed
    archive = tmp_path / "uni.tar.gz"

    result = run("--instance", str(instance), "backup", str(archive))

    assert result.exit_code == 0, result.output
    target = tmp_path / "restored"
    assert run("restore", str(archive), str(target)).exit_code == 0
    assert not (target / "secrets.toml").is_symlink() and not (target / "keys").is_symlink()
    assert (target / "secrets.toml").read_bytes() == (vault / "secrets.toml").read_bytes()
    assert (target / "keys" / "index.json").read_bytes() == (
        vault / "keys" / "index.json"
    ).read_bytes()
    assert not (target / "plugin-data" / "loop").exists()


def test_a_backup_without_the_key_index_fails(instance: Path, tmp_path: Path) -> None:
    settings = create_app(instance).extensions["trivium.settings"]
    (instance / "keys" / "index.json").unlink()

    with pytest.raises(BackupFailed, match=r"keys/index\.json missing"):
        backup_instance(settings, tmp_path / "uni.tar.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["uni"]


def test_a_file_made_meanwhile_at_the_destination_is_not_replaced(
    instance: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "uni.tar.gz"
    real = backup._snapshot

    def racing(source: Path, target: Path) -> int:
        archive.write_bytes(b"precious")  # after the existence check
        return real(source, target)

    monkeypatch.setattr(backup, "_snapshot", racing)

    result = run("--instance", str(instance), "backup", str(archive))

    assert result.exit_code == 1 and "exists: choose a new file name" in result.output
    assert archive.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uni", "uni.tar.gz"]


def test_a_full_disk_fails_the_backup_without_a_traceback(
    instance: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: tarfile.TarFile, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "addfile", full)
    archive = tmp_path / "uni.tar.gz"

    result = run("--instance", str(instance), "backup", str(archive))

    assert result.exit_code == 1
    assert "could not write the archive" in result.output and "No space left" in result.output
    assert isinstance(result.exception, SystemExit)
    assert [p.name for p in tmp_path.iterdir()] == ["uni"]


@pytest.fixture
def archive(instance: Path, tmp_path: Path) -> Path:
    path = tmp_path / "uni.tar.gz"
    assert run("--instance", str(instance), "backup", str(path)).exit_code == 0
    return path


def test_keys_come_back_0700_and_secrets_0600(archive: Path, tmp_path: Path) -> None:
    target = tmp_path / "restored"

    assert run("restore", str(archive), str(target)).exit_code == 0

    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert stat.S_IMODE((target / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((target / "secrets.toml").stat().st_mode) == 0o600
    for key in (target / "keys").iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


@pytest.mark.parametrize("where", [0.05, 0.2, 0.4, 0.6, 0.8, 0.95, -6])
def test_a_corrupted_byte_is_refused_and_the_folder_left_as_found(
    archive: Path, tmp_path: Path, where: float
) -> None:
    data = bytearray(archive.read_bytes())
    at = int(len(data) * where) if where > 0 else len(data) + int(where)
    data[at] ^= 0x55
    archive.write_bytes(bytes(data))
    target = tmp_path / "new"

    result = run("restore", str(archive), str(target))

    assert result.exit_code == 1 and "Error:" in result.output, result.output
    assert not target.exists()


def test_a_truncated_archive_is_refused_with_a_message(archive: Path, tmp_path: Path) -> None:
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) * 2 // 3])

    result = run("restore", str(archive), str(tmp_path / "new"))

    assert result.exit_code == 1 and "damaged or truncated" in result.output, result.output
    assert "Aborted!" not in result.output
    assert not (tmp_path / "new").exists()


def test_a_failed_restore_leaves_an_empty_folder_empty_with_its_mode(
    archive: Path, tmp_path: Path
) -> None:
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    empty = tmp_path / "empty"
    empty.mkdir()
    os.chmod(empty, 0o750)  # noqa: S103 (not restore's 0700: it must be kept)

    result = run("restore", str(archive), str(empty))

    assert result.exit_code == 1
    assert list(empty.iterdir()) == []
    assert stat.S_IMODE(empty.stat().st_mode) == 0o750


def test_an_unpacked_database_must_pass_its_integrity_check(archive: Path, tmp_path: Path) -> None:
    # a damaged snapshot listed with matching checksums: only SQLite's check can tell
    with tarfile.open(archive) as tar:
        members = {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile() and m.name != MANIFEST
        }
        manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
    db = bytearray(members["trivium.db"])
    db[4096:] = b"\xab" * (len(db) - 4096)  # every page after the first
    members["trivium.db"] = bytes(db)
    del manifest["members"]  # listed afresh, with the damaged file's checksum
    rebuilt = _archive(tmp_path / "torn.tar.gz", members, manifest)
    empty = tmp_path / "empty"
    empty.mkdir()

    result = run("restore", str(rebuilt), str(empty))

    assert result.exit_code == 1 and "integrity check" in result.output, result.output
    assert list(empty.iterdir()) == []


def test_restore_wants_an_empty_folder(instance: Path, tmp_path: Path) -> None:
    archive = tmp_path / "uni.tar.gz"
    assert run("--instance", str(instance), "backup", str(archive)).exit_code == 0
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")

    result = run("restore", str(archive), str(busy))

    assert result.exit_code == 1 and "is not an empty folder" in result.output
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]


def _listing(members: dict[str, bytes]) -> dict[str, Any]:
    return {
        name: {"type": "file", "mode": 0o600, "size": len(data), "sha256": sha256(data).hexdigest()}
        for name, data in members.items()
    }


def _archive(path: Path, members: dict[str, bytes], manifest: dict[str, Any] | None) -> Path:
    """A tar.gz of ``members``; ``manifest`` (last) lists them unless it says otherwise."""
    with tarfile.open(path, "w:gz") as tar:
        if manifest is not None:
            listed = {"members": _listing(members), **manifest}
            members = {**members, MANIFEST: json.dumps(listed).encode()}
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
        ({"instance.toml": b""}, {**GOOD, "format": 2}, "unknown backup format 2"),
        ({"../escaped.toml": b"x"}, GOOD, "would land outside the folder"),
        ({"instance.toml": b"x"}, {**GOOD, "members": {}}, "not listed in its"),
        (
            {"instance.toml": b"x"},
            {**GOOD, "members": _listing({"instance.toml": b"x", "secrets.toml": b"s"})},
            "secrets.toml is listed in trivium-backup.json but missing",
        ),
        (
            {"instance.toml": b"x"},
            {**GOOD, "members": _listing({"instance.toml": b"y"})},
            "instance.toml is damaged",
        ),
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


def test_an_absolute_member_is_refused(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "odd.tar.gz", {"/tmp/escaped.toml": b"x"}, GOOD)
    target = tmp_path / "new"

    result = run("restore", str(archive), str(target))

    assert result.exit_code == 1 and "would land outside the folder" in result.output
    assert not target.exists()
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
