"""Teaching pages: learners and enrolments, the course's staff, the progress table."""

from __future__ import annotations

import csv
import io

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.courses import hash_invite_code
from core.db import get_db
from core.models import Course as CourseRow
from core.models import CourseRole
from core.models import Enrolment
from core.reports import csv_cell
from tests.conftest import Users
from tests.conftest import snapshot
from tests.course_helpers import Course
from tests.course_helpers import Person
from tests.course_helpers import add_staff
from tests.course_helpers import build_course
from tests.course_helpers import complete
from tests.course_helpers import enrol
from tests.course_helpers import person
from tests.staff_pages import Browser
from tests.staff_pages import field_value
from tests.staff_pages import text


@pytest.fixture
def owner(users: Users) -> Person:
    return person(users, "owner@example.org", creator=True)


@pytest.fixture
def course(client: FlaskClient, owner: Person) -> Course:
    return build_course(
        client, owner, items=2, title="Botany", enrolment_mode="approval", optional=1
    )


@pytest.fixture
def web(app: Flask, owner: Person) -> Browser:
    return Browser(app, owner.user)


@pytest.fixture
def ta(client: FlaskClient, users: Users, owner: Person, course: Course) -> Person:
    who = person(users, "ta@example.org")
    add_staff(client, course, owner, who, "ta")
    return who


def enrolment_of(app: Flask, course: Course, who: Person) -> Enrolment | None:
    with get_db(app).session() as sess:
        row = sess.scalar(
            select(Enrolment)
            .join(CourseRow, CourseRow.id == Enrolment.course_id)
            .where(CourseRow.public_id == course.id, Enrolment.user_id == who.user.id)
        )
        if row is not None:
            sess.expunge(row)
        return row


def roles(app: Flask, course: Course) -> dict[int, str]:
    with get_db(app).session() as sess:
        rows = sess.execute(
            select(CourseRole.user_id, CourseRole.role)
            .join(CourseRow, CourseRow.id == CourseRole.course_id)
            .where(CourseRow.public_id == course.id)
        )
        return {r[0]: r[1] for r in rows}


# ---------------------------------------------------------------- learners


def test_approve_and_reject_pending_requests(
    app: Flask, client: FlaskClient, web: Browser, course: Course, users: Users
) -> None:
    ann, bob = person(users, "ann@example.org"), person(users, "bob@example.org")
    a = enrol(client, course, ann)
    b = enrol(client, course, bob)
    page = text(web.get(f"/teach/courses/{course.id}/learners"))
    assert "Ann" in page and "Bob" in page and "Approve" in page
    assert web.post(f"/teach/enrolments/{a['id']}/approve").status_code == 303
    assert web.post(f"/teach/enrolments/{b['id']}/reject").status_code == 303
    assert enrolment_of(app, course, ann).status == "active"  # type: ignore[union-attr]
    assert enrolment_of(app, course, bob).status == "rejected"  # type: ignore[union-attr]
    # deciding again is refused with a message, nothing changes
    before = snapshot(app)
    assert web.post(f"/teach/enrolments/{b['id']}/approve").status_code == 303
    assert "not pending" in text(web.get(f"/teach/courses/{course.id}/learners"))
    assert snapshot(app) == before


def test_a_ta_sees_learners_but_cannot_decide(
    app: Flask, client: FlaskClient, course: Course, ta: Person, users: Users
) -> None:
    ann = person(users, "ann@example.org")
    a = enrol(client, course, ann)
    web = Browser(app, ta.user)
    page = text(web.get(f"/teach/courses/{course.id}/learners"))
    assert "Ann" in page and "Approve" not in page and "invite code" not in page.lower()
    before = snapshot(app)
    assert web.post(f"/teach/enrolments/{a['id']}/approve").status_code == 403
    assert web.post(f"/teach/enrolments/{a['id']}/remove").status_code == 403
    assert web.post(f"/teach/courses/{course.id}/invite-code").status_code == 403
    assert (
        web.post(f"/teach/courses/{course.id}/learners", {"email": "ann@example.org"}).status_code
        == 403
    )
    assert snapshot(app) == before


def test_learners_and_strangers_are_refused(
    app: Flask, client: FlaskClient, course: Course, owner: Person, users: Users
) -> None:
    ann = person(users, "ann@example.org")
    a = enrol(client, course, ann)
    stranger = person(users, "other@example.org", creator=True)
    draft = build_course(client, owner, title="Hidden draft", publish=False)
    for who in (ann, stranger):
        web = Browser(app, who.user)
        for path in ("learners", "staff", "progress", "progress.csv"):
            # the published course is visible to them (403), the draft is not (404)
            assert web.get(f"/teach/courses/{course.id}/{path}").status_code == 403, path
            resp = web.get(f"/teach/courses/{draft.id}/{path}")
            assert resp.status_code == 404, path
            assert "Hidden draft" not in text(resp)
    before = snapshot(app)
    web = Browser(app, stranger.user)
    assert web.post(f"/teach/enrolments/{a['id']}/approve").status_code == 403
    assert web.post(f"/teach/enrolments/{a['id']}/remove").status_code == 403
    assert web.post(f"/teach/enrolments/{'0' * 32}/approve").status_code == 404
    assert web.post(f"/teach/courses/{draft.id}/invite-code").status_code == 404
    assert snapshot(app) == before


def test_enrol_by_email_and_remove(app: Flask, web: Browser, course: Course, users: Users) -> None:
    ann = person(users, "ann@example.org")
    url = f"/teach/courses/{course.id}/learners"
    assert web.post(url, {"email": " ANN@example.org "}).status_code == 303
    row = enrolment_of(app, course, ann)
    assert row is not None and row.status == "active"
    assert "Ann" in text(web.get(url))
    before = snapshot(app)
    resp = web.post(url, {"email": "ann@example.org"})
    assert resp.status_code == 409
    assert 'id="f-email-error"' in text(resp)
    assert snapshot(app) == before
    assert web.post(f"/teach/enrolments/{row.public_id}/remove").status_code == 303
    assert enrolment_of(app, course, ann).status == "withdrawn"  # type: ignore[union-attr]
    assert "Ann" in text(web.get(url + "?status=withdrawn"))


@pytest.mark.parametrize("email", ["nobody@example.org", "", "not-an-address", "owner@example.org"])
def test_enrol_by_email_refusals_keep_input(
    app: Flask, web: Browser, course: Course, email: str
) -> None:
    before = snapshot(app)
    resp = web.post(f"/teach/courses/{course.id}/learners", {"email": email})
    assert resp.status_code in {409, 422}
    page = text(resp)
    assert 'id="f-email-error"' in page
    assert field_value(page, "email") == email
    assert snapshot(app) == before


def test_invite_code_is_shown_once(app: Flask, web: Browser, course: Course) -> None:
    resp = web.post(f"/teach/courses/{course.id}/invite-code")
    assert resp.status_code == 200
    page = text(resp)
    start = page.index('<code class="code-once">') + len('<code class="code-once">')
    code = page[start : page.index("</code>", start)]
    with get_db(app).session() as sess:
        stored = sess.scalar(
            select(CourseRow.invite_code_hash).where(CourseRow.public_id == course.id)
        )
    assert stored == hash_invite_code(code)
    again = text(web.get(f"/teach/courses/{course.id}/learners"))
    assert code not in again
    assert "cannot be shown again" in again


def test_learner_list_pages(
    app: Flask, client: FlaskClient, course: Course, owner: Person, users: Users
) -> None:
    web = Browser(app, owner.user)
    for n in range(3):
        who = person(users, f"l{n}@example.org")
        web.post(f"/teach/courses/{course.id}/learners", {"email": f"l{n}@example.org"})
        assert enrolment_of(app, course, who) is not None
    import core.web.staff as staff_pages

    old = staff_pages.PAGE_SIZE
    staff_pages.PAGE_SIZE = 2
    try:
        first = text(web.get(f"/teach/courses/{course.id}/learners"))
        row = '<th scope="row">{}</th>'.format
        assert row("L0") in first and row("L1") in first and row("L2") not in first
        marker = "cursor="
        link = first[first.index(marker) : first.index('"', first.index(marker))]
        second = text(web.get(f"/teach/courses/{course.id}/learners?status=active&{link}"))
        assert row("L2") in second and row("L0") not in second
    finally:
        staff_pages.PAGE_SIZE = old
    assert web.get(f"/teach/courses/{course.id}/learners?cursor=forged").status_code == 422


# ---------------------------------------------------------------- staff


def test_add_and_remove_staff(
    app: Flask, web: Browser, course: Course, owner: Person, users: Users
) -> None:
    tom = person(users, "tom@example.org")
    url = f"/teach/courses/{course.id}/staff"
    assert web.post(url, {"email": "tom@example.org", "role": "ta"}).status_code == 303
    assert roles(app, course)[tom.user.id] == "ta"
    assert "Tom" in text(web.get(url))
    assert web.post(url, {"email": "tom@example.org", "role": "instructor"}).status_code == 303
    assert roles(app, course)[tom.user.id] == "instructor"
    assert web.post(f"{url}/{tom.id}/remove").status_code == 303
    assert tom.user.id not in roles(app, course)


def test_the_last_instructor_cannot_be_removed(
    app: Flask, web: Browser, course: Course, owner: Person
) -> None:
    before = snapshot(app)
    resp = web.post(f"/teach/courses/{course.id}/staff/{owner.id}/remove")
    assert resp.status_code == 409
    assert "at least one instructor" in text(resp)
    resp = web.post(
        f"/teach/courses/{course.id}/staff", {"email": "owner@example.org", "role": "ta"}
    )
    assert resp.status_code == 409
    assert snapshot(app) == before


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"email": "nobody@example.org", "role": "ta"}, "email"),
        ({"email": "", "role": "ta"}, "email"),
        ({"email": "owner@example.org", "role": "dean"}, "role"),
    ],
)
def test_add_staff_refusals(
    app: Flask, web: Browser, course: Course, data: dict[str, str], field: str
) -> None:
    before = snapshot(app)
    resp = web.post(f"/teach/courses/{course.id}/staff", data)
    assert resp.status_code == 422
    assert f'id="f-{field}-error"' in text(resp)
    assert snapshot(app) == before


def test_a_ta_cannot_manage_staff(
    app: Flask, course: Course, ta: Person, owner: Person, users: Users
) -> None:
    person(users, "tom@example.org")
    web = Browser(app, ta.user)
    page = text(web.get(f"/teach/courses/{course.id}/staff"))
    assert "Owner" in page and "Add someone" not in page
    before = snapshot(app)
    resp = web.post(f"/teach/courses/{course.id}/staff", {"email": "tom@example.org", "role": "ta"})
    assert resp.status_code == 403
    assert web.post(f"/teach/courses/{course.id}/staff/{owner.id}/remove").status_code == 403
    assert snapshot(app) == before


# ---------------------------------------------------------------- progress


def test_progress_table_and_csv(
    app: Flask, client: FlaskClient, web: Browser, course: Course, users: Users, ta: Person
) -> None:
    ann = person(users, "ann@example.org")
    eve = person(users, "eve@example.org")
    for who in (ann, eve):
        web.post(f"/teach/courses/{course.id}/learners", {"email": who.user.email})
    complete(client, course.items[1], ann)  # the only required item
    page = text(Browser(app, ta.user).get(f"/teach/courses/{course.id}/progress"))
    assert "Ann" in page and "Eve" in page
    assert "Page 0.1" in page and "(optional)" in page
    assert "1 of 1" in page and "0 of 1" in page
    resp = Browser(app, ta.user).get(f"/teach/courses/{course.id}/progress.csv")
    assert resp.status_code == 200
    assert resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(text(resp))))
    assert rows[0][:7] == [
        "learner",
        "learner_id",
        "enrolment",
        "completed_required",
        "required",
        "percent",
        "course_completed_at",
    ]
    by_name = {r[0]: r for r in rows[1:]}
    assert by_name["Ann"][3:6] == ["1", "1", "100.0"]
    assert by_name["Ann"][7:] == ["not_started", "completed"]
    assert by_name["Eve"][7:] == ["not_started", "not_started"]
    assert by_name["Ann"][6] != "" and by_name["Eve"][6] == ""


def test_csv_cells_cannot_run_formulas() -> None:
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert csv_cell("+1") == "'+1" and csv_cell("@x") == "'@x" and csv_cell("-2") == "'-2"
    assert csv_cell("Plain") == "Plain"
    assert csv_cell(-2) == "-2" and csv_cell(None) == ""
