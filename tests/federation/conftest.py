"""Fixtures for federation tests: a key set generated once and copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from federation.keys import ensure_keys
from federation.keys import keys_dir


@pytest.fixture(scope="session")
def generated_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An instance folder whose keys were generated once for the whole run (RSA is slow)."""
    folder = tmp_path_factory.mktemp("keys-template")
    ensure_keys(folder)
    return folder


@pytest.fixture
def keyed(tmp_path: Path, generated_keys: Path) -> Path:
    """An instance folder of this test's own, holding a copy of the generated keys."""
    shutil.copytree(keys_dir(generated_keys), keys_dir(tmp_path))
    return tmp_path
