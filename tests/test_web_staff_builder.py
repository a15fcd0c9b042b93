"""Teaching pages: the teaching list, creating a course and the course builder."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.db import get_db
from core.models import Course as CourseRow
from core.models import CourseRole
from core.models import Item
from core.models import Module
from tests.conftest import Users
from tests.conftest import snapshot
from tests.course_helpers import Course
from tests.course_helpers import Person
from tests.course_helpers import add_staff
from tests.course_helpers import build_course
from tests.course_helpers import person
from tests.staff_pages import SCRIPT
from tests.staff_pages import Browser
from tests.staff_pages import field_value
from tests.staff_pages import text
from tests.staff_pages import textarea_value


@pytest.fixture
def owner(users: Users) -> Person:
    return person(users, "owner@example.org", creator=True)


@pytest.fixture
def course(client: FlaskClient, owner: Person) -> Course:
    return build_course(client, owner, modules=2, items=3, publish=False, title="Botany")


@pytest.fixture
def web(app: Flask, owner: Person) -> Browser:
    return Browser(app, owner.user)


def module_order(app: Flask, course_id: str) -> list[str]:
    with get_db(app).session() as sess:
        return list(
            sess.scalars(
                select(Module.public_id)
                .join(CourseRow, CourseRow.id == Module.course_id)
                .where(CourseRow.public_id == course_id)
                .order_by(Module.position)
            )
        )


def item_order(app: Flask, module_id: str) -> list[str]:
    with get_db(app).session() as sess:
        return list(
            sess.scalars(
                select(Item.public_id)
                .join(Module, Module.id == Item.module_id)
                .where(Module.public_id == module_id)
                .order_by(Item.position)
            )
        )


def course_row(app: Flask, course_id: str) -> dict[str, Any]:
    with get_db(app).session() as sess:
        row = sess.scalar(select(CourseRow).where(CourseRow.public_id == course_id))
        assert row is not None
        return {c.name: getattr(row, c.name) for c in CourseRow.__table__.columns}


# ---------------------------------------------------------------- access


def test_anonymous_visitors_are_sent_to_log_in(app: Flask, course: Course) -> None:
    resp = Browser(app, None).get(f"/teach/courses/{course.id}/")
    if "account.login" in app.view_functions:
        assert resp.status_code == 302
        assert "next=" in resp.headers["Location"]
    else:
        assert resp.status_code == 401


def test_teaching_list_shows_my_courses_and_roles(
    app: Flask, client: FlaskClient, owner: Person, course: Course, users: Users
) -> None:
    ta = person(users, "ta@example.org")
    add_staff(client, course, owner, ta, "ta")
    other = person(users, "other@example.org", creator=True)
    build_course(client, other, title="Zoology")
    page = text(Browser(app, owner.user).get("/teach/"))
    assert "Botany" in page and "Zoology" not in page
    assert "Create a course" in page
    ta_page = text(Browser(app, ta.user).get("/teach/"))
    assert "Botany" in ta_page and "Teaching assistant" in ta_page
    assert "Create a course" not in ta_page


@pytest.mark.parametrize(
    "path",
    [
        "/teach/courses/{course}/",
        "/teach/modules/{module}/items/new?type=page",
        "/teach/items/{item}/edit",
        "/teach/items/{item}/delete",
        "/teach/modules/{module}/delete",
    ],
)
def test_builder_pages_are_for_instructors_only(
    app: Flask, client: FlaskClient, owner: Person, course: Course, users: Users, path: str
) -> None:
    url = path.format(course=course.id, module=course.modules[0], item=course.items[0])
    ta = person(users, "ta@example.org")
    add_staff(client, course, owner, ta, "ta")
    stranger = person(users, "stranger@example.org", creator=True)
    admin = person(users, "admin@example.org", admin=True)
    assert Browser(app, owner.user).get(url).status_code == 200
    assert Browser(app, admin.user).get(url).status_code == 200
    assert Browser(app, ta.user).get(url).status_code == 403
    resp = Browser(app, stranger.user).get(url)
    assert resp.status_code == 404
    assert "Botany" not in text(resp)


def test_course_entry_point_sends_each_role_to_its_page(
    app: Flask, client: FlaskClient, owner: Person, course: Course, users: Users
) -> None:
    ta = person(users, "ta@example.org")
    add_staff(client, course, owner, ta, "ta")
    stranger = person(users, "stranger@example.org")
    url = f"/teach/courses/{course.id}"
    assert Browser(app, owner.user).get(url).headers["Location"].endswith(f"{url}/")
    assert Browser(app, ta.user).get(url).headers["Location"].endswith(f"{url}/progress")
    assert Browser(app, stranger.user).get(url).status_code == 404


def test_another_courses_instructor_changes_nothing(
    app: Flask, client: FlaskClient, course: Course, users: Users
) -> None:
    stranger = person(users, "stranger@example.org", creator=True)
    build_course(client, stranger, title="Mine")
    web = Browser(app, stranger.user)
    before = snapshot(app)
    posts = [
        (f"/teach/courses/{course.id}/settings", {"title": "Hijacked", "language": "en"}),
        (f"/teach/courses/{course.id}/status", {"transition": "publish"}),
        (f"/teach/courses/{course.id}/modules", {"module_title": "Evil"}),
        (f"/teach/modules/{course.modules[0]}/rename", {"title": "Evil"}),
        (f"/teach/modules/{course.modules[0]}/delete", {}),
        (f"/teach/modules/{course.modules[0]}/move", {"direction": "down"}),
        (f"/teach/items/{course.items[0]}/move", {"direction": "down"}),
        (f"/teach/items/{course.items[0]}/delete", {}),
        (f"/teach/items/{course.items[0]}/edit", {"title": "Evil", "config.body": "x"}),
        (
            f"/teach/modules/{course.modules[0]}/items/new",
            {"type": "page", "title": "Evil", "config.body": "x"},
        ),
    ]
    for path, data in posts:
        assert web.post(path, data).status_code == 404, path
    assert snapshot(app) == before


def test_a_ta_cannot_change_the_structure(
    app: Flask, client: FlaskClient, owner: Person, course: Course, users: Users
) -> None:
    ta = person(users, "ta@example.org")
    add_staff(client, course, owner, ta, "ta")
    web = Browser(app, ta.user)
    before = snapshot(app)
    for path, data in [
        (f"/teach/courses/{course.id}/status", {"transition": "publish"}),
        (f"/teach/courses/{course.id}/modules", {"module_title": "TA module"}),
        (f"/teach/items/{course.items[0]}/move", {"direction": "down"}),
        (f"/teach/modules/{course.modules[0]}/items/order", [("ids", i) for i in course.items[:3]]),
    ]:
        assert web.post(path, data).status_code == 403, path
    assert snapshot(app) == before


def test_a_form_without_csrf_token_is_refused(app: Flask, web: Browser, course: Course) -> None:
    before = snapshot(app)
    resp = web.post(f"/teach/courses/{course.id}/modules", {"module_title": "No token"}, csrf=False)
    assert resp.status_code == 400
    assert resp.mimetype == "text/html"
    resp = web.post(
        f"/teach/courses/{course.id}/modules",
        {"module_title": "Bad", "csrf_token": "forged"},
        csrf=False,
    )
    assert resp.status_code == 400
    assert snapshot(app) == before


# ---------------------------------------------------------------- creating a course


def test_create_a_course(app: Flask, web: Browser, owner: Person) -> None:
    form = web.get("/teach/new")
    assert form.status_code == 200
    assert 'name="enrolment_mode"' in text(form)
    resp = web.post(
        "/teach/new",
        {
            "title": "  Rocks  ",
            "summary": "Geology for all",
            "description": "<p>Hi</p><script>x()</script>",
            "language": "en-GB",
            "subject": "Geology",
            "level": "introductory",
            "visibility": "private",
            "enrolment_mode": "approval",
        },
    )
    assert resp.status_code == 303
    with get_db(app).session() as sess:
        row = sess.scalar(select(CourseRow).where(CourseRow.title == "Rocks"))
        assert row is not None
        assert (row.status, row.visibility, row.enrolment_mode) == ("draft", "private", "approval")
        assert row.description == "<p>Hi</p>"
        role = sess.scalar(select(CourseRole).where(CourseRole.course_id == row.id))
        assert role is not None and role.user_id == owner.user.id and role.role == "instructor"
        assert resp.headers["Location"].endswith(f"/teach/courses/{row.public_id}/")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"title": "", "language": "en"}, "title"),
        ({"title": "T", "language": "not a language!"}, "language"),
        ({"title": "T", "language": "en", "visibility": "everyone"}, "visibility"),
        ({"title": "T", "language": "en", "enrolment_mode": "lottery"}, "enrolment_mode"),
        ({"title": "x" * 301, "language": "en"}, "title"),
    ],
)
def test_invalid_new_course_keeps_input_and_stores_nothing(
    app: Flask, web: Browser, data: dict[str, str], field: str
) -> None:
    data = {"visibility": "instance", "enrolment_mode": "open", "summary": "Kept", **data}
    before = snapshot(app)
    resp = web.post("/teach/new", data)
    assert resp.status_code == 422
    page = text(resp)
    assert f'id="f-{field}-error"' in page
    assert field_value(page, "summary") == "Kept"
    assert snapshot(app) == before


def test_only_course_creators_may_create(app: Flask, users: Users) -> None:
    learner = person(users, "learner@example.org")
    web = Browser(app, learner.user)
    assert web.get("/teach/new").status_code == 403
    before = snapshot(app)
    assert web.post("/teach/new", {"title": "Nope", "language": "en"}).status_code == 403
    assert snapshot(app) == before


# ---------------------------------------------------------------- settings and status


def test_edit_settings(app: Flask, web: Browser, course: Course) -> None:
    page = text(web.get(f"/teach/courses/{course.id}/"))
    assert field_value(page, "title") == "Botany"
    resp = web.post(
        f"/teach/courses/{course.id}/settings",
        {
            "title": "Botany II",
            "summary": "",
            "description": "",
            "language": "fr",
            "subject": "",
            "level": "",
            "visibility": "instance",
            "enrolment_mode": "invite",
        },
    )
    assert resp.status_code == 303
    row = course_row(app, course.id)
    assert (row["title"], row["language"], row["enrolment_mode"]) == ("Botany II", "fr", "invite")


def test_invalid_settings_keep_input(app: Flask, web: Browser, course: Course) -> None:
    before = snapshot(app)
    resp = web.post(
        f"/teach/courses/{course.id}/settings",
        {"title": "", "summary": "New summary", "language": "en", "visibility": "instance"},
    )
    assert resp.status_code == 422
    page = text(resp)
    assert 'id="f-title-error"' in page
    assert field_value(page, "summary") == "New summary"
    assert snapshot(app) == before


def test_publish_unpublish_archive(app: Flask, web: Browser, course: Course) -> None:
    url = f"/teach/courses/{course.id}/status"
    assert web.post(url, {"transition": "publish"}).status_code == 303
    assert course_row(app, course.id)["status"] == "published"
    assert web.post(url, {"transition": "unpublish"}).status_code == 303
    assert course_row(app, course.id)["status"] == "draft"
    assert web.post(url, {"transition": "archive"}).status_code == 303
    assert course_row(app, course.id)["status"] == "archived"
    before = snapshot(app)
    resp = web.post(url, {"transition": "unpublish"})  # not from archived
    assert resp.status_code == 303
    assert "nothing was done" in text(web.get(f"/teach/courses/{course.id}/"))
    assert snapshot(app) == before
    assert web.post(url, {"transition": "delete"}).status_code == 422
    assert snapshot(app) == before


# ---------------------------------------------------------------- modules


def test_add_rename_delete_a_module(app: Flask, web: Browser, course: Course) -> None:
    assert (
        web.post(f"/teach/courses/{course.id}/modules", {"module_title": "Seeds"}).status_code
        == 303
    )
    order = module_order(app, course.id)
    assert len(order) == 3
    new = order[-1]
    assert "Seeds" in text(web.get(f"/teach/courses/{course.id}/"))
    assert web.post(f"/teach/modules/{new}/rename", {"title": "Fruit"}).status_code == 303
    assert "Fruit" in text(web.get(f"/teach/courses/{course.id}/"))
    confirm = web.get(f"/teach/modules/{new}/delete")
    assert "Fruit" in text(confirm) and "cannot be undone" in text(confirm)
    assert web.post(f"/teach/modules/{new}/delete").status_code == 303
    assert module_order(app, course.id) == order[:-1]


def test_invalid_module_titles_are_refused(app: Flask, web: Browser, course: Course) -> None:
    before = snapshot(app)
    resp = web.post(f"/teach/courses/{course.id}/modules", {"module_title": "   "})
    assert resp.status_code == 422
    assert 'id="f-module_title-error"' in text(resp)
    resp = web.post(f"/teach/modules/{course.modules[0]}/rename", {"title": "y" * 301})
    assert resp.status_code == 422
    page = text(resp)
    assert f'id="rename-{course.modules[0]}-error"' in page
    assert "y" * 301 in page  # the input is kept
    assert snapshot(app) == before


def test_move_modules_with_buttons(app: Flask, web: Browser, course: Course) -> None:
    first, second = course.modules
    assert web.post(f"/teach/modules/{first}/move", {"direction": "down"}).status_code == 303
    assert module_order(app, course.id) == [second, first]
    resp = web.post(f"/teach/modules/{first}/move", {"direction": "up"}, headers=SCRIPT)
    assert resp.status_code == 200
    assert resp.get_json() == {"ids": [first, second]}
    # already at the top: nothing moves
    resp = web.post(f"/teach/modules/{first}/move", {"direction": "up"}, headers=SCRIPT)
    assert resp.get_json() == {"ids": [first, second]}
    before = snapshot(app)
    assert web.post(f"/teach/modules/{first}/move", {"direction": "left"}).status_code == 422
    assert snapshot(app) == before


def test_reorder_modules_by_drag_and_drop(app: Flask, web: Browser, course: Course) -> None:
    first, second = course.modules
    url = f"/teach/courses/{course.id}/modules/order"
    resp = web.post(url, [("ids", second), ("ids", first)], headers=SCRIPT)
    assert resp.status_code == 200
    assert resp.get_json() == {"ids": [second, first]}
    assert module_order(app, course.id) == [second, first]


@pytest.mark.parametrize(
    "ids",
    [
        ["first"],  # one missing
        ["first", "first"],  # duplicated, one missing
        ["first", "second", "unknown"],
        [],
    ],
)
def test_stale_module_order_is_refused(
    app: Flask, web: Browser, course: Course, ids: list[str]
) -> None:
    named = {"first": course.modules[0], "second": course.modules[1], "unknown": "x" * 32}
    pairs = [("ids", named[i]) for i in ids]
    before = snapshot(app)
    resp = web.post(f"/teach/courses/{course.id}/modules/order", pairs, headers=SCRIPT)
    assert resp.status_code == 422
    assert resp.mimetype == "application/problem+json"
    assert snapshot(app) == before
    # a form post (no script) goes back to the builder with a message
    resp = web.post(f"/teach/courses/{course.id}/modules/order", pairs)
    assert resp.status_code == 303
    assert "nothing was moved" in text(web.get(f"/teach/courses/{course.id}/"))
    assert snapshot(app) == before


# ---------------------------------------------------------------- items


def test_add_a_page_item_through_its_form(app: Flask, web: Browser, course: Course) -> None:
    module = course.modules[1]
    form = text(web.get(f"/teach/modules/{module}/items/new?type=page"))
    assert 'name="config.body"' in form
    assert 'name="config.estimated_minutes"' in form
    resp = web.post(
        f"/teach/modules/{module}/items/new",
        {
            "type": "page",
            "title": "Leaves",
            "required": "1",
            "config.body": '<h2>Leaves</h2><img src="x" onerror="alert(1)">',
            "config.estimated_minutes": "7",
        },
    )
    assert resp.status_code == 303
    with get_db(app).session() as sess:
        item = sess.scalar(select(Item).where(Item.title == "Leaves"))
        assert item is not None
        assert item.config == {"body": '<h2>Leaves</h2><img src="x">', "estimated_minutes": 7}
        assert item.required is True and item.type == "page"
    assert item_order(app, module)[-1] == item.public_id
    assert f"#item-{item.public_id}" in resp.headers["Location"]


def test_invalid_item_form_keeps_input_and_stores_nothing(
    app: Flask, web: Browser, course: Course
) -> None:
    before = snapshot(app)
    resp = web.post(
        f"/teach/modules/{course.modules[0]}/items/new",
        {
            "type": "page",
            "title": "",
            "config.body": "<p>Keep me</p>",
            "config.estimated_minutes": "soon",
        },
    )
    assert resp.status_code == 422
    page = text(resp)
    assert 'id="f-title-error"' in page
    assert 'id="f-config.estimated_minutes-error"' in page
    assert field_value(page, "config.estimated_minutes") == "soon"
    assert textarea_value(page, "config.body") == "&lt;p&gt;Keep me&lt;/p&gt;"
    resp = web.post(
        f"/teach/modules/{course.modules[0]}/items/new",
        {"type": "page", "title": "T", "config.estimated_minutes": "-3"},
    )
    assert resp.status_code == 422
    assert 'id="f-config.estimated_minutes-error"' in text(resp)
    assert snapshot(app) == before


def test_unknown_content_type_is_refused(app: Flask, web: Browser, course: Course) -> None:
    assert web.get(f"/teach/modules/{course.modules[0]}/items/new?type=nope").status_code == 422
    before = snapshot(app)
    resp = web.post(f"/teach/modules/{course.modules[0]}/items/new", {"type": "nope", "title": "x"})
    assert resp.status_code == 422
    assert snapshot(app) == before


def test_edit_an_item_and_move_it_to_another_module(
    app: Flask, web: Browser, course: Course
) -> None:
    item = course.items[0]
    page = text(web.get(f"/teach/items/{item}/edit"))
    assert textarea_value(page, "config.body") == "&lt;p&gt;text 0.0&lt;/p&gt;"
    resp = web.post(
        f"/teach/items/{item}/edit",
        {
            "type": "page",
            "title": "Renamed",
            "config.body": "<p>new</p>",
            "config.estimated_minutes": "",
            "module": course.modules[1],
        },
    )
    assert resp.status_code == 303
    with get_db(app).session() as sess:
        row = sess.scalar(select(Item).where(Item.public_id == item))
        assert row is not None
        assert (row.title, row.required) == ("Renamed", False)
        assert row.config == {"body": "<p>new</p>", "estimated_minutes": None}
    assert item_order(app, course.modules[1])[-1] == item
    assert item not in item_order(app, course.modules[0])


def test_invalid_item_edit_changes_nothing(
    app: Flask, client: FlaskClient, web: Browser, course: Course, users: Users
) -> None:
    other = person(users, "other@example.org", creator=True)
    foreign = build_course(client, other, title="Foreign")
    before = snapshot(app)
    item = course.items[0]
    resp = web.post(
        f"/teach/items/{item}/edit",
        {"title": "Renamed", "config.body": "x", "module": foreign.modules[0]},
    )
    assert resp.status_code == 422
    assert 'id="f-module-error"' in text(resp)
    resp = web.post(f"/teach/items/{item}/edit", {"title": "", "config.estimated_minutes": "1e99"})
    assert resp.status_code == 422
    assert snapshot(app) == before


def test_delete_an_item(app: Flask, web: Browser, course: Course) -> None:
    item = course.items[1]
    assert "cannot be undone" in text(web.get(f"/teach/items/{item}/delete"))
    assert web.post(f"/teach/items/{item}/delete").status_code == 303
    assert item_order(app, course.modules[0]) == [course.items[0], course.items[2]]


def test_move_items_with_buttons(app: Flask, web: Browser, course: Course) -> None:
    a, b, c = course.items[:3]
    module = course.modules[0]
    assert web.post(f"/teach/items/{c}/move", {"direction": "up"}).status_code == 303
    assert item_order(app, module) == [a, c, b]
    resp = web.post(f"/teach/items/{a}/move", {"direction": "down"}, headers=SCRIPT)
    assert resp.get_json() == {"ids": [c, a, b]}
    resp = web.post(f"/teach/items/{b}/move", {"direction": "down"}, headers=SCRIPT)
    assert resp.get_json() == {"ids": [c, a, b]}  # already last
    assert item_order(app, module) == [c, a, b]


def test_reorder_items_by_drag_and_drop(app: Flask, web: Browser, course: Course) -> None:
    a, b, c = course.items[:3]
    module = course.modules[0]
    url = f"/teach/modules/{module}/items/order"
    resp = web.post(url, [("ids", b), ("ids", c), ("ids", a)], headers=SCRIPT)
    assert resp.get_json() == {"ids": [b, c, a]}
    assert item_order(app, module) == [b, c, a]
    before = snapshot(app)
    # stale: an item of another module, or one missing
    stale = [("ids", b), ("ids", c), ("ids", course.items[3])]
    resp = web.post(url, stale, headers=SCRIPT)
    assert resp.status_code == 422
    assert set(resp.get_json()["unknown"]) == {course.items[3]}
    assert web.post(url, [("ids", b), ("ids", c)], headers=SCRIPT).status_code == 422
    assert snapshot(app) == before
    assert item_order(app, module) == [b, c, a]


def test_builder_lists_every_installed_content_type(web: Browser, course: Course) -> None:
    page = text(web.get(f"/teach/courses/{course.id}/"))
    assert '<option value="page">Page</option>' in page
    assert 'data-reorder-url="/teach/modules/' in page
    assert "Move up" in page and "Move down" in page
