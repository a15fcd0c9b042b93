"""Account pages over HTTP: every form's success and failure paths, and what they store."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.auth.accounts import sha256_hex
from core.db import get_db
from core.db import utcnow
from core.models import ApiToken
from core.models import Invitation
from core.models import User
from tests.auth_helpers import OTHER_PASSWORD
from tests.auth_helpers import PASSWORD
from tests.auth_helpers import Clock
from tests.auth_helpers import freeze_totp_clock
from tests.auth_helpers import outbox
from tests.conftest import Users
from tests.conftest import snapshot
from tests.web_helpers import Pages
from tests.web_helpers import field_errors
from tests.web_helpers import input_value


@pytest.fixture
def pages(client: FlaskClient) -> Pages:
    return Pages(client)


def _user(app: Flask, email: str) -> User | None:
    with get_db(app).session() as sess:
        found = sess.scalar(select(User).where(User.email == email))
        if found is not None:
            sess.expunge(found)
        return found


def _signup(pages: Pages, **overrides: Any) -> Any:
    data = {
        "display_name": "Ada Lovelace",
        "email": "ada@example.org",
        "password": PASSWORD,
        "password2": PASSWORD,
    }
    data.update(overrides)
    return pages.post("/signup", data)


def _login(pages: Pages, email: str, password: str = PASSWORD, **extra: Any) -> Any:
    return pages.post("/login", {"email": email, "password": password, **extra})


def _logged_in(pages: Pages) -> bool:
    return pages.get("/account").status_code == 200


# ------------------------------------------------------------------ sign up


def test_signup_creates_the_account_and_logs_in(app: Flask, pages: Pages) -> None:
    resp = _signup(pages, email="  Ada@Example.ORG ")
    assert resp.status_code == 302
    user = _user(app, "ada@example.org")
    assert user is not None and user.display_name == "Ada Lovelace"
    assert "Welcome, Ada Lovelace!" in pages.get("/").get_data(as_text=True)
    assert _logged_in(pages)


@pytest.mark.parametrize(
    "overrides,field,message",
    [
        ({"email": "not-an-address"}, "f-email", "Enter a valid e-mail address"),
        ({"display_name": "   "}, "f-display_name", "Enter a name"),
        ({"password": "short", "password2": "short"}, "f-password", "at least 10 characters"),
        ({"password2": "something else entirely"}, "f-password2", "do not match"),
        (
            {"password": "ada@example.org1", "password2": "ada@example.org1"},
            "f-password",
            "not allowed",
        ),
    ],
)
def test_signup_refusals_keep_input_inline_and_store_nothing(
    app: Flask, pages: Pages, overrides: dict[str, str], field: str, message: str
) -> None:
    before = snapshot(app)
    resp = _signup(pages, **overrides)
    assert resp.status_code == 422
    assert message in field_errors(resp)[field]
    if field != "f-email":
        assert input_value(resp, "f-email") == "ada@example.org"
    if field != "f-display_name":
        assert input_value(resp, "f-display_name") == "Ada Lovelace"
    assert input_value(resp, "f-password") is None  # passwords are never sent back
    assert PASSWORD not in resp.get_data(as_text=True)
    assert snapshot(app) == before
    assert not _logged_in(pages)


def test_signup_without_a_valid_csrf_token_is_refused(
    app: Flask, client: FlaskClient, pages: Pages
) -> None:
    before = snapshot(app)
    data = {"display_name": "A", "email": "a@example.org", "password": PASSWORD}
    for token in ("", "forged", pages.csrf() + "x"):
        resp = client.post(
            "/signup", data={**data, "csrf_token": token}, headers={"Accept": "text/html"}
        )
        assert resp.status_code == 400
        assert "This form has expired" in resp.get_data(as_text=True)
    assert snapshot(app) == before


def test_signup_with_a_taken_address_says_so_inline(app: Flask, pages: Pages, users: Users) -> None:
    users.create("ada@example.org")
    before = snapshot(app)
    resp = _signup(pages)
    assert resp.status_code == 409
    assert "already exists" in field_errors(resp)["f-email"]
    assert snapshot(app) == before


@pytest.fixture
def closed_config(config: dict[str, Any]) -> dict[str, Any]:
    config["accounts"]["registration"] = "closed"
    return config


@pytest.fixture
def invite_config(config: dict[str, Any]) -> dict[str, Any]:
    config["accounts"]["registration"] = "invite"
    return config


@pytest.mark.usefixtures("closed_config")
def test_closed_registration_refuses_the_form(app: Flask, pages: Pages) -> None:
    page = pages.get("/signup").get_data(as_text=True)
    assert "does not accept new registrations" in page
    assert 'id="f-email"' not in page
    before = snapshot(app)
    resp = _signup(pages)
    assert resp.status_code == 403
    assert snapshot(app) == before


@pytest.mark.usefixtures("invite_config")
def test_invite_only_registration_needs_a_valid_code(app: Flask, pages: Pages) -> None:
    with get_db(app).session() as sess:
        sess.add(
            Invitation(
                code_hash=sha256_hex("good-code"),
                email="ada@example.org",
                expires_at=utcnow().replace(year=utcnow().year + 1),
            )
        )
    assert 'value="good-code"' in pages.get("/signup?code=good-code").get_data(as_text=True)
    before = snapshot(app)
    for code, status in (("", 403), ("wrong-code", 403)):
        resp = _signup(pages, invite_code=code)
        assert resp.status_code == status
        assert "invitation" in field_errors(resp)["f-invite_code"].lower()
    resp = _signup(pages, invite_code="good-code", email="eve@example.org")
    assert resp.status_code == 403
    assert "another address" in field_errors(resp)["f-invite_code"]
    assert snapshot(app) == before
    assert _signup(pages, invite_code="good-code").status_code == 302
    with get_db(app).session() as sess:
        assert sess.scalars(select(Invitation.used_at)).one() is not None


# ------------------------------------------------------------------ log in / out


def test_login_and_logout(app: Flask, pages: Pages, users: Users) -> None:
    users.create("ada@example.org", password=PASSWORD)
    resp = _login(pages, "ADA@example.org")
    assert resp.status_code == 302
    assert _logged_in(pages)
    # logging out needs the form's token too
    assert pages.post("/logout", csrf="forged").status_code == 400
    assert _logged_in(pages)
    assert pages.post("/logout").status_code == 302
    assert not _logged_in(pages)


def test_wrong_password_keeps_the_address_and_is_throttled(
    app: Flask, pages: Pages, users: Users
) -> None:
    users.create("ada@example.org", password=PASSWORD)
    before = snapshot(app)
    for _ in range(5):
        resp = _login(pages, "ada@example.org", "wrong password")
        assert resp.status_code == 401
        assert "not correct" in resp.get_data(as_text=True)
        assert input_value(resp, "f-email") == "ada@example.org"
        assert input_value(resp, "f-password") is None
    resp = _login(pages, "ada@example.org")  # the right password, but locked for now
    assert resp.status_code == 429
    assert "Too many attempts" in resp.get_data(as_text=True)
    assert not _logged_in(pages)
    assert snapshot(app) == before


def test_login_with_missing_fields_says_which(pages: Pages) -> None:
    resp = pages.post("/login", {"email": "", "password": ""})
    assert resp.status_code == 422
    assert set(field_errors(resp)) == {"f-email", "f-password"}


@pytest.mark.parametrize(
    "target,expected",
    [
        ("/account", "/account"),
        ("https://evil.example/", "/dashboard"),
        ("//evil.example/", "/dashboard"),
        ("/\\evil.example", "/dashboard"),
    ],
)
def test_login_returns_only_to_pages_of_this_site(
    pages: Pages, users: Users, target: str, expected: str
) -> None:
    users.create("ada@example.org", password=PASSWORD)
    resp = pages.post(f"/login?next={target}", {"email": "ada@example.org", "password": PASSWORD})
    assert resp.status_code == 302
    assert resp.location == expected


def _totp_user(app: Flask, users: Users, clock: Clock) -> tuple[User, list[str]]:
    from core.auth import totp

    user = users.create("ada@example.org", password=PASSWORD)
    secret = totp.new_secret()
    with get_db(app).session() as sess:
        row = sess.get_one(User, user.id)
        row.totp_secret = secret
        row.totp_enabled = True
        codes = totp.replace_recovery_codes(sess, row)
    return user, [secret, *codes]


def test_login_with_totp_asks_for_the_code_next(
    app: Flask, pages: Pages, users: Users, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = freeze_totp_clock(monkeypatch)
    _, (secret, *_) = _totp_user(app, users, clock)
    resp = _login(pages, "ada@example.org")
    assert resp.status_code == 302 and resp.location.startswith("/login/code")
    assert not _logged_in(pages)  # the password alone is not a login
    before = snapshot(app)
    bad = pages.post("/login/code", {"code": "000000"})
    assert bad.status_code == 401
    assert "wrong, expired or already used" in field_errors(bad)["f-code"]
    assert snapshot(app) == before
    assert pages.post("/login/code", {"code": clock.code(secret)}).status_code == 302
    assert _logged_in(pages)


def test_login_with_a_recovery_code_spends_it(
    app: Flask, pages: Pages, users: Users, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = freeze_totp_clock(monkeypatch)
    _, (_, recovery, *_) = _totp_user(app, users, clock)
    _login(pages, "ada@example.org")
    resp = pages.post("/login/code?method=recovery", {"code": recovery})
    assert resp.status_code == 302
    assert _logged_in(pages)
    pages.post("/logout")
    _login(pages, "ada@example.org")
    again = pages.post("/login/code?method=recovery", {"code": recovery})
    assert again.status_code == 401
    assert not _logged_in(pages)


def test_code_step_without_a_password_step_goes_back_to_login(pages: Pages) -> None:
    resp = pages.post("/login/code", {"code": "123456"})
    assert resp.status_code == 302 and resp.location.startswith("/login")


# ------------------------------------------------------------------ password reset


def test_password_reset_by_mail(app: Flask, pages: Pages, users: Users) -> None:
    users.create("ada@example.org", password=PASSWORD)
    resp = pages.post("/forgot-password", {"email": "ada@example.org"})
    assert resp.status_code == 202
    unknown = pages.post("/forgot-password", {"email": "nobody@example.org"})

    def shown(page: Any) -> str:
        # the same page either way, apart from the (time-stamped) CSRF tokens
        return re.sub(r'(content|value)="[^"]*"', "", page.get_data(as_text=True))

    assert unknown.status_code == 202
    assert shown(unknown) == shown(resp)
    (mail,) = outbox(app)
    link = re.search(r"http://testserver(/reset-password\?token=\S+)", mail.body)
    assert link
    url = link.group(1)
    page = pages.get(url)
    assert page.status_code == 200 and 'id="f-new_password"' in page.get_data(as_text=True)

    before = snapshot(app)
    mismatch = pages.post(url, {"new_password": OTHER_PASSWORD, "new_password2": "x"})
    assert mismatch.status_code == 422
    assert "do not match" in field_errors(mismatch)["f-new_password2"]
    weak = pages.post(url, {"new_password": "short", "new_password2": "short"})
    assert weak.status_code == 422
    assert snapshot(app) == before

    done = pages.post(url, {"new_password": OTHER_PASSWORD, "new_password2": OTHER_PASSWORD})
    assert done.status_code == 302
    assert _login(pages, "ada@example.org", OTHER_PASSWORD).status_code == 302
    # the link worked once
    assert pages.get(url).status_code == 400


@pytest.mark.parametrize("token", ["", "garbage", "eyJ1IjoieCJ9.abc.def"])
def test_reset_page_with_a_bad_token_offers_a_new_link(
    app: Flask, pages: Pages, token: str
) -> None:
    before = snapshot(app)
    resp = pages.get(f"/reset-password?token={token}")
    assert resp.status_code == 400
    assert "Request a new" in resp.get_data(as_text=True)
    posted = pages.post("/reset-password", {"token": token, "new_password": OTHER_PASSWORD})
    assert posted.status_code == 400
    assert snapshot(app) == before


# ------------------------------------------------------------------ account page


def _logged_in_as(pages: Pages, users: Users, email: str = "ada@example.org") -> User:
    user = users.create(email, password=PASSWORD)
    assert _login(pages, email).status_code == 302
    return user


def test_account_page_needs_a_login(pages: Pages) -> None:
    resp = pages.get("/account")
    assert resp.status_code == 302
    assert resp.location == "/login?next=/account"


def test_profile_update_and_refusal(app: Flask, pages: Pages, users: Users) -> None:
    _logged_in_as(pages, users)
    before = snapshot(app)
    bad = pages.post("/account/profile", {"display_name": "bad\x07name"})
    assert bad.status_code == 422
    assert "Enter a name" in field_errors(bad)["f-display_name"]
    assert input_value(bad, "f-display_name") == "bad\x07name"
    assert snapshot(app) == before
    assert pages.post("/account/profile", {"display_name": "Countess"}).status_code == 302
    user = _user(app, "ada@example.org")
    assert user is not None and user.display_name == "Countess"


def test_password_change_checks_the_current_password(
    app: Flask, pages: Pages, users: Users
) -> None:
    _logged_in_as(pages, users)
    before = snapshot(app)
    wrong = pages.post(
        "/account/password",
        {
            "current_password": "nope",
            "new_password": OTHER_PASSWORD,
            "new_password2": OTHER_PASSWORD,
        },
    )
    assert wrong.status_code == 403
    assert "not correct" in field_errors(wrong)["f-current_password"]
    same = pages.post(
        "/account/password",
        {"current_password": PASSWORD, "new_password": PASSWORD, "new_password2": PASSWORD},
    )
    assert same.status_code == 422
    assert "differ" in field_errors(same)["f-new_password"]
    assert snapshot(app) == before
    ok = pages.post(
        "/account/password",
        {
            "current_password": PASSWORD,
            "new_password": OTHER_PASSWORD,
            "new_password2": OTHER_PASSWORD,
        },
    )
    assert ok.status_code == 302
    assert _logged_in(pages)  # this session continues


def test_totp_setup_confirm_and_disable_through_the_pages(
    app: Flask, pages: Pages, users: Users, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = freeze_totp_clock(monkeypatch)
    _logged_in_as(pages, users)
    assert pages.post("/account/totp/setup").status_code == 302
    page = pages.get("/account/totp/confirm").get_data(as_text=True)
    assert 'src="data:image/svg+xml' in page
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page)
    assert secret
    before = snapshot(app)
    bad = pages.post("/account/totp/confirm", {"code": "000000"})
    assert bad.status_code == 400
    assert "not accepted" in field_errors(bad)["f-code"]
    assert snapshot(app) == before
    done = pages.post("/account/totp/confirm", {"code": clock.code(secret.group(1))})
    assert done.status_code == 200
    codes = re.findall(r"<li><code>([^<]+)</code></li>", done.get_data(as_text=True))
    assert len(codes) >= 8
    user = _user(app, "ada@example.org")
    assert user is not None and user.totp_enabled

    clock.advance()
    before = snapshot(app)
    wrong = pages.post(
        "/account/totp/disable", {"password": "nope", "code": clock.code(secret.group(1))}
    )
    assert wrong.status_code == 403
    assert "not correct" in field_errors(wrong)["f-disable-password"]
    assert snapshot(app) == before
    off = pages.post("/account/totp/disable", {"password": PASSWORD, "code": codes[0]})
    assert off.status_code == 302
    user = _user(app, "ada@example.org")
    assert user is not None and not user.totp_enabled


def test_api_token_secret_is_shown_once_and_revoked(app: Flask, pages: Pages, users: Users) -> None:
    _logged_in_as(pages, users)
    before = snapshot(app)
    bad = pages.post("/account/tokens", {"name": "", "expires_in_days": "0"})
    assert bad.status_code == 422
    assert set(field_errors(bad)) == {"f-name", "f-expires_in_days"}
    assert snapshot(app) == before

    made = pages.post("/account/tokens", {"name": "grader", "expires_in_days": "30"})
    assert made.status_code == 201
    secret = re.search(r'<code class="secret">(trv_[^<]+)</code>', made.get_data(as_text=True))
    assert secret
    listed = pages.get("/account").get_data(as_text=True)
    assert "grader" in listed and secret.group(1) not in listed
    with get_db(app).session() as sess:
        token_id = sess.scalars(select(ApiToken.public_id)).one()
    assert pages.post(f"/account/tokens/{token_id}/revoke").status_code == 302
    with get_db(app).session() as sess:
        assert sess.scalars(select(ApiToken.revoked_at)).one() is not None


def test_another_users_token_cannot_be_revoked(
    app: Flask, client: FlaskClient, pages: Pages, users: Users
) -> None:
    owner = users.create("owner@example.org")
    users.headers(owner)  # creates a token of the owner
    _logged_in_as(pages, users)
    with get_db(app).session() as sess:
        token_id = sess.scalars(select(ApiToken.public_id)).one()
    before = snapshot(app)
    resp = pages.post(f"/account/tokens/{token_id}/revoke")
    assert resp.status_code == 404
    assert snapshot(app) == before


def test_logout_everywhere_ends_other_sessions(app: Flask, pages: Pages, users: Users) -> None:
    _logged_in_as(pages, users)
    other = Pages(app.test_client())
    assert _login(other, "ada@example.org").status_code == 302
    assert pages.post("/account/logout-all").status_code == 302
    assert not _logged_in(pages)
    assert not _logged_in(other)
