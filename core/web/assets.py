"""Built browser assets: content-hashed file names resolved through a manifest.

``scripts/build_assets.py`` copies our own files (``core/assets/``) and the
browser libraries installed by npm into ``core/static/dist/`` under names
that carry a hash of their content, and writes ``manifest.json`` mapping each
logical name (``"app.css"``) to its built file (``"app.3f2a91c0.css"``).
whitenoise serves them; a hashed name never changes content, so it is cached
for a year and marked immutable.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from flask import Flask
from flask import current_app

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
DIST_DIR = STATIC_DIR / "dist"
MANIFEST = DIST_DIR / "manifest.json"
STATIC_URL = "/static/"

#: ``name.<8+ hex>.ext``: the names the build gives files, safe to cache forever.
HASHED_NAME = re.compile(r"\.[0-9a-f]{8,}\.[A-Za-z0-9]+$")


class AssetNotBuilt(LookupError):
    """A template asked for an asset that the build did not produce.

    Run ``./dev install`` (or ``python scripts/build_assets.py``) after
    ``npm ci``.
    """


def load_manifest(path: Path = MANIFEST) -> dict[str, str]:
    """The logical-name → built-file map, or an empty map before the first build."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        log.warning("assets status=not_built manifest=%s", path)
        return {}
    return {str(k): str(v) for k, v in data.items()}


def asset_url(name: str) -> str:
    """The URL of the built asset ``name`` (``"app.css"``).

    :raise AssetNotBuilt: the manifest has no such asset.
    """
    manifest: dict[str, str] = current_app.extensions["trivium.assets"]
    try:
        return f"{STATIC_URL}dist/{manifest[name]}"
    except KeyError:
        raise AssetNotBuilt(
            f"asset {name!r} is not built; run ./dev install or scripts/build_assets.py"
        ) from None


def immutable_file(path: str, url: str) -> bool:
    """whitenoise's test for files that may be cached forever (hashed names only).

    :param path: the file on disk (unused: the URL carries the hash).
    :param url: the URL the file is served at.
    """
    return bool(HASHED_NAME.search(url))


def init_app(app: Flask) -> None:
    """Load the manifest and offer ``asset_url`` to templates."""
    app.extensions["trivium.assets"] = load_manifest()
    app.jinja_env.globals["asset_url"] = asset_url
