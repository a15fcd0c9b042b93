"""A learner in a real browser: sign up, log in with TOTP, find, enrol, learn, see progress."""

from __future__ import annotations

import re
from typing import Any

import pyotp

from tests.browser.conftest import LiveServer
from tests.browser.conftest import assert_accessible
from tests.browser.seed import PASSWORD
from tests.browser.seed import make_user
from tests.browser.seed import published_course
from tests.browser.seed import unique_email


def _log_in(page: Any, email: str) -> None:
    page.goto("/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_sign_up_log_out_and_log_in_again(page: Any, live: LiveServer) -> None:
    email = unique_email("signup")
    page.goto("/signup")
    assert_accessible(page)
    page.get_by_label("Your name").fill("Grace Hopper")
    page.get_by_label("E-mail address").fill(email)
    page.locator("#f-password").fill(PASSWORD)
    page.get_by_label("Password again").fill("a different one")
    page.get_by_role("button", name="Create account").click()
    # refused inline, input kept, focus on the error summary
    assert page.locator("#f-password2-error").inner_text() == "The two passwords do not match."
    assert page.get_by_label("E-mail address").input_value() == email
    assert page.evaluate("() => document.activeElement.className") == "form-errors"
    page.locator("#f-password").fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/dashboard")
    assert "Welcome, Grace Hopper!" in page.locator(".flashes").inner_text()
    assert_accessible(page)

    page.get_by_role("button", name="Log out", exact=True).click()
    page.wait_for_url(f"{live.url}/")
    _log_in(page, email)
    page.wait_for_url("**/dashboard")


def test_turn_on_totp_then_log_in_with_a_code(page: Any, live: LiveServer) -> None:
    email = unique_email("totp")
    make_user(live.app, email)
    _log_in(page, email)
    page.wait_for_url("**/dashboard")
    page.goto("/account")
    assert_accessible(page)
    page.get_by_role("button", name="Set up two-factor authentication").click()
    page.wait_for_url("**/account/totp/confirm")
    assert page.get_by_role("img", name="QR code for your authenticator app").is_visible()
    assert_accessible(page)
    secret = page.locator("#totp-secret").inner_text()
    totp = pyotp.TOTP(secret)
    page.get_by_label("Authentication code").fill(totp.now())
    page.get_by_role("button", name="Turn on two-factor authentication").click()
    codes = page.locator(".recovery-codes code").all_inner_texts()
    assert len(codes) >= 8
    page.get_by_role("link", name="I have saved them").click()

    page.get_by_role("button", name="Log out", exact=True).click()
    _log_in(page, email)
    page.wait_for_url("**/login/code**")
    assert_accessible(page)
    page.get_by_label("Authentication code").fill("000000")
    page.get_by_role("button", name="Verify").click()
    assert "wrong, expired or already used" in page.locator("#f-code-error").inner_text()
    # the code just used to turn TOTP on cannot be replayed: use a recovery code
    page.get_by_role("link", name="Use a recovery code instead").click()
    page.get_by_label("Recovery code").fill(codes[0])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/dashboard")


def test_learner_finds_enrols_learns_and_sees_progress(page: Any, live: LiveServer) -> None:
    title = "Marine Biology " + unique_email("x").split("@")[0]
    course_id = published_course(live.app, title, subject="Biology", level="Beginner")
    email = unique_email("learner")
    make_user(live.app, email)
    _log_in(page, email)
    page.wait_for_url("**/dashboard")

    page.get_by_role("link", name="Catalog", exact=True).click()
    page.get_by_label("Search", exact=True).fill(title)
    page.get_by_role("button", name="Search", exact=True).click()
    assert_accessible(page)
    card = page.locator(".card", has_text=title)
    assert "Live U" in card.inner_text()  # the source institution
    card.get_by_role("link", name=title).click()
    page.wait_for_url(f"**/courses/{course_id}")
    assert_accessible(page)
    page.get_by_role("button", name="Enrol", exact=True).click()
    assert "You are enrolled" in page.locator(".flashes").inner_text()
    page.get_by_role("link", name="Continue learning").click()
    page.wait_for_url("**/learn/**")
    assert "Text of reading 1." in page.locator(".item-content").inner_text()
    assert_accessible(page)

    # with JavaScript on, htmx swaps the status and the outline in place
    url_before = page.url
    page.get_by_role("button", name="Mark as complete").click()
    page.locator("#item-status .badge-success").wait_for()
    assert page.url == url_before
    assert "1 of 2 required items completed" in page.locator("#course-progress").inner_text()

    page.get_by_role("link", name="Dashboard", exact=True).click()
    progress = page.locator("li.card", has_text=title)
    assert re.search(r"1 of 2 required items completed \(50%\)", progress.inner_text())
    assert page.locator("progress").first.get_attribute("value") == "50.0"
    assert (
        "Reading 2" in page.locator("section", has_text="Continue where you left off").inner_text()
    )
    assert_accessible(page)


def test_learn_view_works_without_javascript(browser: Any, live: LiveServer) -> None:
    course_id = published_course(live.app, "No Script Course", items=1)
    email = unique_email("nojs")
    make_user(live.app, email)
    context = browser.new_context(base_url=live.url, java_script_enabled=False)
    try:
        page = context.new_page()
        _log_in(page, email)
        page.goto(f"/courses/{course_id}")
        page.get_by_role("button", name="Enrol", exact=True).click()
        page.get_by_role("link", name="Continue learning").click()
        page.get_by_role("button", name="Mark as complete").click()
        assert "is marked as complete" in page.locator(".flashes").inner_text()
        assert page.locator("#item-status .badge-success").is_visible()
    finally:
        context.close()


def test_phone_width_layout_has_no_horizontal_scroll(browser: Any, live: LiveServer) -> None:
    context = browser.new_context(base_url=live.url, viewport={"width": 360, "height": 740})
    try:
        page = context.new_page()
        for path in ("/", "/catalog", "/login", "/signup"):
            page.goto(path)
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 360px"
    finally:
        context.close()
