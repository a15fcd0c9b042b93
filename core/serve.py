"""``trivium serve``: the app under gunicorn, never Werkzeug's development server.

gunicorn runs programmatically (no config file, no command-line parsing) with
the ``gthread`` worker: threads keep the tail latency low (MEASUREMENTS.md) and
can carry websockets later.  The app is built once in the master, which also
brings an embedded SQLite database up to date; each worker process then drops
the database connections it inherited and, for the ``db`` broker, starts its
in-process job worker.  What the master built is frozen for the garbage
collector before the workers fork (:func:`gc.freeze`).
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from core import schema
from core.config import Settings
from core.db import get_db
from core.progress_buffer import close_buffer
from core.tasks import get_jobs

log = logging.getLogger(__name__)


class TriviumServer(BaseApplication):  # type: ignore[misc]
    """A gunicorn application serving one Trivium app with the given settings."""

    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        """Apply our options; nothing is read from files or the command line."""
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        """The WSGI application (already built in the master)."""
        return self.application


def gunicorn_options(
    app: Flask,
    *,
    bind: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """gunicorn settings for ``app``: ``[server]`` values unless overridden."""
    settings: Settings = app.extensions["trivium.settings"]

    def post_fork(server: Any, worker: Any) -> None:
        # Connections opened in the master must not be shared with a child;
        # close=False leaves the parent's sockets alone.
        db = get_db(app)
        db.engine.dispose(close=False)
        if db.replica is not db.engine:
            db.replica.dispose(close=False)

    def post_worker_init(worker: Any) -> None:
        get_jobs(app).start_embedded_worker()

    def worker_exit(server: Any, worker: Any) -> None:
        # heartbeats first: stopping the job worker may wait for running jobs,
        # and the master kills a worker graceful_timeout after asking it to stop
        close_buffer(app)
        get_jobs(app).stop_worker()

    def when_ready(server: Any) -> None:
        # Before the workers fork: everything the master built (modules, the
        # app, its plugins) moves to the collector's permanent generation, so
        # a worker's full collections no longer walk those objects every time
        # (a pause of about 100 ms each with the app loaded) and their memory
        # pages stay shared with the master.
        gc.collect()  # what is garbage now would otherwise stay for good
        gc.freeze()
        log.info(
            "serve=ready bind=%s workers=%d threads=%d instance=%s",
            ",".join(server.cfg.bind),
            server.cfg.workers,
            server.cfg.threads,
            settings.path,
        )

    # gunicorn logs at TRIVIUM_LOG_LEVEL like the rest of Trivium; its access
    # log (one line per request) only at INFO or below.
    level = os.environ.get("TRIVIUM_LOG_LEVEL", "INFO").lower()
    return {
        "bind": [bind or settings.server.bind],
        "workers": workers or settings.server.workers,
        "threads": threads or settings.server.threads,
        "worker_class": "gthread",
        "worker_connections": settings.server.worker_connections,
        "proc_name": "trivium",
        "accesslog": "-" if level in ("debug", "info") else None,
        "errorlog": "-",
        "loglevel": level,
        "timeout": 60,
        "graceful_timeout": 30,
        "keepalive": 5,
        # gunicorn's control socket defaults to one path per user, which two
        # instances on one machine would share.
        "control_socket_disable": True,
        "post_fork": post_fork,
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
        "when_ready": when_ready,
    }


def prepare(app: Flask, *, upgrade: bool | None = None) -> None:
    """Master-side start-up: migrate the embedded database, drop pooled connections.

    :param upgrade: run ``upgrade heads``; by default only for SQLite (a
        PostgreSQL deployment migrates with ``trivium db upgrade``).
    """
    db = get_db(app)
    if db.is_sqlite if upgrade is None else upgrade:
        schema.upgrade(app)
    db.dispose()


def run(
    app: Flask,
    *,
    bind: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    upgrade: bool | None = None,
) -> None:
    """Serve ``app`` until gunicorn is told to stop (SIGTERM, SIGINT)."""
    prepare(app, upgrade=upgrade)
    options = gunicorn_options(app, bind=bind, workers=workers, threads=threads)
    TriviumServer(app, options).run()
