"""Course export, import and copy: the document, all-or-nothing import, RBAC, web and CLI."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from pydantic import BaseModel
from pydantic import ConfigDict
from sqlalchemy import select

from core import create_app
from core import db
from core import hookimpl
from core.cli import cli
from core.content import ContentType
from core.content import ImportContext
from core.course_transfer import MAX_MODULES
from core.course_transfer import CourseDataInvalid
from core.db import get_db
from core.models import AuditLog
from core.models import Course as CourseRow
from core.models import CourseRole
from core.models import Enrolment
from core.models import Item
from core.models import Module
from core.models import User
from core.plugins import PluginHost
from tests.conftest import Users
from tests.conftest import base_config
from tests.conftest import reset_schema
from tests.conftest import snapshot
from tests.course_helpers import Course
from tests.course_helpers import Person
from tests.course_helpers import add_staff
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import complete
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.course_helpers import problem
from tests.staff_pages import Browser

Doc = dict[str, Any]


@pytest.fixture
def host(app: Flask) -> PluginHost:
    found: PluginHost = app.extensions["trivium.plugins"]
    return found


@pytest.fixture
def prof(users: Users) -> Person:
    return person(users, "prof@example.org", creator=True)


@pytest.fixture
def course(client: FlaskClient, prof: Person) -> Course:
    return build_course(
        client,
        prof,
        modules=2,
        items=2,
        optional=1,
        title="Rhetoric",
        summary="Speaking well",
        description="<p>Long <b>text</b></p>",
        language="fr",
        subject="Arts",
        level="Beginner",
        visibility="private",
        enrolment_mode="invite",
    )


def export(client: FlaskClient, who: Person, course_id: str) -> Doc:
    resp = call(client, "GET", f"/courses/{course_id}/export", who.headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.headers["Content-Disposition"].startswith("attachment; filename=")
    assert resp.headers["Cache-Control"] == "no-store"
    doc: Doc = json.loads(resp.get_data())
    return doc


def outline(app: Flask, course_id: str) -> list[tuple[Any, ...]]:
    """Modules and items as comparable values (no ids)."""
    with get_db(app).session() as sess:
        course = sess.scalars(select(CourseRow).where(CourseRow.public_id == course_id)).one()
        rows = sess.execute(
            select(Module.position, Module.title, Item.position, Item.type, Item.title)
            .join(Item, Item.module_id == Module.id, isouter=True)
            .where(Module.course_id == course.id)
            .order_by(Module.position, Item.position)
        )
        out = [tuple(r) for r in rows]
        configs = list(
            sess.scalars(
                select(Item.config)
                .join(Module, Module.id == Item.module_id)
                .where(Item.course_id == course.id)
                .order_by(Module.position, Item.position)
            )
        )
        required = list(
            sess.scalars(
                select(Item.required)
                .join(Module, Module.id == Item.module_id)
                .where(Item.course_id == course.id)
                .order_by(Module.position, Item.position)
            )
        )
    return [*out, tuple(json.dumps(c, sort_keys=True) for c in configs), tuple(required)]


def audits(app: Flask, action: str) -> list[dict[str, Any]]:
    with get_db(app).session() as sess:
        return list(
            sess.scalars(
                select(AuditLog.detail).where(AuditLog.action == action).order_by(AuditLog.id)
            )
        )


def import_doc(client: FlaskClient, who: Person, doc: Any) -> Any:
    return call(client, "POST", "/courses/import", who.headers, doc)


# ---------------------------------------------------------------- the document and round trip


def test_export_is_the_course_without_learners_or_run(
    app: Flask, client: FlaskClient, users: Users, prof: Person, course: Course
) -> None:
    learner = person(users, "ann@example.org")
    ok(call(client, "POST", f"/courses/{course.id}/invite-code", prof.headers), 201)
    ok(call(client, "PATCH", f"/courses/{course.id}", prof.headers, {"enrolment_mode": "open"}))
    ok(call(client, "PATCH", f"/courses/{course.id}", prof.headers, {"visibility": "instance"}))
    enrol(client, course, learner)
    complete(client, course.items[1], learner)
    ok(call(client, "PATCH", f"/courses/{course.id}", prof.headers, {"enrolment_mode": "invite"}))

    doc = export(client, prof, course.id)

    assert doc["format"] == "trivium.course" and doc["format_version"] == 1
    assert doc["source"] == {
        "instance": "Test U",
        "base_url": "http://testserver",
        "course_id": course.id,
    }
    assert doc["course"] == {
        "title": "Rhetoric",
        "summary": "Speaking well",
        "description": "<p>Long <b>text</b></p>",
        "language": "fr",
        "subject": "Arts",
        "level": "Beginner",
        "visibility": "instance",
        "enrolment_mode": "invite",
    }
    assert [m["title"] for m in doc["modules"]] == ["M0", "M1"]
    first = doc["modules"][0]["items"][0]
    assert first == {
        "type": "page",
        "title": "Page 0.0",
        "required": False,
        "position": 0,
        "config": {"body": "<p>text 0.0</p>", "estimated_minutes": None},
    }
    assert doc["plugins"] == {}
    raw = json.dumps(doc)
    for secret in (learner.id, prof.id, "ann@example.org", "status", *course.items):
        assert secret not in raw  # no people, no ids, no run state
    assert audits(app, "course.export") == [{"via": "api"}]


def test_round_trip_gives_the_same_course_as_a_new_draft(
    app: Flask, client: FlaskClient, users: Users, prof: Person, course: Course
) -> None:
    doc = export(client, prof, course.id)
    other = person(users, "new@example.org", creator=True)

    made = ok(import_doc(client, other, doc), 201)

    assert made["id"] != course.id
    assert made["status"] == "draft" and made["my_role"] == "instructor"
    assert made["title"] == "Rhetoric" and made["description"] == "<p>Long <b>text</b></p>"
    assert outline(app, made["id"]) == outline(app, course.id)
    with get_db(app).session() as sess:
        new = sess.scalars(select(CourseRow).where(CourseRow.public_id == made["id"])).one()
        roles = list(
            sess.execute(
                select(CourseRole.user_id, CourseRole.role).where(CourseRole.course_id == new.id)
            )
        )
        assert roles == [(other.user.id, "instructor")]
        assert new.invite_code_hash is None and new.published_at is None
        assert sess.scalar(select(Enrolment.id).where(Enrolment.course_id == new.id)) is None
    (entry,) = audits(app, "course.import")
    assert entry["via"] == "api" and entry["source"]["course_id"] == course.id
    assert entry["items"] == 4 and entry["owner"] == other.id


def test_copy_makes_a_draft_copy(
    app: Flask, client: FlaskClient, prof: Person, course: Course
) -> None:
    made = ok(call(client, "POST", f"/courses/{course.id}/copy", prof.headers), 201)

    assert made["title"] == "Rhetoric (copy)" and made["status"] == "draft"
    assert outline(app, made["id"]) == outline(app, course.id)
    assert audits(app, "course.copy") == [{"copy": made["id"], "via": "api"}]
    # the source is unchanged and still published
    assert ok(call(client, "GET", f"/courses/{course.id}", prof.headers))["status"] == "published"


def test_import_into_another_instance(
    app: Flask, client: FlaskClient, prof: Person, course: Course, tmp_path: Path
) -> None:
    doc = export(client, prof, course.id)
    other_path = tmp_path / "other"
    other_path.mkdir()
    config = base_config(other_path)
    config["instance"] = {"name": "Other U", "base_url": "http://other.example"}
    second = create_app(config["path"], config)
    reset_schema(second)
    try:
        there = person(Users(second), "them@other.example", creator=True)
        made = ok(import_doc(second.test_client(), there, doc), 201)
        assert outline(second, made["id"]) == outline(app, course.id)
    finally:
        get_db(second).dispose()


# ---------------------------------------------------------------- refusals store nothing


def _too_many_modules(doc: Doc) -> None:
    doc["modules"] = [{"title": f"M{n}", "items": []} for n in range(MAX_MODULES + 1)]


def _too_many_items(doc: Doc) -> None:
    item = doc["modules"][0]["items"][0]
    doc["modules"] = [{"title": f"M{n}", "items": [item] * 100} for n in range(21)]


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


REFUSALS = [
    (
        "not a course",
        lambda d: d.update(format="trivium.personal-data"),
        422,
        "not a course export",
    ),
    ("newer version", lambda d: d.update(format_version=2), 422, "version 2"),
    ("no title", lambda d: d["course"].update(title=""), 422, "expected shape"),
    ("unknown member", lambda d: d["course"].update(status="published"), 422, "expected shape"),
    (
        "unknown type",
        lambda d: d["modules"][1]["items"][1].update(type="hologram"),
        422,
        "module 2, item 2 ('Page 1.1'): content type 'hologram' is not installed",
    ),
    (
        "refused config",
        lambda d: d["modules"][1]["items"][0].update(config={"colour": "red"}),
        422,
        "module 2, item 1 ('Page 1.0'): invalid page config",
    ),
    ("unknown plugin", lambda d: d.update(plugins={"chat": {}}), 422, "plugin(s) chat"),
    ("NUL", lambda d: d["course"].update(summary="a\x00b"), 422, "NUL"),
    (
        "deep nesting",
        lambda d: d["modules"][0]["items"][0].update(config=_nested(900)),
        422,
        "nests deeper than 64 levels",
    ),
    ("long source", lambda d: d["source"].update(instance="x" * 301), 422, "expected shape"),
    (
        "odd source id",
        lambda d: d["source"].update(course_id="a\nfake log line"),
        422,
        "expected shape",
    ),
    ("unknown source member", lambda d: d["source"].update(note="hi"), 422, "expected shape"),
    ("too many modules", _too_many_modules, 413, f"at most {MAX_MODULES} modules"),
    ("too many items", _too_many_items, 413, "2100 items"),
]


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [pytest.param(c, s, m, id=i) for i, c, s, m in REFUSALS],
)
def test_a_refused_import_stores_nothing(
    app: Flask,
    client: FlaskClient,
    prof: Person,
    course: Course,
    change: Any,
    status: int,
    says: str,
) -> None:
    doc = export(client, prof, course.id)
    change(doc)
    before = snapshot(app)

    body = problem(import_doc(client, prof, doc), status)

    assert says in body["detail"]
    assert snapshot(app) == before


def test_a_body_over_the_instance_limit_is_413(
    client: FlaskClient, prof: Person, course: Course, tmp_path: Path
) -> None:
    doc = export(client, prof, course.id)
    doc["course"]["description"] = "x" * 50_000
    small_path = tmp_path / "small"
    small_path.mkdir()
    config = base_config(small_path)
    config["instance"]["max_request_bytes"] = 20_000
    small = create_app(config["path"], config)
    reset_schema(small)
    try:
        there = person(Users(small), "them@small.example", creator=True)
        before = snapshot(small)
        problem(import_doc(small.test_client(), there, doc), 413)
        assert snapshot(small) == before
    finally:
        get_db(small).dispose()


def test_a_body_that_is_not_json_is_refused(app: Flask, client: FlaskClient, prof: Person) -> None:
    before = snapshot(app)
    problem(
        client.post(
            "/api/v1/courses/import",
            data=b"{",
            headers={**prof.headers, "Content-Type": "application/json"},
        ),
        400,
    )
    problem(client.post("/api/v1/courses/import", data=b"{}", headers=prof.headers), 415)
    problem(import_doc(client, prof, [1, 2]), 422)
    assert snapshot(app) == before


# ---------------------------------------------------------------- who may


def test_rbac(app: Flask, client: FlaskClient, users: Users, prof: Person, course: Course) -> None:
    learner = person(users, "ann@example.org")
    ta = person(users, "ta@example.org", creator=True)
    other_prof = person(users, "other@example.org", creator=True)
    plain_prof = person(users, "plain@example.org")  # instructor who may not create courses
    admin = person(users, "root@example.org", admin=True)
    ok(
        call(
            client,
            "PATCH",
            f"/courses/{course.id}",
            prof.headers,
            {"enrolment_mode": "open", "visibility": "instance"},
        )
    )
    enrol(client, course, learner)
    add_staff(client, course, prof, ta, "ta")
    add_staff(client, course, prof, plain_prof, "instructor")
    theirs = build_course(client, other_prof, publish=False, title="Theirs")
    doc = export(client, prof, course.id)
    before = snapshot(app)

    problem(call(client, "GET", f"/courses/{course.id}/export", learner.headers), 403)
    problem(call(client, "GET", f"/courses/{course.id}/export", ta.headers), 403)
    problem(call(client, "GET", f"/courses/{theirs.id}/export", prof.headers), 404)
    problem(call(client, "POST", f"/courses/{theirs.id}/copy", prof.headers), 404)
    problem(call(client, "POST", f"/courses/{course.id}/copy", learner.headers), 403)
    problem(call(client, "POST", f"/courses/{course.id}/copy", plain_prof.headers), 403)
    problem(import_doc(client, learner, doc), 403)
    problem(import_doc(client, plain_prof, doc), 403)
    problem(call(client, "GET", f"/courses/{course.id}/export", {}), 401)
    assert snapshot(app) == before

    export(client, plain_prof, course.id)  # an instructor may export
    export(client, admin, theirs.id)  # a site admin any course
    made = ok(import_doc(client, prof, doc), 201)
    copied = ok(call(client, "POST", f"/courses/{course.id}/copy", prof.headers), 201)
    for draft in (made["id"], copied["id"]):  # drafts stay invisible to learners
        problem(call(client, "GET", f"/courses/{draft}", learner.headers), 404)
        problem(call(client, "GET", f"/courses/{draft}/export", learner.headers), 404)
        listed = ok(call(client, "GET", "/courses", learner.headers))["items"]
        assert draft not in {c["id"] for c in listed}


# ---------------------------------------------------------------- plugins' course data


class Notes:
    """A test plugin keeping one note per course, and a content type referring to it."""

    def __init__(self) -> None:
        self.notes: dict[int, str] = {}
        self.imported: list[tuple[int, Any]] = []

    @hookimpl
    def export_course_data(self, course: CourseRow) -> dict[str, Any] | None:
        assert db.session().get(CourseRow, course.id) is course
        note = self.notes.get(course.id)
        return {"note": note, "id": f"n{course.id}"} if note else None

    @hookimpl
    def import_course_data(self, course: CourseRow, data: dict[str, Any]) -> dict[str, Any]:
        assert course.status == "draft"
        if data.get("note") == "bad":
            raise CourseDataInvalid("notes must not be bad", [{"loc": "note", "msg": "bad"}])
        self.imported.append((course.id, data))
        self.notes[course.id] = data["note"]
        return {"ids": {data["id"]: f"n{course.id}"}}

    @hookimpl
    def register_content_types(self) -> list[type[ContentType]]:
        return [NoteRef]


class NoteRefConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str


class NoteRef(ContentType):
    name = "noteref"
    label = "Note reference"
    config_model = NoteRefConfig

    def import_config(
        self, data: dict[str, Any], context: ImportContext | None = None
    ) -> dict[str, Any]:
        assert context is not None
        return self.validate_config({"note": context.references["ids"][data["note"]]})


class OldStyle(ContentType):
    """A content type written before ``import_config`` took a context."""

    name = "oldstyle"
    label = "Old"
    calls: list[dict[str, Any]] = []

    def import_config(self, data: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        OldStyle.calls.append(data)
        return self.validate_config(data)


class OldPlugin:
    @hookimpl
    def register_content_types(self) -> list[type[ContentType]]:
        return [OldStyle]


class KeywordOnly(ContentType):
    name = "kwonly"

    def import_config(self, data: dict[str, Any], *, strict: bool = False) -> dict[str, Any]:  # type: ignore[override]
        return data


class AnyKeywords(ContentType):
    name = "anykw"

    def import_config(self, data: dict[str, Any], **options: Any) -> dict[str, Any]:  # type: ignore[override]
        return data


@pytest.mark.parametrize(
    ("ctype", "takes"),
    [(NoteRef, True), (OldStyle, False), (KeywordOnly, False), (AnyKeywords, False)],
)
def test_only_an_import_config_that_takes_a_context_gets_one(
    ctype: type[ContentType], takes: bool
) -> None:
    from core.course_transfer import _takes_context

    assert _takes_context(ctype()) is takes


@pytest.fixture
def notes(host: PluginHost) -> Iterator[Notes]:
    plugin = Notes()
    host.register(plugin, "notes")
    host.register(OldPlugin(), "old")
    host.collect_content_types()
    try:
        yield plugin
    finally:
        host.unregister("notes")
        host.unregister("old")


def _noted_course(app: Flask, client: FlaskClient, prof: Person, notes: Notes) -> Course:
    course = build_course(client, prof, modules=1, items=0, publish=False, title="Noted")
    with get_db(app).session() as sess:
        key = sess.scalar(select(CourseRow.id).where(CourseRow.public_id == course.id))
    assert key is not None
    notes.notes[key] = "hello"
    for kind, config in (("noteref", {"note": f"n{key}"}), ("oldstyle", {})):
        ok(
            call(
                client,
                "POST",
                f"/modules/{course.modules[0]}/items",
                prof.headers,
                {"type": kind, "title": kind, "config": config},
            ),
            201,
        )
    return course


def test_hook_export_course_data(
    app: Flask, client: FlaskClient, prof: Person, notes: Notes
) -> None:
    course = _noted_course(app, client, prof, notes)
    doc = export(client, prof, course.id)
    key = next(iter(notes.notes))
    assert doc["plugins"] == {"notes": {"note": "hello", "id": f"n{key}"}}


def test_hook_import_course_data(
    app: Flask, client: FlaskClient, prof: Person, notes: Notes
) -> None:
    course = _noted_course(app, client, prof, notes)
    OldStyle.calls.clear()

    made = ok(call(client, "POST", f"/courses/{course.id}/copy", prof.headers), 201)

    with get_db(app).session() as sess:
        new_key = sess.scalar(select(CourseRow.id).where(CourseRow.public_id == made["id"]))
        rows = sess.execute(select(Item.type, Item.config).where(Item.course_id == new_key))
        configs = {kind: config for kind, config in rows}
    assert [k for k, _ in notes.imported] == [new_key]
    assert notes.notes[new_key] == "hello"
    assert configs["noteref"] == {"note": f"n{new_key}"}  # remapped to the new course's note
    assert OldStyle.calls == [{}]  # called the old way, still imported


def test_a_refused_or_failing_plugin_section_stores_nothing(
    app: Flask, client: FlaskClient, prof: Person, notes: Notes, host: PluginHost
) -> None:
    course = _noted_course(app, client, prof, notes)
    doc = export(client, prof, course.id)
    before = snapshot(app)

    doc["plugins"]["notes"]["note"] = "bad"
    body = problem(import_doc(client, prof, doc), 422)
    assert body["detail"] == "plugin 'notes' refused its part of the course: notes must not be bad"
    assert body["errors"] == [{"loc": "note", "msg": "bad"}]
    assert snapshot(app) == before

    del doc["plugins"]["notes"]["id"]  # the implementation crashes (KeyError)
    doc["plugins"]["notes"]["note"] = "fine"
    body = problem(import_doc(client, prof, doc), 422)
    assert "plugin 'notes' failed to import" in body["detail"]
    assert "KeyError" not in json.dumps(body)
    assert ("notes", "import_course_data") in {(f.plugin, f.hook) for f in host.failures}
    assert snapshot(app) == before


def test_a_failing_export_is_refused_naming_the_plugin(
    app: Flask, client: FlaskClient, prof: Person, course: Course, host: PluginHost
) -> None:
    class Broken:
        @hookimpl
        def export_course_data(self, course: CourseRow) -> dict[str, Any]:
            raise RuntimeError("on fire")

    host.register(Broken(), "broken")
    try:
        before = snapshot(app)
        for path in (f"/courses/{course.id}/export", f"/courses/{course.id}/copy"):
            method = "GET" if path.endswith("export") else "POST"
            body = problem(call(client, method, path, prof.headers), 500)
            assert "plugin 'broken' failed to export" in body["detail"]
            assert "on fire" not in json.dumps(body)
        assert snapshot(app) == before
    finally:
        host.unregister("broken")


# ---------------------------------------------------------------- web pages


def test_web_export_copy_and_import(
    app: Flask, client: FlaskClient, prof: Person, course: Course
) -> None:
    browser = Browser(app, prof.user)
    page = browser.get(f"/teach/courses/{course.id}/").get_data(as_text=True)
    assert f'href="/teach/courses/{course.id}/export"' in page
    assert f'action="/teach/courses/{course.id}/copy"' in page

    resp = browser.get(f"/teach/courses/{course.id}/export")
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    data = resp.get_data()

    resp = browser.post(f"/teach/courses/{course.id}/copy")
    assert resp.status_code == 303
    copied_id = resp.headers["Location"].split("/teach/courses/")[1].strip("/")
    assert outline(app, copied_id) == outline(app, course.id)

    index = browser.get("/teach/").get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in index and 'action="/teach/import"' in index

    def upload(content: bytes, csrf: bool = True) -> Any:
        form: dict[str, Any] = {"document": (io.BytesIO(content), "course.json")}
        if csrf:
            form["csrf_token"] = browser.csrf()
        return browser.client.post(
            "/teach/import",
            data=form,
            content_type="multipart/form-data",
            headers={"Accept": "text/html"},
        )

    resp = upload(data)
    assert resp.status_code == 303
    imported_id = resp.headers["Location"].split("/teach/courses/")[1].strip("/")
    assert outline(app, imported_id) == outline(app, course.id)
    assert [d["via"] for d in audits(app, "course.import")] == ["web", "web"]

    before = snapshot(app)
    broken = json.loads(data)
    broken["modules"][0]["items"][0]["type"] = "hologram"
    resp = upload(json.dumps(broken).encode())
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    assert "The course was not imported; nothing was stored." in page
    assert "content type &#39;hologram&#39; is not installed" in page
    resp = upload(b"not json")
    assert resp.status_code == 422 and "not a JSON course export" in resp.get_data(as_text=True)
    assert upload(data, csrf=False).status_code in {400, 403}
    assert snapshot(app) == before


def test_web_pages_follow_the_roles(
    app: Flask, client: FlaskClient, users: Users, prof: Person, course: Course
) -> None:
    ta = person(users, "ta@example.org")
    add_staff(client, course, prof, ta, "ta")
    browser = Browser(app, ta.user)
    assert browser.get(f"/teach/courses/{course.id}/export").status_code == 403
    assert browser.post(f"/teach/courses/{course.id}/copy").status_code == 403
    index = browser.get("/teach/").get_data(as_text=True)
    assert "/teach/import" not in index
    assert browser.post("/teach/import").status_code == 403


# ---------------------------------------------------------------- command line


def test_cli_export_and_import(
    app: Flask, client: FlaskClient, prof: Person, course: Course, tmp_path: Path
) -> None:
    runner = CliRunner(env={"TRIVIUM_INSTANCE_PATH": None})
    out = tmp_path / "course.json"
    # the CLI builds its own app from the instance folder: point it at the test's settings
    app.config["TESTING"] = True

    def run(*args: str) -> Any:
        from core.cli.base import CliState

        state = CliState(instance=Path(app.config.get("TRIVIUM_PATH", tmp_path)))
        state._app = app
        return runner.invoke(cli, list(args), obj=state)

    result = run("courses", "export", course.id, "--output", str(out))
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == 0o600
    assert (
        run("courses", "export", course.id, "--output", str(out)).exit_code != 0
    )  # never over a file

    result = run("courses", "import", str(out), "--owner", "PROF@example.org")
    assert result.exit_code == 0, result.output
    new_id = result.output.split("draft course ")[1].split(" ")[0]
    assert outline(app, new_id) == outline(app, course.id)
    assert [d["via"] for d in audits(app, "course.export")] == ["cli"]
    (entry,) = audits(app, "course.import")
    assert entry["via"] == "cli" and entry["owner"] == prof.id
    with get_db(app).session() as sess:  # both entries: the operator, for the owner
        made = sess.execute(
            select(AuditLog.action, AuditLog.actor_id, AuditLog.detail).where(
                AuditLog.target == f"course:{new_id}"
            )
        ).all()
    assert {(action, actor) for action, actor, _ in made} == {
        ("course.create", None),
        ("course.import", None),
    }
    assert all(d["via"] == "cli" and d["owner"] == prof.id for _, _, d in made)

    before = snapshot(app)
    doc = json.loads(out.read_text())
    doc["format_version"] = 9
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    result = run("courses", "import", str(bad), "--owner", "prof@example.org")
    assert result.exit_code != 0 and "version 9 is not supported" in result.output
    result = run("courses", "import", str(out), "--owner", "nobody@example.org")
    assert result.exit_code != 0 and "no active user" in result.output
    assert snapshot(app) == before
    with get_db(app).session() as sess:
        assert sess.get(User, prof.user.id) is not None
