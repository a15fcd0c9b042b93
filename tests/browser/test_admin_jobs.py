"""The Jobs operator page in a real browser: a failed job, its error, Retry, axe-core."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask
from sqlalchemy import select
from sqlalchemy import update

from core.db import get_db
from core.db import utcnow
from core.models import Job
from core.models import OutboxMail
from core.models import User
from core.tasks import get_jobs
from core.tasks import store
from tests.browser.conftest import LiveServer
from tests.browser.conftest import assert_accessible
from tests.browser.seed import PASSWORD
from tests.browser.seed import unique_email
from tests.conftest import Users


def seed_failed_mail_job(app: Flask, to: str) -> str:
    """A ``core.send_mail`` job that used up its retries; returns its message id."""
    message = get_jobs(app).actor("core.send_mail").message_with_options(args=(to, "Hi", "Body"))
    error = (
        "Traceback (most recent call last):\n"
        '  File "core/tasks/builtin.py", line 36, in send_mail\n'
        f"core.tasks.builtin.MailNotSent: no send_mail implementation delivered the mail to {to}\n"
    )
    with get_db(app).engine.begin() as conn:
        store.upsert_queued(conn, message, available_at=utcnow())
        conn.execute(
            update(Job)
            .where(Job.message_id == message.message_id)
            .values(state="failed", attempts=9, error=error)
        )
    return message.message_id


def job_state(app: Flask, message_id: str) -> str:
    with get_db(app).sessions() as sess:
        return str(sess.scalar(select(Job.state).where(Job.message_id == message_id)))


def outbox_has(app: Flask, to: str) -> bool:
    with get_db(app).sessions() as sess:
        return sess.scalar(select(OutboxMail.id).where(OutboxMail.to == to)) is not None


def log_in_admin(page: Any, app: Flask) -> None:
    admin: User = Users(app).create(unique_email("jobsadmin"), admin=True, password=PASSWORD)
    page.goto("/login")
    page.get_by_label("E-mail address").fill(admin.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def test_an_admin_retries_a_failed_job(page: Any, live: LiveServer) -> None:
    to = unique_email("undelivered")
    message_id = seed_failed_mail_job(live.app, to)
    log_in_admin(page, live.app)

    page.goto("/admin/")
    nav = page.get_by_role("navigation", name="Administration")
    nav.get_by_role("link", name="Jobs").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Jobs"
    assert nav.get_by_role("link", name="Jobs").get_attribute("aria-current") == "page"
    row = page.locator(f"#job-{message_id}")
    assert "core.send_mail" in row.inner_text()
    summary = row.locator("summary")
    assert summary.inner_text() == (
        f"core.tasks.builtin.MailNotSent: no send_mail implementation delivered the mail to {to}"
    )
    assert not row.locator("pre").is_visible()
    summary.click()
    assert "Traceback (most recent call last):" in row.locator("pre").inner_text()
    assert_accessible(page)

    row.get_by_role("button", name="Retry core.send_mail").click()
    page.wait_for_load_state()
    assert "The job core.send_mail is queued again." in page.locator(".flashes").inner_text()
    assert page.locator(f"#job-{message_id}").get_by_role("button", name="Retry").count() == 0
    # the served instance's embedded worker runs it again: core's sender writes the outbox
    deadline = time.monotonic() + 30
    while job_state(live.app, message_id) != "done" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job_state(live.app, message_id) == "done"
    assert outbox_has(live.app, to)
