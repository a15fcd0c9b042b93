"""Permissions: the role table, hidden drafts, course boundaries and plugin votes."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core import db
from core import hookimpl
from core import rbac
from core.db import get_db
from core.errors import Forbidden
from core.errors import NotFound
from core.errors import Unauthorized
from core.models import Course
from core.models import CourseRole
from core.models import Enrolment
from core.models import User
from tests.conftest import Users
from tests.conftest import snapshot
from tests.course_helpers import add_staff
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.course_helpers import problem

ROLES = ("admin", "instructor", "ta", "learner", "pending", "outsider")


def _setup_roles(app: Flask, users: Users, status: str, visibility: str) -> dict[str, int]:
    """A course in ``status`` with one user per role; returns user ids by role."""
    ids = {role: users.create(f"{role}@example.org", admin=role == "admin").id for role in ROLES}
    with get_db(app).session() as sess:
        course = Course(title="C", status=status, visibility=visibility)
        sess.add(course)
        sess.flush()
        sess.add(CourseRole(course_id=course.id, user_id=ids["instructor"], role="instructor"))
        sess.add(CourseRole(course_id=course.id, user_id=ids["ta"], role="ta"))
        sess.add(Enrolment(course_id=course.id, user_id=ids["learner"], status="active"))
        sess.add(Enrolment(course_id=course.id, user_id=ids["pending"], status="pending"))
        ids["course"] = course.id
    return ids


def _can(app: Flask, user_id: int, action: str, course_id: int) -> bool:
    with app.app_context():
        sess = db.session()
        user = sess.get_one(User, user_id)
        course = sess.get_one(Course, course_id)
        return rbac.can(user, action, course)


# Expected sets of roles allowed, per (action, course status); visibility "instance".
TABLE: list[tuple[str, str, set[str]]] = [
    ("course.view", "draft", {"admin", "instructor", "ta"}),
    ("course.view", "published", set(ROLES)),
    ("course.view", "archived", {"admin", "instructor", "ta", "learner"}),
    ("course.view_content", "draft", {"admin", "instructor", "ta"}),
    ("course.view_content", "published", {"admin", "instructor", "ta", "learner"}),
    ("course.view_content", "archived", {"admin", "instructor", "ta", "learner"}),
    ("course.edit", "published", {"admin", "instructor"}),
    ("course.publish", "draft", {"admin", "instructor"}),
    ("course.archive", "published", {"admin", "instructor"}),
    ("course.manage_staff", "published", {"admin", "instructor"}),
    ("enrolment.manage", "published", {"admin", "instructor"}),
    ("enrolment.view", "published", {"admin", "instructor", "ta"}),
    ("item.view_config", "published", {"admin", "instructor", "ta"}),
    ("progress.view_all", "published", {"admin", "instructor", "ta"}),
    ("events.view_all", "published", {"admin", "instructor", "ta"}),
    ("progress.own", "published", {"admin", "learner"}),
    ("progress.own", "archived", {"admin", "learner"}),
    ("progress.own", "draft", {"admin"}),
    ("course.enrol", "published", set(ROLES)),
    ("course.enrol", "draft", {"admin"}),
    ("plugin.something", "published", {"admin"}),
]


@pytest.mark.parametrize(("action", "status", "allowed"), TABLE)
def test_role_table(app: Flask, users: Users, action: str, status: str, allowed: set[str]) -> None:
    ids = _setup_roles(app, users, status, "instance")
    got = {role for role in ROLES if _can(app, ids[role], action, ids["course"])}
    assert got == allowed


def test_private_course_is_seen_by_staff_and_enrolled_only(app: Flask, users: Users) -> None:
    ids = _setup_roles(app, users, "published", "private")
    seen = {role for role in ROLES if _can(app, ids[role], "course.view", ids["course"])}
    assert seen == {"admin", "instructor", "ta", "learner", "pending"}
    assert not _can(app, ids["outsider"], "course.enrol", ids["course"])


def test_course_create_needs_the_creator_flag(app: Flask, users: Users) -> None:
    plain = users.create()
    creator = users.create(creator=True)
    with app.app_context():
        sess = db.session()
        assert not rbac.can(sess.get_one(User, plain.id), "course.create")
        assert rbac.can(sess.get_one(User, creator.id), "course.create")
        assert not rbac.can(None, "course.view")


def test_require_hides_what_cannot_be_seen(app: Flask, users: Users) -> None:
    ids = _setup_roles(app, users, "draft", "instance")
    with app.app_context():
        sess = db.session()
        course = sess.get_one(Course, ids["course"])
        outsider = sess.get_one(User, ids["outsider"])
        ta = sess.get_one(User, ids["ta"])
        with pytest.raises(NotFound):
            rbac.require(outsider, "course.edit", course)
        with pytest.raises(Forbidden):
            rbac.require(ta, "course.edit", course)
        with pytest.raises(Unauthorized):
            rbac.require(None, "course.view", course)
        rbac.require(ta, "progress.view_all", course)


# ---------------------------------------------------------------- through the API


def test_draft_course_is_invisible_to_learners_and_others(
    client: FlaskClient, users: Users
) -> None:
    owner = person(users, creator=True)
    outsider = person(users)
    draft = build_course(client, owner, publish=False, title="Secret draft")
    listed = ok(call(client, "GET", "/courses", outsider.headers))
    assert draft.id not in [c["id"] for c in listed["items"]]
    problem(call(client, "GET", f"/courses/{draft.id}", outsider.headers), 404)
    problem(call(client, "GET", f"/items/{draft.items[0]}", outsider.headers), 404)
    problem(call(client, "POST", f"/courses/{draft.id}/enrolment", outsider.headers), 404)
    # the owner sees it in both
    assert draft.id in [
        c["id"] for c in ok(call(client, "GET", "/courses", owner.headers))["items"]
    ]
    ok(call(client, "GET", f"/courses/{draft.id}", owner.headers))


def test_unpublished_course_disappears_for_its_learners(client: FlaskClient, users: Users) -> None:
    owner = person(users, creator=True)
    learner = person(users)
    course = build_course(client, owner)
    enrol(client, course, learner)
    ok(call(client, "POST", f"/courses/{course.id}/unpublish", owner.headers))
    problem(call(client, "GET", f"/courses/{course.id}", learner.headers), 404)
    listed = ok(call(client, "GET", "/courses", learner.headers))["items"]
    assert listed == []
    problem(call(client, "GET", f"/items/{course.items[0]}", learner.headers), 404)


def test_archived_course_is_read_only_for_its_learners(
    app: Flask, client: FlaskClient, users: Users
) -> None:
    owner = person(users, creator=True)
    learner = person(users)
    outsider = person(users)
    course = build_course(client, owner)
    enrol(client, course, learner)
    ok(call(client, "POST", f"/courses/{course.id}/archive", owner.headers))
    ok(call(client, "GET", f"/courses/{course.id}", learner.headers))
    assert ok(call(client, "GET", f"/items/{course.items[0]}", learner.headers))["content"]
    before = snapshot(app)
    body = problem(
        call(
            client,
            "PUT",
            f"/items/{course.items[0]}/progress",
            learner.headers,
            {"status": "completed"},
        ),
        409,
    )
    assert "archived" in body["detail"]
    problem(call(client, "GET", f"/courses/{course.id}", outsider.headers), 404)
    problem(call(client, "POST", f"/courses/{course.id}/enrolment", outsider.headers), 404)
    assert snapshot(app) == before


def test_instructor_of_one_course_cannot_touch_another(
    app: Flask, client: FlaskClient, users: Users
) -> None:
    alice = person(users, "alice@example.org", creator=True)
    bob = person(users, "bob@example.org", creator=True)
    x = build_course(client, alice, title="X")
    y_published = build_course(client, bob, title="Y")
    y_draft = build_course(client, bob, title="Y draft", publish=False)
    before = snapshot(app)
    h = alice.headers
    # published Y: Alice can see it, so she is told 403
    for method, path, body in [
        ("PATCH", f"/courses/{y_published.id}", {"title": "Mine"}),
        ("POST", f"/courses/{y_published.id}/archive", None),
        ("POST", f"/courses/{y_published.id}/unpublish", None),
        ("POST", f"/courses/{y_published.id}/modules", {"title": "Intruder"}),
        ("PUT", f"/courses/{y_published.id}/modules/order", {"ids": y_published.modules}),
        ("PATCH", f"/modules/{y_published.modules[0]}", {"title": "Renamed"}),
        ("DELETE", f"/modules/{y_published.modules[0]}", None),
        ("POST", f"/modules/{y_published.modules[0]}/items", {"type": "page", "title": "t"}),
        ("PATCH", f"/items/{y_published.items[0]}", {"title": "Renamed"}),
        ("DELETE", f"/items/{y_published.items[0]}", None),
        ("POST", f"/items/{y_published.items[0]}/move", {"module_id": x.modules[0]}),
        ("PUT", f"/courses/{y_published.id}/staff/{alice.id}", {"role": "instructor"}),
        ("DELETE", f"/courses/{y_published.id}/staff/{bob.id}", None),
        ("POST", f"/courses/{y_published.id}/invite-code", None),
        ("GET", f"/courses/{y_published.id}/progress", None),
        ("GET", f"/courses/{y_published.id}/events", None),
        ("GET", f"/courses/{y_published.id}/enrolments", None),
    ]:
        problem(call(client, method, path, h, body), 403)
    # draft Y: she may not know it exists
    for method, path, body in [
        ("GET", f"/courses/{y_draft.id}", None),
        ("PATCH", f"/courses/{y_draft.id}", {"title": "Mine"}),
        ("POST", f"/courses/{y_draft.id}/publish", None),
        ("PATCH", f"/modules/{y_draft.modules[0]}", {"title": "Renamed"}),
        ("PATCH", f"/items/{y_draft.items[0]}", {"title": "Renamed"}),
        ("GET", f"/items/{y_draft.items[0]}", None),
    ]:
        problem(call(client, method, path, h, body), 404)
    # moving her own item into Y's module is refused as an unknown target
    problem(
        call(client, "POST", f"/items/{x.items[0]}/move", h, {"module_id": y_published.modules[0]}),
        422,
    )
    assert snapshot(app) == before


def test_ta_views_progress_but_cannot_edit_structure(
    app: Flask, client: FlaskClient, users: Users
) -> None:
    owner = person(users, creator=True)
    ta = person(users)
    learner = person(users)
    course = build_course(client, owner)
    add_staff(client, course, owner, ta, "ta")
    enrol(client, course, learner)
    table = ok(call(client, "GET", f"/courses/{course.id}/progress", ta.headers))
    assert [r["user"]["id"] for r in table["items"]] == [learner.id]
    ok(call(client, "GET", f"/courses/{course.id}/events", ta.headers))
    ok(call(client, "GET", f"/courses/{course.id}/enrolments", ta.headers))
    staff_view = ok(call(client, "GET", f"/items/{course.items[0]}", ta.headers))
    assert staff_view["config"] is not None
    before = snapshot(app)
    for method, path, body in [
        ("PATCH", f"/courses/{course.id}", {"title": "TA edit"}),
        ("POST", f"/courses/{course.id}/modules", {"title": "TA module"}),
        ("PUT", f"/courses/{course.id}/modules/order", {"ids": course.modules}),
        ("PATCH", f"/modules/{course.modules[0]}", {"title": "x"}),
        ("DELETE", f"/modules/{course.modules[0]}", None),
        ("POST", f"/modules/{course.modules[0]}/items", {"type": "page", "title": "t"}),
        ("PUT", f"/modules/{course.modules[0]}/items/order", {"ids": course.items[::-1]}),
        ("PATCH", f"/items/{course.items[0]}", {"required": False}),
        ("DELETE", f"/items/{course.items[0]}", None),
        ("POST", f"/courses/{course.id}/archive", None),
        ("PUT", f"/courses/{course.id}/staff/{ta.id}", {"role": "instructor"}),
    ]:
        problem(call(client, method, path, ta.headers, body), 403)
    assert snapshot(app) == before


def test_learner_cannot_see_staff_views(app: Flask, client: FlaskClient, users: Users) -> None:
    owner = person(users, creator=True)
    learner = person(users)
    course = build_course(client, owner)
    enrol(client, course, learner)
    for path in ("/progress", "/events", "/enrolments"):
        problem(call(client, "GET", f"/courses/{course.id}{path}", learner.headers), 403)
    item = ok(call(client, "GET", f"/items/{course.items[0]}", learner.headers))
    assert item["config"] is None
    assert item["content"]["body"] == "<p>text 0.0</p>"


def test_admin_only_operator_endpoints(client: FlaskClient, users: Users) -> None:
    admin = person(users, admin=True)
    other = person(users, creator=True)
    problem(call(client, "GET", "/plugins", other.headers), 403)
    problem(call(client, "GET", "/admin/audit", other.headers), 403)
    problem(call(client, "GET", "/plugins", {}), 401)
    ok(call(client, "GET", "/plugins", admin.headers))
    ok(call(client, "GET", "/admin/audit", admin.headers))


def test_anonymous_requests_are_401(client: FlaskClient, users: Users) -> None:
    owner = person(users, creator=True)
    course = build_course(client, owner)
    problem(call(client, "GET", "/courses", {}), 401)
    problem(call(client, "GET", f"/courses/{course.id}", {}), 401)
    problem(call(client, "GET", f"/items/{course.items[0]}/progress", {}), 401)
    problem(call(client, "GET", "/me/courses", {}), 401)


@pytest.mark.parametrize(
    ("status", "visibility", "viewable"),
    [
        ("published", "federated", True),
        ("published", "instance", False),
        ("published", "private", False),
        ("draft", "federated", False),
        ("archived", "federated", False),
    ],
)
def test_anonymous_visitors_may_only_view_public_courses(
    app: Flask, status: str, visibility: str, viewable: bool
) -> None:
    course = Course(title="C", status=status, visibility=visibility, enrolment_mode="open")
    with app.app_context():
        assert rbac.can(None, "course.view", course) is viewable
        for action in sorted(rbac.ACTIONS - {"course.view"}):
            assert rbac.can(None, action, course) is False
        assert rbac.can(None, "course.view") is False


# ---------------------------------------------------------------- plugin votes


class Veto:
    """Denies one action to everyone (admins included)."""

    def __init__(self, action: str) -> None:
        self.action = action
        self.seen: list[tuple[str | None, str]] = []

    @hookimpl
    def permission_allowed(self, user: User | None, action: str, course: Any) -> bool | None:
        self.seen.append((user.public_id if user else None, action))
        return False if action == self.action else None


class Grant:
    """Allows one action to one user."""

    def __init__(self, action: str, user_id: int) -> None:
        self.action = action
        self.user_id = user_id

    @hookimpl
    def permission_allowed(self, user: User | None, action: str) -> bool | None:
        if user is not None and user.id == self.user_id and action == self.action:
            return True
        return None


class Broken:
    """A permission plugin that crashes."""

    @hookimpl
    def permission_allowed(self, action: str) -> bool | None:
        raise RuntimeError("boom")


def test_plugin_false_denies_even_admins(app: Flask, client: FlaskClient, users: Users) -> None:
    admin = person(users, admin=True)
    owner = person(users, creator=True)
    course = build_course(client, owner)
    host = app.extensions["trivium.plugins"]
    veto = Veto("course.edit")
    before = snapshot(app)
    host.register(veto, "test-veto")
    try:
        for who in (owner, admin):
            problem(
                call(client, "PATCH", f"/courses/{course.id}", who.headers, {"title": "No"}), 403
            )
        assert (owner.id, "course.edit") in veto.seen
        # other actions are untouched
        ok(call(client, "GET", f"/courses/{course.id}", owner.headers))
    finally:
        host.unregister("test-veto")
    assert snapshot(app) == before
    ok(call(client, "PATCH", f"/courses/{course.id}", owner.headers, {"title": "Yes"}))


def test_plugin_veto_hides_course_from_catalog(
    app: Flask, client: FlaskClient, users: Users
) -> None:
    owner = person(users, creator=True)
    learner = person(users)
    course = build_course(client, owner)
    host = app.extensions["trivium.plugins"]
    host.register(Veto("course.view"), "test-veto")
    try:
        assert ok(call(client, "GET", "/courses", learner.headers))["items"] == []
        problem(call(client, "GET", f"/courses/{course.id}", learner.headers), 404)
    finally:
        host.unregister("test-veto")
    assert [c["id"] for c in ok(call(client, "GET", "/courses", learner.headers))["items"]] == [
        course.id
    ]


def test_hook_permission_allowed(app: Flask, client: FlaskClient, users: Users) -> None:
    owner = person(users, creator=True)
    helper = person(users)
    course = build_course(client, owner)
    host = app.extensions["trivium.plugins"]
    host.register(Grant("course.edit", helper.user.id), "test-grant")
    try:
        body = ok(
            call(client, "PATCH", f"/courses/{course.id}", helper.headers, {"summary": "help"})
        )
        assert body["summary"] == "help"
        host.register(Veto("course.edit"), "test-veto")
        try:
            problem(
                call(client, "PATCH", f"/courses/{course.id}", helper.headers, {"summary": "x"}),
                403,
            )
        finally:
            host.unregister("test-veto")
    finally:
        host.unregister("test-grant")
    problem(call(client, "PATCH", f"/courses/{course.id}", helper.headers, {"summary": "y"}), 403)


def test_crashing_permission_plugin_abstains_and_is_recorded(
    app: Flask, client: FlaskClient, users: Users
) -> None:
    owner = person(users, creator=True)
    outsider = person(users)
    course = build_course(client, owner)
    host = app.extensions["trivium.plugins"]
    host.register(Broken(), "test-broken")
    try:
        ok(call(client, "PATCH", f"/courses/{course.id}", owner.headers, {"summary": "ok"}))
        problem(
            call(client, "PATCH", f"/courses/{course.id}", outsider.headers, {"summary": "x"}), 403
        )
    finally:
        host.unregister("test-broken")
    assert any(f.plugin == "test-broken" for f in host.failures)


def test_roles_are_not_cached_across_changes(app: Flask, users: Users) -> None:
    ids = _setup_roles(app, users, "published", "instance")
    with app.app_context():
        sess = db.session()
        course = sess.get_one(Course, ids["course"])
        outsider = sess.get_one(User, ids["outsider"])
        assert not rbac.can(outsider, "course.edit", course)
        sess.add(CourseRole(course_id=course.id, user_id=outsider.id, role="instructor"))
        sess.flush()
        rbac.forget(sess)
        assert rbac.can(outsider, "course.edit", course)
        role = sess.scalar(select(CourseRole).where(CourseRole.user_id == outsider.id))
        assert role is not None
