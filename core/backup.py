"""Backing up an instance folder into one archive, and restoring it.

The archive (``.tar.gz``, mode 0600: it holds the secret key and the private
keys) contains everything in the instance folder that makes the instance:
``instance.toml``, ``secrets.toml``, ``keys/``, what plugins keep there, and
an embedded (SQLite) database as a consistent snapshot taken with SQLite's
online backup, so the instance may keep serving meanwhile (a plain copy of a
live WAL database may be torn).  Left out: ``run/``, this machine's runtime
files (shared counters), which a new process rebuilds.  A PostgreSQL
database is not in the archive: back it up with ``pg_dump`` or base backups.

``trivium-backup.json`` at the top of the archive says what it holds.
Restoring unpacks an archive into a new, empty folder; the database's
schema is then brought up to date with ``trivium db upgrade``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from core.config import Settings

#: The archive's description of itself.
MANIFEST = "trivium-backup.json"
#: Archive format; a restore refuses another.
FORMAT = 1
#: What every manifest says, besides its format.
_DESCRIBED = ("instance", "base_url", "created_at", "database")
#: Folders of the instance that belong to one machine's running processes.
EXCLUDED = frozenset({"run"})


class BackupRefused(Exception):
    """The backup cannot be written where asked (it exists, or lies inside the instance)."""


class BackupFailed(Exception):
    """The database snapshot could not be taken or is not sound; no archive was written."""


class RestoreRefused(Exception):
    """The archive is not a Trivium backup, or the target folder is not empty."""


@dataclass(frozen=True)
class BackupReport:
    """What :func:`backup_instance` wrote."""

    archive: Path
    files: int
    database: str
    """The backend: ``sqlite`` (the snapshot is in the archive) or ``postgresql`` (it is not)."""
    database_bytes: int


def sqlite_file(settings: Settings) -> Path | None:
    """The embedded database's file, or None when the database is not SQLite."""
    url = make_url(settings.database.url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    return Path(url.database).resolve()


def _members(root: Path, skip: set[Path]) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] in EXCLUDED or path in skip:
            continue
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            continue  # sockets, pipes and links are not instance data
        yield path


def _snapshot(source: Path, target: Path) -> int:
    """Copy a live SQLite database consistently; return its size.

    :raise BackupFailed: it cannot be read, or the copy fails its integrity check.
    """
    try:
        src = sqlite3.connect(source, timeout=30)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
                verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise BackupFailed(f"{source}: the database could not be copied: {exc}") from exc
    if verdict != "ok":
        raise BackupFailed(f"{source}: the copy fails SQLite's integrity check: {verdict}")
    return target.stat().st_size


def backup_instance(settings: Settings, destination: Path) -> BackupReport:
    """Write the instance's archive to ``destination`` (created, never replaced).

    The archive appears only once complete (written beside it, then renamed).

    :raise BackupRefused: ``destination`` exists or lies inside the instance folder.
    :raise BackupFailed: the database snapshot failed (nothing is written).
    """
    root = Path(settings.path).resolve()
    target = destination.resolve()
    if target.exists():
        raise BackupRefused(f"{target} exists: choose a new file name")
    if target.is_relative_to(root):
        raise BackupRefused(
            f"{target} lies inside the instance folder {root}: the next backup would hold it"
        )
    if not target.parent.is_dir():
        raise BackupRefused(f"{target.parent} is not a folder")
    database = sqlite_file(settings)
    skip: set[Path] = set()
    if database is not None:
        skip = {
            database,
            *(database.with_name(database.name + s) for s in ("-wal", "-shm", "-journal")),
        }
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".trivium-backup-") as work:
        snapshot = Path(work) / "snapshot.db"
        size = _snapshot(database, snapshot) if database is not None else 0
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "instance": settings.instance.name,
            "base_url": settings.instance.base_url,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "database": make_url(settings.database.url).get_backend_name(),
            "database_file": _database_name(root, database),
        }
        (Path(work) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        part = Path(work) / "archive.tar.gz"
        count = 0
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            tar.add(Path(work) / MANIFEST, arcname=MANIFEST)
            for path in _members(root, skip):
                tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
                count += path.is_file()
            if database is not None:
                tar.add(snapshot, arcname=manifest["database_file"])
                count += 1
        os.replace(part, target)
    return BackupReport(target, count, manifest["database"], size)


def _database_name(root: Path, database: Path | None) -> str | None:
    """Where the snapshot goes in the archive: its place in the instance folder, else its name."""
    if database is None:
        return None
    return str(database.relative_to(root)) if database.is_relative_to(root) else database.name


def read_manifest(archive: Path) -> dict[str, object]:
    """The manifest of a backup archive.

    :raise RestoreRefused: not a readable Trivium backup of a known format.
    """
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            member = tar.extractfile(MANIFEST)
            if member is None:
                raise KeyError(MANIFEST)
            manifest = json.loads(member.read())
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise RestoreRefused(f"{archive} is not a Trivium backup ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise RestoreRefused(f"{archive}: unknown backup format {found!r}")
    if not all(isinstance(manifest.get(k), str) for k in _DESCRIBED):
        raise RestoreRefused(f"{archive}: its {MANIFEST} lacks {', '.join(_DESCRIBED)}")
    return manifest


def restore_instance(archive: Path, folder: Path) -> dict[str, object]:
    """Unpack a backup into ``folder``, which must be new or empty; return its manifest.

    Members are unpacked with tarfile's ``data`` filter: nothing lands outside
    ``folder``, and no links, devices or set-id bits come out of the archive.

    :raise RestoreRefused: not a backup, or ``folder`` holds files already.
    """
    manifest = read_manifest(archive)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise RestoreRefused(f"{folder} is not an empty folder: restore into a new one")
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name != MANIFEST]
            tar.extractall(folder, members=members, filter="data")
    except (OSError, tarfile.TarError) as exc:
        # leave the folder as it was found: no half-restored instance
        for child in list(folder.iterdir()):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        if made:
            folder.rmdir()
        raise RestoreRefused(f"{archive}: could not be unpacked: {exc}") from exc
    return manifest
