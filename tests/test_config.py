"""Instance configuration: files, secrets, environment overrides, validation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from core.config import ConfigError
from core.config import load_settings
from core.config import write_instance


def test_write_instance_creates_config_and_private_secrets(tmp_path: Path) -> None:
    root = write_instance(tmp_path / "uni", name="Uni", base_url="https://uni.example")
    secrets_file = root / "secrets.toml"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    settings = load_settings(root, environ={})
    assert settings.instance.name == "Uni"
    assert settings.instance.base_url == "https://uni.example"
    assert len(settings.instance.secret_key) >= 48
    assert settings.database.url == f"sqlite:///{root.resolve() / 'trivium.db'}"


def test_write_instance_refuses_to_overwrite(tmp_path: Path) -> None:
    write_instance(tmp_path, name="A", base_url="http://a")
    with pytest.raises(ConfigError, match="exists"):
        write_instance(tmp_path, name="B", base_url="http://b")


def test_environment_overrides_files(tmp_path: Path) -> None:
    write_instance(tmp_path, name="A", base_url="http://a")
    env = {
        "TRIVIUM_DATABASE_URL": "postgresql+psycopg://x@y/z",
        "TRIVIUM_ACCOUNTS_REGISTRATION": "invite",
        "TRIVIUM_PLUGINS_DISABLED": "video, chat",
        "TRIVIUM_UNRELATED": "ignored",
    }
    settings = load_settings(tmp_path, environ=env)
    assert settings.database.url == "postgresql+psycopg://x@y/z"
    assert settings.accounts.registration == "invite"
    assert settings.plugins.disabled == ["video", "chat"]


def test_invalid_value_fails_at_startup(tmp_path: Path) -> None:
    write_instance(tmp_path, name="A", base_url="http://a")
    with pytest.raises(ConfigError, match="registration"):
        load_settings(tmp_path, environ={"TRIVIUM_ACCOUNTS_REGISTRATION": "sometimes"})


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    write_instance(tmp_path, name="A", base_url="http://a")
    with (tmp_path / "instance.toml").open("a") as fh:
        fh.write("\n[databse]\nurl = 'x'\n")
    with pytest.raises(ConfigError, match="databse"):
        load_settings(tmp_path, environ={})


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "instance.toml").write_text("[instance\nname=")
    with pytest.raises(ConfigError, match=r"instance\.toml"):
        load_settings(tmp_path, environ={})


def test_missing_instance_folder_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trivium init"):
        load_settings(tmp_path / "nowhere", environ={})


def test_missing_secret_key_is_an_error_outside_tests(tmp_path: Path) -> None:
    (tmp_path / "instance.toml").write_text("[instance]\nname='x'\n")
    with pytest.raises(ConfigError, match="secret_key"):
        load_settings(tmp_path, environ={})


def test_plugin_settings_are_namespaced(tmp_path: Path) -> None:
    write_instance(tmp_path, name="A", base_url="http://a")
    with (tmp_path / "instance.toml").open("a") as fh:
        fh.write("\n[plugins.video]\nladder = [360, 720]\n")
    settings = load_settings(tmp_path, environ={})
    assert settings.plugins.settings_for("video") == {"ladder": [360, 720]}
    assert settings.plugins.settings_for("pdf") == {}
