"""An instructor enrols a class list in a real browser: paste, check the preview, confirm."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core import courses as svc
from core.db import get_db
from core.models import Enrolment
from core.models import User
from tests.browser.conftest import LiveServer
from tests.browser.conftest import assert_accessible
from tests.browser.seed import PASSWORD
from tests.browser.seed import make_user
from tests.browser.seed import unique_email


def _log_in(page: Any, email: str) -> None:
    page.goto("/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def _draft_course(live: LiveServer, owner_email: str) -> str:
    with live.app.test_request_context(), get_db(live.app).session() as sess:
        owner = sess.scalars(select(User).where(User.email == owner_email)).one()
        return svc.create_course(sess, owner, {"title": "Class list course"}).public_id


def test_an_instructor_enrols_a_pasted_class_list(page: Any, live: LiveServer) -> None:
    owner = unique_email("prof")
    make_user(live.app, owner, creator=True)
    course_id = _draft_course(live, owner)
    ann, bob = unique_email("ann"), unique_email("bob")
    for email in (ann, bob):
        make_user(live.app, email)
    nobody = unique_email("nobody")
    _log_in(page, owner)
    page.goto(f"/teach/courses/{course_id}/learners")

    page.get_by_label("E-mail addresses").fill(f"{ann.upper()}\n{bob}, {nobody}\n{ann}")
    page.get_by_role("button", name="Check the list").click()
    assert "Nothing has been stored yet." in page.locator("main").inner_text()
    assert page.locator("table tbody tr").count() == 2
    unknown = page.locator("ul[aria-labelledby='unknown-heading']").inner_text()
    assert nobody in unknown
    assert_accessible(page)

    page.get_by_role("button", name="Enrol 2 learners").click()
    page.wait_for_url(f"**/teach/courses/{course_id}/learners")
    flash = page.locator(".flashes").inner_text()
    assert "2 learners enrolled." in flash and nobody not in flash  # the preview named them
    with get_db(live.app).session() as sess:
        enrolled = set(
            sess.scalars(
                select(User.email)
                .join(Enrolment, Enrolment.user_id == User.id)
                .where(Enrolment.status == "active")
                .where(User.email.in_([ann, bob, nobody]))
            )
        )
    assert enrolled == {ann, bob}
