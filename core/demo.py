"""``trivium demo``: an instance with sample users, a course and some progress.

Running it again reuses the instance and adds nothing: the data is written in
one transaction, only when the demo administrator does not exist yet.

``trivium demo --peers N`` prepares N such instances, each with a folder,
name and port of its own (:func:`prepare_network`), serves each with a
``trivium serve`` process (:func:`serving`), and then lets plugins join them
together through the ``demo_instances_started`` hook (:func:`join`): the
federation plugin peers them, so that each catalog lists the others' courses.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from argon2 import PasswordHasher
from argon2 import profiles
from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy import inspect
from sqlalchemy import make_url
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import catalog
from core import create_app
from core import schema
from core.config import Settings
from core.config import load_settings
from core.config import write_instance
from core.db import get_db
from core.db import utcnow
from core.models import Course
from core.models import CourseRole
from core.models import Enrolment
from core.models import Identity
from core.models import Item
from core.models import Module
from core.models import Progress
from core.models import User
from core.plugins import PluginHost
from core.plugins import init_instance

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("instances") / "demo"
NAME = "Trivium Demo University"
#: Every demo account has this password; the instance is for trying Trivium out.
DEMO_PASSWORD = "demo-password-123"  # noqa: S105
ADMIN = "admin@demo.test"
INSTRUCTOR = "instructor@demo.test"
LEARNERS = ("ada@demo.test", "grace@demo.test", "alan@demo.test")
COURSE_TITLE = "Foundations of Open Education"

MODULES = [
    (
        "Getting started",
        [
            (
                "Welcome",
                "<h2>Welcome</h2><p>This course shows how a Trivium course is built: "
                "modules of items, each of one content type. These are <em>pages</em>.</p>",
            ),
            (
                "What is open education?",
                "<p>Open education removes barriers to learning: cost, place and time. "
                "Institutions share courses and recognise each other's credentials.</p>",
            ),
        ],
    ),
    (
        "Learning across institutions",
        [
            (
                "Federated catalogues",
                "<p>Instances that trust each other publish their catalogues to one "
                "another, so a learner finds courses from every peer in one place.</p>",
            ),
            (
                "Portable credentials",
                "<p>Completing a course earns an Open Badges 3.0 credential that any "
                "instance can verify with the issuer's public keys.</p>",
            ),
        ],
    ),
]

#: Items completed (by position in the course) and in progress, per learner.
PROGRESS = {
    LEARNERS[0]: ((0, 1, 2), (3,)),
    LEARNERS[1]: ((0,), (1,)),
    LEARNERS[2]: ((), ()),
}


#: Where ``trivium demo --peers N`` keeps its instances, one folder each.
NETWORK_ROOT = Path("instances") / "demo-network"
#: The first network instance's address; the others take the next ports.
NETWORK_BIND = "127.0.0.1:8101"
#: ``(folder, name)`` of each instance of a demo network, in port order.
NETWORK = (
    ("north", "Northern University"),
    ("south", "Southern Institute of Technology"),
    ("east", "Eastern College of Arts"),
)
#: How many instances ``--peers`` may ask for.
MIN_PEERS = 2
MAX_PEERS = len(NETWORK)
#: The hook that lets plugins join the instances of a demo network.
JOIN_HOOK = "demo_instances_started"
#: Upper bounds of waiting for a server to answer, and to stop (seconds; a
#: stopping server gives its requests and jobs gunicorn's 30 s graceful timeout).
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 35.0


class BadBindAddress(ValueError):
    """``--bind`` is not ``HOST:PORT`` with room for every instance's port, or
    not on a loopback host (see :func:`check_bind`)."""


class PortInUse(Exception):
    """Something already listens where a demo instance is to be served."""


class NotADemoInstance(Exception):
    """The demo's accounts were to be added to an instance the demo did not make."""


class ServerFailed(Exception):
    """A demo instance's server exited or did not answer in time."""


@dataclass(frozen=True)
class DemoInstance:
    """A prepared demo instance (the outcome of :func:`prepare`).

    :ivar app: the instance's app in this process, on the database its server uses.
    :ivar path: the instance folder.
    :ivar url: the instance's base URL.
    :ivar name: the instance's name (``[instance] name``).
    :ivar created: the folder was created by this run.
    :ivar seeded: the sample data was added by this run.
    """

    app: Flask
    path: Path
    url: str
    name: str
    created: bool
    seeded: bool


def prepare(
    path: str | os.PathLike[str] = DEFAULT_PATH,
    *,
    bind: str = "127.0.0.1:8000",
    name: str = NAME,
) -> DemoInstance:
    """Create (if needed), migrate and fill the demo instance at ``path``.

    :param bind: the address of a new instance (an existing one keeps its own).
    :param name: the name of a new instance.
    :raise NotADemoInstance: ``path`` holds an instance the demo did not make (see :func:`seed`).
    :raise core.plugins.InitInstanceFailed: a plugin could not prepare the new instance.
    """
    root = Path(path)
    check_folder(root)
    created = False
    if not (root / "instance.toml").exists():
        write_instance(root, name=name, base_url=f"http://{bind}", bind=bind, demo=True)
        init_instance(root)  # what plugins prepare in a new folder, as `trivium init` does
        created = True
    app = create_app(root)
    schema.upgrade(app)
    seeded = seed(app)
    settings: Settings = app.extensions["trivium.settings"]
    url = settings.instance.base_url
    log.info("demo=ready path=%s created=%s seeded=%s", root, created, seeded)
    return DemoInstance(
        app=app,
        path=root,
        url=url,
        name=settings.instance.name,
        created=created,
        seeded=seeded,
    )


def logins() -> list[tuple[str, str]]:
    """``(role, email)`` of every demo account."""
    return [("admin", ADMIN), ("instructor", INSTRUCTOR)] + [("learner", e) for e in LEARNERS]


def seed(app: Flask) -> bool:
    """Add the demo users, course, enrolments and progress unless already there.

    The course is listed in the instance's catalog.  Only an instance the
    demo made (``[instance] demo = true``) takes the data: every demo
    account's password is published.

    :return: True if data was added.
    :raise NotADemoInstance: the instance is not marked as a demo one, and
        holds no demo data yet; nothing was added.
    """
    settings: Settings = app.extensions["trivium.settings"]
    host: PluginHost = app.extensions["trivium.plugins"]
    page = host.content_type("page")
    with app.app_context(), get_db(app).session() as sess:
        if sess.scalar(select(User.id).where(User.email == ADMIN)) is not None:
            return False
        if not settings.instance.demo:
            raise _not_a_demo(settings.path)
        hasher = password_hasher(settings.accounts.hash_profile)
        admin = _user(sess, hasher, ADMIN, "Demo Administrator", admin=True)
        instructor = _user(sess, hasher, INSTRUCTOR, "Ines Instructor", creator=True)
        learners = [_user(sess, hasher, e, e.split("@")[0].title()) for e in LEARNERS]
        sess.flush()

        now = utcnow()
        course = Course(
            title=COURSE_TITLE,
            summary="How courses, catalogues and credentials work in Trivium.",
            description="A short sample course created by `trivium demo`.",
            subject="Education",
            level="Introductory",
            status="published",
            visibility="instance",
            enrolment_mode="open",
            created_by_id=instructor.id,
            published_at=now,
        )
        sess.add(course)
        sess.flush()
        sess.add(CourseRole(course_id=course.id, user_id=instructor.id, role="instructor"))

        items: list[Item] = []
        for m_pos, (m_title, pages) in enumerate(MODULES):
            module = Module(course_id=course.id, title=m_title, position=m_pos)
            sess.add(module)
            sess.flush()
            for i_pos, (title, body) in enumerate(pages):
                config = page.validate_config({"body": body, "estimated_minutes": 5})
                item = Item(
                    module_id=module.id,
                    course_id=course.id,
                    type=page.name,
                    title=title,
                    config=config,
                    position=i_pos,
                )
                sess.add(item)
                items.append(item)
        sess.flush()
        catalog.index_course(sess, course)

        for learner in learners:
            sess.add(Enrolment(course_id=course.id, user_id=learner.id, status="active"))
            done, started = PROGRESS[learner.email]
            for index in done:
                sess.add(_progress(learner, items[index], "completed", now))
            for index in started:
                sess.add(_progress(learner, items[index], "in_progress", now))
        log.info("demo=seeded admin_id=%s course=%s", admin.public_id, course.public_id)
    return True


def _not_a_demo(path: str | os.PathLike[str]) -> NotADemoInstance:
    return NotADemoInstance(
        f"{path} was not made by `trivium demo`, so the demo left it as it was: its "
        "accounts have a published password. Run the demo on a folder of its own "
        "(--path), or, to try it on a copy of this instance, set demo = true in the "
        "[instance] section of the copy's instance.toml."
    )


def check_folder(path: str | os.PathLike[str]) -> None:
    """Refuse a folder holding an instance the demo did not make, before touching it.

    Nothing is migrated, created or written here.  An instance counts as the
    demo's if its ``instance.toml`` says ``demo = true``, or if its database
    already holds the demo administrator (made before instances were marked).

    :raise NotADemoInstance: it holds another instance.
    """
    root = Path(path)
    if not (root / "instance.toml").exists():
        return
    settings = load_settings(root)
    if settings.instance.demo or _holds_demo_admin(settings.database.url):
        return
    raise _not_a_demo(settings.path)


def _holds_demo_admin(url: str) -> bool:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return False  # connecting would create the file
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("users"):
                return False
            found = conn.execute(select(User.id).where(User.email == ADMIN)).first()
            return found is not None
    finally:
        engine.dispose()


def password_hasher(profile: str) -> PasswordHasher:
    """An argon2id hasher with the instance's ``accounts.hash_profile``."""
    params = profiles.CHEAPEST if profile == "cheapest" else profiles.RFC_9106_LOW_MEMORY
    return PasswordHasher.from_parameters(params)


def _user(
    sess: Session,
    hasher: PasswordHasher,
    email: str,
    name: str,
    *,
    admin: bool = False,
    creator: bool = False,
) -> User:
    user = User(
        email=email,
        display_name=name,
        password_hash=hasher.hash(DEMO_PASSWORD),
        is_admin=admin,
        can_create_courses=creator or admin,
    )
    user.identities.append(Identity(provider="local", subject=email))
    sess.add(user)
    return user


def _progress(user: User, item: Item, status: str, now: datetime) -> Progress:
    completed = status == "completed"
    return Progress(
        user_id=user.id,
        item_id=item.id,
        course_id=item.course_id,
        status=status,
        data={"scroll": 1.0 if completed else 0.4},
        completed_at=now if completed else None,
    )


# ---------------------------------------------------------------- a demo network


def check_bind(bind: str, *, public: bool = False) -> tuple[str, int]:
    """The host and port of ``bind``, a ``HOST:PORT`` on a loopback host.

    The demo's accounts share one published password, so a demo instance
    listens on this machine only unless the operator says otherwise.

    :param public: allow any host (``trivium demo --public``).
    :raise BadBindAddress: ``bind`` is not ``HOST:PORT``, or (without
        ``public``) its host is not ``localhost`` or a loopback address.
    """
    host, sep, port_text = bind.rpartition(":")
    if not sep or _HOST.fullmatch(host) is None or not port_text.isdigit():
        raise BadBindAddress(f"{bind!r} is not HOST:PORT, e.g. {NETWORK_BIND}")
    if not public and not _loopback(host):
        raise BadBindAddress(
            f"{bind!r} is reachable from other machines, and every demo account's "
            "password is published: use a loopback address such as 127.0.0.1, or "
            "pass --public to serve it there anyway"
        )
    return host, int(port_text)


# a host name, an IPv4 address or a bracketed IPv6 address
_HOST = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")


def check_served_bind(instance: DemoInstance, *, public: bool = False) -> None:
    """Refuse to serve a demo instance whose ``[server] bind`` other machines reach.

    ``--bind`` only places a *new* instance: an existing folder keeps the
    address in its ``instance.toml``, which is checked here before serving.

    :raise BadBindAddress: as :func:`check_bind`, naming the instance folder.
    """
    bind = _bind_of(instance)
    try:
        check_bind(bind, public=public)
    except BadBindAddress as exc:
        raise BadBindAddress(f"{instance.path}/instance.toml: {exc}") from exc


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:  # another host name: it may resolve anywhere
        return False


def network_binds(bind: str, count: int, *, public: bool = False) -> list[str]:
    """The addresses of ``count`` network instances: ``bind`` and the next ports.

    :param public: allow a host that is not a loopback address (:func:`check_bind`).
    :raise BadBindAddress: ``bind`` is not ``HOST:PORT`` on a host allowed,
        or the ports run out.
    """
    host, port = check_bind(bind, public=public)
    if not 1 <= port <= 65536 - count:
        raise BadBindAddress(f"{bind!r}: {count} ports from {port} on do not fit in 1-65535")
    return [f"{host}:{port + n}" for n in range(count)]


def prepare_network(
    count: int,
    root: str | os.PathLike[str] = NETWORK_ROOT,
    *,
    bind: str = NETWORK_BIND,
    public: bool = False,
) -> list[DemoInstance]:
    """Prepare the first ``count`` instances of :data:`NETWORK`, one folder each under ``root``.

    Each is a demo instance (:func:`prepare`) with the name :data:`NETWORK`
    gives it.  A new one is bound to its port from ``bind`` on; an existing
    folder is reused as it is, with nothing added twice.

    :raise ValueError: ``count`` is not between :data:`MIN_PEERS` and :data:`MAX_PEERS`.
    :param public: allow ``bind`` on a host that is not a loopback address.
    :raise BadBindAddress: checked before any folder is written.
    :raise NotADemoInstance: a folder holds an instance the demo did not make.
    """
    if not MIN_PEERS <= count <= MAX_PEERS:
        raise ValueError(f"a demo network has {MIN_PEERS} to {MAX_PEERS} instances, not {count}")
    binds = network_binds(bind, count, public=public)
    for folder, _ in NETWORK[:count]:
        check_folder(Path(root) / folder)  # every folder before any is touched
    return [
        prepare(Path(root) / folder, bind=address, name=name)
        for (folder, name), address in zip(NETWORK, binds, strict=False)
    ]


@dataclass(frozen=True)
class Server:
    """The ``trivium serve`` process of one demo instance."""

    instance: DemoInstance
    process: subprocess.Popen[bytes]
    log_path: Path


@contextlib.contextmanager
def serving(
    instances: Sequence[DemoInstance], *, timeout: float = STARTUP_TIMEOUT
) -> Iterator[list[Server]]:
    """Serve each instance by a ``trivium serve`` process of its own until the block ends.

    Each server binds the instance's ``[server] bind`` and writes its log to
    ``serve.log`` in the instance folder.  However the block ends, the
    servers are stopped by their process ids (:func:`stop`).

    :raise PortInUse: an address is taken (checked before any server starts).
    :raise ServerFailed: a server exited, or did not answer within ``timeout`` seconds.
    """
    for instance in instances:
        _check_free(_bind_of(instance))
    servers: list[Server] = []
    try:
        for instance in instances:
            servers.append(start_server(instance))
        for server in servers:
            wait_ready(server, timeout)
        yield servers
    finally:
        stop(servers)


def start_server(instance: DemoInstance) -> Server:
    """Start ``trivium --instance PATH serve`` for ``instance``."""
    path = instance.path.resolve()
    log_path = path / "serve.log"
    command = [*_trivium(), "--instance", str(path), "serve", "--workers", "1", "--threads", "4"]
    with log_path.open("wb") as log_file:
        # A session of its own: Ctrl-C in the terminal reaches only this
        # process, which then stops the servers itself, by their ids.
        process = subprocess.Popen(  # noqa: S603 (our own command, no shell)
            command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    log.info("demo=serving instance=%s pid=%d log=%s", instance.url, process.pid, log_path)
    return Server(instance=instance, process=process, log_path=log_path)


def wait_ready(server: Server, timeout: float = STARTUP_TIMEOUT) -> None:
    """Wait until the server answers ``/healthz`` (any HTTP status counts).

    :raise ServerFailed: the server exited, or did not answer within ``timeout`` seconds.
    """
    name, url = server.instance.name, server.instance.url
    deadline = time.monotonic() + timeout
    while True:
        code = server.process.poll()
        if code is not None:
            raise ServerFailed(f"the server of {name} exited ({code}); see {server.log_path}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):  # noqa: S310 (http only)
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServerFailed(
                f"{name} did not answer at {url} within {timeout:.0f} s; see {server.log_path}"
            )
        time.sleep(0.2)


def join(instances: Sequence[DemoInstance]) -> list[str]:
    """Let plugins join the served instances together (the ``demo_instances_started`` hook).

    The hook is called through the first instance's plugin host; a plugin
    that raises is logged and skipped.

    :return: lines for the user: what the plugins did, which failed, or that
        none connected the instances.
    """
    host: PluginHost = instances[0].app.extensions["trivium.plugins"]
    earlier = {id(failure) for failure in host.failures}
    results = host.call(JOIN_HOOK, instances=list(instances))
    lines = [line for result in results for line in _lines(result)]
    failed = [f for f in host.failures if f.hook == JOIN_HOOK and id(f) not in earlier]
    for failure in failed:
        lines.append(f"The {failure.plugin} plugin failed ({failure.error}); see the log.")
    if not lines:
        lines.append("No plugin connected them: each is a demo instance of its own.")
    return lines


def wait_exit(servers: Sequence[Server], poll: float = 0.5) -> Server:
    """Block until one of the servers exits; return it."""
    while True:
        for server in servers:
            if server.process.poll() is not None:
                return server
        time.sleep(poll)


def stop(servers: Sequence[Server]) -> None:
    """Stop the servers: SIGTERM to each by its process id, then wait for them.

    A server still running after :data:`STOP_TIMEOUT` seconds is killed with
    its workers (its own session, whose id is the server's process id).  A
    second Ctrl-C (or SIGTERM, SIGHUP) meanwhile is ignored, so the servers
    are always stopped.
    """
    if threading.current_thread() is not threading.main_thread():
        _stop(servers)  # signals reach only the main thread anyway
        return
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        _stop(servers)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(servers: Sequence[Server]) -> None:
    for server in servers:
        if server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGTERM)
    for server in servers:
        try:
            server.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("demo=stop pid=%d status=hung action=kill", server.process.pid)
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=STOP_TIMEOUT)
        log.info("demo=stopped instance=%s pid=%d", server.instance.url, server.process.pid)


def _lines(result: object) -> list[str]:
    """A hook result as lines: a string is one line, a list one per member."""
    if isinstance(result, str):
        return [result]
    if isinstance(result, list | tuple):
        return [str(line) for line in result]
    return [str(result)]


def _bind_of(instance: DemoInstance) -> str:
    settings: Settings = instance.app.extensions["trivium.settings"]
    return settings.server.bind


def _check_free(bind: str) -> None:
    """:raise PortInUse: nothing may listen at ``bind`` yet (an old demo, say)."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the server will: an address left in TIME_WAIT by a previous run is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except (OSError, ValueError) as exc:
            raise PortInUse(f"cannot serve at {bind} (is another demo running?): {exc}") from exc


def _trivium() -> list[str]:
    """The ``trivium`` command of this Python environment."""
    script = Path(sys.executable).parent / "trivium"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from core.cli import main; main()"]
