"""Fixtures for federation tests: key sets generated once, instances on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.keys import generate_keys
from tests.conftest import add_test_keys
from tests.federation.instances import HostilePeer
from tests.federation.instances import Instance


@pytest.fixture
def keyed(tmp_path: Path) -> Path:
    """An instance folder of this test's own, holding a copy of the test key set.

    The same keys as the ``app`` fixture's instance, which lives in the same folder.
    """
    add_test_keys(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def key_sets(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three instance folders with keys of their own, generated once (A, B and C)."""
    folders = []
    for name in ("a", "b", "c"):
        folder = tmp_path_factory.mktemp(f"keys-{name}")
        generate_keys(folder)
        folders.append(folder)
    return folders


class Network:
    """Instances started by one test (or module), all stopped at its end."""

    def __init__(self, root: Path, key_sets: list[Path]) -> None:
        self.root = root
        self.key_sets = key_sets
        self.started: list[Instance] = []
        self.hostile: list[HostilePeer] = []

    def start(self, name: str, *, backend: str = "sqlite", **federation: Any) -> Instance:
        """Start an instance called ``name`` (the first three get distinct key sets)."""
        keys = self.key_sets[len(self.started) % len(self.key_sets)]
        instance = Instance(self.root, name, keys, federation, backend=backend)
        self.started.append(instance)
        return instance

    def hostile_peer(self) -> HostilePeer:
        """Start a misbehaving HTTP server."""
        peer = HostilePeer()
        self.hostile.append(peer)
        return peer

    def stop(self) -> None:
        """Stop everything this network started, last first."""
        for peer in reversed(self.hostile):
            peer.stop()
        for instance in reversed(self.started):
            instance.stop()


@pytest.fixture
def network(tmp_path: Path, key_sets: list[Path]) -> Iterator[Network]:
    """Instances of this test's own, on loopback."""
    net = Network(tmp_path, key_sets)
    try:
        yield net
    finally:
        net.stop()
