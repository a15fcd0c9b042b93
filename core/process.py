"""This process's id, kept current across forks without a system call per read.

Several hot paths ask whether they still run in the process that set them up
(a gunicorn worker forked from the master must start its own threads and
drop its parent's state).  ``os.getpid()`` is a system call each time; this
reads a value that a fork handler renews in the child.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def _renew() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_renew)


def pid() -> int:
    """This process's id, as :func:`os.getpid` (renewed in a child after ``os.fork``)."""
    return _pid
