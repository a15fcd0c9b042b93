"""``trivium demo``: an instance with sample users, a course and some progress.

Running it again reuses the instance and adds nothing: the data is written in
one transaction, only when the demo administrator does not exist yet.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from argon2 import PasswordHasher
from argon2 import profiles
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import create_app
from core import schema
from core.config import Settings
from core.config import write_instance
from core.db import get_db
from core.db import utcnow
from core.models import Course
from core.models import CourseRole
from core.models import Enrolment
from core.models import Identity
from core.models import Item
from core.models import Module
from core.models import Progress
from core.models import User
from core.plugins import PluginHost

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("instances") / "demo"
#: Every demo account has this password; the instance is for trying Trivium out.
DEMO_PASSWORD = "demo-password-123"  # noqa: S105
ADMIN = "admin@demo.test"
INSTRUCTOR = "instructor@demo.test"
LEARNERS = ("ada@demo.test", "grace@demo.test", "alan@demo.test")
COURSE_TITLE = "Foundations of Open Education"

MODULES = [
    (
        "Getting started",
        [
            (
                "Welcome",
                "<h2>Welcome</h2><p>This course shows how a Trivium course is built: "
                "modules of items, each of one content type. These are <em>pages</em>.</p>",
            ),
            (
                "What is open education?",
                "<p>Open education removes barriers to learning: cost, place and time. "
                "Institutions share courses and recognise each other's credentials.</p>",
            ),
        ],
    ),
    (
        "Learning across institutions",
        [
            (
                "Federated catalogues",
                "<p>Instances that trust each other publish their catalogues to one "
                "another, so a learner finds courses from every peer in one place.</p>",
            ),
            (
                "Portable credentials",
                "<p>Completing a course earns an Open Badges 3.0 credential that any "
                "instance can verify with the issuer's public keys.</p>",
            ),
        ],
    ),
]

#: Items completed (by position in the course) and in progress, per learner.
PROGRESS = {
    LEARNERS[0]: ((0, 1, 2), (3,)),
    LEARNERS[1]: ((0,), (1,)),
    LEARNERS[2]: ((), ()),
}


@dataclass(frozen=True)
class DemoInstance:
    """The outcome of :func:`prepare`."""

    app: Flask
    path: Path
    url: str
    created: bool
    seeded: bool


def prepare(
    path: str | os.PathLike[str] = DEFAULT_PATH, *, bind: str = "127.0.0.1:8000"
) -> DemoInstance:
    """Create (if needed), migrate and fill the demo instance at ``path``."""
    root = Path(path)
    created = False
    if not (root / "instance.toml").exists():
        write_instance(root, name="Trivium Demo University", base_url=f"http://{bind}", bind=bind)
        created = True
    app = create_app(root)
    schema.upgrade(app)
    seeded = seed(app)
    settings: Settings = app.extensions["trivium.settings"]
    url = settings.instance.base_url
    log.info("demo=ready path=%s created=%s seeded=%s", root, created, seeded)
    return DemoInstance(app=app, path=root, url=url, created=created, seeded=seeded)


def logins() -> list[tuple[str, str]]:
    """``(role, email)`` of every demo account."""
    return [("admin", ADMIN), ("instructor", INSTRUCTOR)] + [("learner", e) for e in LEARNERS]


def seed(app: Flask) -> bool:
    """Add the demo users, course, enrolments and progress unless already there.

    :return: True if data was added.
    """
    settings: Settings = app.extensions["trivium.settings"]
    host: PluginHost = app.extensions["trivium.plugins"]
    page = host.content_type("page")
    with get_db(app).session() as sess:
        if sess.scalar(select(User.id).where(User.email == ADMIN)) is not None:
            return False
        hasher = password_hasher(settings.accounts.hash_profile)
        admin = _user(sess, hasher, ADMIN, "Demo Administrator", admin=True)
        instructor = _user(sess, hasher, INSTRUCTOR, "Ines Instructor", creator=True)
        learners = [_user(sess, hasher, e, e.split("@")[0].title()) for e in LEARNERS]
        sess.flush()

        now = utcnow()
        course = Course(
            title=COURSE_TITLE,
            summary="How courses, catalogues and credentials work in Trivium.",
            description="A short sample course created by `trivium demo`.",
            subject="Education",
            level="Introductory",
            status="published",
            visibility="instance",
            enrolment_mode="open",
            created_by_id=instructor.id,
            published_at=now,
        )
        sess.add(course)
        sess.flush()
        sess.add(CourseRole(course_id=course.id, user_id=instructor.id, role="instructor"))

        items: list[Item] = []
        for m_pos, (m_title, pages) in enumerate(MODULES):
            module = Module(course_id=course.id, title=m_title, position=m_pos)
            sess.add(module)
            sess.flush()
            for i_pos, (title, body) in enumerate(pages):
                config = page.validate_config({"body": body, "estimated_minutes": 5})
                item = Item(
                    module_id=module.id,
                    course_id=course.id,
                    type=page.name,
                    title=title,
                    config=config,
                    position=i_pos,
                )
                sess.add(item)
                items.append(item)
        sess.flush()

        for learner in learners:
            sess.add(Enrolment(course_id=course.id, user_id=learner.id, status="active"))
            done, started = PROGRESS[learner.email]
            for index in done:
                sess.add(_progress(learner, items[index], "completed", now))
            for index in started:
                sess.add(_progress(learner, items[index], "in_progress", now))
        log.info("demo=seeded admin_id=%s course=%s", admin.public_id, course.public_id)
    return True


def password_hasher(profile: str) -> PasswordHasher:
    """An argon2id hasher with the instance's ``accounts.hash_profile``."""
    params = profiles.CHEAPEST if profile == "cheapest" else profiles.RFC_9106_LOW_MEMORY
    return PasswordHasher.from_parameters(params)


def _user(
    sess: Session,
    hasher: PasswordHasher,
    email: str,
    name: str,
    *,
    admin: bool = False,
    creator: bool = False,
) -> User:
    user = User(
        email=email,
        display_name=name,
        password_hash=hasher.hash(DEMO_PASSWORD),
        is_admin=admin,
        can_create_courses=creator or admin,
    )
    user.identities.append(Identity(provider="local", subject=email))
    sess.add(user)
    return user


def _progress(user: User, item: Item, status: str, now: datetime) -> Progress:
    completed = status == "completed"
    return Progress(
        user_id=user.id,
        item_id=item.id,
        course_id=item.course_id,
        status=status,
        data={"scroll": 1.0 if completed else 0.4},
        completed_at=now if completed else None,
    )
