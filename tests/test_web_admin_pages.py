"""Operator pages: users and roles, invitations, plugins, settings, audit log."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.config import Settings
from core.db import get_db
from core.models import AuditLog
from core.models import Invitation
from core.models import RecoveryCode
from core.models import User
from core.operator import MASK
from core.operator import masked_settings
from tests.conftest import Users
from tests.conftest import snapshot
from tests.course_helpers import Person
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import person
from tests.staff_pages import Browser
from tests.staff_pages import field_value
from tests.staff_pages import text

PAGES = [
    "/admin/",
    "/admin/users",
    "/admin/users/{user}",
    "/admin/invitations",
    "/admin/plugins",
    "/admin/settings",
    "/admin/audit",
]


@pytest.fixture
def admin(users: Users) -> Person:
    return person(users, "root@example.org", admin=True)


@pytest.fixture
def web(app: Flask, admin: Person) -> Browser:
    return Browser(app, admin.user)


@pytest.fixture
def bob(users: Users) -> Person:
    return person(users, "bob@example.org")


def account(app: Flask, who: Person) -> User:
    with get_db(app).session() as sess:
        row = sess.get_one(User, who.user.id)
        sess.expunge(row)
        return row


def audit_actions(app: Flask) -> list[str]:
    with get_db(app).session() as sess:
        return list(sess.scalars(select(AuditLog.action).order_by(AuditLog.id)))


# ---------------------------------------------------------------- access


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_for_site_admins(
    app: Flask, web: Browser, bob: Person, users: Users, path: str
) -> None:
    url = path.format(user=bob.id)
    assert web.get(url).status_code == 200
    teacher = person(users, "teacher@example.org", creator=True)
    for who in (bob, teacher):
        resp = Browser(app, who.user).get(url)
        assert resp.status_code == 403
        assert "bob@example.org" not in text(resp)
    anonymous = Browser(app, None).get(url)
    assert anonymous.status_code in {302, 401}


def test_non_admins_change_nothing(app: Flask, bob: Person, admin: Person) -> None:
    web = Browser(app, bob.user)
    before = snapshot(app)
    for path, data in [
        (f"/admin/users/{bob.id}/admin", {"value": "1"}),
        (f"/admin/users/{bob.id}/creator", {"value": "1"}),
        (f"/admin/users/{admin.id}/deactivate", {}),
        ("/admin/invitations", {"email": "", "days": "7"}),
    ]:
        assert web.post(path, data).status_code == 403, path
    assert snapshot(app) == before


def test_admin_forms_need_the_csrf_token(app: Flask, web: Browser, bob: Person) -> None:
    before = snapshot(app)
    assert web.post(f"/admin/users/{bob.id}/deactivate", csrf=False).status_code == 400
    assert web.post("/admin/invitations", {"days": "7"}, csrf=False).status_code == 400
    assert snapshot(app) == before


# ---------------------------------------------------------------- users


def test_search_users(app: Flask, web: Browser, bob: Person, users: Users) -> None:
    person(users, "carol@example.org", creator=True)
    page = text(web.get("/admin/users?q=BOB"))
    assert "bob@example.org" in page and "carol@example.org" not in page
    page = text(web.get("/admin/users?state=creator"))
    assert "carol@example.org" in page and "bob@example.org" not in page
    assert field_value(text(web.get("/admin/users?q=car")), "q") == "car"
    assert "No account matches" in text(web.get("/admin/users?q=%25_nobody"))
    assert web.get("/admin/users?cursor=forged").status_code == 422


def test_user_pages_page_through(app: Flask, web: Browser, users: Users) -> None:
    for n in range(3):
        person(users, f"p{n}@example.org")
    import core.web.admin as admin_pages

    old = admin_pages.PAGE_SIZE
    admin_pages.PAGE_SIZE = 2
    try:
        first = text(web.get("/admin/users"))
        assert "p2@example.org" in first and "p1@example.org" in first
        assert "p0@example.org" not in first
        cursor = re.search(r"cursor=([^\"&]+)", first)
        assert cursor is not None
        second = text(web.get(f"/admin/users?cursor={cursor.group(1)}"))
        assert "p0@example.org" in second and "p2@example.org" not in second
    finally:
        admin_pages.PAGE_SIZE = old


def test_unknown_user_is_404(web: Browser) -> None:
    assert web.get("/admin/users/" + "f" * 32).status_code == 404
    assert web.get("/admin/users/not%20an%20id").status_code == 404
    assert web.post("/admin/users/" + "f" * 32 + "/deactivate").status_code == 404


def test_grant_and_remove_roles(app: Flask, web: Browser, bob: Person) -> None:
    assert web.post(f"/admin/users/{bob.id}/admin", {"value": "1"}).status_code == 303
    assert account(app, bob).is_admin is True
    assert web.post(f"/admin/users/{bob.id}/creator", {"value": "1"}).status_code == 303
    assert account(app, bob).can_create_courses is True
    assert web.post(f"/admin/users/{bob.id}/admin", {"value": "0"}).status_code == 303
    assert web.post(f"/admin/users/{bob.id}/creator", {"value": "0"}).status_code == 303
    found = account(app, bob)
    assert (found.is_admin, found.can_create_courses) == (False, False)
    assert audit_actions(app)[-4:] == [
        "admin.user_admin",
        "admin.user_creator",
        "admin.user_admin",
        "admin.user_creator",
    ]


def test_an_admin_cannot_demote_or_deactivate_themselves(
    app: Flask, web: Browser, admin: Person
) -> None:
    before = snapshot(app)
    assert web.post(f"/admin/users/{admin.id}/admin", {"value": "0"}).status_code == 303
    assert web.post(f"/admin/users/{admin.id}/deactivate").status_code == 303
    page = text(web.get(f"/admin/users/{admin.id}"))
    assert "cannot" in page
    assert snapshot(app) == before
    assert account(app, admin).is_active and account(app, admin).is_admin


def test_deactivation_ends_sessions_and_tokens(
    app: Flask, client: FlaskClient, web: Browser, bob: Person
) -> None:
    bobs_browser = Browser(app, bob.user)
    assert bobs_browser.get("/api/v1/me").status_code == 200
    assert call(client, "GET", "/me", bob.headers).status_code == 200
    assert web.post(f"/admin/users/{bob.id}/deactivate").status_code == 303
    found = account(app, bob)
    assert found.is_active is False
    assert found.session_version == bob.user.session_version + 1
    assert bobs_browser.get("/api/v1/me").status_code == 401
    assert call(client, "GET", "/me", bob.headers).status_code == 401
    assert audit_actions(app)[-1] == "admin.user_deactivate"
    # deactivating twice is refused with a message, nothing changes
    before = snapshot(app)
    assert web.post(f"/admin/users/{bob.id}/deactivate").status_code == 303
    assert "already deactivated" in text(web.get(f"/admin/users/{bob.id}"))
    assert snapshot(app) == before
    # reactivation lets them log in again, but the old session stays ended
    assert web.post(f"/admin/users/{bob.id}/reactivate").status_code == 303
    assert account(app, bob).is_active is True
    assert bobs_browser.get("/api/v1/me").status_code == 401
    assert Browser(app, bob.user).get("/api/v1/me").status_code == 200


def test_an_admin_turns_off_a_lost_second_factor(
    app: Flask, web: Browser, admin: Person, bob: Person
) -> None:
    with get_db(app).session() as sess:
        user = sess.get(User, bob.user.id)
        assert user is not None
        user.totp_enabled = True
        user.totp_secret = "JBSWY3DPEHPK3PXP"
        sess.add(RecoveryCode(user_id=user.id, code_hash="0" * 64))
    bobs_browser = Browser(app, account(app, bob))
    assert bobs_browser.get("/api/v1/me").status_code == 200
    assert "Turn second factor off" in text(web.get(f"/admin/users/{bob.id}"))
    # not offered, and refused, on the admin's own account
    assert "Turn second factor off" not in text(web.get(f"/admin/users/{admin.id}"))
    before = snapshot(app)
    assert web.post(f"/admin/users/{admin.id}/second-factor/reset").status_code == 303
    assert snapshot(app) == before

    resp = web.post(f"/admin/users/{bob.id}/second-factor/reset")

    assert resp.status_code == 303
    found = account(app, bob)
    assert (found.totp_enabled, found.totp_secret) == (False, None)
    assert bobs_browser.get("/api/v1/me").status_code == 401  # logged out everywhere
    with get_db(app).session() as sess:
        assert sess.scalars(select(RecoveryCode)).all() == []
    assert audit_actions(app)[-1] == "admin.user_totp_reset"
    page = text(web.get(f"/admin/users/{bob.id}"))
    assert "Two-factor authentication is off" in page
    assert "Turn second factor off" not in page
    # a second reset changes nothing
    before = snapshot(app)
    assert web.post(f"/admin/users/{bob.id}/second-factor/reset").status_code == 303
    assert "has no second factor" in text(web.get(f"/admin/users/{bob.id}"))
    assert snapshot(app) == before


def test_a_learner_cannot_reset_a_second_factor(app: Flask, bob: Person, users: Users) -> None:
    other = person(users, "eve@example.org")
    with get_db(app).session() as sess:
        target = sess.get(User, other.user.id)
        assert target is not None
        target.totp_enabled, target.totp_secret = True, "JBSWY3DPEHPK3PXP"
    before = snapshot(app)
    resp = Browser(app, bob.user).post(f"/admin/users/{other.id}/second-factor/reset")
    assert resp.status_code == 403
    assert snapshot(app) == before


def test_user_page_lists_teaching_and_actions(
    app: Flask, client: FlaskClient, web: Browser, users: Users
) -> None:
    teacher = person(users, "teacher@example.org", creator=True)
    build_course(client, teacher, title="Optics")
    page = text(web.get(f"/admin/users/{teacher.id}"))
    assert "Optics" in page and "course.create" in page


# ---------------------------------------------------------------- invitations


def test_create_invitation_shows_the_code_once(app: Flask, web: Browser) -> None:
    resp = web.post("/admin/invitations", {"email": " New@Example.org ", "days": "3"})
    assert resp.status_code == 200
    page = text(resp)
    match = re.search(r'<code class="code-once">([^<]+)</code>', page)
    assert match is not None
    code = match.group(1)
    with get_db(app).session() as sess:
        row = sess.scalar(select(Invitation))
        assert row is not None
        assert row.email == "new@example.org"
        assert row.code_hash == hashlib.sha256(code.encode()).hexdigest()
    listing = text(web.get("/admin/invitations"))
    assert code not in listing and "new@example.org" in listing and "open" in listing
    assert audit_actions(app)[-1] == "auth.invitation_created"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"email": "not an address", "days": "7"}, "email"),
        ({"email": "", "days": "0"}, "days"),
        ({"email": "", "days": "many"}, "days"),
        ({"email": "", "days": "366"}, "days"),
    ],
)
def test_invalid_invitations_keep_input(
    app: Flask, web: Browser, data: dict[str, str], field: str
) -> None:
    before = snapshot(app)
    resp = web.post("/admin/invitations", data)
    assert resp.status_code == 422
    page = text(resp)
    assert f'id="f-{field}-error"' in page
    assert field_value(page, field) == data[field]
    assert snapshot(app) == before


# ---------------------------------------------------------------- plugins, settings, audit


def test_plugins_page_lists_plugins_hooks_and_failures(app: Flask, web: Browser) -> None:
    host = app.extensions["trivium.plugins"]
    host.record_failure("quiz", "track_event", RuntimeError("boom in quiz"))
    page = text(web.get("/admin/plugins"))
    assert "quiz" in page and "register_content_types" in page
    assert "boom in quiz" in page
    assert "<code>page</code>" in page


def test_settings_are_shown_with_secrets_masked(app: Flask, web: Browser) -> None:
    settings: Settings = app.extensions["trivium.settings"]
    page = text(web.get("/admin/settings"))
    assert settings.instance.secret_key not in page
    assert "secret_key" in page and MASK in page
    assert "read-only" in page
    assert "<form" not in page.split("<main", 1)[1].split("</main>", 1)[0]


def test_masking_rules() -> None:
    settings = Settings.model_validate(
        {
            "instance": {"secret_key": "s3cret"},
            "database": {"url": "postgresql://app:pw123@db:5432/lms?sslmode=require"},
            "cache": {"url": "redis://:redispw@cache:6379/0"},
            "accounts": {"token_cache_seconds": 5},
            "plugins": {"sso": {"client_secret": "abc", "issuer": "https://idp", "api_token": ""}},
        }
    )
    masked: dict[str, Any] = masked_settings(settings)
    assert masked["instance"]["secret_key"] == MASK
    assert masked["database"]["url"] == f"postgresql://app:{MASK}@db:5432/lms?sslmode=require"
    assert masked["cache"]["url"] == f"redis://:{MASK}@cache:6379/0"
    assert masked["accounts"]["token_cache_seconds"] == 5
    assert masked["plugins"]["sso"] == {
        "client_secret": MASK,
        "issuer": "https://idp",
        "api_token": "",
    }
    assert "s3cret" not in repr(masked) and "pw123" not in repr(masked)


def test_audit_log_filters_and_pages(
    app: Flask, client: FlaskClient, web: Browser, users: Users, bob: Person
) -> None:
    teacher = person(users, "teacher@example.org", creator=True)
    build_course(client, teacher, title="A")
    web.post(f"/admin/users/{bob.id}/creator", {"value": "1"})
    page = text(web.get("/admin/audit"))
    assert "course.create" in page and "admin.user_creator" in page
    page = text(web.get("/admin/audit?action=course.create"))
    assert "<code>course.create</code>" in page and "<code>admin.user_creator</code>" not in page
    page = text(web.get("/admin/audit?actor=TEACHER@example.org"))
    assert "<code>course.publish</code>" in page and "<code>admin.user_creator</code>" not in page
    page = text(web.get(f"/admin/audit?actor={teacher.id}"))
    assert "<code>course.publish</code>" in page
    assert "No entries match" in text(web.get("/admin/audit?action=nothing.like.this"))
    import core.web.admin as admin_pages

    old = admin_pages.PAGE_SIZE
    admin_pages.PAGE_SIZE = 1
    try:
        first = text(web.get("/admin/audit"))
        cursor = re.search(r"cursor=([^\"&]+)", first)
        assert cursor is not None
        second = text(web.get(f"/admin/audit?cursor={cursor.group(1)}"))
        assert "<code>admin.user_creator</code>" in first
        assert "<code>admin.user_creator</code>" not in second
    finally:
        admin_pages.PAGE_SIZE = old
    assert web.get("/admin/audit?cursor=!!").status_code == 422
