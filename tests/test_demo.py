"""``trivium demo --peers N``: N demo instances of their own, served, joined by plugins.

Core prepares and serves the instances and calls ``demo_instances_started``;
what federation does with them is tested in tests/federation/test_demo.py.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from click.testing import Result
from flask import Flask
from sqlalchemy import func
from sqlalchemy import select

from core import create_app
from core import demo as core_demo
from core import hookimpl
from core import schema
from core.cli import cli
from core.db import get_db
from core.demo import DemoInstance
from core.demo import Server
from core.models import CatalogEntry
from core.models import Course
from core.models import Progress
from core.models import User
from tests.conftest import base_config

ONLY_TEST_PLUGINS = "recorder,broken"
"""``[plugins] enabled``: no installed plugin loads, only the ones a test registers."""
ONLY_TEST_CONFIG = {"plugins": {"enabled": ONLY_TEST_PLUGINS.split(",")}}
"""The same for an app a test builds of an instance the demo made (with no
federation keys, as federation was not loaded then)."""
ENV = {
    "TRIVIUM_INSTANCE_PATH": None,
    "TRIVIUM_ACCOUNTS_HASH_PROFILE": "cheapest",
    "TRIVIUM_PLUGINS_ENABLED": ONLY_TEST_PLUGINS,
}


def run(*args: str) -> Result:
    return CliRunner(env=ENV).invoke(cli, list(args), catch_exceptions=False)


class Recorder:
    """A plugin that records its calls and checks each instance answers."""

    def __init__(self) -> None:
        self.calls: list[list[DemoInstance]] = []
        self.answers: list[int] = []

    @hookimpl
    def demo_instances_started(self, instances: list[DemoInstance]) -> list[str]:
        self.calls.append(instances)
        for instance in instances:
            self.answers.append(requests.get(instance.url + "/healthz", timeout=5).status_code)
        return [f"recorder saw {len(instances)} instances"]


class Broken:
    """A plugin whose implementation raises."""

    @hookimpl
    def demo_instances_started(self) -> list[str]:
        raise RuntimeError("cannot join")


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` free consecutive ports on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError("no free consecutive ports")


def count(path: Path, model: Any) -> int:
    app = create_app(path, ONLY_TEST_CONFIG)
    try:
        with get_db(app).sessions() as sess:
            return int(sess.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        get_db(app).dispose()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("value", ["0", "1", "4", "-2", "three", ""])
def test_peers_must_be_two_or_three(tmp_path: Path, value: str) -> None:
    root = tmp_path / "net"
    result = run("demo", "--peers", value, "--path", str(root), "--no-serve")
    assert result.exit_code == 2
    assert "Invalid value for '--peers'" in result.output
    assert not root.exists()


@pytest.mark.parametrize("peers", [None, "2"])
@pytest.mark.parametrize(
    "bind", ["0.0.0.0:18950", "192.0.2.7:18950", "[::]:18950", "demo.example.org:18950"]
)
def test_the_demo_serves_on_this_machine_only_unless_told(
    tmp_path: Path, bind: str, peers: str | None
) -> None:
    # every demo account's password is printed and documented
    root = tmp_path / "demo"
    more = ("--peers", peers) if peers else ()
    result = run("demo", *more, "--bind", bind, "--path", str(root), "--no-serve")
    assert result.exit_code == 2
    assert "Invalid value for '--bind'" in result.output and "--public" in result.output
    assert not root.exists()


@pytest.mark.parametrize("bind", ["127.0.0.1:8000", "127.9.9.9:8000", "localhost:80", "[::1]:8000"])
def test_loopback_demo_addresses_need_no_flag(bind: str) -> None:
    assert core_demo.check_bind(bind)[1] in {8000, 80}


def test_an_existing_demo_on_a_public_address_is_not_served_without_the_flag(
    tmp_path: Path,
) -> None:
    # --bind places a new instance only: the folder keeps its own address
    root = tmp_path / "demo"
    made = run("demo", "--bind", "0.0.0.0:18952", "--public", "--path", str(root), "--no-serve")
    assert made.exit_code == 0, made.output
    again = run("demo", "--path", str(root), "--bind", "127.0.0.1:18952")
    assert again.exit_code == 1
    assert "instance.toml" in again.output and "--public" in again.output


def test_public_serves_the_demo_on_any_address(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    result = run("demo", "--bind", "0.0.0.0:18951", "--public", "--path", str(root), "--no-serve")
    assert result.exit_code == 0, result.output
    written = tomllib.loads((root / "instance.toml").read_text())
    assert written["server"]["bind"] == "0.0.0.0:18951"


@pytest.mark.parametrize(
    "bind",
    [
        "nope",
        "127.0.0.1:",
        ":8101",
        "127.0.0.1:http",
        "127.0.0.1:0",
        "127.0.0.1:65535",
        "local'host:8101",
        "[::1:8101",
    ],
)
def test_the_bind_address_of_a_network_is_host_and_port_with_room(
    tmp_path: Path, bind: str
) -> None:
    root = tmp_path / "net"
    result = run("demo", "--peers", "2", "--bind", bind, "--path", str(root), "--no-serve")
    assert result.exit_code == 2
    assert "Invalid value for '--bind'" in result.output
    assert not root.exists()


def test_a_taken_port_stops_the_network_before_any_server_starts(tmp_path: Path) -> None:
    root = tmp_path / "net"
    first = consecutive_free_ports(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first + 1))
        taken.listen()
        result = run("demo", "--peers", "2", "--path", str(root), "--bind", f"127.0.0.1:{first}")
    assert result.exit_code == 1
    assert f"cannot serve at 127.0.0.1:{first + 1} (is another demo running?)" in result.output
    assert not list(root.glob("*/serve.log"))  # no server was started


# ---------------------------------------------------------------- preparing


def test_a_network_is_prepared_once_each_instance_its_own(tmp_path: Path) -> None:
    root = tmp_path / "net"
    args = ("demo", "--peers", "3", "--path", str(root), "--bind", "127.0.0.1:18901", "--no-serve")
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert "Prepared 3 demo instances" in first.output
    assert first.output.count("added its sample data") == 3
    numbers = {}
    for n, (folder, name) in enumerate(core_demo.NETWORK):
        path = root / folder
        app = create_app(path, ONLY_TEST_CONFIG)
        try:
            settings = app.extensions["trivium.settings"]
            assert settings.instance.name == name
            assert settings.instance.base_url == f"http://127.0.0.1:{18901 + n}"
            assert settings.server.bind == f"127.0.0.1:{18901 + n}"
            with get_db(app).sessions() as sess:
                entry = sess.scalars(select(CatalogEntry)).one()  # the course is in the catalog
                assert (entry.title, entry.institution) == (core_demo.COURSE_TITLE, name)
        finally:
            get_db(app).dispose()
        numbers[folder] = [count(path, model) for model in (User, Course, Progress)]
    assert set(map(tuple, numbers.values())) == {(5, 1, 6)}

    second = run(*args)
    assert second.exit_code == 0, second.output
    assert second.output.count("sample data already present") == 3
    assert "created" not in second.output
    for folder, _ in core_demo.NETWORK:
        assert [count(root / folder, m) for m in (User, Course, Progress)] == numbers[folder]


# ---------------------------------------------------------------- joining


def demo_apps(tmp_path: Path, **plugins: object) -> list[DemoInstance]:
    """Two demo instances (not served) with ``plugins`` registered on each."""
    out = []
    for n, name in enumerate(("One U", "Two U")):
        path = tmp_path / name
        path.mkdir()
        url = f"http://127.0.0.1:{18911 + n}"
        config = base_config(path)
        config["instance"] = {"name": name, "base_url": url, "demo": True}
        config["plugins"] = {"enabled": ONLY_TEST_PLUGINS.split(",")}
        app = create_app(path, config, extra_plugins=plugins)
        schema.upgrade(app)
        core_demo.seed(app)
        out.append(DemoInstance(app, path, url, name, created=True, seeded=True))
    return out


def test_join_says_when_no_plugin_connected_the_instances(tmp_path: Path) -> None:
    instances = demo_apps(tmp_path)
    try:
        assert core_demo.join(instances) == [
            "No plugin connected them: each is a demo instance of its own."
        ]
    finally:
        for instance in instances:
            get_db(instance.app).dispose()


def test_join_names_a_failing_plugin_and_keeps_the_others_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    instances = demo_apps(tmp_path, broken=Broken(), recorder=_Lines(["joined", "twice"]))
    try:
        with caplog.at_level(logging.ERROR, logger="core.plugins"):
            lines = core_demo.join(instances)
    finally:
        for instance in instances:
            get_db(instance.app).dispose()
    assert lines == [
        "joined",
        "twice",
        "The broken plugin failed (RuntimeError: cannot join); see the log.",
    ]
    assert "plugin=broken hook=demo_instances_started" in caplog.text


class _Lines:
    """A plugin returning fixed lines."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    @hookimpl
    def demo_instances_started(self) -> list[str]:
        return self.lines


@pytest.mark.slow
def test_hook_demo_instances_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Real ``trivium serve`` processes; SIGTERM (as Ctrl-C) stops them by their ids."""
    recorder, broken = Recorder(), Broken()
    plugins = {"recorder": recorder, "broken": broken}

    def create_app_with_plugins(path: Path) -> Flask:
        return create_app(path, extra_plugins=plugins)

    served: list[Server] = []

    def sigterm_once_joined(servers: list[Server]) -> Server:
        served.extend(servers)
        os.kill(os.getpid(), signal.SIGTERM)  # as an operator's `kill <demo pid>` does
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the demo")

    monkeypatch.setattr(core_demo, "create_app", create_app_with_plugins)
    monkeypatch.setattr(core_demo, "wait_exit", sigterm_once_joined)
    port = consecutive_free_ports(2)
    root = tmp_path / "net"
    with caplog.at_level(logging.ERROR, logger="core.plugins"):
        result = run("demo", "--peers", "2", "--path", str(root), "--bind", f"127.0.0.1:{port}")

    assert result.exit_code == 0, result.output
    urls = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
    # Called once, with both instances in port order, each answering already.
    assert len(recorder.calls) == 1
    instances = recorder.calls[0]
    assert [i.url for i in instances] == urls
    assert [i.name for i in instances] == [name for _, name in core_demo.NETWORK[:2]]
    assert [i.path for i in instances] == [root / folder for folder, _ in core_demo.NETWORK[:2]]
    assert all(isinstance(i.app, Flask) for i in instances)
    assert recorder.answers == [200, 200]
    # The failing plugin is logged and named; the command goes on and stops cleanly.
    assert "plugin=broken hook=demo_instances_started" in caplog.text
    assert "recorder saw 2 instances" in result.output
    assert "The broken plugin failed (RuntimeError: cannot join)" in result.output
    assert "Stopped." in result.output
    assert signal.getsignal(signal.SIGTERM) is not signal.default_int_handler
    assert len(served) == 2
    for server in served:
        assert server.process.returncode is not None  # stopped (by its pid) and reaped
    for url in urls:
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/healthz", timeout=2)


# ---------------------------------------------------------------- whose folder


def cli_run(*args: str) -> Result:
    return CliRunner(env=ENV).invoke(cli, list(args))


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_the_demo_touches_nothing_of_an_instance_it_did_not_make(tmp_path: Path) -> None:
    path = tmp_path / "uni"
    assert cli_run("init", str(path), "--name", "Uni U").exit_code == 0  # not migrated yet
    before = listing(path)

    result = cli_run("demo", "--path", str(path), "--no-serve")

    assert result.exit_code == 1
    assert "was not made by `trivium demo`" in result.output
    assert listing(path) == before  # no database created or migrated, no run/ folder


def test_a_network_checks_every_folder_before_preparing_any(tmp_path: Path) -> None:
    root = tmp_path / "net"
    south = root / "south"
    assert cli_run("init", str(south), "--name", "South U").exit_code == 0

    result = cli_run("demo", "--peers", "2", "--path", str(root), "--no-serve")

    assert result.exit_code == 1 and "south was not made" in result.output
    assert not (root / "north").exists()


def test_a_demo_folder_from_before_the_marker_is_still_served(tmp_path: Path) -> None:
    path = tmp_path / "demo"
    assert cli_run("demo", "--path", str(path), "--no-serve").exit_code == 0
    toml = path / "instance.toml"
    toml.write_text(toml.read_text().replace("demo = true\n", ""))

    again = cli_run("demo", "--path", str(path), "--no-serve")

    assert again.exit_code == 0, again.output
    assert "already present" in again.output
