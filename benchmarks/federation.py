"""Federation benchmark: catalog sync, re-sync, federated search, signature verification.

Two instances, A and B, are served by ``trivium serve`` on 127.0.0.1 and
peered both ways.  A's index is bulk-loaded with N federated courses; B
pulls A's catalog feed over signed HTTP until it has them all (the initial
sync), then once more (a re-sync of an unchanged peer: one request, 304).
Then B's index is bulk-loaded to M entries of other sources, its files are
read once (a serving instance has them in memory) and it is searched (full
text with facets, as the catalog page asks).  Last, signed-request
verification (the whole check of docs/federation.md) is timed against raw
Ed25519 verification of the same base in the same run; the last line is
``ratio=<signed / raw>``.

    .venv/bin/python benchmarks/federation.py                     # 100,000 / 1,000,000
    .venv/bin/python benchmarks/federation.py --courses 5000 --index 50000   # quick
    .venv/bin/python benchmarks/federation.py --keep /tmp/fed    # build once, then search again
    .venv/bin/python benchmarks/federation.py --keep /tmp/fed --only search   # search alone
    .venv/bin/python benchmarks/federation.py --only search \
        --postgresql postgresql+psycopg://postgres@127.0.0.1:5432/test   # + PostgreSQL

With ``--postgresql URL`` the search is also timed on a PostgreSQL index of
the same size and text, loaded into a schema of its own in that database
(dropped afterwards), as a scaled-out instance searches it.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import VENV_BIN
from benchmarks.common import Server
from benchmarks.common import free_port
from benchmarks.common import wait_ready

SYLLABLES = (
    "ka lo mi ne ru ta vo shi ar en is on ul em ba de fi go hu ja ke li mo nu pa qui ro "
    "sa te vi xu ya zo bri cla dro fle gra pli spa tre"
)


def vocabulary(size: int = 30_000) -> tuple[list[str], list[float]]:
    """Pseudo-words with Zipf-distributed frequencies (s = 1.1), like course text.

    :return: the words, most frequent first, and their cumulative weights.
    """
    parts = SYLLABLES.split()
    rng = random.Random(0)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < size:
        word = "".join(rng.choice(parts) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    cumulative: list[float] = []
    total = 0.0
    for rank in range(1, size + 1):
        total += 1.0 / rank**1.1
        cumulative.append(total)
    return words, cumulative


WORDS, CUMULATIVE = vocabulary()
LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt", "pl", "sv", "fi")
LEVELS = ("beginner", "intermediate", "advanced", "graduate")
SUBJECTS = ("Science", "Humanities", "Engineering", "Medicine", "Arts", "Business", "Law")


def trivium(*args: str) -> None:
    """Run the ``trivium`` CLI; fail loudly."""
    done = subprocess.run(
        [str(VENV_BIN / "trivium"), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"trivium {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def make_instance(root: Path, name: str, port: int) -> Path:
    """A fresh, migrated instance folder whose jobs never run (the benchmark drives them)."""
    path = root / name.lower().replace(" ", "-")
    trivium("init", str(path), "--name", name, "--base-url", f"http://127.0.0.1:{port}")
    toml = path / "instance.toml"
    text = toml.read_text().replace('broker = "db"', 'broker = "db"\nembedded_worker = false', 1)
    text += (
        "\n[plugins.federation]\nallow_http_peers = true\ncatalog_page_size = 500\n"
        "catalog_max_pages = 1000\nread_timeout = 60.0\nrequest_deadline = 120.0\n"
    )
    toml.write_text(text)
    trivium("--instance", str(path), "db", "upgrade")
    return path


def text(rng: random.Random, count: int) -> str:
    return " ".join(rng.choices(WORDS, cum_weights=CUMULATIVE, k=count))


def rows(rng: random.Random, count: int, source: str, start: int) -> list[dict[str, Any]]:
    """Catalog rows; local ones (``source`` empty) federated and shared, as the feed reads."""
    from datetime import UTC
    from datetime import datetime

    now = datetime.now(UTC)
    out = []
    for n in range(start, start + count):
        out.append(
            {
                "source": source,
                "external_id": f"{n:032x}",
                "seq": n + 1,
                "deleted": False,
                "federated": source == "",
                "shared": source == "",
                "title": text(rng, rng.randint(3, 6)).capitalize(),
                "summary": text(rng, 10),
                "description": text(rng, 25),
                "language": rng.choice(LANGUAGES),
                "subject": rng.choice(SUBJECTS),
                "level": rng.choice(LEVELS),
                "institution": f"University {n % 50}" if source else "Uni A",
                "url": f"/courses/{n:032x}" if source == "" else f"https://x.example/c/{n}",
                "image": "",
                "data": {},
                "updated_at": now,
            }
        )
    return out


def bench_config(database_url: str = "") -> dict[str, Any]:
    """Config overrides of the in-process apps (``database_url``: not the instance's own)."""
    config: dict[str, Any] = {"jobs": {"embedded_worker": False}}
    if database_url:
        config["database"] = {"url": database_url}
    return config


def bulk_load(path: Path, count: int, source: str, seed: int, database_url: str = "") -> float:
    """Insert ``count`` catalog rows straight into the instance's index; seconds taken."""
    from core import create_app
    from core.db import get_db
    from core.models import CatalogEntry

    app = create_app(path, bench_config(database_url))
    if not database_url:
        warm_files(path)
    rng = random.Random(seed)
    started = time.perf_counter()
    table = CatalogEntry.__table__
    done = 0
    try:
        while done < count:
            batch = min(20_000, count - done)
            with get_db(app).engine.begin() as conn:
                conn.execute(table.insert(), rows(rng, batch, source, done))
            done += batch
    finally:
        get_db(app).dispose()
    return time.perf_counter() - started


def serve(path: Path, port: int) -> Server:
    server = Server(
        [
            str(VENV_BIN / "trivium"),
            "--instance",
            str(path),
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "4",
        ],
        env={"TRIVIUM_LOG_LEVEL": "WARNING"},
    )
    wait_ready(f"http://127.0.0.1:{port}/healthz")
    return server


def sync_all(b_path: Path, a_url: str) -> tuple[float, int, int, list[Any]]:
    """B pulls A's feed until it has read it to the end: seconds, pages, stored, results."""
    from sqlalchemy import select

    from core import create_app
    from core.db import get_db
    from federation.config import federation_settings
    from federation.models import FederationPeer
    from federation.signed import peer_client
    from federation.sync import sync_peer

    app = create_app(b_path, {"jobs": {"embedded_worker": False}})
    results = []
    try:
        with app.app_context(), get_db(app).sessions() as sess:
            peer = sess.scalar(select(FederationPeer).where(FederationPeer.base_url == a_url))
            assert peer is not None
            policy = federation_settings(app.extensions["trivium.settings"])
            started = time.perf_counter()
            with peer_client(sess) as client:
                while True:
                    result = sync_peer(sess, client, peer, policy)
                    results.append(result)
                    if result.status != "partial":
                        break
            elapsed = time.perf_counter() - started
    finally:
        get_db(app).dispose()
    return elapsed, sum(r.pages for r in results), sum(r.stored for r in results), results


def warm_files(path: Path) -> None:
    """Read the instance's database files once, as a serving instance has them in memory.

    Searches right after a bulk load (or after the machine dropped the files
    from its cache) read the index from disk and measure the disk instead:
    about 80-270 ms at p95 over 1,000,000 entries on the reference machine.
    """
    started, size = time.perf_counter(), 0
    for file in sorted(path.glob("*.db*")):
        with file.open("rb") as f:
            while chunk := f.read(1 << 24):
                size += len(chunk)
    seconds = time.perf_counter() - started
    print(f"B: database files read once ({size / 1e6:.0f} MB in {seconds:.1f} s), then searched")


def search_latencies(
    path: Path, queries: int, seed: int, database_url: str = "", warm: int = 0
) -> list[float]:
    """Milliseconds of :func:`core.catalog.search` (first page and facets) per query.

    :param warm: queries run first and not timed (a database server's cache
        after a bulk load holds what the load wrote, not what searches read).
    """
    from core import catalog
    from core import create_app
    from core.db import get_db

    app = create_app(path, bench_config(database_url))
    if not database_url:
        warm_files(path)
    rng = random.Random(seed)
    out = []
    try:
        with app.app_context(), get_db(app).sessions() as sess:
            catalog.search(sess, "warm up")
            for n in range(warm + queries):
                # what people type: one or two topical words (not the most
                # common nor the rarest), the last one possibly unfinished
                words = [rng.choice(WORDS[50:3000]) for _ in range(rng.choice((1, 2, 2)))]
                last = words[-1]
                words[-1] = last[: rng.randint(min(4, len(last)), len(last))]
                q = " ".join(words)
                filters = {"language": rng.choice(LANGUAGES)} if rng.random() < 0.3 else {}
                started = time.perf_counter()
                catalog.search(sess, q, filters=filters)
                if n >= warm:
                    out.append((time.perf_counter() - started) * 1000)
                sess.rollback()
    finally:
        get_db(app).dispose()
    return out


def verification_rates(count: int) -> tuple[float, float]:
    """Signed requests verified per second (the full check) and raw Ed25519 verifies per second."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from core.cache import MemoryCache
    from federation.nonces import CacheNonceStore
    from federation.signatures import HttpRequest
    from federation.signatures import Peer
    from federation.signatures import PinnedKey
    from federation.signatures import sign_request
    from federation.signatures import verify_request

    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    owner = "https://peer.example"
    keyid = owner + "/federation/keys/k1"

    class Trust:
        def peer_for_keyid(self, kid: str) -> Peer | None:
            return Peer(owner) if kid == keyid else None

        def pinned_key(self, kid: str) -> PinnedKey | None:
            return PinnedKey(keyid, owner, public) if kid == keyid else None

    now = int(time.time())
    body = b'{"id":"urn:uuid:1","type":"catalog.changed"}'
    messages = [
        sign_request(
            HttpRequest.build(
                "POST", "https://me.example/federation/v1/inbox", {"Content-Type": "x"}, body
            ),
            key=key,
            keyid=keyid,
            created=now,
        )
        for _ in range(count)
    ]
    nonces = CacheNonceStore(MemoryCache())
    trust = Trust()
    started = time.perf_counter()
    for message in messages:
        verify_request(message, trust=trust, nonces=nonces, now=now)
    signed_rate = count / (time.perf_counter() - started)

    payload = b"x" * 200
    signatures = [key.sign(payload) for _ in range(count)]
    started = time.perf_counter()
    for signature in signatures:
        public.verify(signature, payload)
    raw_rate = count / (time.perf_counter() - started)
    return signed_rate, raw_rate


def build(root: Path, args: argparse.Namespace) -> tuple[Path, int]:
    """Instances A and B in ``root``: A bulk-loaded, B synced from A, then bulk-loaded.

    :return: B's folder and how many entries its index holds.
    """
    a_port, b_port = free_port(), free_port()
    a_url, b_url = f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{b_port}"
    a = make_instance(root, "Uni A", a_port)
    b = make_instance(root, "Uni B", b_port)
    load_a = bulk_load(a, args.courses, "", seed=1)
    print(f"A: {args.courses} federated courses bulk-loaded in {load_a:.1f} s")
    servers = [serve(a, a_port), serve(b, b_port)]
    try:
        for here, there in ((a, b_url), (b, a_url)):
            trivium("--instance", str(here), "peers", "add", there)
            trivium("--instance", str(here), "peers", "approve", there)

        elapsed, pages, stored, _ = sync_all(b, a_url)
        print(
            f"initial sync       {stored} courses, {pages} pages in {elapsed:.1f} s "
            f"({stored / elapsed:.0f} courses/s; target < 60 s for 100,000)"
        )
        again, again_pages, again_stored, results = sync_all(b, a_url)
        print(
            f"re-sync unchanged  {again_pages} request(s), status {results[-1].status}, "
            f"{again_stored} stored, {again * 1000:.1f} ms (target: one request, 304)"
        )
    finally:
        for server in servers:
            server.stop()

    extra = max(0, args.index - stored)
    load_b = bulk_load(b, extra, "bench-bulk", seed=2)
    print(f"B: {extra} more entries bulk-loaded in {load_b:.1f} s ({stored + extra} in all)")
    return b, stored + extra


def search(b: Path, total: int, args: argparse.Namespace) -> None:
    """Time the catalog page's searches on B's index and print the percentiles."""
    report("search", search_latencies(b, args.queries, seed=3), total)
    if args.postgresql:
        search_postgresql(b.parent, args.postgresql, total, args)


def search_postgresql(root: Path, url: str, total: int, args: argparse.Namespace) -> None:
    """Load ``total`` entries into a PostgreSQL schema of their own, time the searches, drop it."""
    import os

    import sqlalchemy as sa

    from core import create_app
    from core import schema as migrations
    from core.db import get_db

    name = f"trivium_bench_{os.getpid()}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {name}"))
    scoped = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"
    try:
        path = root / "uni-pg"
        trivium("init", str(path), "--name", "Uni PG", "--base-url", "http://127.0.0.1:9")
        app = create_app(path, bench_config(scoped))
        migrations.upgrade(app)
        get_db(app).dispose()
        loaded = bulk_load(path, total, "bench-bulk", seed=2, database_url=scoped)
        with admin.begin() as conn:  # what autovacuum would do soon after such a load
            conn.execute(sa.text(f"ANALYZE {name}.catalog_entries"))
            table, index, buffers = conn.execute(
                sa.text(
                    "SELECT pg_relation_size(:t), pg_relation_size(:i), "
                    "current_setting('shared_buffers')"
                ),
                {"t": f"{name}.catalog_entries", "i": f"{name}.ix_catalog_entries_keys"},
            ).one()
        print(
            f"PostgreSQL: {total} entries bulk-loaded in {loaded:.1f} s, then searched "
            f"(table {table / 1e6:.0f} MB, search index {index / 1e6:.0f} MB, "
            f"shared_buffers {buffers})"
        )
        latencies = search_latencies(path, args.queries, 3, scoped, warm=args.queries)
        report("search (PostgreSQL)", latencies, total)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {name} CASCADE"))
        admin.dispose()


def report(label: str, latencies: list[float], total: int) -> None:
    """Print the percentiles of one set of searches."""
    latencies = sorted(latencies)
    p50 = statistics.median(latencies)
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    print(
        f"{label:<18} {len(latencies)} queries over {total} entries: "
        f"p50 {p50:.1f} ms  p95 {p95:.1f} ms  max {latencies[-1]:.1f} ms (target p95 < 30 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--courses", type=int, default=100_000, help="courses A federates")
    parser.add_argument("--index", type=int, default=1_000_000, help="entries in B's index")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--verifications", type=int, default=3000)
    parser.add_argument(
        "--only",
        choices=("search",),
        help="run only this part (with --keep, on the kept instances once they are built)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="build the instances in DIR and keep them; when DIR already holds them, "
        "skip the loads and the sync and search B's kept index again",
    )
    parser.add_argument(
        "--postgresql",
        metavar="URL",
        help="also time the search on a PostgreSQL index of as many entries, in a "
        "schema of its own in this database (dropped afterwards)",
    )
    args = parser.parse_args()

    if args.keep is None:
        with tempfile.TemporaryDirectory(prefix="trivium-fed-bench-") as tmp:
            b, total = build(Path(tmp), args)
            search(b, total, args)
    else:
        built = args.keep / "built.json"
        if built.exists():
            total = int(json.loads(built.read_text())["entries"])
            b = args.keep / "uni-b"
            print(f"B: reusing the index kept in {args.keep} ({total} entries)")
        else:
            args.keep.mkdir(parents=True, exist_ok=True)
            b, total = build(args.keep, args)
            built.write_text(json.dumps({"entries": total}))
        search(b, total, args)
    if args.only == "search":
        return

    signed_rate, raw_rate = verification_rates(args.verifications)
    print(
        f"verification       signed requests {signed_rate:.0f}/s, raw Ed25519 {raw_rate:.0f}/s "
        "(target ratio >= 0.5)"
    )
    print(f"ratio={signed_rate / raw_rate:.2f}")


if __name__ == "__main__":
    main()
