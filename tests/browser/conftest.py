"""Browser tests: a real Trivium served by gunicorn, driven by the system's Chromium.

The server is ``trivium serve`` in a subprocess (gunicorn, one gthread
worker), the same code path as production: real sockets, whitenoise's cache
headers, the built assets and the session cookie all behave as they will for
users, and nothing the test process holds in memory (caches, the plugin
host) can leak into what the browser sees.  Tests seed data through ``live.app``,
an in-process app on the same SQLite file.

Playwright drives ``/usr/bin/chromium`` (never a downloaded browser); the
tests skip with the reason when it is missing.  A failing test leaves a
screenshot in ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from core import create_app
from core.config import write_instance
from core.db import get_db
from tests.conftest import add_test_keys

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts"
STARTUP_DEADLINE = 60.0
STOP_DEADLINE = 30.0

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _trivium_command() -> list[str]:
    script = Path(sys.executable).parent / "trivium"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from core.cli import main; main()"]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server this fixture started (by PID), SIGKILL if it hangs."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class LiveServer:
    """A served instance: its URL, and an in-process app on the same database for seeding."""

    url: str
    app: Flask
    instance: Path
    log: Path


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    return _free_port()


@contextlib.contextmanager
def serve_live(
    folder: Path, name: str, *, settings: str = "", env: dict[str, str] | None = None
) -> Iterator[LiveServer]:
    """``trivium serve`` of a new instance in ``folder`` on a free port, stopped after.

    :param settings: TOML appended to the instance's ``instance.toml``.
    :param env: environment variables for the server, besides the test defaults.
    """
    instance = folder / "instance"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    write_instance(instance, name=name, base_url=url)
    add_test_keys(instance)
    if settings:
        with (instance / "instance.toml").open("a") as conf:
            conf.write("\n" + settings)
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("TRIVIUM_")}
    server_env["TRIVIUM_ACCOUNTS_HASH_PROFILE"] = "cheapest"
    server_env.update(env or {})
    log_path = folder / "serve.log"
    command = [
        *_trivium_command(),
        "--instance",
        str(instance),
        "serve",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--threads",
        "4",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=server_env, cwd=ROOT
        )
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE
        while True:
            if proc.poll() is not None:
                pytest.fail(f"trivium serve exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                requests.get(f"{url}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    pytest.fail(f"trivium serve not ready:\n{log_path.read_text()}")
                time.sleep(0.2)
        app = create_app(
            instance,
            {"jobs": {"embedded_worker": False}, "accounts": {"hash_profile": "cheapest"}},
        )
        yield LiveServer(url=url, app=app, instance=instance, log=log_path)
        get_db(app).dispose()
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``trivium serve`` on 127.0.0.1 and a free port, for the whole test session."""
    with serve_live(
        tmp_path_factory.mktemp("live"), "Live U", env={"TRIVIUM_PROGRESS_FLUSH_MS": "0"}
    ) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless system Chromium (Playwright never downloads one here)."""
    with playwright_sync.sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase's outcome on the test item, for the screenshot below."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def page(browser: Any, live: LiveServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (no cookies) on the live server; a screenshot if the test fails."""
    context = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
            try:
                tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            except Exception as exc:  # the page may be gone; the failure itself matters more
                print(f"screenshot failed: {exc!r}")
        context.close()


SERIOUS = {"serious", "critical"}


def assert_accessible(page: Any, *, exclude_rules: tuple[str, ...] = ()) -> None:
    """Run axe-core on the page and fail on any serious or critical violation.

    The script is evaluated through the DevTools protocol, so the page's
    Content-Security-Policy stays as strict as users get it.
    """
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `npm ci` (./dev install)")
    page.evaluate(AXE.read_text())
    result = page.evaluate(
        "async (rules) => await axe.run(document, {resultTypes: ['violations'],"
        " rules: Object.fromEntries(rules.map((r) => [r, {enabled: false}]))})",
        list(exclude_rules),
    )
    bad = [v for v in result["violations"] if v.get("impact") in SERIOUS]
    lines = [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(" ".join(n["target"]) for n in v["nodes"][:3])
        for v in bad
    ]
    assert not bad, f"accessibility violations on {page.url}:\n" + "\n".join(lines)
