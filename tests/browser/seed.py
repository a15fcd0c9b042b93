"""Data for browser tests, written straight into the served instance's database."""

from __future__ import annotations

import itertools

from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from flask import Flask

from core import courses
from core.db import get_db
from core.models import User

PASSWORD = "correct horse battery staple"
_n = itertools.count(1)


def unique_email(prefix: str) -> str:
    """An address no other test of this session uses (the server lives for the session)."""
    return f"{prefix}{next(_n)}@example.org"


def make_user(app: Flask, email: str, *, creator: bool = False) -> None:
    """A user who can log in with :data:`PASSWORD`."""
    with app.app_context(), get_db(app).session() as sess:
        sess.add(
            User(
                email=email,
                display_name=email.split("@")[0].title(),
                password_hash=PasswordHasher.from_parameters(CHEAPEST).hash(PASSWORD),
                can_create_courses=creator,
            )
        )


def published_course(app: Flask, title: str, *, items: int = 2, **fields: str) -> str:
    """A published course of one module with ``items`` page items; returns its public id."""
    owner_email = unique_email("prof")
    make_user(app, owner_email, creator=True)
    with app.test_request_context(), get_db(app).session() as sess:
        owner = sess.query(User).filter_by(email=owner_email).one()
        course = courses.create_course(
            sess, owner, {"title": title, "summary": f"About {title}", **fields}
        )
        module = courses.add_module(sess, course, "Week 1")
        for n in range(items):
            courses.add_item(
                sess,
                course,
                module,
                item_type="page",
                title=f"Reading {n + 1}",
                config={"body": f"<p>Text of reading {n + 1}.</p>"},
            )
        courses.change_status(sess, owner, course, "publish")
        return course.public_id
