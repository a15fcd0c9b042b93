"""Change counters shared by every process of an instance on one machine.

:mod:`core.readcache` keeps what learners' requests read most in each
process.  A cached entry remembers the counters of what it was built from
(a course, a user's standing in a course); a committed change adds one to
those counters, and every process sees the new value at its next read, at
the cost of a memory read, because the counters live in a small file mapped
into each process (``<instance>/run/generations``).  The gunicorn workers,
job workers and CLI commands of one instance folder share it.

Counters are slots of a fixed table: a key (``("course", 12)``) hashes to a
slot, so two keys may share one and a change to either invalidates both.
That costs a rebuild, never a stale answer.

Processes on *other* machines (a scaled-out deployment sharing one
PostgreSQL) do not see these counters; there the cache's time limit
(``[cache] read_seconds``) bounds how late a change is seen.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path

SLOTS = 1 << 14
_SLOT = struct.Struct("<Q")
_SIZE = SLOTS * _SLOT.size

Key = tuple[str, int] | tuple[str, int, int]


def slot_of(key: Key) -> int:
    """The counter slot of ``key`` (the same in every process)."""
    return zlib.crc32(repr(key).encode()) % SLOTS


class Generations:
    """A table of counters in a shared file (or in memory with ``path=None``)."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        if path is None:
            self._map: mmap.mmap | bytearray = bytearray(_SIZE)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def read(self, slot: int) -> int:
        """The current value of ``slot``."""
        value: int = _SLOT.unpack_from(self._map, slot * _SLOT.size)[0]
        return value

    def bump(self, slots: Iterable[int]) -> None:
        """Add one to each slot (once each), visible to every process at once."""
        unique = sorted(set(slots))
        if not unique:
            return
        with self._lock:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                for slot in unique:
                    offset = slot * _SLOT.size
                    current = _SLOT.unpack_from(self._map, offset)[0]
                    _SLOT.pack_into(self._map, offset, (current + 1) & 0xFFFFFFFFFFFFFFFF)
            finally:
                if self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Unmap the file."""
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
