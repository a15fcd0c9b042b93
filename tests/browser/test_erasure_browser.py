"""A learner in a real browser erases their account and cannot log in again."""

from __future__ import annotations

from typing import Any

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


def test_a_learner_erases_their_account(page: Any, live: LiveServer) -> None:
    email = unique_email("erase")
    make_user(live.app, email)
    _log_in(page, email)
    page.wait_for_url("**/dashboard")
    page.goto("/account")
    section = page.locator("section", has_text="Erase my account")
    assert "What stays" in section.inner_text()
    assert_accessible(page)

    # without the box ticked, nothing happens and the page says why
    page.locator("#f-erase-password").fill(PASSWORD)
    page.get_by_role("button", name="Erase my account").click()
    assert "cannot be undone" in page.locator("#f-erase-confirm-error").inner_text()
    assert_accessible(page)

    page.locator("#f-erase-password").fill(PASSWORD)
    page.get_by_label("I understand this cannot be undone").check()
    page.get_by_role("button", name="Erase my account").click()
    page.wait_for_url(f"{live.url}/")
    assert "Your account was erased." in page.locator(".flashes").inner_text()
    assert page.get_by_role("button", name="Log out", exact=True).count() == 0

    _log_in(page, email)
    assert "not correct" in page.locator(".form-errors").inner_text()
    page.goto("/account")
    page.wait_for_url("**/login?next=/account")
