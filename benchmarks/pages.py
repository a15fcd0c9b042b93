"""Learner pages under load, against a static page served the same way.

Seeds an instance with ``--courses`` published courses (10,000 by default,
indexed for catalog search) and one course of 50 page items in 5 modules
with an enrolled learner who has completed some of them.  It serves the
instance with ``trivium serve`` (gunicorn gthread) and, as the reference, a
minimal Flask app returning a copy of the rendered catalog page (same
bytes, no work) under the same gunicorn settings, then drives wrk at 64
connections for a bounded time against: the static page, the course page and
the learn view of the 50-item course, the learner's dashboard, and then the
catalog's first page and a catalog search with a filter (all as the
logged-in learner, by API token).  The catalog pages run last, each for at
most ``--catalog-seconds``, and every run starts once the previous one's
queued requests have drained, so a slow page is not charged to the next.

The last line is ``ratio=<x>``: the slowest page's req/s over the static
page's.

Usage: ./dev bench pages [--seconds 10] [--catalog-seconds 10] [--courses 10000]
       [--workers 2] [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from common import ROOT
from common import Server
from common import WrkResult
from common import new_instance
from common import run_wrk
from common import serve_instance
from common import serve_wsgi
from common import stop_all
from common import wait_ready
from common import write_json

SUBJECTS = ("Biology", "Chemistry", "History", "Mathematics", "Physics", "Literature")
LEVELS = ("Beginner", "Intermediate", "Advanced")
LANGUAGES = ("en", "de", "fr", "es")


def static_app() -> object:
    """The reference: a Flask app answering every GET with the file in BENCH_STATIC_PAGE."""
    from flask import Flask
    from flask import Response

    page = Path(os.environ["BENCH_STATIC_PAGE"]).read_bytes()
    app = Flask("static_page")

    @app.get("/static-page")
    def static_page() -> Response:
        return Response(page, mimetype="text/html")

    return app


def seed(instance: Path, n_courses: int) -> dict[str, str]:
    """Create the courses, the 50-item course and its learner; return ids and the token."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import insert

    from core import catalog
    from core import create_app
    from core.auth.tokens import create_token
    from core.db import get_db
    from core.db import utcnow
    from core.models import Course
    from core.models import CourseRole
    from core.models import Enrolment
    from core.models import Item
    from core.models import Module
    from core.models import Progress
    from core.models import User

    app = create_app(instance)
    db = get_db(app)
    with app.app_context(), db.session() as sess:
        teacher = User(email="teacher@bench.test", display_name="Teacher", can_create_courses=True)
        learner = User(email="learner@bench.test", display_name="Learner")
        sess.add_all([teacher, learner])
        sess.flush()
        now = utcnow()
        # one multi-row INSERT per batch: the unit of work would spend most of
        # the seeding time on 10,000 objects nobody reads back
        rows = [
            {
                "title": f"{SUBJECTS[c % 6]} course number {c}",
                "summary": f"An introduction to topic {c} of {SUBJECTS[c % 6].lower()}.",
                "description": "<p>" + "Course description. " * 20 + "</p>",
                "subject": SUBJECTS[c % 6],
                "level": LEVELS[c % 3],
                "language": LANGUAGES[c % 4],
                "status": "published",
                "visibility": "instance",
                "enrolment_mode": "open",
                "published_at": now,
            }
            for c in range(n_courses)
        ]
        for start in range(0, len(rows), 1000):
            sess.execute(insert(Course), rows[start : start + 1000])
        big = Course(
            title="Fifty items",
            summary="The course page benchmark",
            subject="Biology",
            status="published",
            visibility="instance",
            enrolment_mode="open",
            published_at=now,
        )
        sess.add(big)
        sess.flush()
        sess.add(CourseRole(course_id=big.id, user_id=teacher.id, role="instructor"))
        sess.add(Enrolment(course_id=big.id, user_id=learner.id, status="active"))
        items = []
        for m in range(5):
            module = Module(course_id=big.id, title=f"Week {m + 1}", position=m)
            sess.add(module)
            sess.flush()
            for i in range(10):
                item = Item(
                    module_id=module.id,
                    course_id=big.id,
                    type="page",
                    title=f"Reading {m + 1}.{i + 1}",
                    position=i,
                    config={"body": "<p>" + "Lorem ipsum dolor sit amet. " * 40 + "</p>"},
                )
                sess.add(item)
                items.append(item)
        sess.flush()
        for item in items[:20]:
            sess.add(
                Progress(
                    user_id=learner.id,
                    item_id=item.id,
                    course_id=big.id,
                    status="completed",
                    completed_at=now,
                )
            )
        _, token = create_token(sess, learner, "bench")
        catalog.reindex_local(sess)
        ids = {"course": big.public_id, "item": items[25].public_id, "token": token}
    db.dispose()
    return ids


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) spent so far by process ``pid`` and its live descendants.

    Read from ``/proc`` (Linux); None where there is none.  Per-request CPU is
    steadier than req/s on a machine shared with other work.
    """
    proc = Path("/proc")
    if not (proc / str(pid)).exists():
        return None
    parent_and_ticks: dict[int, tuple[int, int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # after "(comm)": state ppid ... utime (14th field) stime (15th field)
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent_and_ticks[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    ticks, todo = 0, [pid]
    while todo:
        current = todo.pop()
        ticks += parent_and_ticks.get(current, (0, 0))[1]
        todo += [child for child, (ppid, _) in parent_and_ticks.items() if ppid == current]
    return ticks / os.sysconf("SC_CLK_TCK")


def lua_script(folder: Path, name: str, path: str, token: str) -> Path:
    """A wrk script requesting ``path`` with the learner's token."""
    script = folder / f"{name}.lua"
    script.write_text(
        f'local headers = {{ ["Authorization"] = "Bearer {token}", ["Accept"] = "text/html" }}\n'
        f'request = function() return wrk.format("GET", "{path}", headers) end\n'
    )
    return script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--courses", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--catalog-seconds",
        type=int,
        default=None,
        help="wrk time for each catalog page (default: --seconds, at most 10)",
    )
    args = parser.parse_args()
    if args.catalog_seconds is None:
        args.catalog_seconds = min(args.seconds, 10)

    shape = {"workers": args.workers, "threads": args.threads, "connections": args.connections}
    with tempfile.TemporaryDirectory(prefix="trivium-bench-") as tmp:
        folder = Path(tmp)
        instance = new_instance(folder)
        ids = seed(instance, args.courses)
        app_server, port = serve_instance(instance, **shape)
        base = f"http://127.0.0.1:{port}"
        # the catalog pages go last: while it is slow, the requests still
        # queued when wrk stops would otherwise be charged to the next page
        pages = {
            "course page (50 items)": f"/courses/{ids['course']}",
            "learn view (50 items)": f"/learn/{ids['item']}",
            "dashboard": "/dashboard",
            "catalog page 1": "/catalog",
            "catalog search": "/catalog?q=biology+topic&level=Beginner",
        }
        try:
            wait_ready(f"{base}/healthz")
            request = urllib.request.Request(  # noqa: S310 (loopback)
                f"{base}/catalog",
                headers={"Authorization": f"Bearer {ids['token']}", "Accept": "text/html"},
            )
            with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 (loopback)
                static_file = folder / "catalog.html"
                static_file.write_bytes(resp.read())
            static_server, static_port = serve_wsgi(
                "pages:static_app()", env={"BENCH_STATIC_PAGE": str(static_file)}, **shape
            )
            static_url = f"http://127.0.0.1:{static_port}/static-page"
            wait_ready(static_url)
            scripts = {
                name: lua_script(folder, f"page{n}", path, ids["token"])
                for n, (name, path) in enumerate(pages.items())
            }
            # warm both servers (imports, pools, template caches) before measuring
            run_wrk("warm", static_url, seconds=2)
            for script in scripts.values():
                run_wrk("warm", base, seconds=1, script=script)
            cpu_us: dict[str, float] = {}

            def measured(server: Server, name: str, url: str, seconds: int, **kw: Any) -> WrkResult:
                before = tree_cpu_seconds(server.proc.pid)
                result = run_wrk(name, url, seconds=seconds, connections=args.connections, **kw)
                after = tree_cpu_seconds(server.proc.pid)
                served = result.requests_per_s * seconds
                if before is not None and after is not None and served:
                    cpu_us[name] = (after - before) / served * 1e6
                return result

            results = [measured(static_server, "static page", static_url, args.seconds)]
            for name, script in scripts.items():
                wait_ready(f"{base}/healthz", timeout=60)  # the previous run's backlog drained
                seconds = args.catalog_seconds if name.startswith("catalog") else args.seconds
                results.append(measured(app_server, name, base, seconds, script=script))
        finally:
            stop_all()

    reference = results[0]
    print(
        f"{args.connections} connections, {args.seconds}s each "
        f"({args.catalog_seconds}s for catalog pages), gunicorn gthread "
        f"{args.workers}x{args.threads}, {args.courses} courses in the catalog"
    )
    for r in results:
        ratio = r.requests_per_s / reference.requests_per_s
        cpu = f"  server CPU {cpu_us[r.name]:.0f} us/req" if r.name in cpu_us else ""
        print(r.line() + cpu + ("" if r is reference else f"  ratio {ratio:.2f}"))
    bad = [r for r in results if r.non_2xx or r.errors]
    if bad:
        print("WARNING: failed requests in: " + ", ".join(r.name for r in bad))
    worst = min(results[1:], key=lambda r: r.requests_per_s)
    write_json(
        Path(__file__).parent / "last-pages.json",
        [dict(r.__dict__, server_cpu_us=cpu_us.get(r.name)) for r in results],
    )
    print(f"slowest page: {worst.name}, p99 {worst.p99_ms:.1f} ms")
    print(f"ratio={worst.requests_per_s / reference.requests_per_s:.2f}")


if __name__ == "__main__":
    main()
