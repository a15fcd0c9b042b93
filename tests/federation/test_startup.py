"""An instance whose keys are missing or broken does not start; only explicit commands make keys.

New keys are a new identity its peers have not pinned, so start-up never
makes them: ``trivium init`` (and the demo) and ``python -m federation keys
generate`` do, and the latter never replaces a key.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient

from core import create_app
from core import demo as core_demo
from core.cli import cli
from core.config import write_instance
from core.db import get_db
from core.plugins import StartupError
from federation import __main__ as federation_main
from federation import keys
from tests.conftest import add_test_keys
from tests.conftest import base_config

ENV = {"TRIVIUM_INSTANCE_PATH": None, "TRIVIUM_ACCOUNTS_HASH_PROFILE": "cheapest"}


def trivium(path: Path, *args: str) -> Result:
    return CliRunner(env=ENV).invoke(cli, ["--instance", str(path), *args])


def generate(*args: str) -> Result:
    return CliRunner(env=ENV).invoke(federation_main.main, ["keys", "generate", *args])


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and mode."""
    if not folder.exists():
        return {}
    return {
        p.name: (p.read_bytes(), p.stat().st_mode) for p in sorted(folder.iterdir()) if p.is_file()
    }


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """An instance folder as ``trivium init`` writes it, but without its keys."""
    folder = tmp_path / "inst"
    write_instance(folder, name="Bare U", base_url="http://127.0.0.1:8000")
    return folder


def no_keys_config(tmp_path: Path, *, testing: bool) -> dict[str, Any]:
    config = base_config(tmp_path)
    shutil.rmtree(keys.keys_dir(tmp_path))  # base_config gave it the test keys
    config["testing"] = testing
    config["instance"]["secret_key"] = "s" * 48
    return config


# ---------------------------------------------------------------- missing keys


@pytest.mark.parametrize("testing", [False, True])
def test_an_instance_without_keys_does_not_start(tmp_path: Path, testing: bool) -> None:
    config = no_keys_config(tmp_path, testing=testing)

    with pytest.raises(keys.KeysUnusable) as refused:
        create_app(tmp_path, config)

    message = str(refused.value)
    assert isinstance(refused.value, StartupError)
    assert message.startswith(f"plugin federation: {keys.keys_dir(tmp_path)} holds no keys")
    assert "copy their keys/ folder here" in message
    assert f"-m federation keys generate --instance {tmp_path}" in message
    assert not keys.keys_dir(tmp_path).exists()  # nothing was made


@pytest.mark.parametrize("command", [("users", "list"), ("keys", "list"), ("serve",), ("worker",)])
def test_commands_that_start_the_instance_refuse_without_keys(
    bare: Path, command: tuple[str, ...]
) -> None:
    result = trivium(bare, *command)

    assert result.exit_code == 1, result.output
    assert f"Error: plugin federation: {keys.keys_dir(bare)} holds no keys" in result.output
    assert "Traceback" not in result.output
    assert not keys.keys_dir(bare).exists()


def test_init_and_the_demo_still_make_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIVIUM_ACCOUNTS_HASH_PROFILE", "cheapest")
    assert CliRunner(env=ENV).invoke(cli, ["init", str(tmp_path / "new")]).exit_code == 0
    assert keys.usable_keys(tmp_path / "new")

    instance = core_demo.prepare(tmp_path / "demo", bind="127.0.0.1:18931")
    get_db(instance.app).dispose()
    assert {k.record.alg for k in keys.usable_keys(tmp_path / "demo").keys} == {"Ed25519", "RS256"}


# ---------------------------------------------------------------- broken keys


def _records(folder: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads((folder / "index.json").read_text())["keys"]
    return records


def _pem(folder: Path, alg: str) -> Path:
    (record,) = (r for r in _records(folder) if r["alg"] == alg)
    return folder / f"{record['id']}.pem"


def _drop_rsa_from_index(folder: Path) -> None:
    index = json.loads((folder / "index.json").read_text())
    index["keys"] = [r for r in index["keys"] if r["alg"] != "RS256"]
    (folder / "index.json").write_text(json.dumps(index))


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "key file missing": (lambda f: _pem(f, "RS256").unlink(), "listed in index.json, is missing"),
    "key file corrupt": (
        lambda f: _pem(f, "Ed25519").write_bytes(b"-----BEGIN PRIVATE KEY-----\nbroken\n"),
        "is not a readable private key",
    ),
    "key file of another key": (
        lambda f: _pem(f, "Ed25519").write_bytes(_pem(f, "RS256").read_bytes()),
        "does not hold the Ed25519 key",
    ),
    "index missing": (lambda f: (f / "index.json").unlink(), "index.json is missing"),
    "index corrupt": (lambda f: (f / "index.json").write_text("{not json"), "index.json"),
    "no active RSA key": (_drop_rsa_from_index, "lists no active RS256 key"),
    "key file readable by others": (
        lambda f: _pem(f, "RS256").chmod(0o644),
        "run: chmod 600",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_key_set_does_not_start_and_is_left_alone(tmp_path: Path, breakage: str) -> None:
    config = base_config(tmp_path)
    folder = keys.keys_dir(tmp_path)
    damage, detail = BREAKAGES[breakage]
    damage(folder)
    before = snapshot(folder)

    with pytest.raises(keys.KeysUnusable) as refused:
        create_app(tmp_path, config)

    message = str(refused.value)
    assert message.startswith("plugin federation: ")
    assert detail in message
    if breakage != "key file readable by others":
        assert f"{folder} cannot be used" in message
        assert "Copy keys/ whole from another machine of this instance" in message
    assert snapshot(folder) == before


def test_the_cli_names_a_broken_key_file(bare: Path) -> None:
    add_test_keys(bare)
    pem = _pem(keys.keys_dir(bare), "RS256")
    pem.unlink()

    result = trivium(bare, "users", "list")

    assert result.exit_code == 1
    assert f"{keys.keys_dir(bare)} cannot be used: {pem}" in result.output


def test_a_running_instance_keeps_its_keys_if_the_folder_breaks(
    app: Flask, client: FlaskClient
) -> None:
    before = client.get("/.well-known/jwks.json").json
    folder = keys.keys_dir(app.extensions["trivium.settings"].path)

    (folder / "index.json").unlink()

    after = client.get("/.well-known/jwks.json")
    assert after.status_code == 200
    assert after.json == before
    assert not (folder / "index.json").exists()  # and made no new keys


# ---------------------------------------------------------------- keys generate


def test_generate_makes_a_key_set_the_instance_starts_with(bare: Path) -> None:
    result = generate("--instance", str(bare))

    assert result.exit_code == 0, result.output
    key_set = keys.usable_keys(bare)
    assert [k.record.alg for k in key_set.keys] == ["Ed25519", "RS256"]
    for key in key_set.keys:
        assert f"New active {key.record.alg} key {key.id}" in result.output
    folder = keys.keys_dir(bare)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in folder.iterdir())
    assert trivium(bare, "keys", "list").exit_code == 0


@pytest.mark.parametrize("existing", ["complete", "index only", "one key file only"])
def test_generate_never_replaces_a_key(bare: Path, existing: str) -> None:
    add_test_keys(bare)
    folder = keys.keys_dir(bare)
    if existing == "index only":
        for pem in folder.glob("*.pem"):
            pem.unlink()
    elif existing == "one key file only":
        (folder / "index.json").unlink()
        sorted(folder.glob("*.pem"))[0].unlink()
    before = snapshot(folder)

    result = generate("--instance", str(bare))

    assert result.exit_code == 1
    assert f"Error: {folder} already holds keys" in result.output
    assert "they are never replaced" in result.output
    assert snapshot(folder) == before


def test_generate_wants_an_instance_folder(tmp_path: Path) -> None:
    result = generate("--instance", str(tmp_path))

    assert result.exit_code == 1
    assert "is not an instance folder (no instance.toml)" in result.output
    assert not keys.keys_dir(tmp_path).exists()


def test_generate_runs_as_a_module(bare: Path) -> None:
    """The command the start-up error names, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIVIUM_")}
    done = subprocess.run(
        [sys.executable, "-m", "federation", "keys", "generate", "--instance", str(bare)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert keys.usable_keys(bare)
    app = create_app(bare)
    get_db(app).dispose()


def test_a_bad_federation_setting_stops_the_cli_too(tmp_path: Path) -> None:
    path = tmp_path / "uni"
    assert CliRunner(env=ENV).invoke(cli, ["init", str(path)]).exit_code == 0
    with (path / "instance.toml").open("a") as fh:
        fh.write("\n[plugins.federation]\nsignature_max_age = 5\n")

    result = trivium(path, "users", "list")

    assert result.exit_code == 1, result.output
    assert "Error: plugin federation: [plugins.federation]:" in result.output
    assert "signature_max_age" in result.output and "Traceback" not in result.output


def test_the_printed_command_survives_a_space_in_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "my uni"
    command = keys.generate_command(folder)
    assert command.endswith(f"--instance '{folder}'")
    assert shlex.split(command)[-1] == str(folder)
