"""Enrolling a class list by e-mail address: the service, the API, the pages and the CLI."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy import update
from werkzeug.test import TestResponse

from core import courses as svc
from core.cli import cli
from core.db import get_db
from core.db import utcnow
from core.models import AuditLog
from core.models import Course as CourseRow
from core.models import Enrolment
from core.models import Event
from core.models import User
from tests.auth_helpers import Api
from tests.auth_helpers import assert_problem
from tests.conftest import Users
from tests.conftest import snapshot
from tests.course_helpers import Course
from tests.course_helpers import Person
from tests.course_helpers import add_staff
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.staff_pages import BROWSER
from tests.staff_pages import Browser
from tests.staff_pages import text
from tests.staff_pages import textarea_value
from tests.web_helpers import field_errors


@pytest.fixture
def owner(users: Users) -> Person:
    return person(users, "owner@example.org", creator=True)


@pytest.fixture
def course(client: FlaskClient, owner: Person) -> Course:
    return build_course(client, owner, items=1, title="Botany", enrolment_mode="approval")


def bulk(client: FlaskClient, course: Course, who: Person, body: Any) -> TestResponse:
    return call(client, "POST", f"/courses/{course.id}/enrolments/bulk", who.headers, body)


def statuses(app: Flask, course: Course) -> dict[str, str]:
    """Each enrolment's status in ``course`` by the learner's address."""
    with get_db(app).session() as sess:
        rows = sess.execute(
            select(User.email, Enrolment.status)
            .join(Enrolment, Enrolment.user_id == User.id)
            .join(CourseRow, CourseRow.id == Enrolment.course_id)
            .where(CourseRow.public_id == course.id)
        )
        return {email: status for email, status in rows}


def enrol_audits(app: Flask) -> list[tuple[int | None, dict[str, Any]]]:
    """The ``enrolment.add`` entries: actor and detail, oldest first."""
    with get_db(app).session() as sess:
        rows = sess.execute(
            select(AuditLog.actor_id, AuditLog.detail)
            .where(AuditLog.action == "enrolment.add")
            .order_by(AuditLog.id)
        )
        return [(actor, dict(detail)) for actor, detail in rows]


def registered(app: Flask) -> list[int | None]:
    """The users of the "registered" learning events, oldest first."""
    with get_db(app).session() as sess:
        rows = sess.execute(select(Event.user_id, Event.verb).order_by(Event.id))
        return [user_id for user_id, verb in rows if verb.endswith("/registered")]


def deactivate(app: Flask, email: str, *, erased: bool = False) -> None:
    """Deactivate the account of ``email`` (erased: as an erasure leaves it)."""
    values: dict[str, Any] = {"is_active": False}
    if erased:
        values.update(erased_at=utcnow(), email=f"erased-{email.split('@')[0]}@erased.invalid")
    with get_db(app).session() as sess:
        sess.execute(update(User).where(User.email == email).values(**values))


# ---------------------------------------------------------------- parsing


def test_pasted_text_splits_on_lines_commas_semicolons_and_spaces() -> None:
    text_ = " ann@example.org\r\nbob@example.org, cat@example.org;dan@example.org\teve@x\n\n"
    assert svc.split_addresses(text_) == [
        "ann@example.org",
        "bob@example.org",
        "cat@example.org",
        "dan@example.org",
        "eve@x",
    ]
    assert svc.split_addresses(" \n,; ") == []


def test_addresses_are_trimmed_lowered_and_deduplicated_in_order() -> None:
    entries = [
        " Bob@Example.org ",
        "ann@example.org",
        "",
        "BOB@example.org",
        "  ",
        "ann@EXAMPLE.org",
    ]
    assert svc.normalise_addresses(entries) == ["bob@example.org", "ann@example.org"]


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("john", "has no @"),
        ("john doe@example.org", "contains a space"),
        ("a@b@example.org", "is not an e-mail address"),
        ("@example.org", "is not an e-mail address"),
        ("ann@", "is not an e-mail address"),
        ("<ann@example.org>", "is not an e-mail address"),
        ("ann@example.org\x00", "contains an invisible or control character"),
        ("ann@example.org\u200b", "contains an invisible or control character"),
        ("ann@exam\u202eple.org", "contains an invisible or control character"),
        ("a" * 310 + "@example.org", "is longer than 320 characters"),
    ],
)
def test_an_entry_that_is_no_address_is_named_by_position_and_value(
    entry: str, reason: str
) -> None:
    with pytest.raises(svc.InvalidAddresses) as err:
        svc.normalise_addresses(["ann@example.org", "", entry])
    (error,) = err.value.extra["errors"]
    assert error["position"] == 3 and error["msg"] == reason
    hidden = str.maketrans({"\x00": "\ufffd", "\u200b": "\ufffd", "\u202e": "\ufffd"})
    assert error["value"].startswith(entry[:20].translate(hidden))  # shown, not acted on
    assert len(error["value"]) <= 80
    assert "entry 3" in err.value.detail and err.value.status == 422


def test_every_bad_entry_is_reported_and_the_list_is_limited() -> None:
    with pytest.raises(svc.InvalidAddresses) as err:
        svc.normalise_addresses(["x", "ann@example.org", "y z", *[f"n{i}" for i in range(6)]])
    assert [e["position"] for e in err.value.extra["errors"]] == [1, 3, 4, 5, 6, 7, 8, 9]
    assert "8 entries are not e-mail addresses" in err.value.detail
    assert "and 3 more" in err.value.detail
    with pytest.raises(svc.NoAddresses):
        svc.normalise_addresses(["", " "])
    many = [f"l{i}@example.org" for i in range(svc.MAX_BULK_ADDRESSES)]
    assert len(svc.normalise_addresses(many)) == svc.MAX_BULK_ADDRESSES
    with pytest.raises(svc.TooManyAddresses) as too_many:
        svc.normalise_addresses([*many, "one@example.org"])
    assert too_many.value.extra == {"limit": 1000, "count": 1001}
    assert "at most 1,000" in too_many.value.detail


def test_class_list_files() -> None:
    with_column = "\ufeffName,E-mail,Group\nAnn,ann@example.org,1\nBob,,2\nCat,not-an-address,3\n"
    assert svc.read_class_list(with_column.encode()) == ["ann@example.org", "not-an-address"]
    semicolons = b"name;email\nAnn;ann@example.org\n"
    assert svc.read_class_list(semicolons) == ["ann@example.org"]
    any_cell = b'Ann,"ann@example.org",note\nBob Smith bob@example.org\n\ncat@example.org\n'
    assert svc.read_class_list(any_cell) == [
        "ann@example.org",
        "bob@example.org",
        "cat@example.org",
    ]
    assert svc.read_class_list(b"") == []
    with pytest.raises(svc.ClassListUnreadable, match="not UTF-8"):
        svc.read_class_list("ann@exämple.org".encode("latin-1"))
    with pytest.raises(svc.ClassListUnreadable, match="larger than"):
        svc.read_class_list(b"a@b.c\n" * (svc.MAX_CLASS_LIST_BYTES // 6 + 1))


# ---------------------------------------------------------------- API


def test_each_address_is_classified_and_learners_are_enrolled(
    app: Flask, client: FlaskClient, users: Users, owner: Person, course: Course
) -> None:
    ann = users.create("ann@example.org")
    bob, cat, dan, eve = (
        person(users, f"{name}@example.org") for name in ("bob", "cat", "dan", "eve")
    )
    ta = person(users, "ta@example.org")
    add_staff(client, course, owner, ta, "ta")
    for who in (bob, cat, dan, eve):
        enrol(client, course, who)  # pending: the course asks for approval
    for who, action in ((bob, "approve"), (cat, "reject"), (eve, "approve")):
        got = ok(call(client, "GET", f"/courses/{course.id}/enrolment", who.headers))
        ok(call(client, "POST", f"/enrolments/{got['id']}/{action}", owner.headers))
    assert call(client, "DELETE", f"/courses/{course.id}/enrolment", bob.headers).status_code == 204
    item = f"/items/{course.items[0]}"
    assert call(client, "GET", item, bob.headers).status_code == 403  # withdrawn (and cached)
    users.create("gone@example.org")
    users.create("erased@example.org")
    deactivate(app, "gone@example.org")
    deactivate(app, "erased@example.org", erased=True)
    events_before = len(registered(app))

    body = ok(
        bulk(
            client,
            course,
            owner,
            {
                "emails": [
                    " ANN@Example.org",
                    "bob@example.org",
                    "nobody@example.org",
                    "cat@example.org",
                    "ann@example.org",
                    "dan@example.org",
                    "eve@example.org",
                    "owner@example.org",
                    "TA@example.org",
                    "gone@example.org",
                    "erased@example.org",
                    "erased-erased@erased.invalid",
                ]
            },
        )
    )

    assert body["dry_run"] is False
    assert [e["email"] for e in body["enrolled"]] == [
        "ann@example.org",
        "bob@example.org",
        "cat@example.org",
        "dan@example.org",
    ]
    assert [e["user_id"] for e in body["enrolled"]] == [ann.public_id, bob.id, cat.id, dan.id]
    assert body["already"] == ["eve@example.org"]
    assert body["staff"] == ["owner@example.org", "ta@example.org"]
    # a deactivated or erased account is not told apart from no account
    assert body["unknown"] == [
        "nobody@example.org",
        "gone@example.org",
        "erased@example.org",
        "erased-erased@erased.invalid",
    ]
    stored = statuses(app, course)
    assert {stored[f"{n}@example.org"] for n in ("ann", "bob", "cat", "dan", "eve")} == {"active"}
    listed = ok(call(client, "GET", f"/courses/{course.id}/enrolments", owner.headers))["items"]
    ids = {e["user"]["id"]: e["id"] for e in listed}
    assert [e["enrolment_id"] for e in body["enrolled"]] == [
        ids[ann.public_id],
        ids[bob.id],
        ids[cat.id],
        ids[dan.id],
    ]
    # audited and recorded one by one, as a single enrolment is
    audits = enrol_audits(app)
    assert [detail["user"] for _, detail in audits] == [ann.public_id, bob.id, cat.id, dan.id]
    assert all(actor == owner.user.id and detail["bulk"] is True for actor, detail in audits)
    assert registered(app)[events_before:] == [ann.id, bob.user.id, cat.user.id, dan.user.id]
    # the learners can open the course at once
    assert call(client, "GET", item, bob.headers).status_code == 200

    again = ok(bulk(client, course, owner, {"emails": ["ann@example.org", "dan@example.org"]}))
    assert again["enrolled"] == [] and again["already"] == ["ann@example.org", "dan@example.org"]


def test_a_dry_run_classifies_and_stores_nothing(
    app: Flask, client: FlaskClient, users: Users, owner: Person, course: Course
) -> None:
    ann = users.create("ann@example.org")
    bob = person(users, "bob@example.org")
    enrol(client, course, bob)
    got = ok(call(client, "GET", f"/courses/{course.id}/enrolment", bob.headers))
    ok(call(client, "POST", f"/enrolments/{got['id']}/approve", owner.headers))
    before = snapshot(app)
    body = ok(
        bulk(
            client,
            course,
            owner,
            {
                "emails": ["ann@example.org", "bob@example.org", "owner@example.org", "x@y.z"],
                "dry_run": True,
            },
        )
    )
    assert body == {
        "dry_run": True,
        "enrolled": [{"email": "ann@example.org", "user_id": ann.public_id, "enrolment_id": None}],
        "already": ["bob@example.org"],
        "staff": ["owner@example.org"],
        "unknown": ["x@y.z"],
    }
    assert snapshot(app) == before


@pytest.mark.parametrize(
    ("emails", "slug", "named"),
    [
        (["ann@example.org", "john"], "invalid-addresses", [(2, "john")]),
        (
            ["jo hn@example.org", "a@b@c"],
            "invalid-addresses",
            [(1, "jo hn@example.org"), (2, "a@b@c")],
        ),
        (["ann@example.org", "x" * 400], "invalid-addresses", [(2, "x" * 79 + "…")]),
        ([], "no-addresses", []),
        (["", "  "], "no-addresses", []),
        ([f"l{i}@example.org" for i in range(1001)], "too-many-addresses", []),
    ],
)
def test_a_refused_list_stores_nothing(
    app: Flask,
    client: FlaskClient,
    users: Users,
    owner: Person,
    course: Course,
    emails: list[str],
    slug: str,
    named: list[tuple[int, str]],
) -> None:
    users.create("ann@example.org")
    before = snapshot(app)
    body = assert_problem(bulk(client, course, owner, {"emails": emails}), 422)
    assert body["type"].endswith("/" + slug)
    assert [(e["position"], e["value"]) for e in body.get("errors", [])] == named
    assert snapshot(app) == before


def test_the_limit_is_a_thousand_addresses(
    app: Flask, client: FlaskClient, owner: Person, course: Course
) -> None:
    emails = [f"l{i}@example.org" for i in range(svc.MAX_BULK_ADDRESSES)]
    before = snapshot(app)
    body = ok(bulk(client, course, owner, {"emails": emails}))
    assert len(body["unknown"]) == 1000 and body["enrolled"] == []
    assert snapshot(app) == before
    problem = assert_problem(
        bulk(client, course, owner, {"emails": [*emails, "x@example.org"]}), 422, "at most 1,000"
    )
    assert problem["limit"] == 1000 and problem["count"] == 1001


@pytest.mark.parametrize(
    "body",
    [
        {"emails": "ann@example.org"},
        {"emails": ["ann@example.org", 7]},
        {"emails": ["ann@example.org"], "dry_run": "yes"},
        {"emails": ["ann@example.org"], "role": "ta"},
        {"emails": ["ann@example.org\u0000"]},
        {},
    ],
)
def test_a_malformed_body_is_refused(
    app: Flask, client: FlaskClient, users: Users, owner: Person, course: Course, body: Any
) -> None:
    users.create("ann@example.org")
    before = snapshot(app)
    assert_problem(bulk(client, course, owner, body), 422)
    resp = client.post(
        f"/api/v1/courses/{course.id}/enrolments/bulk",
        data="emails=ann@example.org",
        headers={**owner.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(resp, 415)
    assert snapshot(app) == before


def test_only_the_course_instructors_enrol_a_class_list(
    app: Flask, client: FlaskClient, users: Users, owner: Person, course: Course
) -> None:
    users.create("ann@example.org")
    learner = person(users, "learner@example.org")
    enrol(client, course, learner)
    got = ok(call(client, "GET", f"/courses/{course.id}/enrolment", learner.headers))
    ok(call(client, "POST", f"/enrolments/{got['id']}/approve", owner.headers))
    ta = person(users, "ta@example.org")
    add_staff(client, course, owner, ta, "ta")
    other = person(users, "other@example.org", creator=True)
    build_course(client, other, items=0, title="Other course")
    draft = build_course(client, owner, items=0, title="Hidden draft", publish=False)
    body = {"emails": ["ann@example.org"]}
    before = snapshot(app)
    for who in (learner, ta, other):
        assert_problem(bulk(client, course, who, body), 403)
        assert_problem(bulk(client, course, who, {**body, "dry_run": True}), 403)
    for who in (learner, ta, other):
        resp = bulk(client, draft, who, body)
        assert_problem(resp, 404)
        assert "Hidden draft" not in resp.get_data(as_text=True)
    assert_problem(bulk(client, Course("0" * 32), owner, body), 404)
    anonymous = Api(app.test_client())
    assert_problem(anonymous.post(f"/courses/{course.id}/enrolments/bulk", body), 401)
    assert snapshot(app) == before


def test_a_draft_course_takes_a_class_list_like_a_single_learner(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    draft = build_course(client, owner, items=1, title="Next term", publish=False)
    ann = users.create("ann@example.org")
    bob = person(users, "bob@example.org")
    ok(
        call(client, "POST", f"/courses/{draft.id}/enrolments", owner.headers, {"user_id": bob.id}),
        201,
    )
    body = ok(bulk(client, draft, owner, {"emails": ["ann@example.org", "bob@example.org"]}))
    assert [e["user_id"] for e in body["enrolled"]] == [ann.public_id]
    assert body["already"] == ["bob@example.org"]
    assert statuses(app, draft) == {"ann@example.org": "active", "bob@example.org": "active"}


# ---------------------------------------------------------------- pages


def learners_url(course: Course) -> str:
    return f"/teach/courses/{course.id}/learners"


def test_preview_then_confirm(
    app: Flask, client: FlaskClient, users: Users, owner: Person, course: Course
) -> None:
    ann = users.create("ann@example.org")
    bob = users.create("bob@example.org")
    eve = person(users, "eve@example.org")
    enrol(client, course, eve)
    got = ok(call(client, "GET", f"/courses/{course.id}/enrolment", eve.headers))
    ok(call(client, "POST", f"/enrolments/{got['id']}/approve", owner.headers))
    web = Browser(app, owner.user)
    page = text(web.get(learners_url(course)))
    assert "Add several learners" in page and 'name="file"' in page
    assert 'enctype="multipart/form-data"' in page

    before = snapshot(app)
    pasted = (
        "ANN@example.org, bob@example.org\nann@example.org\n"
        "eve@example.org\nowner@example.org nobody@example.org"
    )
    resp = web.post(f"{learners_url(course)}/bulk", {"addresses": pasted})
    assert resp.status_code == 200
    assert snapshot(app) == before
    preview = text(resp)
    assert "Nothing has been stored yet." in preview
    assert '<th scope="row">Ann</th><td>ann@example.org</td>' in preview
    assert '<th scope="row">Bob</th><td>bob@example.org</td>' in preview
    assert "Already enrolled (1)" in preview and "<li>eve@example.org</li>" in preview
    assert "staff (1)" in preview and "<li>owner@example.org</li>" in preview
    assert "No active account (1)" in preview and "<li>nobody@example.org</li>" in preview
    assert "Enrol 2 learners" in preview
    # the confirmation carries only those the page says it will enrol
    checked = "ann@example.org bob@example.org"
    assert f'name="addresses" value="{checked}"' in preview
    users.create("nobody@example.org")  # registers between the preview and the click

    resp = web.post(f"{learners_url(course)}/bulk/confirm", {"addresses": checked})
    assert resp.status_code == 303 and resp.headers["Location"].endswith(learners_url(course))
    stored = statuses(app, course)
    assert stored["ann@example.org"] == stored["bob@example.org"] == "active"
    assert "nobody@example.org" not in stored  # not shown as one to enrol: not enrolled
    assert [detail["user"] for _, detail in enrol_audits(app)] == [ann.public_id, bob.public_id]
    flashed = text(web.get(learners_url(course)))
    assert "2 learners enrolled." in flashed and "already" not in flashed


def test_a_confirmed_list_can_have_changed_meanwhile(
    app: Flask, users: Users, owner: Person, course: Course
) -> None:
    web = Browser(app, owner.user)
    unknown = [f"n{i}@example.org" for i in range(30)]
    resp = web.post(f"{learners_url(course)}/bulk/confirm", {"addresses": " ".join(unknown)})
    assert resp.status_code == 303
    flashed = text(web.get(learners_url(course)))
    assert "0 learners enrolled." in flashed
    # the summary travels in the session cookie: it lists only so many
    assert "30 addresses have no active account: n0@example.org, n1@example.org," in flashed
    assert "n19@example.org and 10 more." in flashed and "n20@" not in flashed
    assert 'class="flash flash-warning"' in flashed


def test_refused_lists_are_shown_with_the_input_kept(
    app: Flask, users: Users, owner: Person, course: Course
) -> None:
    users.create("ann@example.org")
    web = Browser(app, owner.user)
    before = snapshot(app)
    pasted = "ann@example.org\njohn\nbob@example.org"
    for path in ("bulk", "bulk/confirm"):
        resp = web.post(f"{learners_url(course)}/{path}", {"addresses": pasted})
        assert resp.status_code == 422
        errors = field_errors(resp)
        assert "entry 2 'john' has no @" in errors["f-addresses"]
        assert textarea_value(text(resp), "addresses") == pasted
    resp = web.post(f"{learners_url(course)}/bulk", {"addresses": "  "})
    assert resp.status_code == 422 and "no e-mail address" in field_errors(resp)["f-addresses"]
    many = " ".join(f"l{i}@example.org" for i in range(1001))
    resp = web.post(f"{learners_url(course)}/bulk", {"addresses": many})
    assert resp.status_code == 422 and "at most 1,000" in field_errors(resp)["f-addresses"]
    assert snapshot(app) == before


def upload(
    web: Browser, course: Course, data: bytes, addresses: str = "", *, csrf: bool = True
) -> TestResponse:
    form: dict[str, Any] = {"addresses": addresses, "file": (io.BytesIO(data), "class.csv")}
    if csrf:
        form["csrf_token"] = web.csrf()
    return web.client.post(
        f"{learners_url(course)}/bulk",
        data=form,
        content_type="multipart/form-data",
        headers=BROWSER,
    )


def test_a_class_list_file(app: Flask, users: Users, owner: Person, course: Course) -> None:
    users.create("ann@example.org")
    users.create("bob@example.org")
    web = Browser(app, owner.user)
    before = snapshot(app)
    resp = upload(web, course, b"Name,Email\nAnn,ANN@example.org\n", "bob@example.org")
    assert resp.status_code == 200
    page = text(resp)
    assert "Enrol 2 learners" in page
    assert 'value="bob@example.org ann@example.org"' in page
    resp = upload(web, course, "Ann,ann@exämple.org\n".encode("latin-1"))
    assert resp.status_code == 422
    assert "not UTF-8" in field_errors(resp)["f-file"]
    resp = upload(web, course, b"x" * (svc.MAX_CLASS_LIST_BYTES + 1))
    assert resp.status_code == 422 and "larger than 512 KB" in field_errors(resp)["f-file"]
    resp = upload(web, course, b"Name,Email\nAnn,Ann Smith\n")
    assert resp.status_code == 422 and "entry 1 'Ann' has no @" in field_errors(resp)["f-addresses"]
    assert upload(web, course, b"Email\nann@example.org\n", csrf=False).status_code in {400, 403}
    assert snapshot(app) == before


def test_the_forms_need_the_csrf_token_and_the_role(
    app: Flask, client: FlaskClient, users: Users, owner: Person, course: Course
) -> None:
    users.create("ann@example.org")
    ta = person(users, "ta@example.org")
    add_staff(client, course, owner, ta, "ta")
    draft = build_course(client, owner, items=0, title="Hidden draft", publish=False)
    form = {"addresses": "ann@example.org"}
    before = snapshot(app)
    web = Browser(app, owner.user)
    for path in ("bulk", "bulk/confirm"):
        resp = web.post(f"{learners_url(course)}/{path}", form, csrf=False)
        assert resp.status_code in {400, 403}
    ta_web = Browser(app, ta.user)
    assert "Add several learners" not in text(ta_web.get(learners_url(course)))
    for path in ("bulk", "bulk/confirm"):
        assert ta_web.post(f"{learners_url(course)}/{path}", form).status_code == 403
    for path in ("bulk", "bulk/confirm"):
        assert ta_web.post(f"/teach/courses/{draft.id}/learners/{path}", form).status_code == 404
    assert snapshot(app) == before


# ---------------------------------------------------------------- command line


def run_cli(app: Flask, *args: str, input: bytes | None = None) -> Result:
    """``trivium`` on the test's app (it builds its own from the instance folder otherwise)."""
    from core.cli.base import CliState

    state = CliState(instance=Path(app.config.get("TRIVIUM_PATH", ".")))
    state._app = app
    return CliRunner(env={"TRIVIUM_INSTANCE_PATH": None}).invoke(
        cli, list(args), obj=state, input=input
    )


def test_cli_enrols_a_file_and_reports_unknown_addresses(
    app: Flask, users: Users, owner: Person, course: Course, tmp_path: Path
) -> None:
    app.config["TESTING"] = True
    ann = users.create("ann@example.org")
    bob = users.create("bob@example.org")
    listing = tmp_path / "class.csv"
    listing.write_text(
        "Name,Email\nAnn,Ann@example.org\nBob,bob@example.org\nNo One,nobody@example.org\n"
    )

    before = snapshot(app)
    result = run_cli(app, "courses", "enrol", course.id, str(listing), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "nothing was stored" in result.output and "Would enrol: 2" in result.output
    assert "  nobody@example.org" in result.output
    assert snapshot(app) == before

    result = run_cli(app, "courses", "enrol", course.id, str(listing))
    assert result.exit_code == 0, result.output
    assert "Enrolled: 2" in result.output and "No active account, not enrolled: 1" in result.output
    assert "  nobody@example.org" in result.output
    assert statuses(app, course) == {"ann@example.org": "active", "bob@example.org": "active"}
    audits = enrol_audits(app)
    assert [detail["user"] for _, detail in audits] == [ann.public_id, bob.public_id]
    assert all(
        actor is None and detail["via"] == "cli" and detail["bulk"] is True
        for actor, detail in audits
    )

    result = run_cli(
        app, "courses", "enrol", course.id, "-", input=b"bob@example.org\nowner@example.org\n"
    )
    assert result.exit_code == 0, result.output
    assert "Enrolled: 0" in result.output and "Already enrolled: 1" in result.output
    assert "Course staff, not enrolled: 1" in result.output


def test_cli_refuses_an_unreadable_or_invalid_file(
    app: Flask, users: Users, course: Course, tmp_path: Path
) -> None:
    app.config["TESTING"] = True
    users.create("ann@example.org")
    bad = tmp_path / "bad.txt"
    bad.write_text("Email\nann@example.org\njohn\n")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("ann@exämple.org\n".encode("latin-1"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    before = snapshot(app)
    for args, says in [
        ((course.id, str(bad)), "entry 2 'john': has no @"),
        ((course.id, str(latin)), "not UTF-8"),
        ((course.id, str(empty)), "no e-mail address"),
        ((course.id, str(tmp_path / "missing.txt")), "missing.txt"),
        (("0" * 32, str(bad)), "no such course"),
    ]:
        result = run_cli(app, "courses", "enrol", *args)
        assert result.exit_code != 0, result.output
        assert says in result.output, result.output
    assert snapshot(app) == before


def test_overlapping_class_lists_at_once_both_go_through(
    app: Flask, backend: str, users: Users, owner: Person, course: Course
) -> None:
    """Two instructors send one class list in opposite orders at the same moment.

    Without one list at a time per course, each would lock the other's next
    enrolment (PostgreSQL ends one with a deadlock: a 500).
    """
    if backend != "postgresql":
        pytest.skip("SQLite runs one writer at a time anyway")
    with get_db(app).session() as sess:
        sess.add_all(User(email=f"s{n}@example.org", display_name=f"S{n}") for n in range(150))
    emails = [f"s{n}@example.org" for n in range(150)]
    start = threading.Barrier(2)
    answers: list[int] = []

    def send(order: list[str]) -> None:
        client = app.test_client()
        start.wait()
        resp = call(
            client,
            "POST",
            f"/courses/{course.id}/enrolments/bulk",
            owner.headers,
            {"emails": order},
        )
        answers.append(resp.status_code)

    threads = [threading.Thread(target=send, args=(o,)) for o in (emails, emails[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == [200, 200]
    assert set(statuses(app, course).values()) == {"active"}
    assert len(enrol_audits(app)) == 150  # each learner enrolled once, by one of them


def test_a_column_headed_like_an_email_column_is_the_one_read() -> None:
    data = b"Name,Student e-mail,Advisor\nAnn,ann@example.org,adv@example.org\n"
    assert svc.read_class_list(data) == ["ann@example.org"]
