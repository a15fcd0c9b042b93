"""Content types validate item configs for the course the item belongs to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from core import create_app
from core import db
from core import hookimpl
from core.content import ContentType
from core.content import CourseRef
from core.content import ItemConfigInvalid
from core.models import Course as CourseRow
from tests.conftest import Users
from tests.conftest import base_config
from tests.conftest import reset_schema
from tests.conftest import snapshot
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.course_helpers import problem


class BadgeConfig(BaseModel):
    code: str


class Badge(ContentType):
    """A type whose config is only valid in one course: its code names the course."""

    name = "badge"
    label = "Badge"
    config_model = BadgeConfig
    seen: list[CourseRef] = []

    def validate_for_course(self, config: Any, course: CourseRef) -> dict[str, Any]:
        self.seen.append(course)
        clean = self.validate_config(config)
        if clean["code"] != course.id:
            raise ItemConfigInvalid("the code names another course", [{"loc": "code", "msg": "x"}])
        return clean


class BadgePlugin:
    @hookimpl
    def register_content_types(self) -> list[type[ContentType]]:
        return [Badge]


def test_core_validates_configs_for_the_items_course(tmp_path: Path) -> None:
    app = create_app(tmp_path, base_config(tmp_path), extra_plugins={"badges": BadgePlugin()})
    reset_schema(app)
    client = app.test_client()
    owner = person(Users(app), creator=True)
    course = build_course(client, owner, items=1)
    other = build_course(client, owner, items=1)
    with app.app_context():
        key = db.session().scalar(select(CourseRow.id).where(CourseRow.public_id == course.id))
    assert key is not None
    path = f"/modules/{course.modules[0]}/items"
    before = snapshot(app)
    refused = call(
        client,
        "POST",
        path,
        owner.headers,
        {"type": "badge", "title": "B", "config": {"code": other.id}},
    )
    problem(refused, 422)
    assert snapshot(app) == before
    assert Badge.seen[-1] == CourseRef(id=course.id, key=key)
    item = ok(
        call(
            client,
            "POST",
            path,
            owner.headers,
            {"type": "badge", "title": "B", "config": {"code": course.id}},
        ),
        201,
    )
    before = snapshot(app)
    problem(
        call(client, "PATCH", f"/items/{item['id']}", owner.headers, {"config": {"code": "x"}}), 422
    )
    assert snapshot(app) == before
    assert Badge.seen[-1] == CourseRef(id=course.id, key=key)
