"""``trivium serve`` as a real process: gunicorn, not Werkzeug's development server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from core.config import write_instance
from tests.conftest import add_test_keys

STARTUP_DEADLINE = 60.0
STOP_DEADLINE = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def trivium_command() -> list[str]:
    script = Path(sys.executable).parent / "trivium"
    if script.exists():
        return [str(script)]
    found = shutil.which("trivium")
    if found:
        return [found]
    return [sys.executable, "-c", "from core.cli import main; main()"]


@pytest.mark.slow
def test_serve_runs_gunicorn_and_answers(tmp_path: Path) -> None:
    instance = tmp_path / "served"
    port = free_port()
    write_instance(instance, name="Served U", base_url=f"http://127.0.0.1:{port}")
    add_test_keys(instance)
    log_path = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIVIUM_")}
    command = [
        *trivium_command(),
        "--instance",
        str(instance),
        "serve",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--threads",
        "2",
    ]
    url = f"http://127.0.0.1:{port}/api/v1/openapi.json"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            response = None
            deadline = time.monotonic() + STARTUP_DEADLINE
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    pytest.fail(f"serve exited with {proc.returncode}:\n{log_path.read_text()}")
                try:
                    response = requests.get(url, timeout=2)
                    break
                except requests.ConnectionError:
                    time.sleep(0.2)
            assert response is not None, (
                f"not ready in {STARTUP_DEADLINE}s:\n{log_path.read_text()}"
            )

            assert response.status_code == 200
            assert response.headers["Server"].startswith("gunicorn")
            assert response.json()["openapi"].startswith("3.")
        finally:
            stop(proc)

    output = log_path.read_text()
    assert proc.returncode == 0, output
    assert "Using worker: gthread" in output
    assert "db=upgrade target=heads" in output  # the master migrated the fresh SQLite file
    assert "jobs=worker status=started broker=db" in output  # the embedded job worker
    assert "jobs=worker status=stopped" in output
    assert "Werkzeug" not in output and "development server" not in output
    assert (instance / "trivium.db").exists()


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process this test started (by PID), SIGKILL if it hangs."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.slow
def test_worker_runs_queued_jobs_of_the_db_broker(tmp_path: Path) -> None:
    from sqlalchemy import select

    from core import create_app
    from core import schema
    from core.db import get_db
    from core.models import Job
    from core.models import OutboxMail
    from core.tasks import enqueue

    instance = tmp_path / "jobs"
    write_instance(instance, name="Jobs U", base_url="http://127.0.0.1:1")
    add_test_keys(instance)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIVIUM_")}
    env["TRIVIUM_JOBS_EMBEDDED_WORKER"] = "false"
    app = create_app(instance)
    schema.upgrade(app)
    with app.app_context():
        message = enqueue("core.send_mail", "w@example.org", "From the worker", "Body")

    log_path = tmp_path / "worker.log"
    command = [*trivium_command(), "--instance", str(instance), "worker", "--threads", "1"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + STARTUP_DEADLINE
            state = "queued"
            while time.monotonic() < deadline and state != "done":
                assert proc.poll() is None, log_path.read_text()
                with get_db(app).sessions() as sess:
                    state = sess.scalar(
                        select(Job.state).where(Job.message_id == message.message_id)
                    )
                time.sleep(0.2)
            assert state == "done", log_path.read_text()
        finally:
            stop(proc)

    with get_db(app).sessions() as sess:
        assert sess.scalars(select(OutboxMail.subject)).all() == ["From the worker"]
    get_db(app).dispose()
    assert proc.returncode == 0, log_path.read_text()
    assert "jobs=worker status=stopped" in log_path.read_text()


def test_gunicorn_gets_the_server_section(tmp_path: Path) -> None:
    from core import create_app
    from core.serve import gunicorn_options
    from tests.conftest import base_config

    config = base_config(tmp_path)
    config["server"] = {"workers": 3, "threads": 4, "worker_connections": 32}
    options = gunicorn_options(create_app(tmp_path, config))
    assert options["worker_class"] == "gthread"
    assert (options["workers"], options["threads"]) == (3, 4)
    assert options["worker_connections"] == 32
    assert gunicorn_options(create_app(tmp_path, config), workers=1)["workers"] == 1


def test_the_master_freezes_what_it_built_before_the_workers_fork(tmp_path: Path) -> None:
    import gc
    from types import SimpleNamespace

    from core import create_app
    from core.serve import gunicorn_options
    from tests.conftest import base_config

    options = gunicorn_options(create_app(tmp_path, base_config(tmp_path)))
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        options["when_ready"](
            SimpleNamespace(cfg=SimpleNamespace(bind=["x"], workers=1, threads=1))
        )
        # the app and its modules are in the permanent generation now
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
