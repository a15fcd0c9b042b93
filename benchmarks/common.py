"""Shared pieces of the benchmarks: free ports, server processes, wrk runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers (any status) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (loopback only)
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not become ready in {timeout}s")


class Server:
    """A server subprocess we started; stopped by its own PID only."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the live processes of our session.

        The server and its workers: what serving cost, whatever else the
        machine runs meanwhile.  Linux only (reads ``/proc``); 0.0 elsewhere.
        """
        total = 0
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            # after the command: state ppid pgrp session ... utime(12) stime(13),
            # then the CPU of its ended children (a worker replaced meanwhile)
            if int(fields[3]) == self.proc.pid:
                total += int(fields[11]) + int(fields[12])
                if stat.parent.name == str(self.proc.pid):
                    total += int(fields[13]) + int(fields[14])
        return total / tick

    def stop(self) -> None:
        """SIGTERM our process group, then SIGKILL after a grace period."""
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


@dataclass
class WrkResult:
    """What one wrk run measured."""

    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    requests: int = 0
    server_cpu_us: float = 0.0
    """Server CPU time per request (all its processes), if the server was given."""

    def line(self) -> str:
        """One printed row."""
        cpu = f"  server CPU {self.server_cpu_us:>5.0f} us/req" if self.server_cpu_us else ""
        return (
            f"{self.name:<22} {self.requests_per_s:>9.0f} req/s  p50 {self.p50_ms:>7.1f} ms  "
            f"p99 {self.p99_ms:>7.1f} ms  non-2xx {self.non_2xx}  socket errors {self.errors}" + cpu
        )


def need_wrk() -> str:
    """The wrk binary, or exit with how to get it."""
    path = shutil.which("wrk")
    if path is None:
        sys.exit("this benchmark drives load with wrk: install it (Debian: apt-get install wrk)")
    return path


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"cannot read latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    name: str,
    url: str,
    *,
    seconds: int,
    connections: int = 64,
    threads: int = 2,
    script: Path | None = None,
    script_env: dict[str, str] | None = None,
    server: Server | None = None,
) -> WrkResult:
    """Run wrk against ``url`` for a bounded time and parse its report.

    Given the ``server``, also the server's CPU time per request.
    """
    argv = [need_wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    argv += ["--timeout", "10s"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    cpu_before = server.cpu_seconds() if server is not None else 0.0
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
        env={**os.environ, **(script_env or {})},
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    cpu = server.cpu_seconds() - cpu_before if server is not None else 0.0
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        name=name,
        requests_per_s=rps,
        p50_ms=p50,
        p99_ms=p99,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        errors=sum(int(g) for g in errs.groups()) if errs else 0,
        requests=done,
        server_cpu_us=cpu / done * 1e6 if done and server is not None else 0.0,
    )


def write_json(path: Path, data: object) -> None:
    """Save figures next to the printout for later comparison."""
    path.write_text(json.dumps(data, indent=2))


def new_instance(folder: Path) -> Path:
    """``trivium init`` + ``db upgrade`` of a benchmark instance in ``folder``."""
    trivium = str(VENV_BIN / "trivium")
    instance = folder / "bench"
    subprocess.run(
        [trivium, "init", str(instance), "--name", "Bench U", "--base-url", "http://127.0.0.1"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [trivium, "--instance", str(instance), "db", "upgrade"], check=True, capture_output=True
    )
    return instance


def per_worker(connections: int, workers: int) -> int:
    """Connections each gunicorn worker may hold so ``connections`` spread evenly.

    gthread workers accept greedily: without a cap, wrk's simultaneous
    connects can all land on one worker and halve a run's throughput.
    """
    return -(-connections // workers)


def serve_instance(
    instance: Path, *, workers: int, threads: int, connections: int
) -> tuple[Server, int]:
    """Start ``trivium serve`` on a free port (stopped by :func:`stop_all`)."""
    port = free_port()
    server = Server(
        [
            str(VENV_BIN / "trivium"),
            "--instance",
            str(instance),
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
        ],
        env={
            "TRIVIUM_LOG_LEVEL": "WARNING",
            "TRIVIUM_SERVER_WORKER_CONNECTIONS": str(per_worker(connections, workers)),
        },
    )
    _started.append(server)
    return server, port


def serve_wsgi(
    app: str,
    *,
    workers: int,
    threads: int,
    connections: int,
    chdir: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Server, int]:
    """Start a reference WSGI app (``module:name``) under gunicorn exactly as
    ``trivium serve`` runs (gthread, same workers, threads and connection cap)."""
    port = free_port()
    server = Server(
        [
            str(VENV_BIN / "gunicorn"),
            "-k",
            "gthread",
            "-w",
            str(workers),
            "--threads",
            str(threads),
            "--worker-connections",
            str(per_worker(connections, workers)),
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "--chdir",
            str(chdir or Path(__file__).parent),
            app,
        ],
        env=env,
    )
    _started.append(server)
    return server, port


_started: list[Server] = []


def stop_all() -> None:
    """Stop every server :func:`serve_instance` and :func:`serve_wsgi` started."""
    while _started:
        _started.pop().stop()
