"""Quizzes in a real browser: a learner answers and submits with the keyboard; a grader marks."""

from __future__ import annotations

from typing import Any

from flask import Flask

from core import courses
from core.db import get_db
from core.db import new_public_id
from core.db import utcnow
from core.models import Course
from core.models import Item
from core.models import Module
from core.models import User
from plugins.quiz import attempts
from plugins.quiz.models import BankQuestion
from plugins.quiz.questions import dump_question
from plugins.quiz.questions import parse_question
from tests.browser.conftest import LiveServer
from tests.browser.conftest import assert_accessible
from tests.browser.seed import PASSWORD
from tests.browser.seed import make_user
from tests.browser.seed import unique_email

QUESTIONS: list[dict[str, Any]] = [
    {
        "type": "single_choice",
        "text": "Which city is the capital of France?",
        "shuffle": False,
        "choices": [
            {"id": "c-lyon", "text": "Lyon", "weight": 0},
            {"id": "c-paris", "text": "Paris", "weight": 1},
        ],
    },
    {"type": "true_false", "text": "Water boils at 100 °C at sea level.", "correct": True},
    {
        "type": "ordering",
        "text": "Order from smallest to largest.",
        "items": [
            {"id": "o-atom", "text": "Atom"},
            {"id": "o-cell", "text": "Cell"},
            {"id": "o-whale", "text": "Whale"},
        ],
        "scoring": "all_or_nothing",
    },
    {"type": "essay", "text": "Explain why the sky is blue.", "grader_info": "Rayleigh."},
]


def _seed(app: Flask) -> tuple[str, str, str]:
    """A published course with a four-question quiz; returns (quiz id, learner, instructor)."""
    teacher, learner = unique_email("quizprof"), unique_email("quizlearner")
    make_user(app, teacher, creator=True)
    make_user(app, learner)
    with app.test_request_context(), get_db(app).session() as sess:
        owner = sess.query(User).filter_by(email=teacher).one()
        course = courses.create_course(sess, owner, {"title": "Quiz course"})
        module = courses.add_module(sess, course, "Week 1")
        ids = []
        for body in QUESTIONS:
            question = parse_question({**body, "id": new_public_id()})
            sess.add(
                BankQuestion(
                    public_id=question.id,
                    course_id=course.id,
                    type=question.type,
                    title="",
                    category="",
                    tags=[],
                    body=dump_question(question),
                )
            )
            ids.append(question.id)
        course_id, module_id = course.id, module.id
    # The bank is committed first: the quiz type checks the config against it.
    with app.test_request_context(), get_db(app).session() as sess:
        owner = sess.query(User).filter_by(email=teacher).one()
        student = sess.query(User).filter_by(email=learner).one()
        course = sess.get_one(Course, course_id)
        item = courses.add_item(
            sess,
            course,
            sess.get_one(Module, module_id),
            item_type="quiz",
            title="Check your understanding",
            config={"questions": ids, "passing_score": 0.5, "review": "after_submit"},
        )
        courses.change_status(sess, owner, course, "publish")
        courses.enrol_self(sess, student, course)
        return item.public_id, learner, teacher


def _log_in(page: Any, email: str) -> None:
    page.goto("/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/dashboard")


def _press(page: Any, locator: Any, key: str = "Enter") -> None:
    locator.focus()
    page.keyboard.press(key)


def test_learner_takes_and_submits_a_quiz_with_the_keyboard(page: Any, live: LiveServer) -> None:
    quiz, learner, _ = _seed(live.app)
    _log_in(page, learner)
    page.goto(f"/learn/{quiz}")
    _press(page, page.get_by_role("button", name="Start the quiz"))
    page.wait_for_url("**/quiz/attempts/*")
    assert_accessible(page)
    # single choice and true/false: focus the radio and select it with Space
    _press(page, page.get_by_label("Paris"), "Space")
    assert page.get_by_label("Paris").is_checked()
    _press(page, page.get_by_label("True", exact=True), "Space")
    # ordering: the list is shuffled; move items with the buttons until it is in order
    target = ["Atom", "Cell", "Whale"]
    for _ in range(6):
        shown = page.locator(".quiz-ordering .quiz-order-text").all_inner_texts()
        if shown == target:
            break
        wrong = next(i for i, t in enumerate(shown) if target.index(t) != i)
        want = shown.index(target[wrong])
        _press(page, page.get_by_role("button", name=f"Move up: {target[wrong]}"))
        page.wait_for_function(
            "([name, pos]) => [...document.querySelectorAll('.quiz-order-text')]"
            ".map((e) => e.textContent).indexOf(name) === pos",
            arg=[target[wrong], want - 1],
        )
    assert page.locator(".quiz-ordering .quiz-order-text").all_inner_texts() == target
    page.get_by_label("Your answer").fill("Rayleigh scattering of sunlight.")
    # autosave reports back without leaving the page
    page.wait_for_function(
        "() => document.getElementById('quiz-save-status').textContent.startsWith('Saved')"
    )
    _press(page, page.get_by_role("button", name="Finish and submit…"))
    page.wait_for_url("**/submit")
    assert "You answered 4 of 4 questions." in page.content()
    _press(page, page.get_by_role("button", name="Submit my answers"))
    page.wait_for_url("**/result")
    body = page.locator("main").inner_text()
    assert "waiting for a grader" in body
    assert "Rayleigh scattering of sunlight." in body
    assert "Paris" in body
    assert_accessible(page)


def test_instructor_grades_an_essay(page: Any, live: LiveServer) -> None:
    quiz, learner, teacher = _seed(live.app)
    with live.app.test_request_context(), get_db(live.app).session() as sess:
        student = sess.query(User).filter_by(email=learner).one()
        item = sess.query(Item).filter_by(public_id=quiz).one()
        course = sess.get_one(Course, item.course_id)
        started, _ = attempts.start(sess, student, item, course, utcnow())
        attempt = started.attempt
        essay = next(q for q, b in attempt.snapshot.items() if b["type"] == "essay")
        attempts.submit(sess, attempt, student, item, course, {essay: "Because of dust."}, utcnow())
        sess.commit()
        course_id = course.public_id
    _log_in(page, teacher)
    page.goto(f"/courses/{course_id}")
    page.get_by_role("link", name="Grading queue").click()
    page.wait_for_url("**/quiz/grading")
    assert "Because of dust." in page.locator("main").inner_text()
    assert_accessible(page)
    page.get_by_label("Points (0 to 1)").fill("0.5")
    page.get_by_label("Feedback to the learner").fill("Dust is not the main cause.")
    _press(page, page.get_by_role("button", name="Save mark"))
    page.wait_for_url("**/quiz/grading")
    assert "Mark saved" in page.locator(".flashes").inner_text()
    assert "No answers are waiting for a mark." in page.locator("main").inner_text()
    assert_accessible(page)
