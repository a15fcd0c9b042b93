"""The item editor contract: fields derived from a content type's config model, form parsing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from typing import Literal

import pytest
from flask import Flask
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from sqlalchemy import select

from core import create_app
from core import hookimpl
from core.builtin.page import Page
from core.content import ContentType
from core.content import ItemConfigInvalid
from core.db import get_db
from core.editor import EditorField
from core.editor import FormError
from core.editor import field_errors
from core.editor import fields_from_schema
from core.editor import parse_form
from core.models import Item
from tests.conftest import Users
from tests.conftest import base_config
from tests.conftest import reset_schema
from tests.conftest import snapshot
from tests.course_helpers import build_course
from tests.course_helpers import person
from tests.staff_pages import Browser
from tests.staff_pages import text


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Choice(BaseModel):
    text: str
    correct: bool = False


class WidgetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    caption: str = Field(title="Caption text", max_length=100, description="Shown under it.")
    notes: str = Field(default="", max_length=5000)
    width: int = Field(default=640, ge=1, le=4000)
    ratio: float = 1.5
    autoplay: bool = False
    colour: Colour = Colour.RED
    mode: Literal["a", "b"] = "a"
    start: int | None = None
    tags: list[str] = []
    choices: list[Choice] = []
    opens: datetime | None = None


class Widget(ContentType):
    name = "widget"
    label = "Widget"
    config_model = WidgetConfig


def by_name(fields: list[EditorField]) -> dict[str, EditorField]:
    return {f.name: f for f in fields}


def test_default_fields_follow_the_config_model() -> None:
    fields = by_name(Widget().editor_fields(None))
    assert list(fields) == [
        "caption",
        "notes",
        "width",
        "ratio",
        "autoplay",
        "colour",
        "mode",
        "start",
        "tags",
        "choices",
        "opens",
    ]
    caption = fields["caption"]
    assert (caption.kind, caption.label, caption.required) == ("text", "Caption text", True)
    assert caption.help == "Shown under it."
    assert caption.max_length == 100
    assert fields["notes"].kind == "textarea"
    assert fields["notes"].label == "Notes"
    assert fields["notes"].required is False
    width = fields["width"]
    assert (width.kind, width.minimum, width.maximum, width.default) == ("integer", 1, 4000, 640)
    assert fields["ratio"].kind == "number"
    assert fields["autoplay"].kind == "checkbox"
    assert fields["colour"].kind == "select"
    assert fields["colour"].choices == (("red", "red"), ("blue", "blue"))
    assert fields["mode"].choices == (("a", "a"), ("b", "b"))
    assert (fields["start"].kind, fields["start"].nullable) == ("integer", True)
    assert fields["tags"].kind == "json"
    assert fields["choices"].kind == "json"
    opens = fields["opens"]
    assert (opens.kind, opens.nullable) == ("text", True)
    assert "2026-09-01T09:00:00" in opens.help


def test_form_round_trip_through_validate_config() -> None:
    widget = Widget()
    form = {
        "caption": "Hello",
        "notes": "line one\r\nline two",
        "width": " 320 ",
        "ratio": "0.75",
        "autoplay": "on",
        "colour": "blue",
        "mode": "b",
        "start": "",
        "tags": '["x", "y"]',
        "choices": '[{"text": "A", "correct": true}]',
        "opens": "2026-09-01T09:00:00+00:00",
    }
    config = widget.validate_config(widget.config_from_form(form))
    assert config == {
        "caption": "Hello",
        "notes": "line one\nline two",
        "width": 320,
        "ratio": 0.75,
        "autoplay": True,
        "colour": "blue",
        "mode": "b",
        "start": None,
        "tags": ["x", "y"],
        "choices": [{"text": "A", "correct": True}],
        "opens": "2026-09-01T09:00:00Z",
    }
    # and the stored config is shown back in the same inputs
    shown = {f.name: f.display(config) for f in widget.editor_fields(config)}
    assert shown["width"] == "320"
    assert shown["autoplay"] is True
    assert shown["start"] == ""
    assert '"correct": true' in shown["choices"]


def test_untouched_inputs_fall_back_to_defaults() -> None:
    widget = Widget()
    config = widget.validate_config(widget.config_from_form({"caption": "x"}))
    assert config["width"] == 640
    assert config["autoplay"] is False
    assert config["tags"] == []
    shown = {f.name: f.display(None) for f in widget.editor_fields(None)}
    assert shown["width"] == "640"
    assert shown["colour"] == "red"
    assert shown["tags"] == "[]"


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"caption": "x", "width": "wide"}, "width"),
        ({"caption": "x", "ratio": "1,5"}, "ratio"),
        ({"caption": "x", "tags": "[oops"}, "tags"),
    ],
)
def test_unreadable_inputs_are_refused_by_field(form: dict[str, str], field: str) -> None:
    with pytest.raises(ItemConfigInvalid) as info:
        Widget().config_from_form(form)
    assert [e["loc"] for e in info.value.errors] == [field]


def test_model_errors_map_to_top_level_inputs() -> None:
    widget = Widget()
    config = widget.config_from_form(
        {"caption": "", "width": "0", "choices": '[{"correct": true}]', "colour": "green"}
    )
    with pytest.raises(ItemConfigInvalid) as info:
        widget.validate_config(config)
    grouped = field_errors(info.value.errors)
    assert set(grouped) == {"caption", "width", "choices", "colour"}
    assert grouped["choices"][0].startswith("0.text: ")
    assert field_errors([FormError("tags", "bad")]) == {"tags": ["bad"]}


def test_page_has_its_own_editor_and_sanitises_on_save() -> None:
    page = Page()
    fields = by_name(page.editor_fields(None))
    assert list(fields) == ["body", "estimated_minutes"]
    assert fields["body"].kind == "html"
    assert fields["body"].attrs == {"rows": 16}
    assert fields["estimated_minutes"].nullable is True
    config = page.validate_config(
        page.config_from_form(
            {"body": '<p onclick="x()">Hi<script>alert(1)</script></p>', "estimated_minutes": "5"}
        )
    )
    assert config == {"body": "<p>Hi</p>", "estimated_minutes": 5}
    with pytest.raises(ItemConfigInvalid) as info:
        page.validate_config(page.config_from_form({"body": "", "estimated_minutes": "-1"}))
    assert [e["loc"] for e in info.value.errors] == ["estimated_minutes"]


def test_a_type_without_settings_has_no_inputs() -> None:
    class Bare(ContentType):
        name = "bare"
        label = "Bare"

    assert Bare().editor_fields(None) == []
    assert Bare().validate_config(Bare().config_from_form({})) == {}


def test_schema_without_properties_or_refs() -> None:
    assert fields_from_schema({"type": "object"}) == []
    config, errors = parse_form([EditorField("n", "N", kind="integer", nullable=True)], {"n": " "})
    assert (config, errors) == ({"n": None}, [])


# ---------------------------------------------------------------- through the course builder


class WidgetPlugin:
    """A third-party plugin with two content types: one using the default form, one broken."""

    @hookimpl
    def register_content_types(self) -> list[type[ContentType]]:
        return [Widget, BrokenEditor]


class BrokenEditor(ContentType):
    name = "broken"
    label = "Broken editor"
    config_model = WidgetConfig

    def editor_fields(self, config: dict[str, Any] | None) -> list[EditorField]:
        raise RuntimeError("editor crashed")


@pytest.fixture
def widget_app(tmp_path: Path) -> Iterator[Flask]:
    application = create_app(
        tmp_path, base_config(tmp_path), extra_plugins={"widgets": WidgetPlugin()}
    )
    reset_schema(application)
    yield application
    get_db(application).dispose()


def test_a_third_party_type_gets_a_working_form(widget_app: Flask) -> None:
    owner = person(Users(widget_app), "owner@example.org", creator=True)
    course = build_course(widget_app.test_client(), owner, items=0, publish=False)
    web = Browser(widget_app, owner.user)
    module = course.modules[0]
    builder = text(web.get(f"/teach/courses/{course.id}/"))
    assert '<option value="widget">Widget</option>' in builder
    form = text(web.get(f"/teach/modules/{module}/items/new?type=widget"))
    assert 'name="config.caption"' in form and 'name="config.colour"' in form
    assert '<option value="blue">blue</option>' in form
    before = snapshot(widget_app)
    resp = web.post(
        f"/teach/modules/{module}/items/new",
        {"type": "widget", "title": "W", "config.caption": "", "config.tags": "[1,"},
    )
    assert resp.status_code == 422
    page = text(resp)
    assert 'id="f-config.tags-error"' in page and "Not valid JSON" in page
    assert snapshot(widget_app) == before
    resp = web.post(
        f"/teach/modules/{module}/items/new",
        {"type": "widget", "title": "W", "config.caption": "", "config.width": "9999"},
    )
    assert resp.status_code == 422
    page = text(resp)
    assert 'id="f-config.caption-error"' in page and 'id="f-config.width-error"' in page
    assert snapshot(widget_app) == before
    resp = web.post(
        f"/teach/modules/{module}/items/new",
        {
            "type": "widget",
            "title": "W",
            "config.caption": "Hello",
            "config.autoplay": "1",
            "config.colour": "blue",
            "config.choices": '[{"text": "A"}]',
        },
    )
    assert resp.status_code == 303
    with get_db(widget_app).session() as sess:
        item = sess.scalar(select(Item).where(Item.type == "widget"))
        assert item is not None
        assert item.config["caption"] == "Hello" and item.config["autoplay"] is True
        assert item.config["choices"] == [{"text": "A", "correct": False}]
        item_id = item.public_id
    edit = text(web.get(f"/teach/items/{item_id}/edit"))
    assert 'value="Hello"' in edit
    assert 'name="config.autoplay" type="checkbox" value="1" checked' in edit


def test_a_crashing_editor_falls_back_to_the_default_form(widget_app: Flask) -> None:
    owner = person(Users(widget_app), "owner@example.org", creator=True)
    course = build_course(widget_app.test_client(), owner, items=0, publish=False)
    web = Browser(widget_app, owner.user)
    resp = web.get(f"/teach/modules/{course.modules[0]}/items/new?type=broken")
    assert resp.status_code == 200
    assert 'name="config.caption"' in text(resp)
    host = widget_app.extensions["trivium.plugins"]
    assert any(
        f.plugin == "content-type:broken" and f.hook == "editor_fields" for f in host.failures
    )


def test_the_documented_editor_example_runs() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    section = docs.split("### The item editor", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/plugins.md", "exec"), namespace)  # noqa: S102 - our own docs
    video = namespace["Video"]()
    fields = video.editor_fields(None)
    assert [f.name for f in fields] == ["url", "captions", "autoplay"]
    assert video.config_from_form({"url": "https://v", "captions": "WEBVTT"}) == {
        "url": "https://v",
        "captions": "WEBVTT",
        "autoplay": False,
    }
