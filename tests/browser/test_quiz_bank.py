"""The question bank editor in a real browser: create a question, edit it, see its preview."""

from __future__ import annotations

from typing import Any

from flask import Flask

from core import courses
from core.db import get_db
from core.models import User
from tests.browser.conftest import LiveServer
from tests.browser.conftest import assert_accessible
from tests.browser.seed import PASSWORD
from tests.browser.seed import make_user
from tests.browser.seed import unique_email


def _seed(app: Flask) -> tuple[str, str]:
    """A course with an empty question bank; returns (course id, instructor e-mail)."""
    teacher = unique_email("bankprof")
    make_user(app, teacher, creator=True)
    with app.test_request_context(), get_db(app).session() as sess:
        owner = sess.query(User).filter_by(email=teacher).one()
        course = courses.create_course(sess, owner, {"title": "Bank course"})
        return course.public_id, teacher


def _log_in(page: Any, email: str) -> None:
    page.goto("/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/dashboard")


def test_instructor_creates_edits_and_previews_a_question(page: Any, live: LiveServer) -> None:
    course, teacher = _seed(live.app)
    _log_in(page, teacher)
    page.goto(f"/teach/courses/{course}/quiz/bank")
    assert "The bank is empty." in page.locator("main").inner_text()
    page.get_by_role("link", name="New question").click()
    page.get_by_role("link", name="Single choice").click()
    page.wait_for_url("**/questions/new?type=single_choice")
    assert_accessible(page)
    page.get_by_label("Title").fill("Capital of Italy")
    page.get_by_label("Question text").fill("Which city is the capital of Italy?")
    page.get_by_label("Tags").fill("capitals, europe")
    first = page.locator("#choice-0")
    first.get_by_label("Text").fill("Rome")
    first.get_by_label("Weight (%)").fill("100")
    first.get_by_label("Feedback").fill("Yes.")
    second = page.locator("#choice-1")
    second.get_by_label("Text").fill("Milan")
    # two rows are not enough: ask for more without JavaScript's help
    page.get_by_role("button", name="Add more rows: Choices").click()
    page.wait_for_url("**/questions/new?type=single_choice#choice-group")  # back at the rows
    page.locator("#choice-4").wait_for()
    assert page.locator("#f-choice-0-text").input_value() == "Rome"
    page.locator("#choice-2").get_by_label("Text").fill("Turin")
    page.locator("#choice-2").get_by_label("Weight (%)").fill("lots")
    page.get_by_role("button", name="Save the question").click()
    # refused: the error sits next to its field and the input is kept
    error = page.locator("#f-choice-2-weight-error")
    assert error.inner_text() == "Enter a number."
    assert page.locator("#f-choice-2-weight").get_attribute("aria-invalid") == "true"
    assert page.locator("#f-choice-2-text").input_value() == "Turin"
    assert_accessible(page)
    page.locator("#f-choice-2-weight").fill("0")
    page.get_by_role("button", name="Save the question").click()
    page.wait_for_url("**/teach/quiz/questions/*")
    assert "The question was added to the bank." in page.locator(".flashes").inner_text()
    preview = page.locator(".quiz-preview")
    assert "Which city is the capital of Italy?" in preview.inner_text()
    assert preview.get_by_label("Turin").is_disabled()
    assert "Yes." not in preview.inner_text()
    assert_accessible(page)

    page.get_by_label("Title").fill("Italy's capital")
    page.get_by_label("Question text").fill("Which city is Italy's capital?")
    page.locator("#choice-1").get_by_label("Weight (%)").fill("25")
    page.get_by_role("button", name="Preview without saving").click()
    page.get_by_text("Not saved yet:").wait_for()
    assert "Which city is Italy's capital?" in page.locator(".quiz-preview").inner_text()
    assert page.locator("#f-choice-1-weight").input_value() == "25"
    page.get_by_role("button", name="Save the question").click()
    page.wait_for_url("**/teach/quiz/questions/*")
    assert "version 2" in page.locator(".flashes").inner_text()
    assert page.locator("#f-choice-1-weight").input_value() == "25"
    assert "Italy's capital" in page.locator("h1").inner_text()

    page.get_by_role("link", name="Question bank").first.click()
    page.wait_for_url("**/quiz/bank")
    row = page.get_by_role("row", name="Italy's capital")
    assert "capitals, europe" in row.inner_text()
    assert_accessible(page)
