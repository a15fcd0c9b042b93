"""Fixtures: an app per test on SQLite (and on PostgreSQL when configured)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from core import create_app
from core.auth.tokens import create_token
from core.db import Base
from core.db import get_db
from core.models import User
from federation.keys import generate_keys
from federation.keys import keys_dir

PG_URL = os.environ.get("TRIVIUM_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("TRIVIUM_TEST_REDIS_URL", "")

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not PG_URL, reason="TRIVIUM_TEST_DATABASE_URL not set"),
        ],
    ),
]


SCHEMA_PREFIX = "trivium_test_"
_made_schema: list[str] = []


def _worker_schema() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    # the pid keeps two test runs on one machine out of each other's tables
    return f"{SCHEMA_PREFIX}{os.getpid()}_{worker}"


def pg_worker_url() -> str:
    """PostgreSQL URL with a schema of this xdist worker's own on the search path.

    Workers share one database; each truncates only its own schema's tables,
    and drops the schema when its session ends (:func:`pytest_sessionfinish`).
    """
    import sqlalchemy as sa

    schema = _worker_schema()
    if not _made_schema:
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        engine.dispose()
        _made_schema.append(schema)
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


def _drop_schemas(names: list[str]) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL)
    try:
        for name in names:
            try:
                with engine.begin() as conn:
                    # a connection some test left open must not hang the run's end
                    conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            except sa.exc.SQLAlchemyError as exc:
                print(f"\ntest schema {name} left in place: {exc.__class__.__name__}")
    finally:
        engine.dispose()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Drop the test schemas of runs on this machine that ended without dropping theirs."""
    if not PG_URL or os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controller (or a plain run) cleans up, once
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            names = list(
                conn.scalars(
                    text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :prefix"),
                    {"prefix": SCHEMA_PREFIX + "%"},
                )
            )
    except sa.exc.SQLAlchemyError:
        return  # the PostgreSQL tests report it
    finally:
        engine.dispose()
    gone = []
    for name in names:
        pid = name.removeprefix(SCHEMA_PREFIX).split("_", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            gone.append(name)
    _drop_schemas(gone)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop this process's test schema, if it made one, and its key set."""
    if PG_URL and _made_schema:
        _drop_schemas([_worker_schema()])
    for folder in _key_template:
        shutil.rmtree(folder, ignore_errors=True)


_key_template: list[Path] = []


def add_test_keys(folder: Path) -> None:
    """Give the instance folder ``folder`` keys, unless it has some: a copy of one set.

    An instance does not start without keys, and making an RSA key takes
    about 0.1 s, so this process generates one set and every test instance
    holds a copy, as the machines of one scaled-out instance do.
    """
    if keys_dir(folder).exists():
        return
    if not _key_template:
        template = Path(tempfile.mkdtemp(prefix="trivium-test-keys-"))
        generate_keys(template)
        _key_template.append(template)
    shutil.copytree(keys_dir(_key_template[0]), keys_dir(folder))


def base_config(tmp_path: Path, backend: str = "sqlite") -> dict[str, Any]:
    """Settings for a throwaway test instance in ``tmp_path``, which gets its keys."""
    add_test_keys(tmp_path)
    url = pg_worker_url() if backend == "postgresql" else f"sqlite:///{tmp_path / 'test.db'}"
    return {
        "testing": True,
        "path": str(tmp_path),
        "instance": {"name": "Test U", "base_url": "http://testserver"},
        "database": {"url": url},
        "jobs": {"broker": "db", "embedded_worker": False},
        "accounts": {"hash_profile": "cheapest"},
        # progress heartbeats written in their request (tests/test_progress_buffer.py
        # covers batching)
        "progress": {"flush_ms": 0},
    }


def reset_schema(app: Flask) -> None:
    """Give the test an empty database with every table."""
    db = get_db(app)
    if db.is_sqlite:
        Base.metadata.create_all(db.engine)
        return
    Base.metadata.create_all(db.engine)
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this test run."""
    return str(request.param)


@pytest.fixture
def config(tmp_path: Path, backend: str) -> dict[str, Any]:
    """The test instance's settings (tests may edit before ``app`` is built)."""
    return base_config(tmp_path, backend)


@pytest.fixture
def app(config: dict[str, Any]) -> Iterator[Flask]:
    """A fresh application with an empty database."""
    application = create_app(config["path"], config)
    reset_schema(application)
    yield application
    get_db(application).dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of ``app``."""
    return app.test_client()


class Users:
    """Creates users and bearer tokens straight in the database."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._n = 0

    def create(
        self,
        email: str | None = None,
        *,
        admin: bool = False,
        creator: bool = False,
        password: str | None = None,
    ) -> User:
        """A user (``creator``: may create courses)."""
        self._n += 1
        email = email or f"user{self._n}@example.org"
        password_hash = None
        if password is not None:
            from argon2 import PasswordHasher
            from argon2.profiles import CHEAPEST

            password_hash = PasswordHasher.from_parameters(CHEAPEST).hash(password)
        with get_db(self.app).session() as sess:
            user = User(
                email=email,
                display_name=email.split("@")[0].title(),
                is_admin=admin,
                can_create_courses=creator or admin,
                password_hash=password_hash,
            )
            sess.add(user)
            sess.flush()
            sess.expunge(user)
        return user

    def headers(self, user: User) -> dict[str, str]:
        """``Authorization`` headers with a fresh personal API token of ``user``."""
        with get_db(self.app).session() as sess:
            _, plaintext = create_token(sess, sess.get_one(User, user.id), "test")
        return {"Authorization": f"Bearer {plaintext}"}


@pytest.fixture
def users(app: Flask) -> Users:
    """Factory of users and their API-token headers."""
    return Users(app)


def snapshot(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, for asserting that a refused request changed nothing."""
    db = get_db(app)
    out: dict[str, list[tuple[Any, ...]]] = {}
    with db.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(table.select()).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out
