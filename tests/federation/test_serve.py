"""Two instances run by ``trivium serve`` (gunicorn, embedded job worker) peer and notify."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from click.testing import CliRunner
from click.testing import Result

from core.cli import cli
from core.config import write_instance
from federation.keys import keys_dir
from tests.test_serve import STARTUP_DEADLINE
from tests.test_serve import free_port
from tests.test_serve import stop
from tests.test_serve import trivium_command

pytestmark = pytest.mark.slow


@contextmanager
def served(root: Path, name: str, keys_from: Path) -> Iterator[tuple[Path, str]]:
    """An instance folder served by ``trivium serve`` on 127.0.0.1 until the block ends."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    folder = root / name
    write_instance(folder, name=name, base_url=url)
    with (folder / "instance.toml").open("a") as fh:
        # ticks every second: an approval's pull waits for the next tick, and
        # the first tick runs as soon as the server answers, before any peering
        fh.write("\n[plugins.federation]\nallow_http_peers = true\ncatalog_tick_seconds = 1\n")
    shutil.copytree(keys_dir(keys_from), keys_dir(folder))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIVIUM_")}
    command = [
        *trivium_command(),
        *("--instance", str(folder), "serve", "--bind", f"127.0.0.1:{port}"),
        *("--workers", "1", "--threads", "2"),
    ]
    log_path = root / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + STARTUP_DEADLINE
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    requests.get(url + "/.well-known/trivium", timeout=2)
                    break
                except requests.ConnectionError:
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.2)
            yield folder, url
        finally:
            stop(proc)


def trivium(folder: Path, *args: str) -> Result:
    return CliRunner(env={"TRIVIUM_INSTANCE_PATH": None}).invoke(
        cli, ["--instance", str(folder), *args]
    )


def test_served_instances_peer_and_process_a_notification(
    tmp_path: Path, key_sets: list[Path]
) -> None:
    with ExitStack() as stack:
        a, a_url = stack.enter_context(served(tmp_path, "a", key_sets[0]))
        b, b_url = stack.enter_context(served(tmp_path, "b", key_sets[1]))

        for here, there in ((a, b_url), (b, a_url)):
            added = trivium(here, "peers", "add", there)
            assert added.exit_code == 0, added.output
            assert trivium(here, "peers", "approve", there).exit_code == 0

        notified = trivium(a, "peers", "notify", b_url)
        assert notified.exit_code == 0, notified.output
        assert "(HTTP 202)" in notified.output

        engine = sa.create_engine(f"sqlite:///{b / 'trivium.db'}")
        try:
            deadline = time.monotonic() + STARTUP_DEADLINE
            state = None
            while state != "processed" and time.monotonic() < deadline:
                with engine.connect() as conn:
                    state = conn.execute(sa.text("SELECT state FROM federation_inbox")).scalar()
                time.sleep(0.1)
            synced = None
            while synced is None and time.monotonic() < deadline:
                with engine.connect() as conn:
                    synced = conn.execute(
                        sa.text("SELECT catalog_synced_at FROM federation_peers")
                    ).scalar()
                time.sleep(0.1)
        finally:
            engine.dispose()
        assert state == "processed"  # by the embedded worker of B's gunicorn process
        assert synced is not None  # B pulled A's catalog feed: approval left it due
        document = json.loads(requests.get(b_url + "/.well-known/trivium", timeout=5).content)
        assert document["endpoints"]["inbox"] == b_url + "/federation/v1/inbox"
