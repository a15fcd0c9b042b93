"""Account erasure through the pages: "Erase my account" and the administration's erasure.

Each refusal is checked against every stored row (``snapshot``): a refused
erasure must leave the account, its identities, tokens and enrolments as
they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core import hookimpl
from core.auth import totp
from core.db import get_db
from core.models import ApiToken
from core.models import AuditLog
from core.models import CourseRole
from core.models import Enrolment
from core.models import Identity
from core.models import User
from core.plugins import PluginHost
from tests.auth_helpers import PASSWORD
from tests.auth_helpers import freeze_totp_clock
from tests.conftest import Users
from tests.conftest import snapshot
from tests.course_helpers import Person
from tests.course_helpers import add_staff
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import enrol
from tests.course_helpers import person
from tests.staff_pages import Browser
from tests.staff_pages import text
from tests.web_helpers import Pages
from tests.web_helpers import field_errors

ERASED = "erased.invalid"


def account(app: Flask, user: User) -> User:
    """The stored row of ``user``, as it is now."""
    with get_db(app).session() as sess:
        row = sess.get_one(User, user.id)
        sess.expunge(row)
        return row


def count(app: Flask, model: Any, user: User) -> int:
    """How many rows of ``model`` belong to ``user``."""
    with get_db(app).session() as sess:
        return len(sess.scalars(select(model).where(model.user_id == user.id)).all())


def enrolment_states(app: Flask, user: User) -> list[str]:
    with get_db(app).session() as sess:
        return list(sess.scalars(select(Enrolment.status).where(Enrolment.user_id == user.id)))


def audit_actions(app: Flask) -> list[str]:
    with get_db(app).session() as sess:
        return list(sess.scalars(select(AuditLog.action).order_by(AuditLog.id)))


def logged_in(web: Browser) -> bool:
    return web.get("/account").status_code == 200


def can_log_in(app: Flask, email: str) -> bool:
    resp = Pages(app.test_client()).post("/login", {"email": email, "password": PASSWORD})
    return resp.status_code == 302


def assert_erased(app: Flask, user: User) -> User:
    row = account(app, user)
    assert row.erased_at is not None
    assert row.email == f"erased-{row.public_id}@{ERASED}"
    assert row.display_name == "Erased user"
    assert (row.password_hash, row.totp_secret, row.is_active) == (None, None, False)
    for model in (Identity, ApiToken, CourseRole):
        assert count(app, model, user) == 0, model
    return row


@pytest.fixture
def learner(app: Flask, client: FlaskClient, users: Users) -> Person:
    """Ada, who can log in with a password, has a login identity, an API token and an
    enrolment in a course someone else teaches."""
    ada = person(users, "ada@example.org", password=PASSWORD)
    with get_db(app).session() as sess:
        sess.add(Identity(user_id=ada.user.id, provider="oidc", subject="ada-at-idp"))
    teacher = person(users, "teacher@example.org", creator=True)
    enrol(client, build_course(client, teacher, title="Optics"), ada)
    return ada


@pytest.fixture
def host(app: Flask) -> PluginHost:
    found: PluginHost = app.extensions["trivium.plugins"]
    return found


class Failing:
    @hookimpl
    def erase_user_data(self, user: User) -> None:
        raise RuntimeError("the bookmarks table is on fire")


@pytest.fixture
def failing_plugin(host: PluginHost) -> Iterator[None]:
    host.register(Failing(), "bookmarks")
    try:
        yield
    finally:
        host.unregister("bookmarks")


# ---------------------------------------------------------------- the account page


def test_account_page_explains_what_goes_and_stays(app: Flask, learner: Person) -> None:
    page = text(Browser(app, learner.user).get("/account"))
    assert "Erase my account" in page
    assert "your API tokens" in page and "your staff roles" in page
    assert "quiz attempts and grades" in page and "no longer names anyone" in page
    assert 'href="/account/export"' in page
    assert 'action="/account/erase"' in page
    assert 'id="f-erase-password"' in page and 'id="f-erase-confirm"' in page
    assert 'id="f-erase-code"' not in page  # no second factor, no code


def test_a_learner_erases_their_account(app: Flask, client: FlaskClient, learner: Person) -> None:
    web = Browser(app, learner.user)
    assert call(client, "GET", "/me", learner.headers).status_code == 200

    resp = web.post("/account/erase", {"password": PASSWORD, "confirm": "1"})

    assert resp.status_code == 302 and resp.location == "/"
    assert "Your account was erased." in text(web.get("/"))
    assert not logged_in(web)
    assert_erased(app, learner.user)
    assert enrolment_states(app, learner.user) == ["withdrawn"]
    assert audit_actions(app)[-1] == "account.erase"
    assert call(client, "GET", "/me", learner.headers).status_code == 401
    assert not can_log_in(app, "ada@example.org")


@pytest.mark.parametrize("kind", ["app", "recovery"])
def test_with_a_second_factor_the_code_is_needed(
    app: Flask, learner: Person, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    clock = freeze_totp_clock(monkeypatch)
    secret = totp.new_secret()
    with get_db(app).session() as sess:
        row = sess.get_one(User, learner.user.id)
        row.totp_secret, row.totp_enabled = secret, True
        codes = totp.replace_recovery_codes(sess, row)
    web = Browser(app, account(app, learner.user))
    assert 'id="f-erase-code"' in text(web.get("/account"))

    before = snapshot(app)
    missing = web.post("/account/erase", {"password": PASSWORD, "confirm": "1"})
    assert missing.status_code == 422
    assert "Enter the code" in field_errors(missing)["f-erase-code"]
    wrong = web.post("/account/erase", {"password": PASSWORD, "code": "000000", "confirm": "1"})
    assert wrong.status_code == 400
    assert "not accepted" in field_errors(wrong)["f-erase-code"]
    assert snapshot(app) == before
    assert logged_in(web)

    code = clock.code(secret) if kind == "app" else codes[0]
    done = web.post("/account/erase", {"password": PASSWORD, "code": code, "confirm": "1"})
    assert done.status_code == 302
    assert_erased(app, learner.user)
    assert not logged_in(web)


def test_a_wrong_password_changes_nothing(app: Flask, learner: Person) -> None:
    web = Browser(app, learner.user)
    before = snapshot(app)
    resp = web.post("/account/erase", {"password": "not my password", "confirm": "1"})
    assert resp.status_code == 403
    assert "not correct" in field_errors(resp)["f-erase-password"]
    empty = web.post("/account/erase", {"password": "", "confirm": "1"})
    assert empty.status_code == 422
    assert "Enter your password" in field_errors(empty)["f-erase-password"]
    assert PASSWORD not in text(resp)
    assert snapshot(app) == before
    assert logged_in(web)


def test_the_checkbox_is_needed(app: Flask, learner: Person) -> None:
    web = Browser(app, learner.user)
    before = snapshot(app)
    resp = web.post("/account/erase", {"password": PASSWORD})
    assert resp.status_code == 400
    assert "cannot be undone" in field_errors(resp)["f-erase-confirm"]
    assert snapshot(app) == before
    assert logged_in(web)


def test_the_form_needs_its_csrf_token(app: Flask, learner: Person) -> None:
    web = Browser(app, learner.user)
    before = snapshot(app)
    missing = web.post("/account/erase", {"password": PASSWORD, "confirm": "1"}, csrf=False)
    assert missing.status_code == 400
    forged = web.post(
        "/account/erase", {"password": PASSWORD, "confirm": "1", "csrf_token": "forged"}, csrf=False
    )
    assert forged.status_code == 400
    assert snapshot(app) == before
    assert logged_in(web)


@pytest.fixture
def admins_erase_config(config: dict[str, Any]) -> dict[str, Any]:
    config["accounts"]["self_erasure"] = False
    return config


@pytest.mark.usefixtures("admins_erase_config")
def test_when_only_administrators_erase_the_page_says_so(app: Flask, learner: Person) -> None:
    web = Browser(app, learner.user)
    page = text(web.get("/account"))
    assert "administrators erase accounts on request" in page
    assert 'action="/account/erase"' not in page
    before = snapshot(app)
    resp = web.post("/account/erase", {"password": PASSWORD, "confirm": "1"})
    assert resp.status_code == 403
    assert "only the administrators erase accounts" in text(resp)
    assert snapshot(app) == before
    assert logged_in(web)


def test_an_account_without_a_password_asks_the_administrators(app: Flask, users: Users) -> None:
    web = Browser(app, users.create("sso@example.org"))
    assert "no password to confirm" in text(web.get("/account"))
    before = snapshot(app)
    resp = web.post("/account/erase", {"password": "anything", "confirm": "1"})
    assert resp.status_code == 409
    assert snapshot(app) == before


def test_the_last_active_administrator_cannot_erase_themselves(app: Flask, users: Users) -> None:
    root = users.create("root@example.org", admin=True, password=PASSWORD)
    web = Browser(app, root)
    before = snapshot(app)
    resp = web.post("/account/erase", {"password": PASSWORD, "confirm": "1"})
    assert resp.status_code == 409
    assert "only active administrator" in text(resp)
    assert snapshot(app) == before
    assert logged_in(web)


@pytest.mark.usefixtures("failing_plugin")
def test_a_failing_plugin_stops_a_self_erasure(app: Flask, learner: Person) -> None:
    web = Browser(app, learner.user)
    before = snapshot(app)
    resp = web.post("/account/erase", {"password": PASSWORD, "confirm": "1"})
    assert resp.status_code == 500
    assert "nothing was changed" in text(resp)
    assert "on fire" not in text(resp)
    assert snapshot(app) == before
    assert logged_in(web)


# ---------------------------------------------------------------- the administration


@pytest.fixture
def admin(users: Users) -> Person:
    return person(users, "root@example.org", admin=True)


@pytest.fixture
def web(app: Flask, admin: Person) -> Browser:
    return Browser(app, admin.user)


def test_an_administrator_erases_an_account(
    app: Flask, client: FlaskClient, web: Browser, users: Users, learner: Person
) -> None:
    teacher = person(users, "grace@example.org", creator=True)
    build_course(client, teacher, title="Acoustics")  # Grace alone teaches it
    shared = build_course(client, teacher, title="Thermodynamics")
    add_staff(client, shared, teacher, learner, "instructor")  # Ada stays to teach it
    user_page = text(web.get(f"/admin/users/{teacher.id}"))
    assert f'href="/admin/users/{teacher.id}/erase"' in user_page

    confirm = text(web.get(f"/admin/users/{teacher.id}/erase"))
    assert "grace@example.org" in confirm and "What stays" in confirm
    unstaffed = confirm.split('id="unstaffed"')[1].split("</ul>")[0]
    assert "Acoustics" in unstaffed and "Thermodynamics" not in unstaffed
    assert 'id="f-erase-confirm"' in confirm

    resp = web.post(f"/admin/users/{teacher.id}/erase", {"confirm": "1"})

    assert resp.status_code == 303 and resp.location == f"/admin/users/{teacher.id}"
    assert_erased(app, teacher.user)
    assert call(client, "GET", "/me", teacher.headers).status_code == 401
    with get_db(app).session() as sess:
        entry = sess.scalars(select(AuditLog).order_by(AuditLog.id.desc())).first()
        assert entry is not None
        assert (entry.action, entry.detail) == ("account.erase", {"via": "web"})
    page = text(web.get(f"/admin/users/{teacher.id}"))
    assert "The account was erased." in page
    assert "no instructor now: Acoustics." in page
    assert "grace@example.org" not in page


def test_an_erased_accounts_page_says_so_and_offers_nothing(
    app: Flask, web: Browser, learner: Person
) -> None:
    assert web.post(f"/admin/users/{learner.id}/erase", {"confirm": "1"}).status_code == 303
    erased_at = account(app, learner.user).erased_at
    assert erased_at is not None
    page = text(web.get(f"/admin/users/{learner.id}"))
    assert "This account was erased on " + erased_at.strftime("%Y-%m-%d %H:%M") in page
    assert '<span class="badge">erased</span>' in page
    assert "<form" not in page.split("<main", 1)[1]  # no actions at all
    assert "Erase account…" not in page


def test_the_user_list_shows_and_filters_erased_accounts(
    app: Flask, web: Browser, users: Users, learner: Person
) -> None:
    carol = person(users, "carol@example.org")
    assert web.post(f"/admin/users/{carol.id}/deactivate").status_code == 303
    assert web.post(f"/admin/users/{learner.id}/erase", {"confirm": "1"}).status_code == 303
    erased_email = account(app, learner.user).email

    everyone = text(web.get("/admin/users"))
    assert '<option value="erased"' in everyone
    row = everyone.split(erased_email)[1].split("</tr>")[0]
    assert ">erased<" in row and "deactivated" not in row
    carols = everyone.split("carol@example.org")[1].split("</tr>")[0]
    assert ">deactivated<" in carols

    erased = text(web.get("/admin/users?state=erased"))
    assert erased_email in erased and "carol@example.org" not in erased
    inactive = text(web.get("/admin/users?state=inactive"))
    assert "carol@example.org" in inactive and erased_email not in inactive


def test_the_administration_needs_the_checkbox(app: Flask, web: Browser, learner: Person) -> None:
    before = snapshot(app)
    resp = web.post(f"/admin/users/{learner.id}/erase", {})
    assert resp.status_code == 400
    assert "cannot be undone" in field_errors(resp)["f-erase-confirm"]
    assert snapshot(app) == before


def test_the_administration_needs_the_csrf_token(app: Flask, web: Browser, learner: Person) -> None:
    before = snapshot(app)
    for data in ({"confirm": "1"}, {"confirm": "1", "csrf_token": "forged"}):
        resp = web.post(f"/admin/users/{learner.id}/erase", data, csrf=False)
        assert resp.status_code == 400
    assert snapshot(app) == before


def test_a_learner_cannot_erase_anyone(
    app: Flask, admin: Person, users: Users, learner: Person
) -> None:
    other = person(users, "eve@example.org")
    web = Browser(app, learner.user)
    before = snapshot(app)
    for target in (other, admin, learner):
        assert web.get(f"/admin/users/{target.id}/erase").status_code == 403
        resp = web.post(f"/admin/users/{target.id}/erase", {"confirm": "1"})
        assert resp.status_code == 403
    assert snapshot(app) == before


def test_an_administrator_is_sent_to_their_account_page(
    app: Flask, web: Browser, admin: Person, users: Users
) -> None:
    person(users, "second-root@example.org", admin=True)  # not the last admin
    own_page = text(web.get(f"/admin/users/{admin.id}"))
    assert 'href="/account"' in own_page
    assert f"/admin/users/{admin.id}/erase" not in own_page
    before = snapshot(app)
    shown = web.get(f"/admin/users/{admin.id}/erase")
    assert shown.status_code == 303 and shown.location == f"/admin/users/{admin.id}"
    posted = web.post(f"/admin/users/{admin.id}/erase", {"confirm": "1"})
    assert posted.status_code == 303
    assert "Erase it on your account page" in text(web.get(f"/admin/users/{admin.id}"))
    assert snapshot(app) == before


def test_erasing_an_erased_account_changes_nothing(
    app: Flask, web: Browser, learner: Person
) -> None:
    assert web.post(f"/admin/users/{learner.id}/erase", {"confirm": "1"}).status_code == 303
    before = snapshot(app)
    assert web.get(f"/admin/users/{learner.id}/erase").status_code == 303
    again = web.post(f"/admin/users/{learner.id}/erase", {"confirm": "1"})
    assert again.status_code == 303
    assert "already erased" in text(web.get(f"/admin/users/{learner.id}"))
    # the other actions are refused too
    for action, data in [
        ("deactivate", {}),
        ("reactivate", {}),
        ("admin", {"value": "1"}),
        ("creator", {"value": "1"}),
        ("second-factor/reset", {}),
    ]:
        resp = web.post(f"/admin/users/{learner.id}/{action}", data)
        assert resp.status_code == 303, action
        assert "this account is erased" in text(web.get(f"/admin/users/{learner.id}"))
    assert snapshot(app) == before


@pytest.mark.usefixtures("failing_plugin")
def test_a_failing_plugin_stops_an_administrators_erasure(
    app: Flask, web: Browser, learner: Person
) -> None:
    before = snapshot(app)
    resp = web.post(f"/admin/users/{learner.id}/erase", {"confirm": "1"})
    assert resp.status_code == 303
    page = text(web.get(f"/admin/users/{learner.id}"))
    assert "bookmarks could not erase its data, so nothing was erased" in page
    assert snapshot(app) == before
    assert account(app, learner.user).erased_at is None
