"""Learner JSON API under load, against a bare Flask endpoint served the same way.

Serves a seeded instance with ``trivium serve`` (gunicorn gthread) and the bare
app with the same gunicorn settings, then drives each with wrk at 64
connections for a bounded time: "my courses", "get item", "record progress",
and the bare endpoint.  Each row also gives the server's CPU time per request
(all its processes, read from /proc) and, in brackets, the bare endpoint's over
the row's: that ratio moves much less than req/s when other work shares the
machine (it leaves out wrk's own share, so it reads lower than req/s would on
a quiet machine).  The last line is ``ratio=<x>``: the slowest learner
endpoint's req/s over the bare endpoint's (target >= 0.5; p99 target < 50 ms).
A last run posts ``--batch`` heartbeats per request (``POST /me/progress``, a
player catching up) and prints the heartbeats ingested per second (DESIGN.md:
>= 5,000/s); it is not one of the ratio's endpoints.

With ``--probe``, two more rows load diagnostic routes (``probe_app.py``:
Trivium's app served the same way) with the progress request: one that
answers at once, one that only authenticates the token.  Between the bare
endpoint, those two and "record progress" lie the costs of Trivium's
middleware, of authentication and of the report itself.

Usage: ./dev bench api [--seconds 10] [--learners 500] [--workers 2] [--threads 8] [--batch 20]
       [--probe]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

from common import ROOT
from common import Server
from common import free_port
from common import new_instance
from common import per_worker
from common import run_wrk
from common import serve_instance
from common import serve_wsgi
from common import stop_all
from common import wait_ready
from common import write_json


def seed(instance: Path, learners: int) -> Path:
    """Create courses, learners, enrolments and tokens; return the wrk data file."""
    sys.path.insert(0, str(ROOT))
    from core import create_app
    from core.auth.tokens import create_token
    from core.db import get_db
    from core.models import Course
    from core.models import CourseRole
    from core.models import Enrolment
    from core.models import Item
    from core.models import Module
    from core.models import User

    app = create_app(instance)
    db = get_db(app)
    lines = []
    with db.session() as sess:
        teacher = User(email="teacher@bench.test", display_name="Teacher", can_create_courses=True)
        sess.add(teacher)
        courses = []
        for c in range(20):
            course = Course(
                title=f"Course {c}",
                summary="Benchmark course",
                status="published",
                visibility="instance",
                enrolment_mode="open",
            )
            sess.add(course)
            sess.flush()
            sess.add(CourseRole(course_id=course.id, user_id=teacher.id, role="instructor"))
            items = []
            for m in range(4):
                module = Module(course_id=course.id, title=f"Module {m}", position=m)
                sess.add(module)
                sess.flush()
                for i in range(5):
                    item = Item(
                        module_id=module.id,
                        course_id=course.id,
                        type="page",
                        title=f"Page {m}.{i}",
                        position=i,
                        config={
                            "body": "<p>" + "Lorem ipsum dolor sit amet. " * 20 + "</p>",
                            "estimated_minutes": 5,
                        },
                    )
                    sess.add(item)
                    items.append(item)
            courses.append((course, items))
        sess.flush()
        rng = random.Random(7)
        for n in range(learners):
            user = User(email=f"learner{n}@bench.test", display_name=f"Learner {n}")
            sess.add(user)
            sess.flush()
            mine = rng.sample(courses, 5)
            for course, _ in mine:
                sess.add(Enrolment(course_id=course.id, user_id=user.id, status="active"))
            _, token = create_token(sess, user, "bench")
            item = rng.choice(mine[0][1])
            lines.append(f"{token} {item.public_id}")
    db.dispose()
    data = instance / "wrk-data.txt"
    data.write_text("\n".join(lines) + "\n")
    return data


def serve_probe(
    instance: Path, *, workers: int, threads: int, connections: int
) -> tuple[Server, int]:
    """Start ``probe_app.py`` on a free port, shaped like :func:`common.serve_instance`."""
    port = free_port()
    server = Server(
        [
            sys.executable,
            str(Path(__file__).parent / "probe_app.py"),
            str(instance),
            f"127.0.0.1:{port}",
            str(workers),
            str(threads),
        ],
        env={
            "TRIVIUM_LOG_LEVEL": "WARNING",
            "TRIVIUM_SERVER_WORKER_CONNECTIONS": str(per_worker(connections, workers)),
        },
    )
    return server, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--learners", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch", type=int, default=20, help="reports per batch request")
    parser.add_argument(
        "--probe", action="store_true", help="also load the diagnostic routes of probe_app.py"
    )
    args = parser.parse_args()
    shape = {"workers": args.workers, "threads": args.threads, "connections": args.connections}
    batch = str(args.batch)

    with tempfile.TemporaryDirectory(prefix="trivium-bench-") as tmp:
        instance = new_instance(Path(tmp))
        data = seed(instance, args.learners)
        try:
            server, port = serve_instance(instance, **shape)
            bare_server, bare_port = serve_wsgi("bare_app:app", **shape)
            wait_ready(f"http://127.0.0.1:{port}/api/v1/openapi.json")
            wait_ready(f"http://127.0.0.1:{bare_port}/bare")
            script = Path(__file__).parent / "learner.lua"
            base = f"http://127.0.0.1:{port}"
            # warm both servers (imports, pools, caches: every learner's
            # requests once in each worker) before measuring: steady state
            run_wrk("warm", f"http://127.0.0.1:{bare_port}/bare", seconds=2)
            for mode in ("courses", "item", "progress", "batch"):
                run_wrk(
                    "warm",
                    base,
                    seconds=2,
                    script=script,
                    script_env={"BENCH_DATA": str(data), "BENCH_MODE": mode, "BENCH_BATCH": batch},
                )
            results = [
                run_wrk(
                    "bare flask endpoint",
                    f"http://127.0.0.1:{bare_port}/bare",
                    seconds=args.seconds,
                    connections=args.connections,
                    server=bare_server,
                )
            ]
            for mode, label in (
                ("courses", "GET my courses"),
                ("item", "GET item"),
                ("progress", "PUT progress"),
            ):
                results.append(
                    run_wrk(
                        label,
                        base,
                        seconds=args.seconds,
                        connections=args.connections,
                        script=script,
                        script_env={"BENCH_DATA": str(data), "BENCH_MODE": mode},
                        server=server,
                    )
                )
            batched = run_wrk(
                f"POST {args.batch} reports",
                base,
                seconds=args.seconds,
                connections=args.connections,
                script=script,
                script_env={"BENCH_DATA": str(data), "BENCH_MODE": "batch", "BENCH_BATCH": batch},
                server=server,
            )
            probes = []
            if args.probe:
                server.stop()  # alone on the instance and the CPUs, as the others were
                probe_server, probe_port = serve_probe(instance, **shape)
                try:
                    wait_ready(f"http://127.0.0.1:{probe_port}/healthz")
                    probe_base = f"http://127.0.0.1:{probe_port}"
                    for mode, label in (
                        ("probe-stack", "PUT probe: stack only"),
                        ("probe-auth", "PUT probe: + token auth"),
                    ):
                        env = {"BENCH_DATA": str(data), "BENCH_MODE": mode}
                        run_wrk("warm", probe_base, seconds=2, script=script, script_env=env)
                        probes.append(
                            run_wrk(
                                label,
                                probe_base,
                                seconds=args.seconds,
                                connections=args.connections,
                                script=script,
                                script_env=env,
                                server=probe_server,
                            )
                        )
                finally:
                    probe_server.stop()
        finally:
            stop_all()

    bare = results[0]
    print(
        f"{args.connections} connections, {args.seconds}s each, gunicorn gthread "
        f"{args.workers}x{args.threads} "
        f"({per_worker(args.connections, args.workers)} connections per worker), "
        f"{args.learners} learners"
    )
    for r in results:
        ratio = r.requests_per_s / bare.requests_per_s
        cpu_ratio = bare.server_cpu_us / r.server_cpu_us if r.server_cpu_us else 0.0
        print(r.line() + ("" if r is bare else f"  ratio {ratio:.2f} (CPU {cpu_ratio:.2f})"))
    print(
        batched.line()
        + f"  = {batched.requests_per_s * args.batch:,.0f} heartbeats/s (target >= 5,000)"
    )
    for r in probes:
        cpu_ratio = bare.server_cpu_us / r.server_cpu_us if r.server_cpu_us else 0.0
        ratio = r.requests_per_s / bare.requests_per_s
        print(r.line() + f"  ratio {ratio:.2f} (CPU {cpu_ratio:.2f})")
    bad = [r for r in [*results, batched, *probes] if r.non_2xx or r.errors]
    if bad:
        print("WARNING: failed requests in: " + ", ".join(r.name for r in bad))
    worst = min(results[1:], key=lambda r: r.requests_per_s)
    write_json(Path(__file__).parent / "last-api.json", [r.__dict__ for r in [*results, *probes]])
    print(f"worst learner endpoint: {worst.name}, p99 {worst.p99_ms:.1f} ms (target < 50 ms)")
    print(f"ratio={worst.requests_per_s / bare.requests_per_s:.2f}")


if __name__ == "__main__":
    main()
