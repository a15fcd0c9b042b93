"""A course with a question bank, a quiz and people in every role, built through the API."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from core.db import get_db
from plugins.quiz.models import Attempt
from plugins.quiz.questions import dump_question
from tests.conftest import Users
from tests.course_helpers import Course
from tests.course_helpers import Person
from tests.course_helpers import add_staff
from tests.course_helpers import call
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.quiz.samples import ORDER
from tests.quiz.samples import SAMPLES


@dataclass
class World:
    """Everyone and everything a quiz API test needs."""

    app: Flask
    client: FlaskClient
    course: Course
    module: str
    instructor: Person
    ta: Person
    learner: Person
    other: Person
    outsider: Person
    questions: dict[str, str] = field(default_factory=dict)
    """Bank question ids by sample type name."""

    def add_question(self, data: dict[str, Any]) -> str:
        """Add a question to the bank; return its id."""
        body = ok(
            call(
                self.client,
                "POST",
                f"/courses/{self.course.id}/quiz/questions",
                self.instructor.headers,
                {"question": data},
            ),
            201,
        )
        return str(body["id"])

    def add_quiz(self, title: str = "Quiz", **config: Any) -> str:
        """Add a quiz item to the course's module; return its id."""
        body = ok(
            call(
                self.client,
                "POST",
                f"/modules/{self.module}/items",
                self.instructor.headers,
                {"type": "quiz", "title": title, "config": config},
            ),
            201,
        )
        return str(body["id"])

    def start(self, quiz: str, who: Person | None = None, status: int = 201) -> dict[str, Any]:
        """Start (or resume) an attempt."""
        who = who or self.learner
        result: dict[str, Any] = ok(
            call(self.client, "POST", f"/items/{quiz}/quiz/attempts", who.headers), status
        )
        return result

    def submit(
        self, attempt: str, answers: dict[str, Any] | None = None, who: Person | None = None
    ) -> dict[str, Any]:
        """Submit an attempt."""
        who = who or self.learner
        result: dict[str, Any] = ok(
            call(
                self.client,
                "POST",
                f"/quiz/attempts/{attempt}/submit",
                who.headers,
                {"answers": answers or {}},
            )
        )
        return result

    def expire(self, attempt: str, seconds: int = 3600) -> None:
        """Move an attempt's deadline into the past."""
        from datetime import UTC
        from datetime import datetime
        from datetime import timedelta

        past = datetime.now(UTC) - timedelta(seconds=seconds)
        with get_db(self.app).session() as sess:
            sess.execute(
                update(Attempt)
                .where(Attempt.public_id == attempt)
                .values(deadline=past, started_at=past - timedelta(seconds=60))
            )
            sess.commit()


def build_world(app: Flask, client: FlaskClient, users: Users) -> World:
    """A published course with one sample question of every type in its bank."""
    instructor = person(users, "prof@example.org", creator=True)
    ta = person(users, "ta@example.org")
    learner = person(users, "ann@example.org")
    other = person(users, "bob@example.org")
    outsider = person(users, "eve@example.org")
    course = Course(
        ok(call(client, "POST", "/courses", instructor.headers, {"title": "Quizzes"}), 201)["id"]
    )
    module = ok(
        call(client, "POST", f"/courses/{course.id}/modules", instructor.headers, {"title": "M"}),
        201,
    )["id"]
    world = World(app, client, course, module, instructor, ta, learner, other, outsider)
    for name, make in SAMPLES.items():
        world.questions[name] = world.add_question(dump_question(make()))
    ok(call(client, "POST", f"/courses/{course.id}/publish", instructor.headers))
    add_staff(client, course, instructor, ta, "ta")
    enrol(client, course, learner)
    enrol(client, course, other)
    return world


#: A fully correct response to each sample question (ids from tests/quiz/samples.py).
def right_answers(world: World) -> dict[str, Any]:
    """Right responses keyed by bank question id, for the auto-graded samples."""
    q = world.questions
    return {
        q["single_choice"]: "c-paris",
        q["multiple_response"]: ["m-2", "m-3"],
        q["true_false"]: True,
        q["numeric"]: "150 cm",
        q["short_answer"]: "No One",
        q["cloze"]: {"g-city": "g-paris", "g-country": "france", "g-pop": "2.0"},
        q["matching"]: {"p-ca": "a-ottawa", "p-it": "a-rome", "p-jp": "a-tokyo"},
        q["ordering"]: [f"o-{name}" for name in ORDER],
    }
