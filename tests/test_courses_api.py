"""Course API: catalog, editing, structure, enrolment modes, staff, bad input."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event
from sqlalchemy import select

from core.courses import hash_invite_code
from core.db import get_db
from core.models import AuditLog
from core.models import Course as CourseRow
from core.models import Item
from core.models import Module
from tests.conftest import Users
from tests.conftest import snapshot
from tests.course_helpers import Course
from tests.course_helpers import Person
from tests.course_helpers import add_staff
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import complete
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.course_helpers import problem

PUBLIC_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def owner(users: Users) -> Person:
    """An instructor-to-be."""
    return person(users, "owner@example.org", creator=True)


def _positions(app: Flask, model: type[Module] | type[Item], parent: str) -> list[tuple[str, int]]:
    column = Module.course_id if model is Module else Item.module_id
    parent_model: Any = CourseRow if model is Module else Module
    with get_db(app).session() as sess:
        pid = sess.scalar(select(parent_model.id).where(parent_model.public_id == parent))
        rows = sess.execute(
            select(model.public_id, model.position).where(column == pid).order_by(model.position)
        )
        return [(r[0], r[1]) for r in rows]


def _ids_everywhere(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for key, sub in value.items():
            if key == "id" or key.endswith("_id"):
                yield sub
            yield from _ids_everywhere(sub)
    elif isinstance(value, list):
        for sub in value:
            yield from _ids_everywhere(sub)


# ---------------------------------------------------------------- courses


def test_create_course_makes_the_creator_instructor(
    app: Flask, client: FlaskClient, owner: Person
) -> None:
    body = ok(
        call(
            client,
            "POST",
            "/courses",
            owner.headers,
            {
                "title": "  Latin  ",
                "summary": "Amo, amas",
                "description": "<p>ok</p><script>alert(1)</script>",
                "language": "la",
                "subject": "Classics",
                "level": "beginner",
            },
        ),
        201,
    )
    assert body["title"] == "Latin"
    assert body["status"] == "draft"
    assert body["my_role"] == "instructor"
    assert body["description"] == "<p>ok</p>"
    assert PUBLIC_ID.match(body["id"])
    staff = ok(call(client, "GET", f"/courses/{body['id']}/staff", owner.headers))["items"]
    assert [(s["user"]["id"], s["role"]) for s in staff] == [(owner.id, "instructor")]
    with get_db(app).session() as sess:
        assert sess.scalar(select(AuditLog.action).where(AuditLog.action == "course.create"))


def test_only_creators_create_courses(app: Flask, client: FlaskClient, users: Users) -> None:
    plain = person(users)
    before = snapshot(app)
    problem(call(client, "POST", "/courses", plain.headers, {"title": "Nope"}), 403)
    assert snapshot(app) == before


BAD_COURSE_BODIES: list[tuple[Any, int]] = [
    ({}, 422),
    ({"title": ""}, 422),
    ({"title": 42}, 422),
    ({"title": "x" * 301}, 422),
    ({"title": "ok", "visibility": "public"}, 422),
    ({"title": "ok", "enrolment_mode": "lottery"}, 422),
    ({"title": "ok", "language": "not a language"}, 422),
    ({"title": "ok", "status": "published"}, 422),
    ({"title": "ok", "id": "1"}, 422),
    ([], 422),
    ("title", 422),
]


@pytest.mark.parametrize(("body", "status"), BAD_COURSE_BODIES)
def test_bad_course_bodies_change_nothing(
    app: Flask, client: FlaskClient, owner: Person, body: Any, status: int
) -> None:
    before = snapshot(app)
    problem(call(client, "POST", "/courses", owner.headers, body), status)
    assert snapshot(app) == before


def test_malformed_json_and_wrong_media_type(
    app: Flask, client: FlaskClient, owner: Person
) -> None:
    course = build_course(client, owner)
    before = snapshot(app)
    headers = {**owner.headers, "Content-Type": "application/json"}
    problem(client.post("/api/v1/courses", data="{not json", headers=headers), 400)
    problem(client.patch(f"/api/v1/courses/{course.id}", data="{", headers=headers), 400)
    problem(
        client.post(
            "/api/v1/courses",
            data="title=x",
            headers={**owner.headers, "Content-Type": "application/x-www-form-urlencoded"},
        ),
        415,
    )
    assert snapshot(app) == before


def test_patch_is_partial_and_refuses_nulls(app: Flask, client: FlaskClient, owner: Person) -> None:
    course = build_course(client, owner, summary="old summary", subject="Maths")
    body = ok(call(client, "PATCH", f"/courses/{course.id}", owner.headers, {"title": "New"}))
    assert (body["title"], body["summary"], body["subject"]) == ("New", "old summary", "Maths")
    before = snapshot(app)
    for bad in ({"title": None}, {"summary": 3}, {"status": "draft"}, {"visibility": "everyone"}):
        problem(call(client, "PATCH", f"/courses/{course.id}", owner.headers, bad), 422)
    assert snapshot(app) == before


def test_status_transitions(app: Flask, client: FlaskClient, owner: Person) -> None:
    course = build_course(client, owner, publish=False)
    before = snapshot(app)
    problem(call(client, "POST", f"/courses/{course.id}/unpublish", owner.headers), 409)
    assert snapshot(app) == before
    published = ok(call(client, "POST", f"/courses/{course.id}/publish", owner.headers))
    assert published["status"] == "published"
    assert published["published_at"]
    problem(call(client, "POST", f"/courses/{course.id}/publish", owner.headers), 409)
    assert ok(call(client, "POST", f"/courses/{course.id}/archive", owner.headers))["status"] == (
        "archived"
    )
    problem(call(client, "POST", f"/courses/{course.id}/archive", owner.headers), 409)
    assert ok(call(client, "POST", f"/courses/{course.id}/publish", owner.headers))["status"] == (
        "published"
    )


HOSTILE: list[tuple[str, str, Any, int]] = [
    ("GET", "/courses/%00abc", None, 404),
    ("GET", "/items/%00", None, 404),
    ("PUT", "/items/%00/progress", {"status": "completed"}, 404),
    ("PATCH", "/modules/%00", {"title": "x"}, 404),
    ("POST", "/enrolments/%00/approve", None, 404),
    ("GET", "/courses/" + "a" * 5000, None, 404),
    ("GET", "/courses?q=%00", None, 422),
    ("GET", "/courses?cursor=YzEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw", None, 422),
    ("GET", "/courses?cursor=Yy01", None, 422),
    ("POST", "/courses", {"title": "a\u0000b"}, 422),
    ("PATCH", "/courses/{course}", {"summary": "\u0000"}, 422),
    (
        "POST",
        "/modules/{module}/items",
        {"type": "page", "title": "t", "config": {"body": "\u0000"}},
        422,
    ),
    ("PUT", "/items/{item}/progress", {"data": {"note": ["\u0000"]}}, 422),
    (
        "POST",
        "/me/progress",
        {
            "reports": [
                {"item_id": "{item}", "status": "in_progress", "data": {"n": {"m": "\u0000"}}}
            ]
        },
        422,
    ),
    ("PUT", "/courses/{course}/staff/%00", {"role": "ta"}, 404),
    ("POST", "/courses/{course}/enrolments", {"user_id": "\u0000"}, 422),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), HOSTILE)
def test_hostile_input_is_a_clean_4xx(
    app: Flask,
    client: FlaskClient,
    users: Users,
    owner: Person,
    method: str,
    path: str,
    body: Any,
    status: int,
) -> None:
    course = build_course(client, owner, items=1)
    learner = person(users)
    enrol(client, course, learner)
    who = learner if "progress" in path else owner
    url = path.format(course=course.id, module=course.modules[0], item=course.items[0])
    if body and "reports" in body:
        body = {"reports": [dict(r, item_id=course.items[0]) for r in body["reports"]]}
    before = snapshot(app)
    problem(call(client, method, url, who.headers, body), status)
    assert snapshot(app) == before


def test_text_spelling_a_nul_escape_is_not_a_nul(client: FlaskClient, owner: Person) -> None:
    # the raw body holds the characters \u0000 (an escaped backslash), so the
    # quick check on the raw bytes cannot rule NUL out: the full check runs
    title = "backslash \\u0000 then text"
    created = ok(call(client, "POST", "/courses", owner.headers, {"title": title}), 201)
    assert created["title"] == title
    raw = client.post(
        "/api/v1/courses",
        data=b'{"title": "ok", "summary": "\\\\u0000 is fine, \\u0000 is not"}',
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert raw.status_code == 422


def test_unknown_ids_are_404(app: Flask, client: FlaskClient, owner: Person) -> None:
    before = snapshot(app)
    missing = "0" * 32
    for method, path in [
        ("GET", f"/courses/{missing}"),
        ("PATCH", f"/courses/{missing}"),
        ("POST", f"/courses/{missing}/publish"),
        ("PATCH", f"/modules/{missing}"),
        ("DELETE", f"/modules/{missing}"),
        ("GET", f"/items/{missing}"),
        ("DELETE", f"/items/{missing}"),
        ("POST", f"/enrolments/{missing}/approve"),
        ("GET", "/courses/1"),
    ]:
        body = {"title": "x"} if method == "PATCH" else None
        problem(call(client, method, path, owner.headers, body), 404)
    course = build_course(client, owner)
    before = snapshot(app)
    problem(
        call(client, "PUT", f"/courses/{course.id}/staff/{missing}", owner.headers, {"role": "ta"}),
        404,
    )
    assert snapshot(app) == before


# ---------------------------------------------------------------- catalog


def test_catalog_search_filters_and_pages(client: FlaskClient, users: Users, owner: Person) -> None:
    reader = person(users)
    specs = [
        ("Intro to Algebra", "numbers and letters", "maths", "en", "beginner"),
        ("Advanced algebra", "rings", "maths", "en", "advanced"),
        ("Poetry", "verse and ALGEBRAIC metre", "literature", "fr", "beginner"),
        ("100% off", "percent_sign_course", "misc", "en", ""),
    ]
    ids = {}
    for title, summary, subject, language, level in specs:
        ids[title] = build_course(
            client,
            owner,
            items=0,
            title=title,
            summary=summary,
            subject=subject,
            language=language,
            level=level,
        ).id
    build_course(client, owner, items=0, title="Algebra draft", publish=False)

    def titles(query: str) -> list[str]:
        body = ok(call(client, "GET", f"/courses{query}", reader.headers))
        return sorted(c["title"] for c in body["items"])

    assert titles("?q=algebra") == ["Advanced algebra", "Intro to Algebra", "Poetry"]
    assert titles("?q=algebra&subject=maths&level=advanced") == ["Advanced algebra"]
    assert titles("?language=fr") == ["Poetry"]
    assert titles("?q=%25") == ["100% off"]
    assert titles("?q=_sign") == ["100% off"]
    assert titles("?q=nothing-like-this") == []

    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        body = ok(call(client, "GET", f"/courses?limit=1{cursor}", reader.headers))
        seen += [c["id"] for c in body["items"]]
        if body["next_cursor"] is None:
            break
        cursor = f"&cursor={body['next_cursor']}"
    assert len(seen) == 4
    assert set(seen) == set(ids.values())


@pytest.mark.parametrize(
    "query",
    ["?limit=0", "?limit=101", "?limit=ten", "?cursor=%%%", "?cursor=Zm9v", "?status=gone", "?x=1"],
)
def test_bad_catalog_queries_are_422(client: FlaskClient, owner: Person, query: str) -> None:
    problem(call(client, "GET", f"/courses{query}", owner.headers), 422)


def test_responses_carry_opaque_ids_only(client: FlaskClient, users: Users, owner: Person) -> None:
    learner = person(users)
    course = build_course(client, owner)
    enrol(client, course, learner)
    complete(client, course.items[0], learner)
    bodies = [
        ok(call(client, "GET", f"/courses/{course.id}", owner.headers)),
        ok(call(client, "GET", f"/items/{course.items[0]}", owner.headers)),
        ok(call(client, "GET", f"/courses/{course.id}/enrolments", owner.headers)),
        ok(call(client, "GET", f"/courses/{course.id}/progress", owner.headers)),
        ok(call(client, "GET", f"/courses/{course.id}/progress/me", learner.headers)),
        ok(call(client, "GET", "/me/courses", learner.headers)),
    ]
    found = [i for body in bodies for i in _ids_everywhere(body)]
    assert found
    for value in found:
        assert isinstance(value, str)
        assert PUBLIC_ID.match(value), value


# ---------------------------------------------------------------- detail and items


def test_learners_see_outline_and_learner_view(
    client: FlaskClient, users: Users, owner: Person
) -> None:
    learner = person(users)
    outsider = person(users)
    course = build_course(client, owner, modules=2, items=2)
    detail = ok(call(client, "GET", f"/courses/{course.id}", outsider.headers))
    assert [m["id"] for m in detail["modules"]] == course.modules
    first = detail["modules"][0]["items"][0]
    assert set(first) == {"id", "type", "title", "required", "position"}
    assert detail["my_role"] is None
    assert detail["has_invite_code"] is None
    # content needs an enrolment
    problem(call(client, "GET", f"/items/{course.items[0]}", outsider.headers), 403)
    enrol(client, course, learner)
    assert ok(call(client, "GET", f"/courses/{course.id}", learner.headers))["my_role"] == "learner"
    item = ok(call(client, "GET", f"/items/{course.items[0]}", learner.headers))
    assert item["content"] == {"body": "<p>text 0.0</p>", "estimated_minutes": None}
    assert item["config"] is None
    staff = ok(call(client, "GET", f"/items/{course.items[0]}", owner.headers))
    assert staff["config"] == {"body": "<p>text 0.0</p>", "estimated_minutes": None}
    assert staff["content"] is None


def test_modules_create_rename_reorder_delete(
    app: Flask, client: FlaskClient, owner: Person
) -> None:
    course = build_course(client, owner, modules=3, items=1)
    a, b, c = course.modules
    first = ok(
        call(
            client,
            "POST",
            f"/courses/{course.id}/modules",
            owner.headers,
            {"title": "Zero", "position": 0},
        ),
        201,
    )
    assert _positions(app, Module, course.id) == [(first["id"], 0), (a, 1), (b, 2), (c, 3)]
    renamed = ok(call(client, "PATCH", f"/modules/{b}", owner.headers, {"title": "Bee"}))
    assert renamed["title"] == "Bee"
    ok(call(client, "PATCH", f"/modules/{b}", owner.headers, {"position": 99}))
    assert [p for _, p in _positions(app, Module, course.id)] == [0, 1, 2, 3]
    assert _positions(app, Module, course.id)[-1][0] == b
    new_order = [c, b, a, first["id"]]
    body = ok(
        call(
            client, "PUT", f"/courses/{course.id}/modules/order", owner.headers, {"ids": new_order}
        )
    )
    assert [m["id"] for m in body["items"]] == new_order
    assert [m["position"] for m in body["items"]] == [0, 1, 2, 3]
    assert call(client, "DELETE", f"/modules/{b}", owner.headers).status_code == 204
    assert _positions(app, Module, course.id) == [(c, 0), (a, 1), (first["id"], 2)]
    with get_db(app).session() as sess:
        assert sess.scalar(select(Item).where(Item.public_id == course.items[1])) is None


@pytest.mark.parametrize(
    "mutation", ["missing", "duplicate", "unknown", "extra", "empty", "wrong type"]
)
def test_reorder_must_be_a_permutation(
    app: Flask, client: FlaskClient, owner: Person, mutation: str
) -> None:
    course = build_course(client, owner, modules=3, items=3)
    ids = list(reversed(course.modules))
    other = build_course(client, owner, modules=1, items=0).modules[0]
    body: Any = {
        "missing": {"ids": ids[:-1]},
        "duplicate": {"ids": [ids[0], *ids[:-1]]},
        "unknown": {"ids": [*ids[:-1], "f" * 32]},
        "extra": {"ids": [*ids, other]},
        "empty": {"ids": []},
        "wrong type": {"ids": "all"},
    }[mutation]
    before = snapshot(app)
    problem(call(client, "PUT", f"/courses/{course.id}/modules/order", owner.headers, body), 422)
    item_ids = course.items[:2]
    problem(
        call(
            client,
            "PUT",
            f"/modules/{course.modules[0]}/items/order",
            owner.headers,
            {"ids": item_ids},
        ),
        422,
    )
    assert snapshot(app) == before


def test_items_create_edit_reorder_move_delete(
    app: Flask, client: FlaskClient, owner: Person
) -> None:
    course = build_course(client, owner, modules=2, items=3)
    m0, m1 = course.modules
    i0, i1, i2, j0, j1, j2 = course.items
    inserted = ok(
        call(
            client,
            "POST",
            f"/modules/{m0}/items",
            owner.headers,
            {"type": "page", "title": "First", "position": 0, "required": False},
        ),
        201,
    )
    assert inserted["required"] is False
    assert inserted["config"] == {"body": "", "estimated_minutes": None}
    assert _positions(app, Item, m0) == [(inserted["id"], 0), (i0, 1), (i1, 2), (i2, 3)]

    edited = ok(
        call(
            client,
            "PATCH",
            f"/items/{i1}",
            owner.headers,
            {
                "title": "Edited",
                "required": False,
                "config": {"body": "<em>x</em>", "estimated_minutes": 5},
            },
        )
    )
    assert (edited["title"], edited["required"], edited["config"]["estimated_minutes"]) == (
        "Edited",
        False,
        5,
    )

    body = ok(
        call(
            client,
            "PUT",
            f"/modules/{m0}/items/order",
            owner.headers,
            {"ids": [i2, i1, i0, inserted["id"]]},
        )
    )
    assert [i["id"] for i in body["items"]] == [i2, i1, i0, inserted["id"]]

    moved = ok(
        call(client, "POST", f"/items/{i1}/move", owner.headers, {"module_id": m1, "position": 1})
    )
    assert moved["module_id"] == m1
    assert _positions(app, Item, m0) == [(i2, 0), (i0, 1), (inserted["id"], 2)]
    assert _positions(app, Item, m1) == [(j0, 0), (i1, 1), (j1, 2), (j2, 3)]
    ok(call(client, "POST", f"/items/{j2}/move", owner.headers, {"module_id": m1, "position": 0}))
    assert _positions(app, Item, m1) == [(j2, 0), (j0, 1), (i1, 2), (j1, 3)]

    assert call(client, "DELETE", f"/items/{j0}", owner.headers).status_code == 204
    assert _positions(app, Item, m1) == [(j2, 0), (i1, 1), (j1, 2)]
    detail = ok(call(client, "GET", f"/courses/{course.id}", owner.headers))
    assert [i["position"] for m in detail["modules"] for i in m["items"]] == [0, 1, 2, 0, 1, 2]


BAD_ITEMS: list[tuple[dict[str, Any], str]] = [
    ({"type": "hologram", "title": "x"}, "unknown content type 'hologram'"),
    ({"type": "page", "title": "x", "config": {"body": 5}}, "invalid page config"),
    ({"type": "page", "title": "x", "config": {"colour": "red"}}, "invalid page config"),
    ({"type": "page", "title": "x", "config": ["body"]}, "invalid page config"),
    ({"type": "page", "title": "x", "config": {"estimated_minutes": -1}}, "invalid page config"),
    ({"type": "page"}, "the body does not match the expected shape"),
    (
        {"type": "page", "title": "x", "required": "yes"},
        "the body does not match the expected shape",
    ),
    ({"type": "page", "title": "x", "position": -1}, "the body does not match the expected shape"),
]


@pytest.mark.parametrize(("body", "detail"), BAD_ITEMS)
def test_bad_items_are_422_and_change_nothing(
    app: Flask, client: FlaskClient, owner: Person, body: dict[str, Any], detail: str
) -> None:
    course = build_course(client, owner, items=1)
    before = snapshot(app)
    got = problem(
        call(client, "POST", f"/modules/{course.modules[0]}/items", owner.headers, body), 422
    )
    assert got["detail"] == detail
    if detail == "invalid page config":
        assert got["errors"] and all({"loc", "msg"} <= set(e) for e in got["errors"])
    problem(
        call(client, "PATCH", f"/items/{course.items[0]}", owner.headers, {"config": {"body": 5}}),
        422,
    )
    assert snapshot(app) == before


def test_move_to_unknown_module_is_422(app: Flask, client: FlaskClient, owner: Person) -> None:
    course = build_course(client, owner, items=1)
    before = snapshot(app)
    for body in ({"module_id": "f" * 32}, {"module_id": course.modules[0], "position": -3}, {}):
        problem(call(client, "POST", f"/items/{course.items[0]}/move", owner.headers, body), 422)
    assert snapshot(app) == before


def test_content_types_are_listed(client: FlaskClient, owner: Person) -> None:
    body = ok(call(client, "GET", "/content-types", owner.headers))
    page = next(t for t in body["items"] if t["name"] == "page")
    assert page["label"] == "Page"
    assert "body" in page["config_schema"]["properties"]


# ---------------------------------------------------------------- enrolment


def test_open_enrolment_and_withdrawal(client: FlaskClient, users: Users, owner: Person) -> None:
    learner = person(users)
    course = build_course(client, owner)
    got = enrol(client, course, learner)
    assert got["status"] == "active"
    problem(call(client, "POST", f"/courses/{course.id}/enrolment", learner.headers), 409)
    assert (
        ok(call(client, "GET", f"/courses/{course.id}/enrolment", learner.headers))["id"]
        == got["id"]
    )
    assert (
        call(client, "DELETE", f"/courses/{course.id}/enrolment", learner.headers).status_code
        == 204
    )
    problem(call(client, "DELETE", f"/courses/{course.id}/enrolment", learner.headers), 409)
    assert enrol(client, course, learner)["status"] == "active"


def test_approval_mode(app: Flask, client: FlaskClient, users: Users, owner: Person) -> None:
    alice = person(users)
    bob = person(users)
    course = build_course(client, owner, enrolment_mode="approval")
    a = enrol(client, course, alice)
    b = enrol(client, course, bob)
    assert a["status"] == b["status"] == "pending"
    problem(call(client, "GET", f"/items/{course.items[0]}", alice.headers), 403)
    before = snapshot(app)
    problem(call(client, "POST", f"/enrolments/{a['id']}/approve", alice.headers), 403)
    assert snapshot(app) == before
    pending = ok(
        call(client, "GET", f"/courses/{course.id}/enrolments?status=pending", owner.headers)
    )
    assert {e["id"] for e in pending["items"]} == {a["id"], b["id"]}
    assert (
        ok(call(client, "POST", f"/enrolments/{a['id']}/approve", owner.headers))["status"]
        == "active"
    )
    assert (
        ok(call(client, "POST", f"/enrolments/{b['id']}/reject", owner.headers))["status"]
        == "rejected"
    )
    problem(call(client, "POST", f"/enrolments/{b['id']}/approve", owner.headers), 409)
    ok(call(client, "GET", f"/items/{course.items[0]}", alice.headers))
    before = snapshot(app)
    problem(call(client, "POST", f"/courses/{course.id}/enrolment", bob.headers), 409)
    assert snapshot(app) == before
    # staff may still enrol a rejected user
    added = ok(
        call(
            client, "POST", f"/courses/{course.id}/enrolments", owner.headers, {"user_id": bob.id}
        ),
        201,
    )
    assert added["status"] == "active"


def test_invite_mode(app: Flask, client: FlaskClient, users: Users, owner: Person) -> None:
    learner = person(users)
    course = build_course(client, owner, enrolment_mode="invite", visibility="private")
    before = snapshot(app)
    problem(call(client, "POST", f"/courses/{course.id}/enrolment", learner.headers), 403)
    problem(
        call(
            client,
            "POST",
            f"/courses/{course.id}/enrolment",
            learner.headers,
            {"invite_code": "guess"},
        ),
        403,
    )
    assert snapshot(app) == before
    old = ok(call(client, "POST", f"/courses/{course.id}/invite-code", owner.headers), 201)["code"]
    new = ok(call(client, "POST", f"/courses/{course.id}/invite-code", owner.headers), 201)["code"]
    assert old != new
    with get_db(app).session() as sess:
        stored = sess.scalar(
            select(CourseRow.invite_code_hash).where(CourseRow.public_id == course.id)
        )
    assert stored == hash_invite_code(new)
    assert new not in repr(snapshot(app))
    problem(
        call(
            client, "POST", f"/courses/{course.id}/enrolment", learner.headers, {"invite_code": old}
        ),
        403,
    )
    assert enrol(client, course, learner, invite_code=new)["status"] == "active"
    assert (
        ok(call(client, "GET", f"/courses/{course.id}", owner.headers))["has_invite_code"] is True
    )


def test_private_open_course_is_hidden(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    learner = person(users)
    course = build_course(client, owner, visibility="private")
    before = snapshot(app)
    problem(call(client, "GET", f"/courses/{course.id}", learner.headers), 404)
    problem(call(client, "POST", f"/courses/{course.id}/enrolment", learner.headers), 404)
    assert ok(call(client, "GET", "/courses", learner.headers))["items"] == []
    assert snapshot(app) == before
    ok(
        call(
            client,
            "POST",
            f"/courses/{course.id}/enrolments",
            owner.headers,
            {"user_id": learner.id},
        ),
        201,
    )
    ok(call(client, "GET", f"/courses/{course.id}", learner.headers))
    assert [c["id"] for c in ok(call(client, "GET", "/courses", learner.headers))["items"]] == [
        course.id
    ]


def test_enrolment_bad_input(app: Flask, client: FlaskClient, users: Users, owner: Person) -> None:
    ta = person(users)
    course = build_course(client, owner)
    add_staff(client, course, owner, ta, "ta")
    before = snapshot(app)
    problem(call(client, "POST", f"/courses/{course.id}/enrolment", ta.headers), 409)
    problem(call(client, "POST", f"/courses/{course.id}/enrolment", owner.headers), 409)
    problem(
        call(
            client, "POST", f"/courses/{course.id}/enrolments", owner.headers, {"user_id": "f" * 32}
        ),
        422,
    )
    problem(
        call(client, "POST", f"/courses/{course.id}/enrolments", owner.headers, {"user_id": 7}), 422
    )
    problem(
        call(client, "POST", f"/courses/{course.id}/enrolment", ta.headers, {"invite_code": 5}), 422
    )
    problem(
        call(client, "GET", f"/courses/{course.id}/enrolments?status=maybe", owner.headers), 422
    )
    assert snapshot(app) == before


def test_staff_remove_learner(client: FlaskClient, users: Users, owner: Person) -> None:
    learner = person(users)
    course = build_course(client, owner)
    got = enrol(client, course, learner)
    assert call(client, "DELETE", f"/enrolments/{got['id']}", owner.headers).status_code == 204
    problem(call(client, "GET", f"/items/{course.items[0]}", learner.headers), 403)
    listed = ok(
        call(client, "GET", f"/courses/{course.id}/enrolments?status=withdrawn", owner.headers)
    )
    assert [e["id"] for e in listed["items"]] == [got["id"]]


# ---------------------------------------------------------------- staff


def test_staff_management_and_last_instructor(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    other = person(users)
    course = build_course(client, owner)
    before = snapshot(app)
    problem(call(client, "DELETE", f"/courses/{course.id}/staff/{owner.id}", owner.headers), 409)
    problem(
        call(
            client, "PUT", f"/courses/{course.id}/staff/{owner.id}", owner.headers, {"role": "ta"}
        ),
        409,
    )
    problem(call(client, "DELETE", f"/courses/{course.id}/staff/{other.id}", owner.headers), 404)
    problem(
        call(
            client,
            "PUT",
            f"/courses/{course.id}/staff/{other.id}",
            owner.headers,
            {"role": "owner"},
        ),
        422,
    )
    assert snapshot(app) == before
    resp = call(
        client, "PUT", f"/courses/{course.id}/staff/{other.id}", owner.headers, {"role": "ta"}
    )
    assert ok(resp, 201)["role"] == "ta"
    resp = call(
        client,
        "PUT",
        f"/courses/{course.id}/staff/{other.id}",
        owner.headers,
        {"role": "instructor"},
    )
    assert ok(resp, 200)["role"] == "instructor"
    # now the original owner may step down
    assert (
        call(client, "DELETE", f"/courses/{course.id}/staff/{owner.id}", owner.headers).status_code
        == 204
    )
    problem(call(client, "PATCH", f"/courses/{course.id}", owner.headers, {"title": "x"}), 403)
    ok(call(client, "PATCH", f"/courses/{course.id}", other.headers, {"title": "Handed over"}))
    problem(call(client, "DELETE", f"/courses/{course.id}/staff/{other.id}", other.headers), 409)


# ---------------------------------------------------------------- me


def test_me(client: FlaskClient, owner: Person) -> None:
    body = ok(call(client, "GET", "/me", owner.headers))
    assert body["id"] == owner.id
    assert body["email"] == "owner@example.org"
    assert body["can_create_courses"] is True


@contextmanager
def count_queries(app: Flask) -> Iterator[list[str]]:
    """Collect the SQL statements run inside the block."""
    statements: list[str] = []
    engine = get_db(app).engine

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


def _my_courses_queries(app: Flask, client: FlaskClient, who: Person) -> tuple[int, dict[str, Any]]:
    with count_queries(app) as statements:
        body = ok(call(client, "GET", "/me/courses?limit=100", who.headers))
    return len(statements), body


def test_my_courses_roles_and_percentages_in_one_query(
    app: Flask, client: FlaskClient, users: Users, owner: Person
) -> None:
    learner = person(users)
    courses: list[Course] = []
    for n in range(3):
        course = build_course(client, owner, items=4, optional=1, title=f"C{n}")
        enrol(client, course, learner)
        courses.append(course)
    complete(client, courses[0].items[1], learner)
    for item in courses[1].items:
        complete(client, item, learner)
    complete(client, courses[2].items[0], learner)  # optional: does not count
    n_small, body = _my_courses_queries(app, client, learner)
    rows = {r["course"]["title"]: r for r in body["items"]}
    assert {t: r["progress"]["percent"] for t, r in rows.items()} == {
        "C0": 33.3,
        "C1": 100.0,
        "C2": 0.0,
    }
    assert rows["C1"]["enrolment"]["completed_at"] is not None
    assert all(r["role"] == "learner" for r in rows.values())
    staff_view = ok(call(client, "GET", "/me/courses", owner.headers))["items"]
    assert {r["role"] for r in staff_view} == {"instructor"}
    assert all(r["progress"] is None for r in staff_view)
    # more courses, same number of statements: no query per course
    for n in range(3, 8):
        enrol(client, build_course(client, owner, items=2, title=f"C{n}"), learner)
    n_large, body = _my_courses_queries(app, client, learner)
    assert len(body["items"]) == 8
    assert n_large == n_small
