"""``trivium init`` makes the keys (``init_instance``); ``trivium keys list|rotate``."""

from __future__ import annotations

import json
import stat
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from click.testing import Result

from core import hookimpl
from core.cache import MemoryCache
from core.cli import cli
from core.config import Settings
from federation import keys
from federation import signatures as sig
from federation.nonces import CacheNonceStore

ENV = {"TRIVIUM_INSTANCE_PATH": None}
BASE = "http://127.0.0.1:8000"


def run(*args: str) -> Result:
    return CliRunner(env=ENV).invoke(cli, list(args), catch_exceptions=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_generates_private_keys(tmp_path: Path) -> None:
    path = tmp_path / "inst"

    result = run("init", str(path), "--name", "Keys U")

    assert result.exit_code == 0, result.output
    folder = keys.keys_dir(path)
    assert mode(folder) == 0o700
    files = [p for p in folder.iterdir() if p.name != ".lock"]
    assert len(files) == 3  # index.json and two PEM files
    assert all(mode(p) == 0o600 for p in files)
    records = json.loads((folder / "index.json").read_text())["keys"]
    assert [(r["alg"], r["status"]) for r in records] == [
        ("Ed25519", "active"),
        ("RS256", "active"),
    ]


def test_init_force_keeps_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "inst"
    run("init", str(path))
    before = (keys.keys_dir(path) / "index.json").read_text()

    assert run("init", str(path), "--force").exit_code == 0

    assert (keys.keys_dir(path) / "index.json").read_text() == before


def test_keys_rotate_keeps_the_retired_key_verifiable(tmp_path: Path) -> None:
    path = tmp_path / "inst"
    run("init", str(path))
    old_set = keys.load_keys(path)
    old_id = old_set.active("Ed25519").id
    old_kid = keys.key_url(BASE, old_id)
    signed = sig.sign_request(
        sig.HttpRequest.build("POST", "https://b.example/federation/inbox", body=b"{}"),
        key=old_set.signing_key(),
        keyid=old_kid,
        created=1_700_000_000,
    )

    rotated = run("--instance", str(path), "keys", "rotate")

    assert rotated.exit_code == 0, rotated.output
    assert "New active Ed25519 key: http://127.0.0.1:8000/federation/keys/" in rotated.output
    listing = run("--instance", str(path), "keys", "list")
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    assert lines[0].split() == ["status", "alg", "created", "(UTC)", "kid"]
    rows = [(line.split()[0], line.split()[1], line.split()[-1]) for line in lines[1:]]
    assert len(rows) == 3
    assert rows[0][:2] == ("active", "Ed25519")
    assert ("retired", "Ed25519", old_kid) in rows
    assert ("active", "RS256") in {row[:2] for row in rows}

    key_set = keys.load_keys(path)
    assert key_set.active("Ed25519").id != old_id
    verified = sig.verify_request(
        signed,
        trust=keys.OwnTrust(BASE, key_set),
        nonces=CacheNonceStore(MemoryCache()),
        now=1_700_000_010,
    )
    assert verified.keyid == old_kid


def test_keys_rotate_rsa(tmp_path: Path) -> None:
    path = tmp_path / "inst"
    run("init", str(path))
    old = keys.load_keys(path).active("RS256").id

    result = run("--instance", str(path), "keys", "rotate", "--alg", "RS256")

    assert result.exit_code == 0, result.output
    key_set = keys.load_keys(path)
    assert key_set.get(old).record.status == "retired"
    assert key_set.active("RS256").id != old
    assert key_set.active("Ed25519").record.status == "active"


# ---------------------------------------------------------------- the hook


class Recorder:
    """A temporary plugin that records its init_instance calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    @hookimpl
    def init_instance(self, path: str, settings: Settings) -> None:
        self.calls.append((path, settings.instance.name))


class Broken:
    """A temporary plugin whose init_instance fails."""

    @hookimpl
    def init_instance(self, path: str) -> None:
        raise OSError("disk full")


recorder = Recorder()
broken = Broken()


def only_plugins(monkeypatch: pytest.MonkeyPatch, **targets: str) -> None:
    eps = [
        metadata.EntryPoint(name=name, value=value, group="trivium.plugins")
        for name, value in targets.items()
    ]
    real = metadata.entry_points

    def entry_points(**params: Any) -> Any:
        if params.get("group") == "trivium.plugins":
            return eps
        return real(**params)

    monkeypatch.setattr("core.plugins.metadata.entry_points", entry_points)


def test_hook_init_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    only_plugins(monkeypatch, recorder="tests.federation.test_cli:recorder")
    recorder.calls.clear()
    path = tmp_path / "inst"

    result = run("init", str(path), "--name", "Hook U")

    assert result.exit_code == 0, result.output
    assert recorder.calls == [(str(path.resolve()), "Hook U")]
    assert not keys.keys_dir(path).exists()  # federation was not loaded


def test_a_failing_init_instance_fails_init_naming_the_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_plugins(monkeypatch, broken="tests.federation.test_cli:broken")
    path = tmp_path / "inst"

    result = CliRunner(env=ENV).invoke(cli, ["init", str(path)])

    assert result.exit_code == 1
    assert "init_instance failed (broken: OSError: disk full)" in result.output
    assert (path / "instance.toml").exists()  # what was written stays
