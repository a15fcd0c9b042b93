"""The Mail operator page in a real browser: a failed mail, its text, Retry, axe-core.

Retry needs SMTP delivery on, which the session's shared server does not
have, so this module serves its own instance with ``[mail] url`` pointing to
an SMTP server on loopback (aiosmtpd): the served instance's embedded worker
delivers the retried mail there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from sqlalchemy import select

from core.db import get_db
from core.db import utcnow
from core.models import OutboxMail
from core.models import User
from tests.browser.conftest import LiveServer
from tests.browser.conftest import assert_accessible
from tests.browser.conftest import free_port
from tests.browser.conftest import serve_live
from tests.browser.seed import PASSWORD
from tests.browser.seed import unique_email
from tests.conftest import Users

ERROR = "451 4.3.0 <{to}>: Temporary lookup failure:\nno answer from the resolver"


class Inbox:
    """An aiosmtpd handler that keeps the recipients of what it accepts."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted"


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    """An SMTP server on 127.0.0.1 that accepts everything."""
    handler = Inbox(free_port())
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port)
    controller.start()
    yield handler
    controller.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, inbox: Inbox) -> Iterator[LiveServer]:
    """``trivium serve`` of an instance that delivers mail to ``inbox`` (this module's ``live``)."""
    settings = f'[mail]\nurl = "smtp://127.0.0.1:{inbox.port}"\nsender = "lms@uni.example"\n'
    with serve_live(tmp_path_factory.mktemp("live-mail"), "Mail U", settings=settings) as server:
        yield server


def seed_failed_mail(app: Flask, to: str) -> str:
    """A reset mail whose delivery used up its tries; returns its public id."""
    with get_db(app).session() as sess:
        mail = OutboxMail(
            to=to,
            subject="Reset your Mail U password",
            body="Open http://127.0.0.1/reset?token=browser-secret within an hour.\n",
            state="failed",
            attempts=9,
            last_error=ERROR.format(to=to),
            last_attempt_at=utcnow(),
        )
        sess.add(mail)
        sess.flush()
        return mail.public_id


def mail_state(app: Flask, public_id: str) -> str:
    with get_db(app).session() as sess:
        return str(sess.scalar(select(OutboxMail.state).where(OutboxMail.public_id == public_id)))


def log_in_admin(page: Any, app: Flask) -> None:
    admin: User = Users(app).create(unique_email("mailadmin"), admin=True, password=PASSWORD)
    page.goto("/login")
    page.get_by_label("E-mail address").fill(admin.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def test_an_admin_reads_and_retries_a_failed_mail(
    page: Any, live: LiveServer, inbox: Inbox
) -> None:
    to = unique_email("unreached")
    public_id = seed_failed_mail(live.app, to)
    log_in_admin(page, live.app)

    page.goto("/admin/")
    nav = page.get_by_role("navigation", name="Administration")
    nav.get_by_role("link", name="Mail").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Mail"
    assert nav.get_by_role("link", name="Mail").get_attribute("aria-current") == "page"
    assert "SMTP delivery is on" in page.locator("main").inner_text()
    row = page.locator(f"#mail-{public_id}")
    assert to in row.inner_text() and "Failed" in row.inner_text()
    summary = row.locator("summary")
    assert summary.inner_text() == "no answer from the resolver"
    assert not row.locator("pre").is_visible()
    summary.click()
    assert "451 4.3.0" in row.locator("pre").inner_text()
    assert_accessible(page)

    row.get_by_role("link", name="Reset your Mail U password").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Reset your Mail U password"
    assert "token=browser-secret" in page.locator("#mail-body").inner_text()
    assert "no answer from the resolver" in page.locator("#mail-error").inner_text()
    assert_accessible(page)

    page.get_by_role("button", name="Retry").click()
    page.wait_for_load_state()
    assert f"The mail to {to} is queued for delivery." in page.locator(".flashes").inner_text()
    assert page.get_by_role("button", name="Retry").count() == 0
    # the served instance's embedded worker sends it to the SMTP server
    deadline = time.monotonic() + 30
    while mail_state(live.app, public_id) != "sent" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mail_state(live.app, public_id) == "sent"
    assert [to] in inbox.recipients
    page.reload()
    assert "Sent: The mail server accepted it." in page.locator("#mail-state").inner_text()
