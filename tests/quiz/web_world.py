"""The quiz world of tests/quiz/world.py, with people who log in to the pages."""

from __future__ import annotations

import re
from html import unescape

from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from flask import Flask
from sqlalchemy import update

from core.db import get_db
from core.models import User
from tests.auth_helpers import PASSWORD
from tests.course_helpers import Person
from tests.web_helpers import Pages


def browse_as(app: Flask, who: Person) -> Pages:
    """A fresh browser session logged in as ``who`` (given a password first)."""
    with get_db(app).session() as sess:
        sess.execute(
            update(User)
            .where(User.id == who.user.id)
            .values(password_hash=PasswordHasher.from_parameters(CHEAPEST).hash(PASSWORD))
        )
        sess.commit()
    pages = Pages(app.test_client())
    resp = pages.post("/login", {"email": who.user.email, "password": PASSWORD})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    return pages


def attempt_id_of(location: str) -> str:
    """The attempt id in a redirect to an attempt page."""
    found = re.search(r"/quiz/attempts/([0-9a-f]+)", location)
    assert found, location
    return found.group(1)


def text(resp: object) -> str:
    """A response's body as text."""
    return str(resp.get_data(as_text=True))  # type: ignore[attr-defined]


def hidden_value(page: str, name: str) -> list[str]:
    """Values of the hidden inputs named ``name``, in page order."""
    pattern = rf'<input type="hidden" name="{re.escape(name)}" value="([^"]*)">'
    return [unescape(v) for v in re.findall(pattern, page)]
