"""Quiz submissions under load, against a bare Flask endpoint served the same way.

Seeds an instance with a course whose bank holds 20 auto-graded questions of
seven types, ``--quizzes`` quizzes of those 20 questions, ``--learners``
enrolled learners and, for every learner and quiz, one attempt in progress
(started through the same service the API uses, so draws, shuffles and events
are real).  It serves the instance with ``trivium serve`` (gunicorn gthread)
and the bare app with the same gunicorn settings, then drives wrk at 64
connections: each request submits one attempt with its 20 answers through
``POST /api/v1/quiz/attempts/<id>/submit``, which grades it on the server and
records events and progress.  A Lua script hands each wrk thread its own
share of the attempts so no attempt is submitted twice.

Load generator: wrk with a Lua script (written next to the seeded instance).
Graded submissions/s is counted in the database afterwards (attempts that
went from in progress to graded while wrk ran), so an idempotent repeat
could never inflate it; p99 is wrk's latency of the submit requests.  The
last line is ``ratio=<x>``: graded submissions/s over the bare endpoint's
req/s measured in the same run.

Usage: ./dev bench quiz [--seconds 10] [--learners 400] [--quizzes 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT
from common import new_instance
from common import run_wrk
from common import serve_instance
from common import serve_wsgi
from common import stop_all
from common import wait_ready
from common import write_json

QUESTIONS_PER_QUIZ = 20

LUA = """
-- Each wrk thread submits its own share of the attempts, each once.
local rows = {}
for line in io.lines(os.getenv("BENCH_DATA")) do
  local token, attempt = line:match("(%S+) (%S+)")
  rows[#rows + 1] = { token = token, attempt = attempt }
end
local f = io.open(os.getenv("BENCH_BODY"))
local body = f:read("*a")
f:close()
local threads = tonumber(os.getenv("BENCH_THREADS"))
local next_thread = 0

setup = function(thread)
  thread:set("tid", next_thread)
  next_thread = next_thread + 1
end

local counter = 0
request = function()
  local index = tid + counter * threads
  counter = counter + 1
  local row = rows[(index % #rows) + 1]
  local headers = {
    ["Authorization"] = "Bearer " .. row.token,
    ["Content-Type"] = "application/json",
  }
  return wrk.format("POST", "/api/v1/quiz/attempts/" .. row.attempt .. "/submit", headers, body)
end
"""


def questions() -> list[tuple[dict[str, Any], Any]]:
    """Twenty questions (id-less bodies) and one response to each, some right, some wrong."""
    out: list[tuple[dict[str, Any], Any]] = []
    for n in range(4):
        out.append(
            (
                {
                    "type": "single_choice",
                    "text": f"Pick the right one ({n})",
                    "choices": [
                        {"id": f"s{n}a", "text": "Right", "weight": 1, "feedback": "Yes"},
                        {"id": f"s{n}b", "text": "Close", "weight": 0.5},
                        {"id": f"s{n}c", "text": "Wrong"},
                        {"id": f"s{n}d", "text": "Also wrong"},
                    ],
                },
                f"s{n}{'ab'[n % 2]}",
            )
        )
        out.append(
            (
                {
                    "type": "multiple_response",
                    "text": f"Pick the primes ({n})",
                    "choices": [
                        {"id": f"m{n}2", "text": "2", "weight": 0.5},
                        {"id": f"m{n}3", "text": "3", "weight": 0.5},
                        {"id": f"m{n}4", "text": "4", "weight": -0.5},
                        {"id": f"m{n}9", "text": "9"},
                    ],
                    "wrong_pick_penalty": 0.25,
                },
                [f"m{n}2", f"m{n}3"] if n % 2 else [f"m{n}2", f"m{n}9"],
            )
        )
        if n < 2:
            out.append(
                ({"type": "true_false", "text": f"Statement {n}", "correct": n % 2 == 0}, True)
            )
    for n in range(2):
        out.append(
            (
                {
                    "type": "numeric",
                    "text": f"Length {n}?",
                    "answers": [{"value": 1.5, "tolerance": 0.01}],
                    "units": [{"name": "m"}, {"name": "cm", "multiplier": 100}],
                },
                "150 cm",
            )
        )
        out.append(
            (
                {
                    "type": "short_answer",
                    "text": f"Who is buried in Grant's tomb ({n})?",
                    "answers": [{"text": "no one"}, {"text": "*Grant*", "weight": 0.5}],
                },
                "Ulysses Grant",
            )
        )
        out.append(
            (
                {
                    "type": "matching",
                    "text": f"Match the capitals ({n})",
                    "prompts": [
                        {"id": f"p{n}ca", "text": "Canada", "answer_id": f"a{n}ot"},
                        {"id": f"p{n}it", "text": "Italy", "answer_id": f"a{n}ro"},
                        {"id": f"p{n}jp", "text": "Japan", "answer_id": f"a{n}to"},
                    ],
                    "answers": [
                        {"id": f"a{n}ot", "text": "Ottawa"},
                        {"id": f"a{n}ro", "text": "Rome"},
                        {"id": f"a{n}to", "text": "Tokyo"},
                        {"id": f"a{n}sy", "text": "Sydney"},
                    ],
                },
                {f"p{n}ca": f"a{n}ot", f"p{n}it": f"a{n}to", f"p{n}jp": f"a{n}ro"},
            )
        )
        out.append(
            (
                {
                    "type": "ordering",
                    "text": f"Smallest to largest ({n})",
                    "items": [{"id": f"o{n}{k}", "text": k} for k in ("atom", "cell", "whale")],
                },
                [f"o{n}cell", f"o{n}atom", f"o{n}whale"],
            )
        )
    out.append(
        (
            {
                "type": "cloze",
                "text": "[[1]] is the capital of [[2]].",
                "gaps": [
                    {
                        "type": "choice",
                        "choices": [
                            {"id": "gp", "text": "Paris", "weight": 1},
                            {"id": "gr", "text": "Rome"},
                        ],
                    },
                    {"type": "short_answer", "answers": [{"text": "France"}]},
                ],
            },
            None,
        )
    )
    out.append(({"type": "true_false", "text": "Water is wet", "correct": True}, False))
    assert len(out) == QUESTIONS_PER_QUIZ
    return out


def seed(instance: Path, learners: int, quizzes: int) -> tuple[Path, Path, int]:
    """Create the course, bank, quizzes, learners and attempts in progress.

    :return: the wrk data file, the submit body file, and how many attempts.
    """
    sys.path.insert(0, str(ROOT))
    from core import create_app
    from core.db import get_db

    app = create_app(instance)
    lines, answers = seed_app(app, learners, quizzes)
    get_db(app).dispose()
    # Interleave learners so concurrent requests belong to different learners.
    lines.sort(key=lambda row: row[1])
    data = instance / "wrk-quiz.txt"
    data.write_text("".join(f"{t} {a}\n" for t, a in lines))
    body = instance / "submit.json"
    body.write_text(json.dumps({"answers": answers}))
    return data, body, len(lines)


def seed_app(app: Any, learners: int, quizzes: int) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Seed ``app``'s database; return (token, attempt id) pairs and the answers to submit."""
    from core.auth.tokens import create_token
    from core.db import get_db
    from core.db import new_public_id
    from core.db import utcnow
    from core.models import Course
    from core.models import CourseRole
    from core.models import Enrolment
    from core.models import Item
    from core.models import Module
    from core.models import User
    from plugins.quiz import attempts
    from plugins.quiz.content import QuizConfig
    from plugins.quiz.models import BankQuestion
    from plugins.quiz.questions import dump_question
    from plugins.quiz.questions import parse_question

    db = get_db(app)
    lines = []
    answers: dict[str, Any] = {}
    with app.test_request_context(), db.sessions() as sess:
        teacher = User(email="teacher@bench.test", display_name="Teacher", can_create_courses=True)
        sess.add(teacher)
        course = Course(
            title="Quiz course",
            summary="Benchmark course",
            status="published",
            visibility="instance",
            enrolment_mode="open",
        )
        sess.add(course)
        sess.flush()
        sess.add(CourseRole(course_id=course.id, user_id=teacher.id, role="instructor"))
        module = Module(course_id=course.id, title="Quizzes", position=0)
        sess.add(module)
        sess.flush()
        ids = []
        for body, response in questions():
            qid = new_public_id()
            question = parse_question({**body, "id": qid})
            sess.add(
                BankQuestion(
                    public_id=qid,
                    course_id=course.id,
                    type=question.type,
                    title="",
                    category="",
                    tags=[],
                    body=dump_question(question),
                )
            )
            ids.append(qid)
            if response is not None:
                answers[qid] = response
        config = QuizConfig(
            questions=ids, attempts_allowed=0, shuffle_questions=True, passing_score=0.6
        ).model_dump(mode="json")
        items = []
        for n in range(quizzes):
            item = Item(
                module_id=module.id,
                course_id=course.id,
                type="quiz",
                title=f"Quiz {n}",
                position=n,
                config=config,
            )
            sess.add(item)
            items.append(item)
        sess.flush()
        for n in range(learners):
            user = User(email=f"learner{n}@bench.test", display_name=f"Learner {n}")
            sess.add(user)
            sess.flush()
            sess.add(Enrolment(course_id=course.id, user_id=user.id, status="active"))
            _, token = create_token(sess, user, "bench")
            for item in items:
                started, _ = attempts.start(sess, user, item, course, utcnow())
                lines.append((token, started.attempt.public_id))
            if n % 50 == 49:
                sess.commit()
        sess.commit()
    return lines, answers


def graded_between(instance: Path, start: float, end: float) -> int:
    """Attempts submitted and graded while wrk ran."""
    from datetime import UTC
    from datetime import datetime

    from sqlalchemy import func
    from sqlalchemy import select

    from core import create_app
    from core.db import get_db
    from plugins.quiz.models import Attempt

    app = create_app(instance)
    db = get_db(app)
    with db.session() as sess:
        count = sess.scalar(
            select(func.count(Attempt.id)).where(
                Attempt.status == "graded",
                Attempt.submitted_at >= datetime.fromtimestamp(start, UTC),
                Attempt.submitted_at <= datetime.fromtimestamp(end, UTC),
            )
        )
    db.dispose()
    return int(count or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--learners", type=int, default=400)
    parser.add_argument("--quizzes", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    wrk_threads = 2

    shape = {"workers": args.workers, "threads": args.threads, "connections": args.connections}
    with tempfile.TemporaryDirectory(prefix="trivium-bench-") as tmp:
        instance = new_instance(Path(tmp))
        t0 = time.monotonic()
        data, body, seeded = seed(instance, args.learners, args.quizzes)
        print(f"seeded {seeded} attempts in {time.monotonic() - t0:.1f}s", flush=True)
        script = instance / "quiz_submit.lua"
        script.write_text(LUA)
        try:
            _, port = serve_instance(instance, **shape)
            _, bare_port = serve_wsgi("bare_app:app", **shape)
            wait_ready(f"http://127.0.0.1:{port}/api/v1/openapi.json")
            wait_ready(f"http://127.0.0.1:{bare_port}/bare")
            base = f"http://127.0.0.1:{port}"
            run_wrk("warm", f"http://127.0.0.1:{bare_port}/bare", seconds=2)
            run_wrk("warm", f"{base}/api/v1/openapi.json", seconds=2, connections=8)
            bare = run_wrk(
                "bare flask endpoint",
                f"http://127.0.0.1:{bare_port}/bare",
                seconds=args.seconds,
                connections=args.connections,
            )
            started = time.time()
            submit = run_wrk(
                "POST submit (20 q)",
                base,
                seconds=args.seconds,
                connections=args.connections,
                threads=wrk_threads,
                script=script,
                script_env={
                    "BENCH_DATA": str(data),
                    "BENCH_BODY": str(body),
                    "BENCH_THREADS": str(wrk_threads),
                },
            )
            ended = time.time()
        finally:
            stop_all()
        graded = graded_between(instance, started - 1, ended + 1)

    seconds = ended - started
    per_s = graded / seconds
    print(
        f"{args.connections} connections, {args.seconds}s each, gunicorn gthread "
        f"{args.workers}x{args.threads}, {args.learners} learners x {args.quizzes} quizzes, "
        f"{QUESTIONS_PER_QUIZ} questions per attempt; load: wrk + Lua"
    )
    print(bare.line())
    print(submit.line())
    print(f"graded submissions     {per_s:>9.1f} /s   ({graded} attempts in {seconds:.1f}s)")
    if graded >= seeded:
        print("WARNING: every seeded attempt was submitted; raise --learners or --quizzes")
    if submit.non_2xx or submit.errors:
        print("WARNING: failed submit requests")
    write_json(
        Path(__file__).parent / "last-quiz.json",
        {"bare": bare.__dict__, "submit": submit.__dict__, "graded_per_s": per_s},
    )
    print(f"submit p99 {submit.p99_ms:.1f} ms")
    print(f"ratio={per_s / bare.requests_per_s:.3f}")


if __name__ == "__main__":
    main()
