"""What the pages' hot paths precompute still renders exactly what it did."""

from __future__ import annotations

import re

from flask import Flask
from flask import render_template_string
from flask.testing import FlaskClient
from flask_babel import force_locale
from flask_babel import get_translations
from flask_babel import gettext

from core.cache import get_cache
from core.db import get_db
from core.models import Course
from core.web import _request_translations
from core.web import pages as home_pages
from tests.auth_helpers import PASSWORD
from tests.conftest import Users
from tests.course_helpers import build_course
from tests.course_helpers import person
from tests.web_helpers import Pages


def test_template_strings_use_the_requests_translations_and_follow_force_locale(
    app: Flask,
) -> None:
    with app.test_request_context("/", headers={"Accept-Language": "en"}):
        first = _request_translations()
        assert first is get_translations()
        assert _request_translations() is first  # memoised for the request
        rendered = render_template_string('{{ _("Log in") }}|{{ _("%(n)s items", n=3) }}')
        assert rendered == f"{gettext('Log in')}|3 items"
        with force_locale("de"):
            forced = _request_translations()
            assert forced is get_translations()
            assert forced is not first
        assert _request_translations() is first


def test_syllabus_links_every_item_and_marks_the_open_one(
    client: FlaskClient, users: Users
) -> None:
    owner = person(users, "prof@example.org", creator=True)
    course = build_course(client, owner, modules=2, items=3, optional=1)
    person(users, "ada@example.org", password=PASSWORD)
    pages = Pages(client)
    assert pages.post("/login", {"email": "ada@example.org", "password": PASSWORD}).status_code
    assert pages.post(f"/courses/{course.id}/enrol").status_code == 302
    pages.post(f"/learn/{course.items[0]}/complete")

    page = pages.get(f"/courses/{course.id}").get_data(as_text=True)
    links = re.findall(r'<a href="(/learn/[0-9a-f]+)"', page)
    assert links == [f"/learn/{item}" for item in course.items]
    assert page.count("(completed)") == 1 and page.count("(optional)") == 1

    learn = pages.get(f"/learn/{course.items[4]}").get_data(as_text=True)
    assert f'href="/learn/{course.items[4]}" aria-current="page"' in learn
    assert learn.count('aria-current="page"') == 1


def test_home_page_count_is_reused_briefly_then_recounted(app: Flask, client: FlaskClient) -> None:
    with get_db(app).session() as sess:
        sess.add(Course(title="One", status="published", visibility="instance"))
    assert "1 published course." in client.get("/").get_data(as_text=True)
    with get_db(app).session() as sess:
        sess.add(Course(title="Two", status="published", visibility="federated"))
    # within COUNT_CACHE_SECONDS the count comes from the cache
    assert "1 published course." in client.get("/").get_data(as_text=True)
    with app.app_context():
        get_cache().delete(home_pages._COUNT_KEY)  # what expiry does
    assert "2 published courses" in client.get("/").get_data(as_text=True)


def test_home_page_recounts_when_the_cached_count_is_not_a_number(
    app: Flask, client: FlaskClient
) -> None:
    with get_db(app).session() as sess:
        sess.add(Course(title="One", status="published", visibility="instance"))
    with app.app_context():
        get_cache().set(home_pages._COUNT_KEY, b"garbage", 60)
    assert "1 published course." in client.get("/").get_data(as_text=True)
    with app.app_context():
        assert get_cache().get(home_pages._COUNT_KEY) == b"1"
