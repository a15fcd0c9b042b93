"""Progress: reports through the content type, privacy between learners, completion."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select

from core import hookimpl
from core.content import ContentType
from core.content import ItemView
from core.content import ProgressState
from core.db import get_db
from core.models import Course as CourseRow
from core.models import Enrolment
from core.models import Event
from core.models import Progress
from core.models import User
from tests.conftest import Users
from tests.conftest import snapshot
from tests.course_helpers import Person
from tests.course_helpers import add_staff
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import complete
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.course_helpers import problem


@pytest.fixture
def owner(users: Users) -> Person:
    """The course's instructor."""
    return person(users, "owner@example.org", creator=True)


def _progress_rows(app: Flask) -> list[tuple[int, int, str]]:
    with get_db(app).session() as sess:
        rows = sess.execute(select(Progress.user_id, Progress.item_id, Progress.status))
        return sorted((r[0], r[1], r[2]) for r in rows)


def test_report_is_upserted_and_readable(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    learner = person(users)
    course = build_course(client, owner, items=2)
    enrol(client, course, learner)
    item = course.items[0]
    fresh = ok(call(client, "GET", f"/items/{item}/progress", learner.headers))
    assert (fresh["status"], fresh["updated_at"]) == ("not_started", None)
    first = ok(
        call(
            client,
            "PUT",
            f"/items/{item}/progress",
            learner.headers,
            {"status": "in_progress", "data": {"scroll": 0.4}},
        )
    )
    assert (first["status"], first["data"], first["item_completed"]) == (
        "in_progress",
        {"scroll": 0.4},
        False,
    )
    second = ok(
        call(client, "PUT", f"/items/{item}/progress", learner.headers, {"data": {"scroll": 0.9}})
    )
    assert (second["status"], second["data"]) == ("in_progress", {"scroll": 0.9})
    assert len(_progress_rows(app)) == 1
    done = complete(client, item, learner)
    assert done["item_completed"] is True
    assert done["completed_at"] is not None
    # completed never goes back (the page type's rule)
    again = ok(
        call(client, "PUT", f"/items/{item}/progress", learner.headers, {"status": "in_progress"})
    )
    assert (again["status"], again["item_completed"]) == ("completed", False)
    assert (
        ok(call(client, "GET", f"/items/{item}/progress", learner.headers))["status"] == "completed"
    )
    mine = ok(call(client, "GET", f"/courses/{course.id}/progress/me", learner.headers))
    assert [i["item_id"] for i in mine["items"]] == course.items
    assert [i["status"] for i in mine["items"]] == ["completed", "not_started"]
    assert mine["progress"] == {"required": 2, "completed": 1, "percent": 50.0}
    assert mine["completed_at"] is None


def test_learner_cannot_read_or_change_another_learners_progress(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    alice = person(users, "alice@example.org")
    bob = person(users, "bob@example.org")
    course = build_course(client, owner, items=2)
    enrol(client, course, alice)
    enrol(client, course, bob)
    ok(
        call(
            client,
            "PUT",
            f"/items/{course.items[0]}/progress",
            alice.headers,
            {"status": "in_progress", "data": {"scroll": 0.5, "note": "alice's"}},
        )
    )
    # Bob sees only his own state on the same item
    bobs = ok(call(client, "GET", f"/items/{course.items[0]}/progress", bob.headers))
    assert (bobs["status"], bobs["data"]) == ("not_started", {})
    bob_course = ok(call(client, "GET", f"/courses/{course.id}/progress/me", bob.headers))
    assert all(i["status"] == "not_started" for i in bob_course["items"])
    before = snapshot(app)
    # the staff table is closed to learners
    problem(call(client, "GET", f"/courses/{course.id}/progress", bob.headers), 403)
    problem(call(client, "GET", f"/courses/{course.id}/events", bob.headers), 403)
    # nothing in the API takes another learner's id for progress
    for bad in (
        {"user_id": alice.id, "status": "completed"},
        {"user": alice.id},
        {"status": "completed", "score": 1.0},
    ):
        problem(call(client, "PUT", f"/items/{course.items[0]}/progress", bob.headers, bad), 422)
    # a query parameter naming Alice is no way in: the caller's own row is returned
    sneaky = call(
        client, "GET", f"/items/{course.items[0]}/progress?user_id={alice.id}", bob.headers
    )
    assert ok(sneaky)["status"] == "not_started"
    assert snapshot(app) == before
    # Bob's own report touches only his row
    ok(
        call(
            client,
            "PUT",
            f"/items/{course.items[0]}/progress",
            bob.headers,
            {"status": "completed"},
        )
    )
    alices = ok(call(client, "GET", f"/items/{course.items[0]}/progress", alice.headers))
    assert (alices["status"], alices["data"]) == ("in_progress", {"scroll": 0.5, "note": "alice's"})


BAD_REPORTS: list[tuple[Any, int]] = [
    ({"status": "done"}, 422),
    ({"status": 3}, 422),
    ({"data": "everything"}, 422),
    ({"data": {"scroll": 7}}, 422),
    ({"data": {"scroll": "half"}}, 422),
    ({"score": 100}, 422),
    ([], 422),
]


@pytest.mark.parametrize(("report", "status"), BAD_REPORTS)
def test_bad_reports_change_nothing(
    app: Flask, client: FlaskClient, users: Users, owner: Person, report: Any, status: int
) -> None:
    learner = person(users)
    course = build_course(client, owner)
    enrol(client, course, learner)
    ok(
        call(
            client,
            "PUT",
            f"/items/{course.items[0]}/progress",
            learner.headers,
            {"data": {"scroll": 0.1}},
        )
    )
    before = snapshot(app)
    problem(
        call(client, "PUT", f"/items/{course.items[0]}/progress", learner.headers, report), status
    )
    assert snapshot(app) == before


def test_who_may_report(app: Flask, client: FlaskClient, users: Users, owner: Person) -> None:
    ta = person(users)
    outsider = person(users)
    pending = person(users)
    withdrawn = person(users)
    course = build_course(client, owner)
    add_staff(client, course, owner, ta, "ta")
    enrol(client, course, withdrawn)
    call(client, "DELETE", f"/courses/{course.id}/enrolment", withdrawn.headers)
    approval = build_course(client, owner, enrolment_mode="approval")
    enrol(client, approval, pending)
    before = snapshot(app)
    report = {"status": "completed"}
    for who in (owner, ta, outsider, withdrawn):
        problem(call(client, "PUT", f"/items/{course.items[0]}/progress", who.headers, report), 403)
        problem(call(client, "GET", f"/courses/{course.id}/progress/me", who.headers), 403)
    problem(
        call(client, "PUT", f"/items/{approval.items[0]}/progress", pending.headers, report), 403
    )
    problem(call(client, "PUT", f"/items/{'0' * 32}/progress", outsider.headers, report), 404)
    assert snapshot(app) == before


class CompletionListener:
    """Counts ``course_completed`` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []
        self.app: Flask | None = None

    @hookimpl
    def course_completed(self, user: User, course: CourseRow) -> None:
        stored = False
        if self.app is not None:
            with get_db(self.app).session() as sess:
                stored = (
                    sess.scalar(
                        select(Enrolment.completed_at).where(
                            Enrolment.user_id == user.id, Enrolment.course_id == course.id
                        )
                    )
                    is not None
                )
        # an ordinary object of the caller's session, never a read-cache snapshot
        assert not sa_inspect(course).transient
        self.calls.append((user.public_id, course.public_id, stored))


def test_hook_course_completed(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    learner = person(users)
    other = person(users)
    course = build_course(client, owner, modules=2, items=2, optional=1)
    enrol(client, course, learner)
    enrol(client, course, other)
    host = app.extensions["trivium.plugins"]
    listener = CompletionListener()
    listener.app = app
    host.register(listener, "test-completion")
    try:
        required = course.items[1:]
        for item in required[:-1]:
            assert complete(client, item, learner)["course_completed"] is False
        assert listener.calls == []
        last = complete(client, required[-1], learner)
        assert last["course_completed"] is True
        assert listener.calls == [(learner.id, course.id, True)]
        with get_db(app).session() as sess:
            first_stamp = sess.scalar(
                select(Enrolment.completed_at).where(Enrolment.user_id == learner.user.id)
            )
        assert first_stamp is not None
        # repeated and further reports, including the optional item, change nothing
        for item in course.items:
            assert complete(client, item, learner)["course_completed"] is False
        ok(
            call(
                client,
                "PUT",
                f"/items/{required[0]}/progress",
                learner.headers,
                {"data": {"scroll": 1}},
            )
        )
        assert listener.calls == [(learner.id, course.id, True)]
        with get_db(app).session() as sess:
            assert (
                sess.scalar(
                    select(Enrolment.completed_at).where(Enrolment.user_id == learner.user.id)
                )
                == first_stamp
            )
            course_events = sess.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.object_id == f"http://testserver/courses/{course.id}")
                .where(Event.verb == "http://adlnet.gov/expapi/verbs/completed")
            )
        assert course_events == 1
        # another learner completing only the optional item does not complete the course
        assert complete(client, course.items[0], other)["course_completed"] is False
        assert len(listener.calls) == 1
    finally:
        host.unregister("test-completion")
    mine = ok(call(client, "GET", f"/courses/{course.id}/progress/me", learner.headers))
    assert mine["completed_at"] is not None
    assert mine["progress"]["percent"] == 100.0


def test_concurrent_reports_complete_the_course_once(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    learner = person(users)
    course = build_course(client, owner, items=4)
    enrol(client, course, learner)
    host = app.extensions["trivium.plugins"]
    listener = CompletionListener()
    host.register(listener, "test-completion")
    barrier = threading.Barrier(len(course.items))

    def report(item: str) -> Any:
        own = app.test_client()
        barrier.wait()
        return call(own, "PUT", f"/items/{item}/progress", learner.headers, {"status": "completed"})

    try:
        with ThreadPoolExecutor(len(course.items)) as pool:
            results = [ok(r) for r in pool.map(report, course.items)]
    finally:
        host.unregister("test-completion")
    assert [r["course_completed"] for r in results].count(True) == 1
    assert len(listener.calls) == 1
    assert ok(call(client, "GET", f"/courses/{course.id}/progress/me", learner.headers))[
        "completed_at"
    ]


def test_course_without_required_items_never_completes(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    learner = person(users)
    course = build_course(client, owner, items=2, optional=2)
    enrol(client, course, learner)
    for item in course.items:
        assert complete(client, item, learner)["course_completed"] is False


def test_staff_progress_table_pages_by_learner(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    ta = person(users)
    learners = [person(users, f"l{n}@example.org") for n in range(5)]
    course = build_course(client, owner, modules=2, items=2)
    add_staff(client, course, owner, ta, "ta")
    for n, learner in enumerate(learners):
        enrol(client, course, learner)
        for item in course.items[:n]:
            complete(client, item, learner)
    call(client, "DELETE", f"/courses/{course.id}/enrolment", learners[4].headers)
    rows: list[dict[str, Any]] = []
    cursor = ""
    pages = 0
    while True:
        body = ok(call(client, "GET", f"/courses/{course.id}/progress?limit=2{cursor}", ta.headers))
        pages += 1
        assert [c["id"] for c in body["columns"]] == course.items
        rows += body["items"]
        if body["next_cursor"] is None:
            break
        cursor = f"&cursor={body['next_cursor']}"
    assert pages == 2
    assert [r["user"]["id"] for r in rows] == [lr.id for lr in learners[:4]]
    assert [r["progress"]["percent"] for r in rows] == [0.0, 25.0, 50.0, 75.0]
    assert set(rows[2]["cells"]) == set(course.items[:2])
    assert rows[3]["cells"][course.items[0]]["status"] == "completed"
    everyone = ok(
        call(client, "GET", f"/courses/{course.id}/progress?status=all&limit=100", ta.headers)
    )
    assert len(everyone["items"]) == 5
    problem(call(client, "GET", f"/courses/{course.id}/progress?cursor=bogus", ta.headers), 422)
    problem(call(client, "GET", f"/courses/{course.id}/progress?limit=500", ta.headers), 422)


# ---------------------------------------------------------------- content type plugins


class Strict(ContentType):
    """Complete only with a score of at least 0.5, computed from ``data.answer``."""

    name = "strict-test"
    label = "Strict"

    def apply_progress(
        self, item: ItemView, previous: ProgressState, report: dict[str, Any]
    ) -> ProgressState:
        answer = report.get("data", {}).get("answer")
        score = 1.0 if answer == 42 else 0.0
        return ProgressState(status="completed", score=score, data={"answer": answer})

    def is_complete(self, state: ProgressState) -> bool:
        return (state.score or 0) >= 0.5


class Crashing(ContentType):
    """A content type whose progress code crashes."""

    name = "crash-test"
    label = "Crash"

    def apply_progress(
        self, item: ItemView, previous: ProgressState, report: dict[str, Any]
    ) -> ProgressState:
        raise RuntimeError("bug in plugin")

    def learner_view(self, item: ItemView) -> dict[str, Any]:
        raise RuntimeError("bug in plugin")


class TypesPlugin:
    """Registers the test content types."""

    @hookimpl
    def register_content_types(self) -> list[type[ContentType]]:
        return [Strict, Crashing]


def _with_types(app: Flask) -> Any:
    host = app.extensions["trivium.plugins"]
    host.register(TypesPlugin(), "test-types")
    host.collect_content_types()
    return host


def _add_item(client: FlaskClient, owner: Person, module: str, item_type: str) -> str:
    body = {"type": item_type, "title": item_type}
    item_id: str = ok(call(client, "POST", f"/modules/{module}/items", owner.headers, body), 201)[
        "id"
    ]
    return item_id


def test_content_type_decides_completion(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    learner = person(users)
    host = _with_types(app)
    try:
        course = build_course(client, owner, items=0, publish=False)
        item = _add_item(client, owner, course.modules[0], "strict-test")
        ok(call(client, "POST", f"/courses/{course.id}/publish", owner.headers))
        enrol(client, course, learner)
        wrong = ok(
            call(client, "PUT", f"/items/{item}/progress", learner.headers, {"data": {"answer": 1}})
        )
        assert (wrong["status"], wrong["score"], wrong["completed_at"]) == ("completed", 0.0, None)
        assert wrong["course_completed"] is False
        right = ok(
            call(
                client, "PUT", f"/items/{item}/progress", learner.headers, {"data": {"answer": 42}}
            )
        )
        assert right["score"] == 1.0
        assert right["item_completed"] is True
        assert right["course_completed"] is True
    finally:
        host.unregister("test-types")


def test_crashing_content_type_is_contained(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    learner = person(users)
    host = _with_types(app)
    try:
        course = build_course(client, owner, items=0, publish=False)
        item = _add_item(client, owner, course.modules[0], "crash-test")
        ok(call(client, "POST", f"/courses/{course.id}/publish", owner.headers))
        enrol(client, course, learner)
        before = snapshot(app)
        body = problem(
            call(
                client, "PUT", f"/items/{item}/progress", learner.headers, {"status": "completed"}
            ),
            500,
        )
        assert "crash-test" in body["detail"]
        body = problem(call(client, "GET", f"/items/{item}", learner.headers), 500)
        assert "crash-test" in body["detail"]
        assert snapshot(app) == before
        assert any(f.plugin == "content-type:crash-test" for f in host.failures)
        # staff still see the raw config
        assert ok(call(client, "GET", f"/items/{item}", owner.headers))["config"] == {}
    finally:
        host.unregister("test-types")
    # once the type is gone, reports are refused cleanly
    before = snapshot(app)
    problem(
        call(client, "PUT", f"/items/{item}/progress", learner.headers, {"status": "completed"}),
        409,
    )
    problem(call(client, "GET", f"/items/{item}", learner.headers), 409)
    assert snapshot(app) == before


def _run_completion_jobs(app: Flask) -> list[tuple[str, str]]:
    """Run the queued completion jobs to the end; return (actor, state) of each."""
    from core.models import Job
    from core.tasks import get_jobs

    actors = ("core.complete_where_due", "core.announce_completion")
    jobs = get_jobs(app)
    jobs.start_worker()
    try:
        for _ in range(600):  # a bounded wait: 30 s at most
            with get_db(app).sessions() as sess:
                rows = sess.execute(
                    select(Job.actor, Job.state).where(Job.actor.in_(actors)).order_by(Job.id)
                ).all()
            if rows and all(state in ("done", "failed") for _, state in rows):
                return [(actor, state) for actor, state in rows]
            time.sleep(0.05)
        raise AssertionError(f"completion jobs never finished: {rows}")
    finally:
        jobs.stop_worker()


def _completed_at(app: Flask, learner: Person) -> Any:
    with get_db(app).session() as sess:
        return sess.scalar(
            select(Enrolment.completed_at).where(Enrolment.user_id == learner.user.id)
        )


@pytest.mark.parametrize("change", ["delete", "make_optional", "delete_module"])
def test_relaxing_the_rule_completes_learners_who_now_meet_it(
    app: Flask, client: FlaskClient, users: Users, owner: Person, change: str
) -> None:
    done_all_but_last = person(users)
    halfway = person(users)
    course = build_course(client, owner, modules=2, items=2)
    for learner in (done_all_but_last, halfway):
        enrol(client, course, learner)
    for item in course.items[:3]:
        assert complete(client, item, done_all_but_last)["course_completed"] is False
    complete(client, course.items[0], halfway)
    listener = CompletionListener()
    listener.app = app
    host = app.extensions["trivium.plugins"]
    host.register(listener, "test-completion")
    try:
        last = course.items[3]
        if change == "delete":
            ok(call(client, "DELETE", f"/items/{last}", owner.headers), 204)
        elif change == "make_optional":
            ok(call(client, "PATCH", f"/items/{last}", owner.headers, {"required": False}))
        else:
            module = ok(call(client, "GET", f"/courses/{course.id}", owner.headers))["modules"][1]
            ok(call(client, "DELETE", f"/modules/{module['id']}", owner.headers), 204)
            # the second module held items 2 and 3: halfway's item 0 is not enough
        assert _run_completion_jobs(app) == [
            ("core.complete_where_due", "done"),
            ("core.announce_completion", "done"),
        ]
        assert listener.calls == [(done_all_but_last.id, course.id, True)]
        assert _completed_at(app, done_all_but_last) is not None
        assert _completed_at(app, halfway) is None
        with get_db(app).session() as sess:
            verbs = sess.scalars(
                select(Event.verb).where(Event.user_id == done_all_but_last.user.id)
            ).all()
        assert sum(v.endswith("/completed") for v in verbs) == 4  # three items + the course
        # a second run (at-least-once delivery) completes nobody again
        from core.tasks import get_jobs

        with app.app_context():
            row = get_db(app).sessions()
            course_pk = row.scalar(select(CourseRow.id).where(CourseRow.public_id == course.id))
            row.close()
            get_jobs(app).enqueue("core.complete_where_due", (course_pk,))
        assert [state for _, state in _run_completion_jobs(app)] == ["done"] * 3
        assert len(listener.calls) == 1
    finally:
        host.unregister("test-completion")


def test_adding_or_keeping_required_items_enqueues_no_sweep(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    from core.models import Job

    course = build_course(client, owner, items=2, optional=1)
    optional, required = course.items
    ok(call(client, "DELETE", f"/items/{optional}", owner.headers), 204)
    ok(call(client, "PATCH", f"/items/{required}", owner.headers, {"required": True}))
    ok(call(client, "PATCH", f"/items/{required}", owner.headers, {"title": "Renamed"}))
    with get_db(app).sessions() as sess:
        assert sess.scalar(select(func.count()).select_from(Job)) == 0


def test_an_announcement_for_an_incomplete_enrolment_calls_nobody(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    from core.tasks import get_jobs

    learner = person(users)
    course = build_course(client, owner, items=2)
    enrol(client, course, learner)
    complete(client, course.items[0], learner)
    listener = CompletionListener()
    host = app.extensions["trivium.plugins"]
    host.register(listener, "test-completion")
    try:
        with app.app_context():
            with get_db(app).sessions() as sess:
                course_pk = sess.scalar(
                    select(CourseRow.id).where(CourseRow.public_id == course.id)
                )
            get_jobs(app).enqueue("core.announce_completion", (learner.user.id, course_pk))
        assert _run_completion_jobs(app) == [("core.announce_completion", "done")]
        assert listener.calls == []
    finally:
        host.unregister("test-completion")
