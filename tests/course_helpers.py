"""Helpers for the course, progress and event tests: build courses through the API."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from core.models import User
from tests.conftest import Users

API = "/api/v1"
Headers = dict[str, str]


def call(
    client: FlaskClient,
    method: str,
    path: str,
    headers: Headers,
    body: Any = None,
    **kwargs: Any,
) -> TestResponse:
    """Call the API; ``body`` is sent as JSON when given."""
    if body is not None:
        kwargs["json"] = body
    return client.open(API + path, method=method, headers=headers, **kwargs)


def ok(resp: TestResponse, status: int = 200) -> Any:
    """Assert the status and return the JSON body."""
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    return resp.get_json()


def problem(resp: TestResponse, status: int) -> dict[str, Any]:
    """Assert a problem+json response with ``status`` and return it."""
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    assert resp.mimetype == "application/problem+json"
    body: dict[str, Any] = resp.get_json()
    assert body["status"] == status
    assert "Traceback" not in resp.get_data(as_text=True)
    return body


@dataclass
class Course:
    """A course built for a test: ids of its modules and items."""

    id: str
    modules: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)


@dataclass
class Person:
    """A user with their API headers."""

    user: User
    headers: Headers

    @property
    def id(self) -> str:
        """The user's public id."""
        return self.user.public_id


def person(users: Users, email: str | None = None, **kwargs: Any) -> Person:
    """Create a user with a fresh API token."""
    user = users.create(email, **kwargs)
    return Person(user, users.headers(user))


def build_course(
    client: FlaskClient,
    owner: Person,
    *,
    modules: int = 1,
    items: int = 2,
    publish: bool = True,
    optional: int = 0,
    **fields: Any,
) -> Course:
    """Create a course with ``modules`` modules of ``items`` page items each.

    The first ``optional`` items of the first module are not required.
    """
    body = {"title": fields.pop("title", "Course"), **fields}
    course = Course(ok(call(client, "POST", "/courses", owner.headers, body), 201)["id"])
    for m in range(modules):
        mid = ok(
            call(
                client, "POST", f"/courses/{course.id}/modules", owner.headers, {"title": f"M{m}"}
            ),
            201,
        )["id"]
        course.modules.append(mid)
        for i in range(items):
            required = not (m == 0 and i < optional)
            item = ok(
                call(
                    client,
                    "POST",
                    f"/modules/{mid}/items",
                    owner.headers,
                    {
                        "type": "page",
                        "title": f"Page {m}.{i}",
                        "config": {"body": f"<p>text {m}.{i}</p>"},
                        "required": required,
                    },
                ),
                201,
            )
            course.items.append(item["id"])
    if publish:
        ok(call(client, "POST", f"/courses/{course.id}/publish", owner.headers))
    return course


def enrol(client: FlaskClient, course: Course, learner: Person, **body: Any) -> dict[str, Any]:
    """Enrol ``learner`` themselves and return the enrolment."""
    result: dict[str, Any] = ok(
        call(client, "POST", f"/courses/{course.id}/enrolment", learner.headers, body or None),
        201,
    )
    return result


def add_staff(client: FlaskClient, course: Course, owner: Person, who: Person, role: str) -> None:
    """Give ``who`` a staff role in ``course``."""
    resp = call(
        client, "PUT", f"/courses/{course.id}/staff/{who.id}", owner.headers, {"role": role}
    )
    assert resp.status_code in {200, 201}, resp.get_data(as_text=True)


def complete(client: FlaskClient, item_id: str, learner: Person) -> dict[str, Any]:
    """Mark an item completed for ``learner``."""
    result: dict[str, Any] = ok(
        call(client, "PUT", f"/items/{item_id}/progress", learner.headers, {"status": "completed"})
    )
    return result
