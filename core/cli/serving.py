"""``trivium serve`` and ``trivium worker``: the web server and the job workers."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from types import FrameType

import click
from flask import Flask

from core.cli.base import cli
from core.cli.base import state_of

log = logging.getLogger(__name__)


@cli.command()
@click.option("--bind", help="host:port (default: server.bind).")
@click.option("--workers", type=click.IntRange(1), help="Processes (default: server.workers).")
@click.option("--threads", type=click.IntRange(1), help="Threads each (default: server.threads).")
@click.pass_context
def serve(ctx: click.Context, bind: str | None, workers: int | None, threads: int | None) -> None:
    """Serve the instance with gunicorn (gthread workers)."""
    from core import serve as server

    server.run(state_of(ctx).app(), bind=bind, workers=workers, threads=threads)


@cli.command()
@click.option("--processes", "-p", default=1, show_default=True, type=click.IntRange(1))
@click.option("--threads", "-t", type=click.IntRange(1), help="Default: jobs.worker_threads.")
@click.option("--queue", "-Q", "queues", multiple=True, help="Only these queues (repeatable).")
@click.pass_context
def worker(
    ctx: click.Context, processes: int, threads: int | None, queues: tuple[str, ...]
) -> None:
    """Run background jobs until stopped (SIGTERM or Ctrl-C).

    For Redis or RabbitMQ brokers this is how jobs run; with the "db" broker it
    runs the database consumer on its own (for jobs.embedded_worker = false).
    """
    state = state_of(ctx)
    app = state.app()
    if processes == 1:
        _run_worker(app, list(queues) or None, threads)
        return
    assert state.instance is not None
    _run_worker_processes(str(state.instance), processes, list(queues) or None, threads)


def _wait_for_stop_signal() -> None:
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_worker(app: Flask, queues: list[str] | None, threads: int | None) -> None:
    from core.tasks import get_jobs

    jobs = get_jobs(app)
    jobs.start_worker(queues=queues, threads=threads)
    try:
        _wait_for_stop_signal()
    finally:
        jobs.stop_worker()


def _worker_process(instance: str, queues: list[str] | None, threads: int | None) -> None:
    from core import create_app

    _run_worker(create_app(instance), queues, threads)


def _run_worker_processes(
    instance: str, processes: int, queues: list[str] | None, threads: int | None
) -> None:
    # "spawn": each child builds its own app, nothing (sockets, threads) is inherited.
    mp = multiprocessing.get_context("spawn")
    children = [
        mp.Process(target=_worker_process, args=(instance, queues, threads), name=f"worker-{n}")
        for n in range(processes)
    ]
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for child in children:
            child.start()
        while not stop.wait(1.0):
            if any(not c.is_alive() for c in children):
                log.error("worker=child status=exited action=stopping_all")
                break
    finally:
        for child in children:
            if child.is_alive() and child.pid is not None:
                child.terminate()
        for child in children:
            child.join(timeout=60)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not stop.is_set():
        raise click.ClickException("a worker process exited unexpectedly")
