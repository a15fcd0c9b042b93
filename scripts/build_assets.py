"""Build the browser assets into core/static/dist/ with content-hashed names.

Copies our own stylesheets and scripts (core/assets/css/*.css,
core/assets/js/*.js) and the browser libraries installed by ``npm ci``
(see VENDOR) into core/static/dist/ as ``<name>.<hash>.<ext>``, and writes
``manifest.json`` mapping each logical name (``app.css``, ``htmx.js``) to its
built file, which ``core.web.assets.asset_url`` reads.  Every run starts from
an empty folder, so a removed asset cannot linger.

Our scripts are standalone ES modules: a hashed name changes whenever the
content does, so they must not import one another by relative path.

It also compiles the interface's translations (core/translations/*/
LC_MESSAGES/messages.po → .mo), which are build output like the assets.

Run by ``./dev install``; by hand: ``.venv/bin/python scripts/build_assets.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "core" / "assets"
NODE_MODULES = ROOT / "node_modules"
DIST = ROOT / "core" / "static" / "dist"
TRANSLATIONS = ROOT / "core" / "translations"

#: logical name → file under node_modules/ (the packages' own minified builds).
VENDOR = {
    "htmx.js": "htmx.org/dist/htmx.min.js",
    "sortable.js": "sortablejs/Sortable.min.js",
}


class MissingSource(Exception):
    """A file the build needs is absent (``npm ci`` not run, or a package changed layout)."""


def hashed_name(logical: str, content: bytes) -> str:
    """``app.css`` + content → ``app.<first 12 hex of sha256>.css``."""
    stem, _, ext = logical.rpartition(".")
    digest = hashlib.sha256(content).hexdigest()[:12]
    return f"{stem}.{digest}.{ext}"


def sources(root: Path = ROOT) -> dict[str, Path]:
    """Every asset to build, by logical name.

    :raise MissingSource: a vendor file is missing.
    """
    found: dict[str, Path] = {}
    for sub, ext in (("css", ".css"), ("js", ".js")):
        for path in sorted((root / "core" / "assets" / sub).glob(f"*{ext}")):
            found[path.name] = path
    for logical, relative in VENDOR.items():
        path = root / "node_modules" / relative
        if not path.is_file():
            raise MissingSource(f"{path} is missing: run `npm ci` first")
        found[logical] = path
    return found


def build(dist: Path = DIST, root: Path = ROOT) -> dict[str, str]:
    """Write the hashed files and the manifest into ``dist``; return the manifest."""
    assets = sources(root)
    if dist.exists():
        shutil.rmtree(dist)
    dist.mkdir(parents=True)
    manifest: dict[str, str] = {}
    for logical, path in sorted(assets.items()):
        content = path.read_bytes()
        name = hashed_name(logical, content)
        (dist / name).write_bytes(content)
        manifest[logical] = name
    (dist / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def compile_translations(folder: Path = TRANSLATIONS) -> list[Path]:
    """Compile every ``messages.po`` under ``folder`` to its ``messages.mo``."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    written = []
    for po_path in sorted(folder.glob("*/LC_MESSAGES/messages.po")):
        with po_path.open("rb") as po_file:
            catalog = read_po(po_file)
        mo_path = po_path.with_suffix(".mo")
        with mo_path.open("wb") as mo_file:
            write_mo(mo_file, catalog)
        written.append(mo_path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=DIST, help="output folder")
    args = parser.parse_args(argv)
    try:
        manifest = build(args.dist)
    except MissingSource as exc:
        print(f"build_assets: {exc}", file=sys.stderr)
        return 1
    catalogs = compile_translations()
    print(f"build_assets: {len(manifest)} assets in {args.dist}, {len(catalogs)} translations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
