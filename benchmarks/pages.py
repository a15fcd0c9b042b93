"""Learner pages under load, against a static page served the same way.

Seeds an instance with ``--courses`` published courses (10,000 by default,
indexed for catalog search) and one course of 50 page items in 5 modules
with an enrolled learner who has completed some of them.  It serves the
instance with ``trivium serve`` (gunicorn gthread) and, as the reference, a
minimal Flask app returning a copy of the rendered catalog page (same
bytes, no work) under the same gunicorn settings, then drives wrk at 64
connections for a bounded time against: the catalog's first page, a catalog
search with a filter, the course page and the learn view of the 50-item
course (all as the logged-in learner, by API token), and the static page.

The last line is ``ratio=<x>``: the slowest page's req/s over the static
page's.

Usage: ./dev bench pages [--seconds 10] [--courses 10000] [--workers 2] [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from common import ROOT
from common import VENV_BIN
from common import Server
from common import free_port
from common import run_wrk
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
        for c in range(n_courses):
            sess.add(
                Course(
                    title=f"{SUBJECTS[c % 6]} course number {c}",
                    summary=f"An introduction to topic {c} of {SUBJECTS[c % 6].lower()}.",
                    description="<p>" + "Course description. " * 20 + "</p>",
                    subject=SUBJECTS[c % 6],
                    level=LEVELS[c % 3],
                    language=LANGUAGES[c % 4],
                    status="published",
                    visibility="instance",
                    enrolment_mode="open",
                    published_at=now,
                )
            )
            if c % 1000 == 999:
                sess.flush()
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
    args = parser.parse_args()

    trivium = str(VENV_BIN / "trivium")
    with tempfile.TemporaryDirectory(prefix="trivium-bench-") as tmp:
        folder = Path(tmp)
        instance = folder / "bench"
        subprocess.run(
            [trivium, "init", str(instance), "--name", "Bench U", "--base-url", "http://127.0.0.1"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [trivium, "--instance", str(instance), "db", "upgrade"],
            check=True,
            capture_output=True,
        )
        ids = seed(instance, args.courses)
        env = {"TRIVIUM_LOG_LEVEL": "WARNING"}
        port = free_port()
        app_server = Server(
            [
                trivium,
                "--instance",
                str(instance),
                "serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(args.workers),
                "--threads",
                str(args.threads),
            ],
            env=env,
        )
        static_server = None
        base = f"http://127.0.0.1:{port}"
        pages = {
            "catalog page 1": "/catalog",
            "catalog search": "/catalog?q=biology+topic&level=Beginner",
            "course page (50 items)": f"/courses/{ids['course']}",
            "learn view (50 items)": f"/learn/{ids['item']}",
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
            static_port = free_port()
            static_server = Server(
                [
                    str(VENV_BIN / "gunicorn"),
                    "-k",
                    "gthread",
                    "-w",
                    str(args.workers),
                    "--threads",
                    str(args.threads),
                    "-b",
                    f"127.0.0.1:{static_port}",
                    "--log-level",
                    "warning",
                    "--chdir",
                    str(Path(__file__).parent),
                    "pages:static_app()",
                ],
                env={"BENCH_STATIC_PAGE": str(static_file)},
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
            results = [
                run_wrk(
                    "static page",
                    static_url,
                    seconds=args.seconds,
                    connections=args.connections,
                )
            ]
            for name, script in scripts.items():
                results.append(
                    run_wrk(
                        name,
                        base,
                        seconds=args.seconds,
                        connections=args.connections,
                        script=script,
                    )
                )
        finally:
            app_server.stop()
            if static_server is not None:
                static_server.stop()

    reference = results[0]
    print(
        f"{args.connections} connections, {args.seconds}s each, gunicorn gthread "
        f"{args.workers}x{args.threads}, {args.courses} courses in the catalog"
    )
    for r in results:
        ratio = r.requests_per_s / reference.requests_per_s
        print(r.line() + ("" if r is reference else f"  ratio {ratio:.2f}"))
    bad = [r for r in results if r.non_2xx or r.errors]
    if bad:
        print("WARNING: failed requests in: " + ", ".join(r.name for r in bad))
    worst = min(results[1:], key=lambda r: r.requests_per_s)
    write_json(Path(__file__).parent / "last-pages.json", [r.__dict__ for r in results])
    print(f"slowest page: {worst.name}, p99 {worst.p99_ms:.1f} ms")
    print(f"ratio={worst.requests_per_s / reference.requests_per_s:.2f}")


if __name__ == "__main__":
    main()
