"""Teaching and operator pages in a real browser: build, publish, reorder, accessibility."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from flask import Flask
from sqlalchemy import select

from core import courses as svc
from core.db import get_db
from core.models import Course
from core.models import Item
from core.models import Module
from core.models import User
from tests.browser.conftest import LiveServer
from tests.browser.conftest import assert_accessible
from tests.conftest import Users

PASSWORD = "correct horse battery staple"
_counter = itertools.count()


@dataclass
class Seeded:
    """A course made for one test."""

    course_id: str
    module_ids: list[str]
    item_ids: list[str]
    titles: list[str]


def new_user(app: Flask, *, creator: bool = False, admin: bool = False) -> User:
    """A user with :data:`PASSWORD` and a unique address."""
    n = next(_counter)
    return Users(app).create(
        f"staff{n}-{id(app)}@example.org", creator=creator, admin=admin, password=PASSWORD
    )


def seed_course(app: Flask, owner: User, items: int = 3) -> Seeded:
    """A draft course of one module with ``items`` pages, built through the services."""
    with app.app_context(), get_db(app).session() as sess:
        user = sess.get_one(User, owner.id)
        course = svc.create_course(sess, user, {"title": f"Course {next(_counter)}"})
        module = svc.add_module(sess, course, "Week 1")
        titles = [f"Reading {chr(65 + i)}" for i in range(items)]
        made = [
            svc.add_item(
                sess, course, module, item_type="page", title=t, config={"body": f"<p>{t}</p>"}
            )
            for t in titles
        ]
        return Seeded(course.public_id, [module.public_id], [i.public_id for i in made], titles)


def stored_titles(app: Flask, module_id: str) -> list[str]:
    with get_db(app).session() as sess:
        return list(
            sess.scalars(
                select(Item.title)
                .join(Module, Module.id == Item.module_id)
                .where(Module.public_id == module_id)
                .order_by(Item.position)
            )
        )


def log_in(page: Any, user: User) -> None:
    page.goto("/login")
    page.get_by_label("E-mail address").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def shown_titles(page: Any) -> list[str]:
    return [t.strip() for t in page.locator(".builder-item .row-title").all_inner_texts()]


def test_instructor_builds_and_publishes_a_course(page: Any, live: LiveServer) -> None:
    owner = new_user(live.app, creator=True)
    log_in(page, owner)
    page.goto("/teach/")
    page.get_by_role("link", name="Create a course").click()
    page.get_by_label("Title").fill("Birdsong")
    page.get_by_label("Summary").fill("Learn to recognise birds by their song.")
    page.get_by_label("Subject").fill("Biology")
    page.get_by_label("How learners join").select_option("approval")
    page.get_by_role("button", name="Create course").click()
    assert "Course created" in page.locator(".flashes").inner_text()
    assert page.locator("h1").inner_text().startswith("Birdsong")

    page.get_by_label("Module title").fill("Week 1: Garden birds")
    page.get_by_role("button", name="Add module").click()
    module = page.locator(".builder-module").first
    assert "Week 1: Garden birds" in module.inner_text()

    module.get_by_label("Add an item of type").select_option("page")
    module.get_by_role("button", name="Add item").click()
    page.get_by_label("Title").fill("The robin")
    page.get_by_label("Body").fill("<h2>Robin</h2><p>A bright song.</p><script>alert(1)</script>")
    page.get_by_label("Estimated reading time (minutes)").fill("5")
    page.get_by_role("button", name="Add item").click()
    assert shown_titles(page) == ["The robin"]
    assert_accessible(page)

    page.get_by_role("button", name="Publish").click()
    assert "published" in page.locator(".flashes").inner_text()
    assert "Published" in page.locator("h1 .badge").inner_text()

    with get_db(live.app).session() as sess:
        course = sess.scalar(
            select(Course).where(Course.title == "Birdsong", Course.created_by_id == owner.id)
        )
        assert course is not None and course.status == "published"
        assert course.enrolment_mode == "approval"
        item = sess.scalar(select(Item).where(Item.course_id == course.id))
        assert item is not None
        assert item.config == {
            "body": "<h2>Robin</h2><p>A bright song.</p>",
            "estimated_minutes": 5,
        }


def test_invalid_item_input_is_shown_inline(page: Any, live: LiveServer) -> None:
    owner = new_user(live.app, creator=True)
    seeded = seed_course(live.app, owner, items=1)
    log_in(page, owner)
    page.goto(f"/teach/modules/{seeded.module_ids[0]}/items/new?type=page")
    page.get_by_label("Body").fill("<p>kept</p>")
    page.get_by_label("Estimated reading time (minutes)").fill("soon")
    page.get_by_role("button", name="Add item").click()
    assert page.locator(".form-errors").is_visible()
    assert page.evaluate("() => document.activeElement.classList.contains('form-errors')")
    assert page.get_by_label("Body").input_value() == "<p>kept</p>"
    assert page.get_by_label("Estimated reading time (minutes)").input_value() == "soon"
    assert page.locator(".field-error").count() == 2  # the title and the minutes
    assert_accessible(page)
    assert stored_titles(live.app, seeded.module_ids[0]) == seeded.titles


def test_keyboard_only_reorder(page: Any, live: LiveServer) -> None:
    owner = new_user(live.app, creator=True)
    seeded = seed_course(live.app, owner)
    log_in(page, owner)
    page.goto(f"/teach/courses/{seeded.course_id}/")
    assert shown_titles(page) == ["Reading A", "Reading B", "Reading C"]

    # Tab through the page until "Move up" of the last item has the focus.
    target = "Move up: Reading C"
    for _ in range(300):
        page.keyboard.press("Tab")
        focused = page.evaluate("() => document.activeElement.textContent.replace(/\\s+/g, ' ')")
        if focused.strip() == target:
            break
    else:
        raise AssertionError(f"could not reach {target!r} with the Tab key")

    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('.builder-item .row-title').textContent.includes('A')"
        " && document.querySelectorAll('.builder-item')[1].textContent.includes('Reading C')"
    )
    assert shown_titles(page) == ["Reading A", "Reading C", "Reading B"]
    # the focus stays on the control that was pressed, and the move is announced
    assert page.evaluate("() => document.activeElement.textContent").strip().startswith("Move up")
    page.wait_for_function(
        "() => document.getElementById('builder-status').textContent.includes('position 2 of 3')"
    )

    # Alt+Arrow Up from the same place moves it once more.
    page.keyboard.press("Alt+ArrowUp")
    page.wait_for_function(
        "() => document.querySelector('.builder-item').textContent.includes('Reading C')"
    )
    assert shown_titles(page) == ["Reading C", "Reading A", "Reading B"]

    page.reload()
    assert shown_titles(page) == ["Reading C", "Reading A", "Reading B"]
    assert stored_titles(live.app, seeded.module_ids[0]) == ["Reading C", "Reading A", "Reading B"]


def test_drag_and_drop_reorder(page: Any, live: LiveServer) -> None:
    owner = new_user(live.app, creator=True)
    seeded = seed_course(live.app, owner)
    log_in(page, owner)
    page.goto(f"/teach/courses/{seeded.course_id}/")
    handles = page.locator(".builder-item .drag-handle")
    assert handles.first.is_visible()
    last = page.locator(".builder-item").nth(2)
    box = last.bounding_box()
    assert box is not None
    handles.nth(0).drag_to(last, target_position={"x": 20, "y": box["height"] - 4})
    page.wait_for_function(
        "() => document.getElementById('builder-status').textContent.includes('of 3')"
    )
    assert shown_titles(page)[-1] == "Reading A"
    page.reload()
    assert shown_titles(page) == ["Reading B", "Reading C", "Reading A"]
    assert stored_titles(live.app, seeded.module_ids[0]) == ["Reading B", "Reading C", "Reading A"]


def test_stale_drag_shows_an_error_and_keeps_the_order(page: Any, live: LiveServer) -> None:
    owner = new_user(live.app, creator=True)
    seeded = seed_course(live.app, owner)
    log_in(page, owner)
    page.goto(f"/teach/courses/{seeded.course_id}/")
    # Someone else deletes an item while this page is open.
    with live.app.app_context(), get_db(live.app).session() as sess:
        item, course = svc.get_item(sess, seeded.item_ids[1])
        svc.delete_item(sess, course, item)
    last = page.locator(".builder-item").nth(2)
    box = last.bounding_box()
    assert box is not None
    handle = page.locator(".builder-item .drag-handle").nth(0)
    handle.drag_to(last, target_position={"x": 20, "y": box["height"] - 4})
    error = page.locator("#builder-error")
    error.wait_for(state="visible")
    assert "reload" in error.inner_text()
    assert stored_titles(live.app, seeded.module_ids[0]) == ["Reading A", "Reading C"]
    # the page then reloads with the current order
    page.wait_for_function("() => document.querySelectorAll('.builder-item').length === 2")
    assert shown_titles(page) == ["Reading A", "Reading C"]


def test_progress_table_and_admin_pages_are_accessible(page: Any, live: LiveServer) -> None:
    owner = new_user(live.app, creator=True)
    seeded = seed_course(live.app, owner)
    admin = new_user(live.app, admin=True)
    learner_id = new_user(live.app).id
    with live.app.app_context(), get_db(live.app).session() as sess:
        course = svc.get_course(sess, seeded.course_id)
        teacher = sess.get_one(User, owner.id)
        svc.change_status(sess, teacher, course, "publish")
        svc.add_learner(sess, teacher, course, sess.get_one(User, learner_id))
    log_in(page, owner)
    for path in ("progress", "learners", "staff"):
        page.goto(f"/teach/courses/{seeded.course_id}/{path}")
        assert_accessible(page)
    page.goto("/teach/")
    assert_accessible(page)
    page.context.clear_cookies()
    log_in(page, admin)
    for path in (
        "",
        "users",
        f"users/{owner.public_id}",
        "invitations",
        "plugins",
        "settings",
        "audit",
    ):
        page.goto(f"/admin/{path}")
        assert page.locator("h1").count() == 1
        assert_accessible(page)


def test_move_buttons_work_without_javascript(browser: Any, live: LiveServer) -> None:
    owner = new_user(live.app, creator=True)
    seeded = seed_course(live.app, owner)
    context = browser.new_context(base_url=live.url, java_script_enabled=False)
    try:
        page = context.new_page()
        log_in(page, owner)
        page.goto(f"/teach/courses/{seeded.course_id}/")
        assert not page.locator(".drag-handle").first.is_visible()  # no script, no dragging
        page.locator(".builder-item").nth(0).get_by_role("button", name="Move down").click()
        page.wait_for_load_state()
        assert shown_titles(page) == ["Reading B", "Reading A", "Reading C"]
        assert page.url.endswith(f"#item-{seeded.item_ids[0]}")
    finally:
        context.close()
    assert stored_titles(live.app, seeded.module_ids[0]) == ["Reading B", "Reading A", "Reading C"]


def test_drag_a_module_by_its_handle(page: Any, live: LiveServer) -> None:
    owner = new_user(live.app, creator=True)
    seeded = seed_course(live.app, owner, items=1)
    with live.app.app_context(), get_db(live.app).session() as sess:
        course = svc.get_course(sess, seeded.course_id)
        svc.add_module(sess, course, "Week 2")
    log_in(page, owner)
    page.goto(f"/teach/courses/{seeded.course_id}/")
    modules = page.locator(".builder-module")
    second = modules.nth(1).locator(".row-head").bounding_box()
    assert second is not None
    modules.nth(0).locator(".module-handle").drag_to(
        modules.nth(1).locator(".row-head"), target_position={"x": 20, "y": second["height"] - 2}
    )
    page.wait_for_function(
        "() => document.getElementById('builder-status').textContent.includes('Week 1')"
    )
    page.reload()
    titles = [t.strip() for t in page.locator(".builder-module h3").all_inner_texts()]
    assert titles == ["Week 2", "Week 1"]
    assert shown_titles(page) == ["Reading A"]  # the items moved with their module
