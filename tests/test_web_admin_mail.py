"""The operators' Mail page: the outbox by delivery state, one mail with its text, retry."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from core import create_app
from core.api import encode_cursor
from core.db import get_db
from core.db import utcnow
from core.models import AuditLog
from core.models import Job
from core.models import OutboxMail
from core.tasks import store
from tests.auth_helpers import PASSWORD
from tests.auth_helpers import Api
from tests.auth_helpers import outbox
from tests.conftest import Users
from tests.conftest import reset_schema
from tests.conftest import snapshot
from tests.course_helpers import Person
from tests.course_helpers import build_course
from tests.course_helpers import enrol
from tests.course_helpers import person
from tests.staff_pages import Browser
from tests.staff_pages import text

#: ``[mail] url`` of the tests where delivery is on.  Nothing is sent to it:
#: no worker runs, so a retry only leaves its delivery job queued.
SMTP_URL = "smtp://127.0.0.1:9"
DELIVERING = pytest.mark.parametrize("mail_url", [SMTP_URL])
RESET_BODY = "Reset your password: http://testserver/reset?token=s3cret-reset-token\n"
REFUSED = "550 5.1.1 <{to}>: Recipient address rejected:\nuser unknown in virtual mailbox table"


@pytest.fixture
def mail_url() -> str:
    """``[mail] url``: empty (mail is kept only) unless a test parametrizes it."""
    return ""


@pytest.fixture
def app(config: dict[str, Any], mail_url: str) -> Iterator[Flask]:
    """The conftest app, with ``[mail] url`` set to ``mail_url``."""
    mail = {"url": mail_url, "sender": "lms@uni.example"}
    application = create_app(config["path"], {**config, "mail": mail})
    reset_schema(application)
    yield application
    get_db(application).dispose()


@pytest.fixture
def admin(users: Users) -> Person:
    return person(users, "root@example.org", admin=True)


@pytest.fixture
def web(app: Flask, admin: Person) -> Browser:
    return Browser(app, admin.user)


def seed(app: Flask, to: str, state: str = "failed", **fields: Any) -> OutboxMail:
    """An outbox row in ``state``, with the tries and error a row in that state has."""
    now = utcnow()
    values: dict[str, Any] = {"subject": f"Reset your password ({to})", "body": RESET_BODY}
    if state == "failed":
        values.update(attempts=1, last_error=REFUSED.format(to=to), last_attempt_at=now)
    elif state == "sent":
        values.update(attempts=2, last_attempt_at=now, sent_at=now)
    values.update(fields)
    with get_db(app).session() as sess:
        row = OutboxMail(to=to, state=state, **values)
        sess.add(row)
        sess.flush()
        sess.expunge(row)
    return row


def stored(app: Flask, row: OutboxMail) -> OutboxMail:
    with get_db(app).session() as sess:
        found = sess.get_one(OutboxMail, row.id)
        sess.expunge(found)
        return found


def delivery_jobs(app: Flask) -> list[tuple[str, list[Any]]]:
    """The ``core.deliver_mail`` jobs: their state and arguments."""
    with get_db(app).session() as sess:
        rows = sess.scalars(select(Job).where(Job.actor == "core.deliver_mail").order_by(Job.id))
        return [(job.state, list(store.decode(job.message).args)) for job in rows]


def audit_entries(app: Flask) -> list[tuple[int | None, str, str, dict[str, Any]]]:
    with get_db(app).session() as sess:
        return [
            (e.actor_id, e.action, e.target, e.detail)
            for e in sess.scalars(select(AuditLog).order_by(AuditLog.id))
        ]


def rows_shown(page: str) -> list[str]:
    """Public ids of the table's mails, top to bottom."""
    return re.findall(r'<tr id="mail-([^"]+)">', page)


def row_of(page: str, mail: OutboxMail) -> str:
    return page.split(f'<tr id="mail-{mail.public_id}">')[1].split("</tr>")[0]


# ---------------------------------------------------------------- access


def test_mail_pages_are_for_site_admins(app: Flask, users: Users, web: Browser) -> None:
    teacher = person(users, "teacher@example.org", creator=True)
    learner = person(users, "learner@example.org")
    course = build_course(app.test_client(), teacher)
    enrol(app.test_client(), course, learner)
    mail = seed(app, "ada@example.org")
    paths = ["/admin/mail", f"/admin/mail/{mail.public_id}"]
    before = snapshot(app)

    for who in (learner, teacher):
        browser = Browser(app, who.user)
        for path in paths:
            resp = browser.get(path)
            assert resp.status_code == 403, path
            assert "ada@example.org" not in text(resp)
            assert "s3cret-reset-token" not in text(resp)
        assert browser.post(f"/admin/mail/{mail.public_id}/retry").status_code == 403
    anonymous = Browser(app, None)
    for path in paths:
        assert anonymous.get(path).status_code in {302, 401}, path
    # with a valid CSRF token: refused for who it is, not for a missing token
    assert anonymous.post(f"/admin/mail/{mail.public_id}/retry").status_code in {302, 401}
    assert snapshot(app) == before
    assert web.get("/admin/mail").status_code == 200


# ---------------------------------------------------------------- the list


def test_an_admin_sees_a_failed_mail_with_its_error(app: Flask, web: Browser) -> None:
    failed = seed(app, "a@example.org")
    sent = seed(app, "b@example.org", "sent")
    kept = seed(app, "c@example.org", "outbox")

    resp = web.get("/admin/mail")
    page = text(resp)
    assert resp.status_code == 200
    # failed mail needs the operator: the page opens on it
    assert rows_shown(page) == [failed.public_id]
    assert 'aria-current="page">Failed (<strong>1</strong>)' in page
    for tab in ("All (3)", "Waiting to be sent (0)", "Sent (1)", "Kept, not sent (1)"):
        assert tab in page
    # without [mail] url the page says mail is only kept, and offers no retry
    assert "SMTP delivery is off ([mail] url is empty): mail is only kept here" in page
    row = row_of(page, failed)
    assert '<th scope="row">a@example.org</th>' in row
    assert f'href="/admin/mail/{failed.public_id}">Reset your password (a@example.org)</a>' in row
    assert "<strong>Failed</strong>" in row and "<td>1</td>" in row
    # the last line is the summary, the whole answer is inside <details>
    assert "<summary>user unknown in virtual mailbox table</summary>" in row
    assert re.search(r"<details><summary>.*</summary><pre>550 5.1.1 &lt;a@example.org&gt;", row)
    assert failed.created_at.strftime("%Y-%m-%d %H:%M:%S") in row
    assert "Retry" not in row
    # the list never shows a body, and names mail by its opaque id only
    assert "s3cret-reset-token" not in page
    assert sent.public_id not in page and kept.public_id not in page
    assert f"/admin/mail/{failed.id}" not in page


def test_without_failed_mail_the_page_lists_all_of_it(app: Flask, web: Browser) -> None:
    assert "No mail." in text(web.get("/admin/mail"))
    sent = seed(app, "s@example.org", "sent")
    kept = seed(app, "k@example.org", "outbox")
    page = text(web.get("/admin/mail"))
    assert rows_shown(page) == [kept.public_id, sent.public_id]
    assert 'aria-current="page">All (2)' in page and "Failed (0)" in page
    row = row_of(page, sent)
    assert '<span class="badge badge-success">Sent</span>' in row
    assert sent.sent_at is not None and sent.sent_at.strftime("%Y-%m-%d %H:%M:%S") in row


def test_the_state_filter(app: Flask, web: Browser) -> None:
    ids = {
        state: seed(app, f"{state}@example.org", state).public_id
        for state in ("outbox", "queued", "sent", "failed")
    }
    for state, public_id in ids.items():
        page = text(web.get(f"/admin/mail?state={state}"))
        assert rows_shown(page) == [public_id], state
    everything = text(web.get("/admin/mail?state=all"))
    assert rows_shown(everything) == list(reversed(ids.values()))
    # an unknown state is the default view (failed mail, as there is some)
    assert rows_shown(text(web.get("/admin/mail?state=bogus"))) == [ids["failed"]]
    past_the_end = encode_cursor(1)
    assert "No mail in this state." in text(
        web.get(f"/admin/mail?state=sent&cursor={past_the_end}")
    )
    assert web.get("/admin/mail?cursor=forged").status_code == 422


def test_the_list_pages_through_newest_first(
    app: Flask, web: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.web.admin as admin_pages

    monkeypatch.setattr(admin_pages, "PAGE_SIZE", 2)
    failed = [seed(app, f"f{n}@example.org").public_id for n in range(5)]
    seed(app, "sent@example.org", "sent")

    seen: list[str] = []
    path: str | None = "/admin/mail"
    while path is not None:
        page = text(web.get(path))
        shown = rows_shown(page)
        assert 1 <= len(shown) <= 2
        seen += shown
        link = re.search(r'href="(/admin/mail\?[^"]*cursor=[^"]+)"', page)
        path = link.group(1).replace("&amp;", "&") if link else None
        if path is not None:
            assert "state=failed" in path  # the filter is kept across pages
            assert "Older mail" in page
    assert seen == list(reversed(failed))


# ---------------------------------------------------------------- one mail


def test_a_mail_page_shows_the_text_uncached_and_audited(
    app: Flask, web: Browser, admin: Person
) -> None:
    mail = seed(app, "ada@example.org", attempts=9)

    resp = web.get(f"/admin/mail/{mail.public_id}")

    page = text(resp)
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert "<h1>Reset your password (ada@example.org)</h1>" in page
    assert "<dd>ada@example.org</dd>" in page
    assert "<dt>Tries</dt><dd>9</dd>" in page
    assert "<strong>Failed</strong>: The mail server refused this mail for good" in page
    assert "<dt>Sent</dt><dd>not sent</dd>" in page
    # the whole error, and the body with its secret, which the operator may pass on
    assert (
        '<pre id="mail-error">550 5.1.1 &lt;ada@example.org&gt;: Recipient address rejected:\n'
        "user unknown in virtual mailbox table</pre>"
    ) in page
    assert re.search(
        r'<pre id="mail-body"[^>]*>Reset your password: http://testserver/reset'
        r"\?token=s3cret-reset-token\n</pre>",
        page,
    )
    # the link is text, not something to click by mistake
    assert 'href="http://testserver/reset' not in page
    assert '<p class="meta"><a href="/admin/mail">Mail</a></p>' in page
    # delivery is off: no retry, and the page says why
    assert "this mail cannot be sent, only read here" in page
    assert "/retry" not in page
    assert audit_entries(app) == [
        (admin.user.id, "admin.mail_read", f"mail:{mail.public_id}", {"to": "ada@example.org"})
    ]


def test_a_sent_mail_page(app: Flask, web: Browser) -> None:
    mail = seed(app, "ok@example.org", "sent", last_error="")
    page = text(web.get(f"/admin/mail/{mail.public_id}"))
    assert "Sent: The mail server accepted it." in page
    assert mail.sent_at is not None
    assert mail.sent_at.strftime("%Y-%m-%d %H:%M:%S") + "</time> UTC" in page
    assert "Last error" not in page and "/retry" not in page


def test_an_unknown_mail_is_a_404_page(app: Flask, web: Browser) -> None:
    mail = seed(app, "u@example.org")
    before = snapshot(app)
    for public_id in (uuid.uuid4().hex, str(mail.id), "x" * 300):
        for resp in (
            web.get(f"/admin/mail/{public_id}"),
            web.post(f"/admin/mail/{public_id}/retry"),
        ):
            assert resp.status_code == 404, public_id
            assert resp.mimetype == "text/html"
            assert "Page not found" in text(resp)
    assert snapshot(app) == before


# ---------------------------------------------------------------- retry


@DELIVERING
def test_retry_queues_a_failed_mail_again(app: Flask, web: Browser, admin: Person) -> None:
    mail = seed(app, "ada@example.org", attempts=9)
    page = text(web.get("/admin/mail"))
    assert "SMTP delivery is on ([mail] url is set)" in page
    row = row_of(page, mail)
    assert f'action="/admin/mail/{mail.public_id}/retry"' in row
    assert 'name="csrf_token"' in row
    assert 'Retry<span class="visually-hidden"> the mail to ada@example.org</span>' in row

    resp = web.post(f"/admin/mail/{mail.public_id}/retry", {"state": "failed"})

    assert resp.status_code == 303
    assert resp.headers["Location"].endswith("/admin/mail?state=failed")
    row_now = stored(app, mail)
    assert (row_now.state, row_now.attempts) == ("queued", 0)
    assert row_now.last_error == mail.last_error  # the last try's error stays until the next
    assert delivery_jobs(app) == [("queued", [mail.id])]
    assert audit_entries(app)[-1] == (
        admin.user.id,
        "mail.retry",
        f"mail:{mail.public_id}",
        {"to": "ada@example.org"},
    )
    page = text(web.get("/admin/mail?state=all"))
    assert "The mail to ada@example.org is queued for delivery." in page
    assert "Retry" not in row_of(page, mail)
    assert "Waiting to be sent (1)" in page


@DELIVERING
def test_retry_from_a_mail_page_sends_kept_mail_and_returns_there(
    app: Flask, web: Browser, admin: Person
) -> None:
    # written while [mail] url was empty; it is set now
    mail = seed(app, "kept@example.org", "outbox")
    page = text(web.get(f"/admin/mail/{mail.public_id}"))
    assert f'action="/admin/mail/{mail.public_id}/retry"' in page

    resp = web.post(f"/admin/mail/{mail.public_id}/retry")

    assert resp.status_code == 303
    assert resp.headers["Location"].endswith(f"/admin/mail/{mail.public_id}")
    assert stored(app, mail).state == "queued"
    assert delivery_jobs(app) == [("queued", [mail.id])]
    actions = [(actor, action) for actor, action, _, _ in audit_entries(app)]
    assert actions == [(admin.user.id, "admin.mail_read"), (admin.user.id, "mail.retry")]
    page = text(web.get(resp.headers["Location"]))
    assert "The mail to kept@example.org is queued for delivery." in page
    assert "Waiting to be sent: A background job will send it" in page


@DELIVERING
@pytest.mark.parametrize(("state", "label"), [("sent", "Sent"), ("queued", "Waiting to be sent")])
def test_mail_that_is_queued_or_sent_is_not_retried(
    app: Flask, web: Browser, state: str, label: str
) -> None:
    mail = seed(app, f"{state}@example.org", state)
    assert "Retry" not in row_of(text(web.get("/admin/mail?state=all")), mail)
    before = snapshot(app)

    resp = web.post(f"/admin/mail/{mail.public_id}/retry", {"state": "all"})

    assert resp.status_code == 303
    assert resp.headers["Location"].endswith("/admin/mail?state=all")
    assert snapshot(app) == before
    page = text(web.get("/admin/mail?state=all"))
    assert "Only a failed or kept mail can be sent again" in page
    assert f"(state: {label}). Nothing was changed." in page


def test_retry_is_refused_while_delivery_is_off(app: Flask, web: Browser) -> None:
    mail = seed(app, "off@example.org")
    before = snapshot(app)

    resp = web.post(f"/admin/mail/{mail.public_id}/retry", {"state": "failed"})

    assert resp.status_code == 303
    assert resp.headers["Location"].endswith("/admin/mail?state=failed")
    assert snapshot(app) == before
    page = text(web.get("/admin/mail"))
    assert "SMTP delivery is off ([mail] url is empty), so mail cannot be sent" in page
    assert "Nothing was changed." in page


@DELIVERING
def test_retry_needs_the_csrf_token(app: Flask, web: Browser) -> None:
    mail = seed(app, "c@example.org")
    before = snapshot(app)
    assert web.post(f"/admin/mail/{mail.public_id}/retry", csrf=False).status_code == 400
    assert snapshot(app) == before
    assert stored(app, mail).state == "failed"
    assert delivery_jobs(app) == []


@DELIVERING
def test_a_reset_mail_written_by_a_request_is_listed_and_retried(
    app: Flask, web: Browser, users: Users
) -> None:
    users.create("learner@example.org", password=PASSWORD)
    resp = Api(app.test_client()).post("/auth/password-reset", {"email": "learner@example.org"})
    assert resp.status_code == 202
    [mail] = outbox(app)
    assert mail.state == "queued"
    page = text(web.get("/admin/mail"))
    assert rows_shown(page) == [mail.public_id]
    assert "Waiting to be sent" in row_of(page, mail)
    body = text(web.get(f"/admin/mail/{mail.public_id}"))
    assert "token=" in body
    # queued already: a second job would send it twice
    web.post(f"/admin/mail/{mail.public_id}/retry")
    assert len(delivery_jobs(app)) == 1


# ---------------------------------------------------------------- overview


def test_the_overview_card_while_delivery_is_off(app: Flask, web: Browser) -> None:
    seed(app, "k1@example.org", "outbox")
    seed(app, "k2@example.org", "outbox")
    page = text(web.get("/admin/"))
    assert 'href="/admin/mail">Mail</a>' in page
    assert "SMTP delivery is off: mail is only kept here (2 kept)." in page
    seed(app, "f@example.org")
    assert "<strong>1 failed.</strong> SMTP delivery is off" in text(web.get("/admin/"))


@DELIVERING
def test_the_overview_card_stresses_failed_mail(app: Flask, web: Browser) -> None:
    seed(app, "s@example.org", "sent")
    seed(app, "q@example.org", "queued")
    page = text(web.get("/admin/"))
    assert "Sent by SMTP: 1 waiting, 1 sent. None failed." in page
    seed(app, "f1@example.org")
    seed(app, "f2@example.org")
    page = text(web.get("/admin/"))
    assert "<strong>2 failed.</strong> Sent by SMTP: 1 waiting, 1 sent." in page
    assert "None failed." not in page.split('href="/admin/mail"')[1].split("</li>")[0]
