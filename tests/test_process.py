"""core.process: the process id without a system call, renewed in a forked child."""

from __future__ import annotations

import os

from core import process


def test_pid_is_this_process_and_a_forked_childs_own() -> None:
    assert process.pid() == os.getpid()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os.close(read_end)
        os.write(write_end, f"{process.pid()} {os.getpid()}".encode())
        os._exit(0)
    os.close(write_end)
    seen, actual = os.read(read_end, 64).decode().split()
    os.close(read_end)
    os.waitpid(child, 0)
    assert seen == actual == str(child)
    assert process.pid() == os.getpid() != child
