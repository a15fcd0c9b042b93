"""Backing up an instance folder into one archive, and restoring it.

The archive (``.tar.gz``, mode 0600: it holds the secret key and the private
keys) contains everything in the instance folder that makes the instance:
``instance.toml``, ``secrets.toml``, ``keys/``, what plugins keep there, and
an embedded (SQLite) database as a consistent snapshot taken with SQLite's
online backup, so the instance may keep serving meanwhile (a plain copy of a
live WAL database may be torn).  Symbolic links inside the folder are
followed and their content stored under the link's name, except links to
the folder or one of its parents.  Left out: ``run/``, this machine's
runtime files (shared counters), which a new process rebuilds, and sockets
or pipes.  A PostgreSQL database is not in the archive: back it up with
``pg_dump`` or base backups.  A SQLite database outside the instance folder,
or named by ``[database] url`` at all, is refused: a restored folder would
still name the original file.

``trivium-backup.json``, the last member, says what the archive holds,
with the size, SHA-256 and mode of every member.  Restoring reads the whole
archive, checks every member against it (and SQLite's integrity check on
the database), and unpacks it into a new, empty folder; the database's
schema is then brought up to date with ``trivium db upgrade``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import tarfile
import tempfile
import tomllib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from pathlib import PurePosixPath
from typing import IO
from typing import Any
from urllib.parse import quote

from sqlalchemy.engine import make_url

from core.config import Settings

#: The archive's description of itself.
MANIFEST = "trivium-backup.json"
#: Archive format; a restore refuses another.  2: every member's size, SHA-256 and mode.
FORMAT = 1
#: What every manifest says, besides its format.
_DESCRIBED = ("instance", "base_url", "created_at", "database")
#: Folders of the instance that belong to one machine's running processes.
EXCLUDED = frozenset({"run"})
#: What an archive must hold to restore a working instance.
REQUIRED = ("instance.toml", "secrets.toml", "keys/index.json")
#: Errors reading a damaged archive: a truncated gzip stream raises EOFError, bad
#: compressed data zlib.error, a bad CRC gzip.BadGzipFile (an OSError).
_READ_ERRORS = (OSError, EOFError, zlib.error, tarfile.TarError, UnicodeError)
_CHUNK = 1 << 16


class BackupRefused(Exception):
    """The backup cannot be written where asked, or not of this instance as it is set up."""


class BackupFailed(Exception):
    """Reading the instance or writing the archive failed; no archive was written."""


class RestoreRefused(Exception):
    """The archive is not a sound Trivium backup, or the target folder is not empty."""


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


def _read_only(path: Path, *, immutable: bool = False) -> sqlite3.Connection:
    """Open a SQLite file without writing to it or creating it.

    A live WAL database opens too: SQLite joins its shared-memory index
    (creating ``-wal``/``-shm`` if none exist).  ``immutable`` is for a file
    no one else has open (a restored one): no side files at all.
    """
    flags = "mode=ro&immutable=1" if immutable else "mode=ro"
    return sqlite3.connect(f"file:{quote(str(path))}?{flags}", uri=True, timeout=30)


def _members(root: Path, skip: set[Path]) -> Iterator[tuple[Path, str]]:
    """The instance's files and folders, links followed: ``(path, name in the archive)``.

    A link to the instance folder or one of its parents (or to a folder
    already being walked) is not followed: it would loop.
    """
    ancestors = {root, *root.parents}

    def walk(folder: Path, prefix: str, walking: frozenset[Path]) -> Iterator[tuple[Path, str]]:
        for path in sorted(folder.iterdir()):
            name = f"{prefix}{path.name}"
            if (not prefix and path.name in EXCLUDED) or path in skip:
                continue
            if path.is_dir():
                real = path.resolve()
                if real in ancestors or real in walking:
                    continue
                yield path, name
                yield from walk(path, f"{name}/", walking | {real})
            elif path.is_file() and path.resolve() not in skip:
                yield path, name
            # sockets, pipes and broken links are not instance data

    yield from walk(root, "", frozenset({root}))


class _Hashing:
    """A file read by tarfile, hashed on the way."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.sha256.update(data)
        return data


@dataclass
class _Writer:
    """Adds members to the archive and records each in the manifest."""

    tar: tarfile.TarFile
    listed: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, path: Path, name: str) -> None:
        if path.is_dir():
            info = self.tar.gettarinfo(path, arcname=name)
            self.tar.addfile(info)
            self.listed[name] = {"type": "dir", "mode": stat.S_IMODE(info.mode)}
            return
        with path.open("rb") as fh:
            info = self.tar.gettarinfo(arcname=name, fileobj=fh)  # the target's, if a link
            reader = _Hashing(fh)
            self.tar.addfile(info, reader)
        self.listed[name] = {
            "type": "file",
            "mode": stat.S_IMODE(info.mode),
            "size": info.size,
            "sha256": reader.sha256.hexdigest(),
        }


def _snapshot(source: Path, target: Path) -> int:
    """Copy a live Trivium SQLite database consistently; return its size.

    :raise BackupFailed: it is missing or cannot be read, is not a Trivium
        database, or the copy fails its integrity check.
    """
    if not source.is_file():
        raise BackupFailed(f"{source}: there is no database file (has 'db upgrade' been run?)")
    try:
        src = _read_only(source)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
                verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
                ours = dst.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
                ).fetchone()
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise BackupFailed(f"{source}: the database could not be copied: {exc}") from exc
    if verdict != "ok":
        raise BackupFailed(f"{source}: the copy fails SQLite's integrity check: {verdict}")
    if ours is None:
        raise BackupFailed(f"{source}: not a Trivium database (it has no alembic_version table)")
    return target.stat().st_size


def _named_database(root: Path) -> str:
    """``[database] url`` as the instance's own files set it (empty: the default place)."""
    for name in ("instance.toml", "secrets.toml"):
        try:
            data = tomllib.loads((root / name).read_text())
        except (OSError, tomllib.TOMLDecodeError):
            continue  # the settings were read at start-up; a file gone since names nothing
        url = (
            data.get("database", {}).get("url", "")
            if isinstance(data.get("database"), dict)
            else ""
        )
        if isinstance(url, str) and url:
            return url
    return ""


def backup_instance(settings: Settings, destination: Path) -> BackupReport:
    """Write the instance's archive to ``destination`` (created, never replaced).

    The archive appears only once complete: written beside it, then hard-linked
    into place, which fails rather than replace a file made meanwhile.

    :raise BackupRefused: ``destination`` exists or lies inside the instance
        folder, or the SQLite database lies outside it.
    :raise BackupFailed: the database is missing or unsound, a required file
        is missing, or the archive could not be written (nothing is left).
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
        if not database.is_relative_to(root):
            raise BackupRefused(
                f"the database lives outside the instance folder at {database}: back it up "
                "with the folder it lives in, or move it in"
            )
        named = _named_database(root)
        if named:
            raise BackupRefused(
                f"[database] url names the SQLite file ({named}): a restored copy would still "
                "open that file, not its own; remove the setting, so that the database is "
                "the folder's trivium.db, then back up"
            )
        skip = {
            database,
            *(database.with_name(database.name + s) for s in ("-wal", "-shm", "-journal")),
        }
    try:
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".trivium-backup-") as work:
            return _write(settings, root, database, skip, Path(work), target)
    except OSError as exc:
        raise BackupFailed(f"could not write the archive: {exc}") from exc


def _write(
    settings: Settings,
    root: Path,
    database: Path | None,
    skip: set[Path],
    work: Path,
    target: Path,
) -> BackupReport:
    """Write the archive in ``work``, then link it to ``target``."""
    snapshot = work / "snapshot.db"
    size = _snapshot(database, snapshot) if database is not None else 0
    database_file = str(database.relative_to(root)) if database is not None else None
    part = work / "archive.tar.gz"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with (
        os.fdopen(fd, "wb") as raw,
        tarfile.open(fileobj=raw, mode="w:gz", dereference=True) as tar,
    ):
        writer = _Writer(tar)
        for path, name in _members(root, skip):
            writer.add(path, name)
        if database_file is not None:
            writer.add(snapshot, database_file)
        missing = [name for name in REQUIRED if name not in writer.listed]
        if missing:
            raise BackupFailed(
                f"{root}: {', '.join(missing)} missing: the archive could not restore the instance"
            )
        manifest = {
            "format": FORMAT,
            "instance": settings.instance.name,
            "base_url": settings.instance.base_url,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "database": make_url(settings.database.url).get_backend_name(),
            "database_file": database_file,
            "members": writer.listed,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        tar.add(work / MANIFEST, arcname=MANIFEST)  # last: it describes what precedes it
        raw.flush()
        os.fsync(raw.fileno())
    try:
        os.link(part, target)  # unlike a rename, never replaces a file
    except FileExistsError as exc:
        raise BackupRefused(f"{target} exists: choose a new file name") from exc
    except OSError as exc:
        raise BackupFailed(
            f"could not put the archive in place at {target} (its file system must "
            f"support hard links): {exc}"
        ) from exc
    files = sum(1 for m in writer.listed.values() if m["type"] == "file")
    return BackupReport(target, files, str(manifest["database"]), size)


def _safe_name(name: str) -> bool:
    """A member name that can only land inside the restored folder."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts


def _sha256(fh: IO[bytes]) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := fh.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _scan(archive: Path) -> tuple[bytes | None, dict[str, tuple[str, int, str]]]:
    """Read the whole archive: the manifest's bytes and every member's type, size and hash.

    Reading to the end of the gzip stream makes gzip check its CRC and length.
    """
    found: dict[str, tuple[str, int, str]] = {}
    manifest: bytes | None = None
    with (
        archive.open("rb") as raw,
        gzip.GzipFile(fileobj=raw, mode="rb") as gz,
        tarfile.open(fileobj=gz, mode="r|") as tar,
    ):
        for member in tar:
            if member.name in found or (member.name == MANIFEST and manifest is not None):
                raise RestoreRefused(f"{archive}: {member.name} appears twice")
            if member.name == MANIFEST:
                fh = tar.extractfile(member)
                manifest = fh.read() if fh is not None else None
            elif member.isfile():
                fh = tar.extractfile(member)
                assert fh is not None
                size, sha256 = _sha256(fh)
                found[member.name] = ("file", size, sha256)
            elif member.isdir():
                found[member.name] = ("dir", 0, "")
            else:
                raise RestoreRefused(f"{archive}: {member.name} is neither a file nor a folder")
        while gz.read(_CHUNK):
            pass
    return manifest, found


def read_manifest(archive: Path) -> dict[str, Any]:
    """The manifest of a sound backup archive, every member checked against it.

    :raise RestoreRefused: not a readable Trivium backup of a known format, or
        a member is missing, damaged, unlisted or named to land outside.
    """
    try:
        data, found = _scan(archive)
        if data is None:
            raise KeyError(MANIFEST)
        manifest = json.loads(data)
    except (*_READ_ERRORS, KeyError, ValueError) as exc:
        raise RestoreRefused(
            f"{archive} is not a Trivium backup, or it is damaged or truncated "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found_format = manifest.get("format") if isinstance(manifest, dict) else None
        raise RestoreRefused(f"{archive}: unknown backup format {found_format!r}")
    if not all(isinstance(manifest.get(k), str) for k in _DESCRIBED):
        raise RestoreRefused(f"{archive}: its {MANIFEST} lacks {', '.join(_DESCRIBED)}")
    listed = manifest.get("members")
    if not isinstance(listed, dict):
        raise RestoreRefused(f"{archive}: its {MANIFEST} does not list its members")
    for name, entry in listed.items():
        if not _safe_name(name):
            raise RestoreRefused(f"{archive}: {name} would land outside the folder")
        if name not in found:
            raise RestoreRefused(f"{archive}: {name} is listed in {MANIFEST} but missing")
        kind, size, sha256 = found[name]
        if not isinstance(entry, dict) or entry.get("type") != kind:
            raise RestoreRefused(f"{archive}: {name} is not the {kind} {MANIFEST} lists")
        if kind == "file" and (entry.get("size"), entry.get("sha256")) != (size, sha256):
            raise RestoreRefused(f"{archive}: {name} is damaged (size or SHA-256 differs)")
    unlisted = sorted(set(found) - set(listed))
    if unlisted:
        raise RestoreRefused(f"{archive}: {', '.join(unlisted)} not listed in its {MANIFEST}")
    database_file = manifest.get("database_file")
    if database_file is not None and (
        not isinstance(database_file, str) or listed.get(database_file, {}).get("type") != "file"
    ):
        raise RestoreRefused(f"{archive}: its database file {database_file!r} is not in it")
    return manifest


def _check_restored(folder: Path, manifest: dict[str, Any]) -> None:
    """Check the unpacked files again, run SQLite's integrity check, set folder modes."""
    for name, entry in manifest["members"].items():
        path = folder / name
        if entry["type"] == "file":
            with path.open("rb") as fh:
                if _sha256(fh) != (entry["size"], entry["sha256"]):
                    raise RestoreRefused(f"{name} changed while it was unpacked")
    if manifest.get("database_file"):
        path = folder / manifest["database_file"]
        try:
            db = _read_only(path, immutable=True)
            try:
                verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                db.close()
        except sqlite3.Error as exc:
            verdict = str(exc)
        if verdict != "ok":
            raise RestoreRefused(f"{path}: the database fails SQLite's integrity check: {verdict}")
    # tarfile's data filter leaves folder modes to the umask: keys/ must stay 0700.
    for name, entry in manifest["members"].items():
        if entry["type"] == "dir" and isinstance(entry.get("mode"), int):
            os.chmod(folder / name, (entry["mode"] & 0o755) | 0o700)


def restore_instance(archive: Path, folder: Path) -> dict[str, Any]:
    """Unpack a backup into ``folder``, which must be new or empty; return its manifest.

    The whole archive is checked against its manifest before anything is
    unpacked.  Members are unpacked with tarfile's ``data`` filter: nothing
    lands outside ``folder``, and no links, devices or set-id bits come out of
    the archive.  Files belong to the user running the restore.  On failure
    ``folder`` is left as it was found: gone if it was new, else empty with its mode.

    :raise RestoreRefused: not a sound backup, or ``folder`` holds files already.
    """
    manifest = read_manifest(archive)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise RestoreRefused(f"{folder} is not an empty folder: restore into a new one")
    made = folder.absolute()
    while not made.parent.exists():
        made = made.parent  # the outermost folder this restore creates
    mode = None if not folder.exists() else stat.S_IMODE(folder.stat().st_mode)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        with tarfile.open(archive, mode="r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name in manifest["members"]]
            tar.extractall(folder, members=members, filter="data")
        _check_restored(folder, manifest)
    except (*_READ_ERRORS, RestoreRefused) as exc:
        # leave the folder as it was found: no half-restored instance
        if mode is None:
            shutil.rmtree(made, ignore_errors=True)
        else:
            for child in list(folder.iterdir()):
                shutil.rmtree(
                    child
                ) if child.is_dir() and not child.is_symlink() else child.unlink()
            os.chmod(folder, mode)
        if isinstance(exc, RestoreRefused):
            raise
        raise RestoreRefused(f"{archive}: could not be unpacked: {exc}") from exc
    return manifest
