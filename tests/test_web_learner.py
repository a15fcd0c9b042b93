"""Learner pages over HTTP: catalog, course page, enrolment, learn view, dashboard."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import Markup
from sqlalchemy import select

from core import hookimpl
from core.content import ContentType
from core.content import ItemView
from core.content import ProgressState
from core.db import get_db
from core.models import Enrolment
from core.models import Progress
from tests.auth_helpers import PASSWORD
from tests.conftest import Users
from tests.conftest import snapshot
from tests.course_helpers import Person
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.web_helpers import BROWSER
from tests.web_helpers import Pages


@pytest.fixture
def pages(client: FlaskClient) -> Pages:
    return Pages(client)


@pytest.fixture
def owner(users: Users) -> Person:
    return person(users, "prof@example.org", creator=True)


def _login(pages: Pages, users: Users, email: str = "ada@example.org") -> Person:
    learner = person(users, email, password=PASSWORD)
    resp = pages.post("/login", {"email": email, "password": PASSWORD})
    assert resp.status_code == 302
    return learner


def _text(resp: Any) -> str:
    return str(resp.get_data(as_text=True))


# ------------------------------------------------------------------ catalog


def test_catalog_searches_and_filters_and_shows_the_institution(
    client: FlaskClient, pages: Pages, owner: Person
) -> None:
    build_course(client, owner, title="Organic Chemistry", subject="Chemistry", level="Intro")
    build_course(client, owner, title="Linear Algebra", subject="Mathematics", language="de")
    build_course(client, owner, title="Secret Draft", publish=False)
    page = _text(pages.get("/catalog"))
    assert "Organic Chemistry" in page and "Linear Algebra" in page
    assert "Secret Draft" not in page
    assert "Test U" in page  # the source institution of local courses
    assert "Linear Algebra" not in _text(pages.get("/catalog?q=chem"))
    filtered = _text(pages.get("/catalog?subject=mathematics"))
    assert "Linear Algebra" in filtered and "Organic Chemistry" not in filtered
    assert "Organic Chemistry" not in _text(pages.get("/catalog?language=de"))


def test_catalog_pages_through_results(client: FlaskClient, pages: Pages, owner: Person) -> None:
    for n in range(23):
        build_course(client, owner, title=f"Course number {n:02d}", items=0, modules=0)
    first = _text(pages.get("/catalog"))
    assert first.count('class="card"') == 20
    next_link = re.search(r'<a href="([^"]+)" rel="next">', first)
    assert next_link
    second = _text(pages.get(next_link.group(1).replace("&amp;", "&")))
    assert second.count('class="card"') == 3


def test_catalog_refuses_a_forged_cursor(pages: Pages) -> None:
    resp = pages.get("/catalog?cursor=garbage")
    assert resp.status_code == 400
    assert resp.mimetype == "text/html"


def test_catalog_never_links_to_script_urls_from_other_sources(app: Flask, pages: Pages) -> None:
    from core import catalog as catalog_index

    with app.app_context(), get_db(app).session() as sess:
        catalog_index.apply_changes(
            sess,
            "peer:evil",
            [
                catalog_index.EntryData(
                    external_id="x1",
                    title="Evil course",
                    url="javascript:alert(1)",
                    institution="Evil U",
                ),
                catalog_index.EntryData(
                    external_id="x2",
                    title="Fine course",
                    url="https://lms.other.example/courses/abc",
                    institution="Other U",
                ),
            ],
        )
    page = _text(pages.get("/catalog"))
    assert "Evil course" in page and "javascript:" not in page
    assert 'href="https://lms.other.example/courses/abc"' in page
    assert "At Other U" in page


# ------------------------------------------------------------------ course page and enrolment


def test_anonymous_visitor_sees_a_public_course_but_must_log_in_to_enrol(
    client: FlaskClient, pages: Pages, owner: Person
) -> None:
    course = build_course(client, owner, title="Open Course", visibility="federated")
    resp = pages.get(f"/courses/{course.id}")
    assert resp.status_code == 200
    page = _text(resp)
    assert "Open Course" in page and "Log in to join" in page
    assert "Page 0.1" in page  # the syllabus
    assert "Prof" in page  # instructor names
    # "instance" courses are for people with an account here; private ones for invitees
    for visibility in ("instance", "private"):
        hidden = build_course(client, owner, title="Hidden", visibility=visibility)
        assert pages.get(f"/courses/{hidden.id}").status_code == 302
    assert pages.post(f"/courses/{course.id}/enrol").status_code == 302  # to the login page


def test_a_plugin_can_hide_a_public_course_from_anonymous_visitors(
    app: Flask, client: FlaskClient, pages: Pages, owner: Person
) -> None:
    course = build_course(client, owner, title="Vetoed", visibility="federated")

    class Veto:
        @hookimpl
        def permission_allowed(self, action: str, course: Any) -> bool | None:
            if action == "course.view" and course is not None and course.title == "Vetoed":
                return False
            return None

    host = app.extensions["trivium.plugins"]
    host.register(Veto(), "test-veto")
    try:
        resp = pages.get(f"/courses/{course.id}")
    finally:
        host.unregister("test-veto")
    assert resp.status_code == 302
    assert "Vetoed" not in resp.get_data(as_text=True)


def test_open_enrolment_then_learn_and_complete(
    app: Flask, client: FlaskClient, pages: Pages, users: Users, owner: Person
) -> None:
    course = build_course(client, owner, title="Open Course", items=2)
    learner = _login(pages, users)
    assert "Enrol" in _text(pages.get(f"/courses/{course.id}"))
    resp = pages.post(f"/courses/{course.id}/enrol")
    assert resp.status_code == 302
    assert "You are enrolled" in _text(pages.get(resp.location))

    resume = pages.get(f"/courses/{course.id}/learn")
    assert resume.location == f"/learn/{course.items[0]}"
    learn = _text(pages.get(resume.location))
    assert "<p>text 0.0</p>" in learn
    assert "Mark as complete" in learn

    done = pages.post(f"/learn/{course.items[0]}/complete")
    assert done.status_code == 302 and done.location == f"/learn/{course.items[1]}"
    with get_db(app).session() as sess:
        row = sess.scalars(select(Progress).where(Progress.user_id == learner.user.id)).one()
        assert row.status == "completed"
    # resuming now opens the next item, and the dashboard shows the progress
    assert pages.get(f"/courses/{course.id}/learn").location == f"/learn/{course.items[1]}"
    dashboard = _text(pages.get("/dashboard"))
    assert "Continue where you left off" in dashboard
    assert "1 of 2 required items completed (50%)" in dashboard
    assert f'href="/learn/{course.items[1]}"' in dashboard


def test_htmx_completion_returns_the_updated_fragments(
    client: FlaskClient, pages: Pages, users: Users, owner: Person
) -> None:
    course = build_course(client, owner, items=2)
    _login(pages, users)
    pages.post(f"/courses/{course.id}/enrol")
    resp = pages.client.post(
        f"/learn/{course.items[0]}/complete",
        headers={**BROWSER, "HX-Request": "true", "X-CSRFToken": pages.csrf()},
    )
    assert resp.status_code == 200
    page = _text(resp)
    assert 'id="item-status"' in page and "Completed" in page
    assert "1 of 2 required items completed" in page


def test_approval_mode_shows_the_pending_state(
    app: Flask, client: FlaskClient, pages: Pages, users: Users, owner: Person
) -> None:
    course = build_course(client, owner, enrolment_mode="approval")
    _login(pages, users)
    assert "Request to join" in _text(pages.get(f"/courses/{course.id}"))
    assert pages.post(f"/courses/{course.id}/enrol").status_code == 302
    page = _text(pages.get(f"/courses/{course.id}"))
    assert "Waiting for approval" in page
    # a pending learner cannot open items yet
    assert pages.get(f"/learn/{course.items[0]}").status_code == 403
    assert "Waiting for approval" in _text(pages.get("/dashboard"))


def test_invite_mode_needs_the_right_code(
    app: Flask, client: FlaskClient, pages: Pages, users: Users, owner: Person
) -> None:
    course = build_course(client, owner, enrolment_mode="invite")
    code = ok(call(client, "POST", f"/courses/{course.id}/invite-code", owner.headers), 201)["code"]
    _login(pages, users)
    before = snapshot(app)
    for given, message in (("", "Enter the invite code"), ("wrong", "not valid")):
        resp = pages.post(f"/courses/{course.id}/enrol", {"invite_code": given})
        assert resp.status_code == 403
        assert message in _text(resp)
    assert snapshot(app) == before
    assert pages.post(f"/courses/{course.id}/enrol", {"invite_code": code}).status_code == 302
    with get_db(app).session() as sess:
        assert sess.scalars(select(Enrolment.status)).one() == "active"


def test_enrolling_twice_is_refused_without_changes(
    app: Flask, client: FlaskClient, pages: Pages, users: Users, owner: Person
) -> None:
    course = build_course(client, owner)
    _login(pages, users)
    pages.post(f"/courses/{course.id}/enrol")
    before = snapshot(app)
    resp = pages.post(f"/courses/{course.id}/enrol")
    assert resp.status_code == 302
    assert "already enrolled" in _text(pages.get(resp.location))
    assert snapshot(app) == before


def test_enrol_without_csrf_is_refused(
    app: Flask, client: FlaskClient, pages: Pages, users: Users, owner: Person
) -> None:
    course = build_course(client, owner)
    _login(pages, users)
    before = snapshot(app)
    assert pages.post(f"/courses/{course.id}/enrol", csrf="forged").status_code == 400
    assert pages.post(f"/learn/{course.items[0]}/complete", csrf="").status_code == 400
    assert snapshot(app) == before


# ------------------------------------------------------------------ who may see what


def test_items_of_courses_one_is_not_in_are_not_found(
    app: Flask, client: FlaskClient, pages: Pages, users: Users, owner: Person
) -> None:
    course = build_course(client, owner)
    draft = build_course(client, owner, publish=False)
    _login(pages, users)
    before = snapshot(app)
    # not enrolled: the item of a published course is forbidden, a draft's is not found
    assert pages.get(f"/learn/{course.items[0]}").status_code == 403
    assert pages.post(f"/learn/{course.items[0]}/complete").status_code == 403
    assert pages.get(f"/learn/{draft.items[0]}").status_code == 404
    assert pages.post(f"/learn/{draft.items[0]}/complete").status_code == 404
    assert pages.get(f"/courses/{draft.id}").status_code == 404
    assert pages.get("/learn/nonexistent").status_code == 404
    assert pages.post(f"/courses/{draft.id}/enrol").status_code == 404
    assert snapshot(app) == before


def test_another_learners_progress_is_not_touched(
    app: Flask, client: FlaskClient, pages: Pages, users: Users, owner: Person
) -> None:
    course = build_course(client, owner)
    other = person(users, "bob@example.org")
    ok(call(client, "POST", f"/courses/{course.id}/enrolment", other.headers), 201)
    _login(pages, users)
    pages.post(f"/courses/{course.id}/enrol")
    pages.post(f"/learn/{course.items[0]}/complete")
    with get_db(app).session() as sess:
        rows = sess.execute(select(Progress.user_id, Progress.status)).all()
    assert other.user.id not in {r[0] for r in rows}


def test_pages_need_a_login(pages: Pages) -> None:
    for path in ("/dashboard", "/learn/whatever"):
        resp = pages.get(path)
        assert resp.status_code == 302 and resp.location.startswith("/login?next=")


# ------------------------------------------------------------------ content rendering


def test_page_content_is_sanitised_when_shown(
    app: Flask, client: FlaskClient, pages: Pages, users: Users, owner: Person
) -> None:
    from core.models import Item

    course = build_course(client, owner, items=1)
    with get_db(app).session() as sess:  # as if stored before a stricter policy
        item = sess.scalars(select(Item)).one()
        item.config = {"body": '<p onclick="x()">hi</p><script>alert(1)</script>'}
    _login(pages, users)
    pages.post(f"/courses/{course.id}/enrol")
    page = _text(pages.get(f"/learn/{course.items[0]}"))
    assert "<p>hi</p>" in page
    assert "alert(1)" not in page and "onclick" not in page


class Shouty(ContentType):
    name = "shouty"
    label = "Shouty"


class Broken(ContentType):
    name = "broken"
    label = "Broken"

    def render_learner_html(self, item: ItemView, state: ProgressState) -> Markup:
        raise RuntimeError("boom")


def test_default_rendering_escapes_and_a_broken_type_is_contained() -> None:
    view = ItemView(id="i", course_id="c", title="T", config={"text": "<b>x</b>", "n": 3})
    html = Shouty().render_learner_html(view, ProgressState())
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<dd>3</dd>" in html
    assert Shouty().render_learner_html(
        ItemView(id="i", course_id="c", title="T", config={}), ProgressState()
    ) == Markup("")


class BrokenTypePlugin:
    @hookimpl
    def register_content_types(self) -> list[type[ContentType]]:
        return [Broken]


def test_a_failing_content_type_shows_a_notice_not_an_error(
    app: Flask, client: FlaskClient, pages: Pages, users: Users, owner: Person
) -> None:
    host = app.extensions["trivium.plugins"]
    host.register(BrokenTypePlugin(), "broken_type")
    host.collect_content_types()
    try:
        course = build_course(client, owner, items=0)
        module = ok(
            call(client, "POST", f"/courses/{course.id}/modules", owner.headers, {"title": "M"}),
            201,
        )
        item = ok(
            call(
                client,
                "POST",
                f"/modules/{module['id']}/items",
                owner.headers,
                {"type": "broken", "title": "B", "config": {}},
            ),
            201,
        )
        _login(pages, users)
        pages.post(f"/courses/{course.id}/enrol")
        resp = pages.get(f"/learn/{item['id']}")
        assert resp.status_code == 200
        assert "The content type broken failed to show this item." in _text(resp)
        assert "boom" not in _text(resp)
        assert any(f.hook == "render_learner_html" for f in host.failures)
    finally:
        host.unregister("broken_type")
