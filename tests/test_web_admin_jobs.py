"""The operators' Jobs page: background jobs by state, failed ones with their error, retry."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy import update

from core import create_app
from core import hookimpl
from core import tasks
from core.api import encode_cursor
from core.db import get_db
from core.db import session
from core.db import utcnow
from core.models import AuditLog
from core.models import Job
from core.models import OutboxMail
from core.tasks import ActorSpec
from core.tasks import JobsOptions
from core.tasks import store
from tests.conftest import Users
from tests.conftest import reset_schema
from tests.conftest import snapshot
from tests.course_helpers import Person
from tests.course_helpers import build_course
from tests.course_helpers import enrol
from tests.course_helpers import person
from tests.staff_pages import Browser
from tests.staff_pages import text

QUEUE = "jobs_page"
#: Keys the ``pages.flaky`` actor accepts; any other key fails.
HEALED: set[str] = set()
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "plugins/demo/jobs.py", line 12, in flaky\n'
    "    raise RuntimeError(...)\n"
    "RuntimeError: {message}\n"
)


def flaky(key: str) -> None:
    """Fails until ``key`` is healed, then records one outbox row (idempotently)."""
    if key not in HEALED:
        raise RuntimeError(f"not yet {key}")
    sess = session()
    if sess.scalar(select(OutboxMail.id).where(OutboxMail.to == key)) is None:
        sess.add(OutboxMail(to=key, subject="healed", body="ran"))
        sess.commit()


class PageActors:
    """A temporary plugin declaring the test actor."""

    @hookimpl
    def register_actors(self) -> list[ActorSpec]:
        return [ActorSpec(flaky, "pages.flaky", queue=QUEUE, max_retries=0)]


@pytest.fixture
def app(config: dict[str, Any]) -> Iterator[Flask]:
    """The conftest app, plus the test actor and short job timings."""
    application = create_app(config["path"], config, extra_plugins={"pages": PageActors()})
    tasks.init_app(
        application,
        JobsOptions(poll_interval=0.05, worker_timeout_ms=100, stop_timeout_ms=5000),
    )
    reset_schema(application)
    yield application
    tasks.get_jobs(application).close()
    get_db(application).dispose()


@pytest.fixture
def admin(users: Users) -> Person:
    return person(users, "root@example.org", admin=True)


@pytest.fixture
def web(app: Flask, admin: Person) -> Browser:
    return Browser(app, admin.user)


def seed(app: Flask, key: str, state: str = "failed", error: str | None = None) -> str:
    """A ``pages.flaky`` job row in ``state``; returns its message id."""
    message = tasks.get_jobs(app).actor("pages.flaky").message_with_options(args=(key,))
    if error is None:
        error = TRACEBACK.format(message=f"not yet {key}") if state == "failed" else ""
    with get_db(app).engine.begin() as conn:
        store.upsert_queued(conn, message, available_at=utcnow())
        conn.execute(
            update(Job)
            .where(Job.message_id == message.message_id)
            .values(state=state, attempts=0 if state == "queued" else 1, error=error)
        )
    return message.message_id


def job(app: Flask, message_id: str) -> Job:
    with get_db(app).sessions() as sess:
        row = sess.scalar(select(Job).where(Job.message_id == message_id))
        assert row is not None
        return row


def wait_for(app: Flask, message_id: str, state: str) -> Job:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = job(app, message_id)
        if row.state == state:
            return row
        time.sleep(0.05)
    raise AssertionError(f"job {message_id} never reached {state}: {job(app, message_id)}")


def audit_entries(app: Flask) -> list[tuple[str, str, dict[str, Any]]]:
    with get_db(app).sessions() as sess:
        return [
            (e.action, e.target, e.detail)
            for e in sess.scalars(select(AuditLog).order_by(AuditLog.id))
        ]


def rows_shown(page: str) -> list[str]:
    """Message ids of the table's rows, top to bottom."""
    return re.findall(r'<tr id="job-([^"]+)">', page)


# ---------------------------------------------------------------- access


def test_jobs_pages_are_for_site_admins(app: Flask, users: Users, web: Browser) -> None:
    teacher = person(users, "teacher@example.org", creator=True)
    learner = person(users, "learner@example.org")
    course = build_course(app.test_client(), teacher)
    enrol(app.test_client(), course, learner)
    failed = seed(app, "secret-key@example.org")
    assert web.get("/admin/jobs").status_code == 200

    before = snapshot(app)
    for who in (learner, teacher):
        browser = Browser(app, who.user)
        resp = browser.get("/admin/jobs")
        assert resp.status_code == 403
        assert "secret-key@example.org" not in text(resp)
        assert browser.post(f"/admin/jobs/{failed}/retry").status_code == 403
    anonymous = Browser(app, None)
    assert anonymous.get("/admin/jobs").status_code in {302, 401}
    # with a valid CSRF token: refused for who it is, not for a missing token
    assert anonymous.post(f"/admin/jobs/{failed}/retry").status_code in {302, 401}
    assert snapshot(app) == before


# ---------------------------------------------------------------- the list


def test_an_admin_sees_a_failed_job_with_its_error(app: Flask, web: Browser) -> None:
    failed = seed(app, "a@example.org")
    done = seed(app, "b@example.org", "done")

    resp = web.get("/admin/jobs")
    page = text(resp)
    assert resp.status_code == 200
    # failed jobs need the operator: the page opens on them
    assert rows_shown(page) == [failed]
    assert 'aria-current="page">Failed (<strong>1</strong>)' in page
    assert "All (2)" in page and "Done (1)" in page and "Queued (0)" in page
    row = page.split(f'<tr id="job-{failed}">')[1].split("</tr>")[0]
    assert "<code>pages.flaky</code>" in row and f"<code>{QUEUE}</code>" in row
    # the last line is the summary, the whole traceback is inside <details>
    assert "<summary>RuntimeError: not yet a@example.org</summary>" in row
    assert "Traceback (most recent call last):" in row
    assert re.search(r"<details><summary>.*</summary><pre>Traceback", row, re.S)
    # the retry form names the job by its message id, never by the row id
    assert f'action="/admin/jobs/{failed}/retry"' in row
    assert 'name="csrf_token"' in row
    assert done not in page

    job_id = job(app, failed).id
    assert f"/jobs/{job_id}/" not in page


def test_without_failed_jobs_the_page_lists_every_job(app: Flask, web: Browser) -> None:
    assert "No jobs." in text(web.get("/admin/jobs"))
    done = seed(app, "d@example.org", "done")
    queued = seed(app, "q@example.org", "queued")
    page = text(web.get("/admin/jobs"))
    assert rows_shown(page) == [queued, done]
    assert 'aria-current="page">All (2)' in page
    assert "Failed (0)" in page
    assert "Retry" not in page.split("<tbody>")[1]


def test_the_state_filter(app: Flask, web: Browser) -> None:
    ids = {state: seed(app, f"{state}@example.org", state) for state in store.STATES}
    for state, message_id in ids.items():
        page = text(web.get(f"/admin/jobs?state={state}"))
        assert rows_shown(page) == [message_id], state
    everything = text(web.get("/admin/jobs?state=all"))
    assert rows_shown(everything) == list(reversed(ids.values()))
    # an unknown state is the default view (failed jobs, as there is one)
    assert rows_shown(text(web.get("/admin/jobs?state=bogus"))) == [ids["failed"]]
    past_the_end = encode_cursor(1)
    assert "No jobs in this state." in text(
        web.get(f"/admin/jobs?state=done&cursor={past_the_end}")
    )
    assert web.get("/admin/jobs?cursor=forged").status_code == 422


def test_the_list_pages_through_newest_first(
    app: Flask, web: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.web.admin as admin_pages

    monkeypatch.setattr(admin_pages, "PAGE_SIZE", 2)
    failed = [seed(app, f"f{n}@example.org") for n in range(5)]
    seed(app, "done@example.org", "done")

    seen: list[str] = []
    path: str | None = "/admin/jobs"
    while path is not None:
        page = text(web.get(path))
        shown = rows_shown(page)
        assert 1 <= len(shown) <= 2
        seen += shown
        link = re.search(r'href="(/admin/jobs\?[^"]*cursor=[^"]+)"', page)
        path = link.group(1).replace("&amp;", "&") if link else None
        if path is not None:
            assert "state=failed" in path  # the filter is kept across pages
    assert seen == list(reversed(failed))


# ---------------------------------------------------------------- retry


def test_retry_queues_a_failed_job_again_and_it_runs(app: Flask, web: Browser) -> None:
    key = f"heal-{uuid.uuid4().hex}@example.org"
    with app.app_context():
        message_id = tasks.enqueue_with_options("pages.flaky", args=(key,)).message_id
    jobs = tasks.get_jobs(app)
    jobs.start_worker(queues=[QUEUE], threads=1)
    assert "not yet" in wait_for(app, message_id, "failed").error
    jobs.stop_worker()

    HEALED.add(key)
    resp = web.post(f"/admin/jobs/{message_id}/retry", {"state": "failed"})
    assert resp.status_code == 303
    assert resp.headers["Location"].endswith("/admin/jobs?state=failed")
    row = job(app, message_id)
    assert (row.state, row.attempts, row.error) == ("queued", 0, "")
    page = text(web.get("/admin/jobs?state=all"))
    assert "The job pages.flaky is queued again." in page
    assert rows_shown(page) == [message_id]
    assert audit_entries(app)[-1] == (
        "admin.job_retry",
        f"job:{message_id}",
        {"actor": "pages.flaky", "queue": QUEUE, "attempts": 1},
    )

    jobs.start_worker(queues=[QUEUE], threads=1)
    assert wait_for(app, message_id, "done").attempts == 1
    with get_db(app).sessions() as sess:
        assert sess.scalar(select(OutboxMail.subject).where(OutboxMail.to == key)) == "healed"


@pytest.mark.parametrize("state", ["queued", "running", "done"])
def test_a_job_that_is_not_failed_is_not_retried(app: Flask, web: Browser, state: str) -> None:
    message_id = seed(app, f"{state}@example.org", state, error="RuntimeError: earlier")
    before = snapshot(app)

    resp = web.post(f"/admin/jobs/{message_id}/retry", {"state": "all"})

    assert resp.status_code == 303
    assert snapshot(app) == before
    page = text(web.get("/admin/jobs?state=all"))
    assert "Only a failed job can be retried" in page
    assert f"(state: {state.title()})" in page


def test_retry_needs_the_csrf_token(app: Flask, web: Browser) -> None:
    message_id = seed(app, "c@example.org")
    before = snapshot(app)
    assert web.post(f"/admin/jobs/{message_id}/retry", csrf=False).status_code == 400
    assert snapshot(app) == before
    assert job(app, message_id).state == "failed"


def test_an_unknown_job_is_a_404_page(app: Flask, web: Browser) -> None:
    seed(app, "u@example.org")
    before = snapshot(app)
    for message_id in (str(uuid.uuid4()), "1", "x" * 300):
        resp = web.post(f"/admin/jobs/{message_id}/retry")
        assert resp.status_code == 404, message_id
        assert resp.mimetype == "text/html"
        assert "Page not found" in text(resp)
    assert snapshot(app) == before


# ---------------------------------------------------------------- overview


def test_the_overview_counts_jobs_and_stresses_failures(app: Flask, web: Browser) -> None:
    seed(app, "done@example.org", "done")
    seed(app, "queued@example.org", "queued")
    page = text(web.get("/admin/"))
    assert 'href="/admin/jobs">Jobs</a>' in page
    assert "1 queued, 0 running, 1 done. None failed." in page

    seed(app, "f1@example.org")
    seed(app, "f2@example.org")
    page = text(web.get("/admin/"))
    assert "<strong>2 failed.</strong> 1 queued, 0 running, 1 done." in page
    assert "None failed." not in page
