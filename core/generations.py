"""Change counters shared by every process of an instance on one machine.

:mod:`core.readcache` keeps what learners' requests read most in each
process.  A cached entry remembers the counters of what it was built from
(a course, a user's standing in a course); a committed change adds one to
those counters, and every process sees the new value at its next read, at
the cost of a memory read, because the counters live in a small file mapped
into each process (``<instance>/run/generations-2``, see :data:`FILE_NAME`).  The gunicorn workers,
job workers and CLI commands of one instance folder share it.

Counters are slots of a fixed table: a key (``("course", 12)``) hashes to a
slot, so two keys may share one and a change to either invalidates both.
That costs a rebuild, never a stale answer.  Learners' progress counters
move with every batch of heartbeats, many times a second under load, so they
hash into a part of the table of their own (:data:`BUSY_KINDS`): otherwise
the course, standing or token entries that shared a slot with any active
learner's progress would be rebuilt on almost every read.

Processes on *other* machines (a scaled-out deployment sharing one
PostgreSQL) have their own file.  With a Redis cache (``[cache] url =
redis://…``) every move is also published on a Redis channel of the instance
and each process moves its machine's counters when a message from another
process arrives (:class:`RedisRelay`), so other machines see a change within
the message's travel time.  If Redis is unreachable, messages are lost and
the cache's time limit (``[cache] read_seconds``) bounds how late a change
is seen.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import queue
import socket
import struct
import threading
import uuid
import weakref
import zlib
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core import process

log = logging.getLogger(__name__)

#: Kinds of keys whose counters move all the time (a learner's stored
#: progress, :func:`core.readcache.progress_key`): their slots are apart.
BUSY_KINDS = frozenset({"progress"})
#: Slots for the other keys (courses, standings, users, tokens, ...).
QUIET_SLOTS = 1 << 16
#: Slots for the keys of :data:`BUSY_KINDS`, after the quiet ones.
BUSY_SLOTS = 1 << 16
SLOTS = QUIET_SLOTS + BUSY_SLOTS
#: The file's name, versioned with its layout: processes of a release that
#: hashed keys to other slots must not share counters with this one.
FILE_NAME = "generations-2"
_SLOT = struct.Struct("<Q")
_SIZE = SLOTS * _SLOT.size
_WRAP = 0xFFFFFFFFFFFFFFFF

Key = tuple[str, int] | tuple[str, int, int]


def slot_of(key: Key) -> int:
    """The counter slot of ``key`` (the same in every process)."""
    digest = zlib.crc32(repr(key).encode())
    if key[0] in BUSY_KINDS:
        return QUIET_SLOTS + digest % BUSY_SLOTS
    return digest % QUIET_SLOTS


class SharedFile:
    """A file of fixed size mapped into every process that opens it, with a lock across them.

    With ``path=None`` it is plain memory of this process (and its lock a
    thread lock).
    """

    def __init__(self, path: Path | None, size: int) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path = path
        if path is None:
            self.map: mmap.mmap | bytearray = bytearray(size)
            self.identity = uuid.uuid4().hex
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            self.map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = os.fstat(fd)
        self.identity = f"{socket.gethostname()}:{info.st_dev}:{info.st_ino}"
        """The same for every process that maps this file (on this machine)."""
        # flock() locks belong to the open file, which a forked child shares
        # with its parent: each process locks through a descriptor of its own.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reopen_in_child(ref))

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        if self._fd is not None and self._path is not None:
            inherited, self._fd = self._fd, None
            os.close(inherited)
            self._fd = os.open(self._path, os.O_RDWR)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lock: one thread of one process at a time."""
        with self._lock:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Unmap the file."""
        if isinstance(self.map, mmap.mmap):
            self.map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _reopen_in_child(ref: weakref.ref[SharedFile]) -> None:
    shared = ref()
    if shared is not None:
        shared._after_fork()


class Generations:
    """A table of counters in a shared file (or in memory with ``path=None``)."""

    def __init__(self, path: Path | None) -> None:
        self._file = SharedFile(path, _SIZE)
        self._map = self._file.map
        self.relay: RedisRelay | None = None

    @property
    def machine(self) -> str:
        """Names these counters: processes sharing the file (one machine) share the name."""
        return self._file.identity

    def read(self, slot: int) -> int:
        """The current value of ``slot``."""
        value: int = _SLOT.unpack_from(self._map, slot * _SLOT.size)[0]
        return value

    def bump(self, slots: Iterable[int]) -> dict[int, int]:
        """Add one to each slot (once each), visible to every process at once.

        With a :class:`RedisRelay`, other machines are told too.

        :return: each slot's value just before this move (so the caller knows
            whether anyone else moved it since it last read it).
        """
        unique = sorted(set(slots))
        if not unique:
            return {}
        before = self.bump_here(unique)
        if self.relay is not None:
            self.relay.publish(unique)
        return before

    def bump_here(self, unique: list[int]) -> dict[int, int]:
        """Add one to each of these distinct slots on this machine only.

        :return: each slot's value just before the move.
        """
        before: dict[int, int] = {}
        with self._file.locked():
            for slot in unique:
                offset = slot * _SLOT.size
                current = _SLOT.unpack_from(self._map, offset)[0]
                before[slot] = current
                _SLOT.pack_into(self._map, offset, (current + 1) & _WRAP)
        return before

    def close(self) -> None:
        """Unmap the file (and stop relaying)."""
        if self.relay is not None:
            self.relay.close()
        self._file.close()


class RedisRelay:
    """Publishes counter moves on Redis and applies other processes' moves here.

    Each process has an origin id, made of its machine's name (its counters
    file's, see :attr:`Generations.machine`) and its own, and skips the
    messages of its machine: their moves are in its counters already.  Its two
    threads start with its first use (after a fork, in the child): a sender
    that publishes what :meth:`publish` queued — so a slow or unreachable
    Redis never holds up a flush that holds database locks — and a listener
    that applies other processes' moves, reconnecting with a growing pause.
    Neither raises into requests; failures are logged.
    """

    def __init__(self, url: str, channel: str, generations: Generations) -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.channel = channel
        self.generations = generations
        self._origin = ""
        self._pid = 0
        self._start_lock = threading.Lock()
        self._ready = threading.Event()
        self._outbox: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()
        self._closed = False
        self._pubsub: Any = None
        self.on_connect: Callable[[], None] | None = None
        """Called in the listener each time it (re)subscribes (moves may have been missed)."""
        generations.relay = self

    def close(self) -> None:
        """Stop both threads (the listener once its connection closes)."""
        self._closed = True
        self._origin = ""
        self._outbox.put(None)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):  # a broken connection is closed anyway
                self._pubsub.close()

    def ensure_listening(self) -> None:
        """Start this process's threads if they are not running."""
        pid = process.pid()
        if self._pid == pid or self._closed:
            return
        with self._start_lock:
            if self._pid == pid:
                return
            # the machine's name first: its other processes share our counters
            self._origin = f"{self.generations.machine}/{uuid.uuid4().hex}"
            self._ready = threading.Event()
            self._outbox = queue.SimpleQueue()
            self._pid = pid
            origin = self._origin
            for target in (self._listen, self._send):
                threading.Thread(
                    target=target, args=(origin,), name="trivium-generations", daemon=True
                ).start()

    def publish(self, slots: list[int]) -> None:
        """Queue these slots' moves for the other processes (never blocks)."""
        self.ensure_listening()
        self._outbox.put(slots)

    def connected(self) -> bool:
        """True while this process's listener is subscribed (starting it if need be)."""
        self.ensure_listening()
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until this process's listener is subscribed (tests, startup)."""
        self.ensure_listening()
        return self._ready.wait(timeout)

    def _alive(self, origin: str) -> bool:
        return not self._closed and origin == self._origin and self._pid == process.pid()

    def _send(self, origin: str) -> None:
        while self._alive(origin):
            slots = self._outbox.get()
            if slots is None:
                return
            try:
                self._redis.publish(self.channel, origin + " " + ",".join(map(str, slots)))
            except Exception as exc:  # the cache's time limit still bounds staleness
                log.warning("generations relay=publish_failed error=%s", type(exc).__name__)

    def _listen(self, origin: str) -> None:
        pause = 0.5
        while self._alive(origin):
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                self._pubsub = pubsub
                pubsub.subscribe(self.channel)
                if self.on_connect is not None:
                    self.on_connect()
                self._ready.set()
                pause = 0.5
                for message in pubsub.listen():
                    if not self._alive(origin):
                        return
                    self._apply(origin, message.get("data"))
            except Exception as exc:
                self._ready.clear()
                if not self._alive(origin):
                    return
                log.warning("generations relay=listen_failed error=%s", type(exc).__name__)
                threading.Event().wait(pause)
                pause = min(pause * 2, 30.0)

    def _apply(self, origin: str, data: Any) -> None:
        if not isinstance(data, bytes):
            return
        sender, _, rest = data.decode("ascii", "replace").partition(" ")
        if not rest or sender.rpartition("/")[0] == origin.rpartition("/")[0]:
            return  # from this machine: its move is in our counters already
        try:
            slots = sorted({int(s) % SLOTS for s in rest.split(",")})
        except ValueError:
            log.warning("generations relay=bad_message")
            return
        self.generations.bump_here(slots)
