"""Learners' stored progress on items, shared by an instance's processes on one machine.

Every progress heartbeat applies the learner's report to what is stored for
that item (:func:`core.progress.report_progress`), so it would read one row
of ``progress`` per request.  The gunicorn workers of a machine hand a
learner's heartbeats to whichever worker is free, so a cache of each
process's own would mostly hold rows another worker has written since.  This
table is one for the whole machine: a file, ``<instance>/run/progress-states-2``
(:data:`FILE_NAME`), mapped into each process, of :data:`ENTRIES` places of
:data:`ENTRY_BYTES`.

**Exactness** rests on the learner's progress counter
(:func:`core.readcache.progress_key`, :mod:`core.generations`), which any
committed write of their progress moves: the session listeners for ORM rows,
the progress buffer after each batch.  An entry holds a row and the value the
counter had when that row was read or written:

* a request reads the counter *before* it reads the row from the database,
  and keeps the row under that value (:meth:`ProgressStates.keep`): a write
  committed after the counter was read moves it past the entry's value;
* an entry is used only while its value is the counter's current one (and
  the table's epoch, see :class:`ProgressStates`, has not moved);
* the process whose buffer wrote a batch keeps the written entries current
  (:meth:`ProgressStates.written`): an entry whose value is the counter's
  value just before the buffer's own move is replaced, under the table's
  lock, by the row the write left, with the moved value.  A move by anyone
  else in between leaves the entry behind, and it is read again.

Places are chosen by hashing (learner, item); an entry keeps its key, and
another key hashed to the same place replaces it.  A row whose encoded form
does not fit in a place is not kept.  Entries also expire after the read
cache's time limit (``[cache] read_seconds``), which is what bounds how late
a change made on another machine is seen if the counter relay is down.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from core.db import json_dumps
from core.db import json_loads
from core.generations import Generations
from core.generations import SharedFile

#: Places in the table; with more learners active at once on one machine,
#: some of their rows are read from the database again.
ENTRIES = 1 << 16
#: Bytes per place; a row with more ``data`` than fits is not kept.
ENTRY_BYTES = 512
#: The file's name, versioned with the counters' layout
#: (:data:`core.generations.FILE_NAME`): an entry holds counter values, which
#: mean nothing against another layout's counters.
FILE_NAME = "progress-states-2"

# user id, item id, the learner's counter value, the table's epoch (another
# counter, see ProgressStates), expiry (wall-clock time: the file outlives a
# reboot, which restarts the monotonic clock), length of the encoded row (0: an
# empty place), then the CRC-32 of all of that and the row: readers take no
# lock, and an entry read while a writer was changing it fails the check.
_HEADER = struct.Struct("<qqQQdI")
_CRC = struct.Struct("<I")
_ROW_AT = _HEADER.size + _CRC.size
_ROOM = ENTRY_BYTES - _ROW_AT
_WRAP = 0xFFFFFFFFFFFFFFFF
_EMPTY = _HEADER.pack(0, 0, 0, 0, 0.0, 0)
_Found = tuple[int, int, float, bytes]
"""An entry's learner counter value, epoch, expiry and encoded row."""
_ABSENT = b"-"


@dataclass(frozen=True)
class ProgressRecord:
    """A learner's progress on one item with the columns of a ``progress`` row.

    Buffered heartbeats are records; reads hand out stored rows and records
    alike (:func:`core.progress_buffer.newest`).
    """

    user_id: int
    item_id: int
    course_id: int
    status: str
    score: float | None
    data: dict[str, Any]
    updated_at: datetime
    completed_at: datetime | None = None

    def values(self) -> dict[str, Any]:
        """The row's column values."""
        return {
            "user_id": self.user_id,
            "item_id": self.item_id,
            "course_id": self.course_id,
            "status": self.status,
            "score": self.score,
            "data": self.data,
            "updated_at": self.updated_at,
            "completed_at": self.completed_at,
        }


def _encode(record: ProgressRecord | None) -> bytes:
    if record is None:
        return _ABSENT
    completed = record.completed_at.isoformat() if record.completed_at is not None else None
    return json_dumps(
        [
            record.course_id,
            record.status,
            record.score,
            record.data,
            record.updated_at.isoformat(),
            completed,
        ]
    ).encode()


def _decode(user_id: int, item_id: int, raw: bytes) -> ProgressRecord | None:
    if raw == _ABSENT:
        return None
    course_id, status, score, data, updated, completed = json_loads(raw)
    return ProgressRecord(
        user_id=user_id,
        item_id=item_id,
        course_id=course_id,
        status=status,
        score=score,
        data=data,
        updated_at=datetime.fromisoformat(updated),
        completed_at=datetime.fromisoformat(completed) if completed is not None else None,
    )


def _place(user_id: int, item_id: int) -> int:
    return zlib.crc32(_KEY.pack(user_id, item_id)) % ENTRIES * ENTRY_BYTES


_KEY = struct.Struct("<qq")


class ProgressStates:
    """The machine's table of stored progress rows (in memory with ``path=None``).

    Besides each learner's counter, every entry depends on the table's
    *epoch*, a counter that moves when rows are removed without the
    learners' counters moving (a deleted item takes its learners' rows with
    it, and the database may give its id to the next item), and whenever the
    relay to other machines (re)connects, since moves may have been lost
    while it was away.  While the relay is not connected, nothing is read
    from the table: a change on another machine would not be seen.

    :param slot_of_user: the counter slot of a learner's progress.
    :param epoch_slot: the counter slot of the epoch.
    :param ttl: seconds an entry lives at most.
    :param connected: False while changes from other machines may be missed
        (the relay is down); None on a single machine.
    """

    def __init__(
        self,
        path: Path | None,
        generations: Generations,
        slot_of_user: Callable[[int], int],
        ttl: float,
        *,
        epoch_slot: int = 0,
        connected: Callable[[], bool] | None = None,
    ) -> None:
        self._file = SharedFile(path, ENTRIES * ENTRY_BYTES)
        self.generations = generations
        self.slot_of_user = slot_of_user
        self.epoch_slot = epoch_slot
        self.ttl = ttl
        self.connected = connected

    def stamp(self, user_id: int) -> tuple[int, int]:
        """Read the learner's counter and the epoch *before* reading a row from the database."""
        read = self.generations.read
        return read(self.slot_of_user(user_id)), read(self.epoch_slot)

    def _entry(
        self, offset: int, user_id: int, item_id: int
    ) -> tuple[int, int, float, bytes] | None:
        # (value, epoch, expiry, row) of a whole entry for this key, else None
        mapped = self._file.map
        header = bytes(mapped[offset : offset + _HEADER.size])
        user, item, value, epoch, expires, length = _HEADER.unpack(header)
        if user != user_id or item != item_id or not 0 < length <= _ROOM:
            return None
        start = offset + _ROW_AT
        raw = bytes(mapped[start : start + length])
        (crc,) = _CRC.unpack_from(mapped, offset + _HEADER.size)
        if crc != zlib.crc32(raw, zlib.crc32(header)):
            return None  # being written just now, or left half-written
        return value, epoch, expires, raw

    def _fresh(self, expires: float) -> bool:
        # an expiry further than ttl away comes from a clock set back: expired too
        now = time.time()
        return now < expires <= now + self.ttl

    def get(self, user_id: int, item_id: int) -> tuple[ProgressRecord | None] | None:
        """``(row,)``, the learner's stored row on the item (None: none), if the entry is current.

        Takes no lock.  The row is decoded afresh for each call: the caller may
        change it.
        """
        if self.connected is not None and not self.connected():
            return None
        found = self._entry(_place(user_id, item_id), user_id, item_id)
        if found is None:
            return None
        value, epoch, expires, raw = found
        if not self._fresh(expires) or (value, epoch) != self.stamp(user_id):
            return None
        return (_decode(user_id, item_id, raw),)

    def keep(
        self, record: ProgressRecord | None, user_id: int, item_id: int, stamp: tuple[int, int]
    ) -> None:
        """Keep the row (or None: none stored) read after :meth:`stamp` gave ``stamp``."""
        raw = _encode(record)
        if len(raw) > _ROOM:
            return
        with self._file.locked():
            self._put(user_id, item_id, stamp, time.time() + self.ttl, raw)

    def written(
        self,
        records: Mapping[tuple[int, int], ProgressRecord],
        merge: Callable[[ProgressRecord | None, ProgressRecord], ProgressRecord | None],
    ) -> None:
        """Move the counters of ``records``' learners, whose rows were just committed.

        Entries of those learners are dropped everywhere, except the written
        ones that were current until this move: they become ``merge(entry's
        row, written record)`` (the writer's rule, such as an upsert's
        condition) under the moved counter.
        """
        slots = {user_id: self.slot_of_user(user_id) for user_id, _ in records}
        before = self.generations.bump(slots.values())
        epoch_now = self.generations.read(self.epoch_slot)
        with self._file.locked():
            for (user_id, item_id), record in records.items():
                offset = _place(user_id, item_id)
                found = self._entry(offset, user_id, item_id)
                if found is None:
                    continue
                value, epoch, expires, raw = found
                if value != before[slots[user_id]] or epoch != epoch_now:
                    continue  # someone else moved it, or rows went: stays behind
                if not self._fresh(expires):
                    continue
                merged = _encode(merge(_decode(user_id, item_id, raw), record))
                if len(merged) > _ROOM:
                    self._file.map[offset : offset + _HEADER.size] = _EMPTY
                    continue
                moved = ((value + 1) & _WRAP, epoch)
                self._put(user_id, item_id, moved, expires, merged)

    def _put(
        self, user_id: int, item_id: int, stamp: tuple[int, int], expires: float, raw: bytes
    ) -> None:
        # call with the lock held (writers take turns; readers check the CRC)
        offset = _place(user_id, item_id)
        mapped = self._file.map
        header = _HEADER.pack(user_id, item_id, stamp[0], stamp[1], expires, len(raw))
        mapped[offset : offset + _HEADER.size] = header
        _CRC.pack_into(mapped, offset + _HEADER.size, zlib.crc32(raw, zlib.crc32(header)))
        start = offset + _ROW_AT
        mapped[start : start + len(raw)] = raw

    def close(self) -> None:
        """Unmap the table."""
        self._file.close()
