"""Question bank pages: the editor for every type, preview, delete, regrade, filters, paging."""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func
from sqlalchemy import select

from core.db import get_db
from plugins.quiz import web
from plugins.quiz.models import Attempt
from plugins.quiz.models import BankQuestion
from plugins.quiz.web_bank import FORMS
from plugins.quiz.web_bank import form_values
from tests.conftest import Users
from tests.conftest import snapshot
from tests.course_helpers import call
from tests.course_helpers import ok
from tests.course_helpers import person
from tests.quiz.web_world import browse_as
from tests.quiz.web_world import text
from tests.quiz.world import World
from tests.quiz.world import build_world
from tests.web_helpers import field_errors
from tests.web_helpers import input_value


@pytest.fixture
def world(app: Flask, client: FlaskClient, users: Users) -> World:
    return build_world(app, client, users)


def _body(app: Flask, question_id: str) -> dict[str, Any]:
    with get_db(app).session() as sess:
        row = sess.scalar(select(BankQuestion).where(BankQuestion.public_id == question_id))
        assert row is not None
        return dict(row.body)


def _version(app: Flask, question_id: str) -> int:
    with get_db(app).session() as sess:
        row = sess.scalar(select(BankQuestion).where(BankQuestion.public_id == question_id))
        assert row is not None
        return row.version


def _bank_size(app: Flask) -> int:
    with get_db(app).session() as sess:
        return int(sess.scalar(select(func.count(BankQuestion.id))) or 0)


def _new_url(world: World, qtype: str) -> str:
    return f"/teach/courses/{world.course.id}/quiz/questions/new?type={qtype}"


def _created_id(location: str) -> str:
    found = re.search(r"/teach/quiz/questions/([0-9a-f]+)$", location)
    assert found, location
    return found.group(1)


SINGLE = {
    "title": "Capital",
    "text": "Which city is the capital of Italy?",
    "text_format": "plain",
    "points": "2",
    "category": "Geo/Europe",
    "tags": "capitals, europe",
    "general_feedback": "Rome it is.",
    "shuffle": "1",
    "choice-rows": "3",
    "choice-0-text": "Rome",
    "choice-0-weight": "100",
    "choice-0-feedback": "Yes.",
    "choice-1-text": "Milan",
    "choice-1-weight": "25",
    "choice-2-text": "",
}


def test_type_picker_lists_every_type(app: Flask, world: World) -> None:
    staff = browse_as(app, world.instructor)
    bank = text(staff.get(f"/teach/courses/{world.course.id}/quiz/bank"))
    assert f"/teach/courses/{world.course.id}/quiz/questions/new" in bank
    page = text(staff.get(f"/teach/courses/{world.course.id}/quiz/questions/new"))
    for qtype in FORMS:
        assert f"type={qtype}" in page
    resp = staff.get(_new_url(world, "poll"))
    assert resp.status_code == 404 and "no such question type" in text(resp)


def test_instructor_creates_a_question_and_sees_its_preview(app: Flask, world: World) -> None:
    staff = browse_as(app, world.instructor)
    form = text(staff.get(_new_url(world, "single_choice")))
    assert 'name="choice-0-text"' in form and 'name="csrf_token"' in form
    resp = staff.post(_new_url(world, "single_choice"), {**SINGLE, "type": "single_choice"})
    assert resp.status_code == 302, text(resp)[:2000]
    question_id = _created_id(resp.headers["Location"])
    body = _body(app, question_id)
    assert body["type"] == "single_choice" and body["id"] == question_id
    assert body["points"] == 2.0 and body["tags"] == ["capitals", "europe"]
    assert body["category"] == "Geo/Europe" and body["shuffle"] is True
    assert [(c["text"], c["weight"], c["feedback"]) for c in body["choices"]] == [
        ("Rome", 1.0, "Yes."),
        ("Milan", 0.25, ""),
    ]
    page = staff.get(resp.headers["Location"])
    html = text(page)
    assert "The question was added to the bank." in html
    assert "Preview: what learners see" in html
    preview = html.split('class="quiz-preview"', 1)[1].split("</section>", 1)[0]
    assert "Which city is the capital of Italy?" in preview and "Milan" in preview
    assert "Yes." not in preview and "Capital" not in preview  # no key, no title
    assert input_value(page, "f-choice-1-weight") == "25"
    assert input_value(page, "f-tags") == "capitals, europe"


@pytest.mark.parametrize("qtype", sorted(FORMS))
def test_every_sample_survives_a_round_trip_through_its_form(
    app: Flask, world: World, qtype: str
) -> None:
    """Opening a question and saving it unchanged keeps every field, ids included."""
    question_id = world.questions[qtype]
    before = _body(app, question_id)
    staff = browse_as(app, world.instructor)
    page = staff.get(f"/teach/quiz/questions/{question_id}")
    assert page.status_code == 200
    assert "Preview: what learners see" in text(page)
    values = form_values(qtype, before)
    resp = staff.post(f"/teach/quiz/questions/{question_id}", {**values, "action": "save"})
    assert resp.status_code == 302, field_errors(resp) or text(resp)[:3000]
    assert _body(app, question_id) == before
    assert _version(app, question_id) == 2


def test_matching_pairs_may_share_an_answer(app: Flask, world: World) -> None:
    staff = browse_as(app, world.instructor)
    form = {
        "type": "matching",
        "text": "Match the animals with their class.",
        "points": "1",
        "pair-rows": "3",
        "pair-0-prompt": "Whale",
        "pair-0-answer": "Mammal",
        "pair-1-prompt": "Cat",
        "pair-1-answer": "Mammal",
        "pair-2-prompt": "Eagle",
        "pair-2-answer": "Bird",
        "distractor-rows": "1",
        "distractor-0-text": "Fish",
    }
    resp = staff.post(_new_url(world, "matching"), form)
    assert resp.status_code == 302, field_errors(resp) or text(resp)[:3000]
    body = _body(app, _created_id(resp.headers["Location"]))
    answers = {a["id"]: a["text"] for a in body["answers"]}
    assert sorted(answers.values()) == ["Bird", "Fish", "Mammal"]
    assert [answers[p["answer_id"]] for p in body["prompts"]] == ["Mammal", "Mammal", "Bird"]


def test_cloze_with_gaps_of_every_kind(app: Flask, world: World) -> None:
    staff = browse_as(app, world.instructor)
    form = {
        "type": "cloze",
        "text": "[[1]] is in [[2]]; it is [[3]] km away.",
        "points": "3",
        "gap-rows": "3",
        "gap-0-type": "choice",
        "gap-0-points": "1",
        "gap-0-choice-rows": "2",
        "gap-0-choice-0-text": "Paris",
        "gap-0-choice-0-weight": "100",
        "gap-0-choice-1-text": "Rome",
        "gap-1-type": "short_answer",
        "gap-1-points": "2",
        "gap-1-whitespace": "collapse",
        "gap-1-answer-rows": "1",
        "gap-1-answer-0-text": "France",
        "gap-1-answer-0-weight": "100",
        "gap-2-type": "numeric",
        "gap-2-points": "1",
        "gap-2-answer-rows": "1",
        "gap-2-answer-0-low": "400",
        "gap-2-answer-0-high": "500",
        "gap-2-answer-0-weight": "100",
        "gap-2-unit-rows": "1",
        "gap-2-unit-0-name": "km",
        "gap-2-unit-0-multiplier": "1",
        "gap-2-unit_penalty": "10",
    }
    resp = staff.post(_new_url(world, "cloze"), form)
    assert resp.status_code == 302, field_errors(resp) or text(resp)[:3000]
    body = _body(app, _created_id(resp.headers["Location"]))
    assert [g["type"] for g in body["gaps"]] == ["choice", "short_answer", "numeric"]
    assert body["gaps"][1]["points"] == 2.0
    assert body["gaps"][2]["answers"][0]["low"] == 400.0
    assert body["gaps"][2]["units"] == [{"name": "km", "multiplier": 1.0}]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"choice-0-weight": "lots"}, "f-choice-0-weight", "Enter a number."),
        ({"text": ""}, "f-text", "at least 1 character"),
        ({"points": "-3"}, "f-points", "greater than or equal to 0"),
        ({"tags": "a, a"}, "f-tags", "tags must be unique"),
        ({"choice-0-weight": "250"}, "f-choice-0-weight", "less than or equal to 1"),
    ],
)
def test_bad_input_is_shown_inline_and_nothing_is_stored(
    app: Flask, world: World, change: dict[str, str], field: str, message: str
) -> None:
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    resp = staff.post(_new_url(world, "single_choice"), {**SINGLE, **change})
    assert resp.status_code == 422
    errors = field_errors(resp)
    assert message in errors.get(field, ""), errors
    page = text(resp)
    assert f'aria-describedby="{field}-error"' in page or f"{field}-error" in page
    assert 'aria-invalid="true"' in page
    # the input is kept
    assert input_value(resp, "f-choice-1-text") == "Milan"
    assert input_value(resp, "f-title") == "Capital"
    assert snapshot(app) == before


def test_a_rule_about_the_whole_question_is_shown_above_the_form(app: Flask, world: World) -> None:
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    resp = staff.post(_new_url(world, "single_choice"), {**SINGLE, "choice-0-weight": "50"})
    assert resp.status_code == 422
    assert "exactly one choice must be fully correct" in text(resp)
    assert 'class="form-errors" role="alert"' in text(resp)
    assert snapshot(app) == before


def test_a_bad_numeric_row_is_flagged_on_its_row(app: Flask, world: World) -> None:
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    form = {
        "type": "numeric",
        "text": "How far?",
        "answer-rows": "1",
        "answer-0-value": "3",
        "answer-0-low": "1",
        "answer-0-weight": "100",
    }
    resp = staff.post(_new_url(world, "numeric"), form)
    assert resp.status_code == 422
    assert "not both" in field_errors(resp).get("answer-0", "")
    assert snapshot(app) == before


def test_edit_errors_leave_the_stored_question_unchanged(app: Flask, world: World) -> None:
    question_id = world.questions["single_choice"]
    staff = browse_as(app, world.instructor)
    values = form_values("single_choice", _body(app, question_id))
    before = snapshot(app)
    resp = staff.post(
        f"/teach/quiz/questions/{question_id}",
        {**values, "choice-0-weight": "10", "title": "Changed"},
    )
    assert resp.status_code == 422
    assert input_value(resp, "f-title") == "Changed"
    assert snapshot(app) == before


def test_add_more_rows_re_renders_without_storing(app: Flask, world: World) -> None:
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    resp = staff.post(_new_url(world, "single_choice"), {**SINGLE, "more": "choice"})
    assert resp.status_code == 200
    page = text(resp)
    assert 'name="choice-5-text"' in page and 'name="choice-6-text"' not in page
    assert input_value(resp, "f-choice-0-text") == "Rome"
    assert snapshot(app) == before


def test_changing_a_gap_kind_shows_its_fields(app: Flask, world: World) -> None:
    staff = browse_as(app, world.instructor)
    form = {"type": "cloze", "text": "[[1]]", "gap-rows": "1", "gap-0-type": "numeric"}
    resp = staff.post(_new_url(world, "cloze"), {**form, "action": "update"})
    assert resp.status_code == 200
    assert 'name="gap-0-answer-0-tolerance"' in text(resp)


def test_teaching_assistants_view_but_cannot_edit(app: Flask, world: World) -> None:
    question_id = world.questions["single_choice"]
    staff = browse_as(app, world.ta)
    page = text(staff.get(f"/teach/quiz/questions/{question_id}"))
    assert "read only" in page and "Save the question" not in page
    assert "Preview: what learners see" in page
    bank = text(staff.get(f"/teach/courses/{world.course.id}/quiz/bank"))
    assert "New question" not in bank and ">View<" in bank
    values = form_values("single_choice", _body(app, question_id))
    before = snapshot(app)
    assert staff.post(f"/teach/quiz/questions/{question_id}", values).status_code == 403
    assert staff.post(_new_url(world, "single_choice"), SINGLE).status_code == 403
    assert staff.get(_new_url(world, "single_choice")).status_code == 403
    assert staff.post(f"/teach/quiz/questions/{question_id}/delete").status_code == 403
    assert staff.post(f"/teach/quiz/questions/{question_id}/regrade").status_code == 403
    assert snapshot(app) == before


@pytest.mark.parametrize("who", ["learner", "outsider"])
def test_learners_and_outsiders_cannot_reach_the_editor(app: Flask, world: World, who: str) -> None:
    question_id = world.questions["single_choice"]
    pages = browse_as(app, getattr(world, who))
    before = snapshot(app)
    for path in (
        f"/teach/quiz/questions/{question_id}",
        f"/teach/quiz/questions/{question_id}/delete",
        _new_url(world, "single_choice"),
    ):
        assert pages.get(path).status_code in (403, 404), path
    for path in (
        f"/teach/quiz/questions/{question_id}",
        f"/teach/quiz/questions/{question_id}/delete",
        f"/teach/quiz/questions/{question_id}/regrade",
        _new_url(world, "single_choice"),
    ):
        assert pages.post(path, SINGLE).status_code in (403, 404), path
    assert snapshot(app) == before


def test_editor_forms_need_the_csrf_token(app: Flask, world: World) -> None:
    question_id = world.questions["true_false"]
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    assert staff.post(_new_url(world, "single_choice"), SINGLE, csrf="x").status_code == 400
    assert staff.post(f"/teach/quiz/questions/{question_id}/delete", csrf="x").status_code == 400
    resp = staff.post(f"/teach/quiz/questions/{question_id}/regrade", csrf="x")
    assert resp.status_code == 400
    assert snapshot(app) == before


def test_delete_asks_and_refuses_while_a_quiz_uses_the_question(app: Flask, world: World) -> None:
    used = world.questions["true_false"]
    world.add_quiz("Week 3", questions=[used])
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    page = text(staff.get(f"/teach/quiz/questions/{used}/delete"))
    assert "cannot be deleted" in page and "Week 3" in page
    resp = staff.post(f"/teach/quiz/questions/{used}/delete")
    assert resp.status_code == 409 and "Week 3" in text(resp)
    assert snapshot(app) == before

    unused = world.questions["ordering"]
    confirm = text(staff.get(f"/teach/quiz/questions/{unused}/delete"))
    assert "cannot be undone" in confirm
    size = _bank_size(app)
    resp = staff.post(f"/teach/quiz/questions/{unused}/delete")
    assert resp.status_code == 302
    assert "was deleted" in text(staff.get(resp.headers["Location"]))
    assert _bank_size(app) == size - 1
    assert staff.get(f"/teach/quiz/questions/{unused}").status_code == 404


def test_regrade_button_reports_what_changed(app: Flask, world: World) -> None:
    sc = world.questions["single_choice"]
    quiz = world.add_quiz("Capitals", questions=[sc])
    attempt = world.start(quiz)
    world.submit(attempt["id"], {sc: "c-lyon"})
    staff = browse_as(app, world.instructor)
    values = form_values("single_choice", _body(app, sc))
    values.update({"choice-0-weight": "0", "choice-1-weight": "100"})  # Lyon is right now
    assert staff.post(f"/teach/quiz/questions/{sc}", values).status_code == 302
    page = text(staff.get(f"/teach/quiz/questions/{sc}"))
    assert "Regrade submitted attempts" in page and "Capitals" in page
    resp = staff.post(f"/teach/quiz/questions/{sc}/regrade")
    assert resp.status_code == 302
    assert "1 changed" in text(staff.get(resp.headers["Location"]))
    with get_db(app).session() as sess:
        row = sess.scalar(select(Attempt).where(Attempt.public_id == attempt["id"]))
        assert row is not None and row.score == 1.0
    essay = text(staff.get(f"/teach/quiz/questions/{world.questions['essay']}"))
    assert "Regrade submitted attempts" not in essay


def _fill_bank(app: Flask, world: World, count: int) -> None:
    with get_db(app).session() as sess:
        course_id = sess.scalar(
            select(BankQuestion.course_id).where(BankQuestion.public_id == world.questions["essay"])
        )
        for n in range(count):
            public_id = f"bulk{n:04d}"
            sess.add(
                BankQuestion(
                    public_id=public_id,
                    course_id=course_id,
                    type="true_false",
                    title=f"Bulk {n:02d}" + (" needle" if n == 7 else ""),
                    category="Bulk/Sub" if n % 2 else "Bulk",
                    tags=["even"] if n % 2 == 0 else [],
                    body={"type": "true_false", "id": public_id, "text": "T?", "correct": True},
                )
            )
        sess.commit()


def _titles(page: str) -> list[str]:
    return re.findall(r'<th scope="row">([^<]+)</th>', page)


def test_bank_filters_and_pages(app: Flask, world: World) -> None:
    _fill_bank(app, world, 60)
    staff = browse_as(app, world.ta)
    base = f"/teach/courses/{world.course.id}/quiz/bank"
    first = text(staff.get(base))
    assert "Questions (70)" in first
    assert len(_titles(first)) == 50
    found = re.search(r'href="([^"]+)" rel="next"', first)
    assert found
    second = text(staff.get(found.group(1).replace("&amp;", "&")))
    assert len(_titles(second)) == 20 and 'rel="prev"' in second
    assert not set(_titles(first)) & set(_titles(second))

    assert len(_titles(text(staff.get(f"{base}?type=true_false")))) == 50
    assert "Questions (61)" in text(staff.get(f"{base}?type=true_false"))
    assert "Questions (30)" in text(staff.get(f"{base}?tag=even"))
    assert "Questions (30)" in text(staff.get(f"{base}?category=Bulk/Sub"))
    assert "Questions (60)" in text(staff.get(f"{base}?category=Bulk"))
    assert _titles(text(staff.get(f"{base}?q=NEEDLE"))) == ["Bulk 07 needle"]
    nothing = text(staff.get(f"{base}?q=absent&page=x"))
    assert "No question matches these filters." in nothing
    last = staff.get(f"{base}?page=999")
    assert last.status_code == 200
    assert _titles(text(last)) == _titles(second) and "Page 2 of 2" in text(last)


def _essays(world: World, count: int) -> list[str]:
    essay = world.questions["essay"]
    quiz = world.add_quiz("Essays", questions=[essay], attempts_allowed=0)
    out: list[str] = []
    for _ in range(count):
        attempt = world.start(quiz)
        world.submit(attempt["id"], {essay: f"Answer {len(out)}"})
        out.append(str(attempt["id"]))
    return out


def test_grading_queue_pages_reach_every_answer(
    app: Flask, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "GRADING_PAGE", 2)
    _essays(world, 5)
    staff = browse_as(app, world.ta)
    url: str | None = f"/teach/courses/{world.course.id}/quiz/grading"
    seen: list[str] = []
    while url:
        page = text(staff.get(url))
        seen += re.findall(r"Answer \d", page)
        found = re.search(r'href="([^"]+)" rel="next"', page)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert seen == [f"Answer {n}" for n in range(5)]
    resp = staff.get(f"/teach/courses/{world.course.id}/quiz/grading?after=tampered")
    assert resp.status_code == 200 and "Answer 0" in text(resp)


def test_api_grading_queue_pages_with_a_cursor(app: Flask, world: World) -> None:
    _essays(world, 3)
    headers = world.ta.headers
    path = f"/courses/{world.course.id}/quiz/grading?limit=2"
    first = ok(call(world.client, "GET", path, headers))
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = ok(call(world.client, "GET", f"{path}&cursor={first['next_cursor']}", headers))
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None


def test_a_tampered_part_id_is_refused_on_its_row(app: Flask, world: World) -> None:
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    resp = staff.post(_new_url(world, "single_choice"), {**SINGLE, "choice-1-id": "not an id!"})
    assert resp.status_code == 422
    assert "should match pattern" in field_errors(resp).get("choice-1", "")
    assert snapshot(app) == before


@pytest.mark.parametrize("rows", ["999", "-1", "x"])
def test_row_counts_are_bounded(app: Flask, world: World, rows: str) -> None:
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    resp = staff.post(_new_url(world, "single_choice"), {**SINGLE, "choice-rows": rows})
    assert resp.status_code in (302, 422)
    if rows == "999":
        assert resp.status_code == 302  # read as the most rows a question may have
    else:
        assert snapshot(app) == before  # no rows read: too few choices
        assert "at least 2 items" in text(resp)


def test_move_buttons_reorder_rows_without_storing(app: Flask, world: World) -> None:
    question_id = world.questions["ordering"]
    staff = browse_as(app, world.instructor)
    values = form_values("ordering", _body(app, question_id))
    before = snapshot(app)
    resp = staff.post(f"/teach/quiz/questions/{question_id}", {**values, "move": "item-1:up"})
    assert resp.status_code == 200
    assert input_value(resp, "f-item-0-text") == "Cell"
    assert input_value(resp, "f-item-1-text") == "Atom"
    assert snapshot(app) == before
    for bad in ("item-0:up", "item-99:down", "nonsense", "item-x:up"):
        resp = staff.post(f"/teach/quiz/questions/{question_id}", {**values, "move": bad})
        assert resp.status_code == 200
        assert input_value(resp, "f-item-0-text") == "Atom"
    swapped = {**values}
    for key in ("id", "text"):
        swapped[f"item-0-{key}"], swapped[f"item-1-{key}"] = (
            values[f"item-1-{key}"],
            values[f"item-0-{key}"],
        )
    assert staff.post(f"/teach/quiz/questions/{question_id}", swapped).status_code == 302
    items = [i["text"] for i in _body(app, question_id)["items"]]
    assert items[:2] == ["Cell", "Atom"]


def test_saving_over_a_newer_version_is_refused(app: Flask, world: World) -> None:
    question_id = world.questions["true_false"]
    staff = browse_as(app, world.instructor)
    values = {**form_values("true_false", _body(app, question_id)), "version": "1"}
    # someone else saves first
    assert staff.post(f"/teach/quiz/questions/{question_id}", values).status_code == 302
    assert _version(app, question_id) == 2
    before = snapshot(app)
    resp = staff.post(f"/teach/quiz/questions/{question_id}", {**values, "title": "Mine"})
    assert resp.status_code == 409
    assert "now version 2" in text(resp)
    assert input_value(resp, "f-title") == "Mine"
    assert snapshot(app) == before
    # saving the kept input again replaces version 2 knowingly
    resend = {**values, "title": "Mine", "version": "2"}
    assert staff.post(f"/teach/quiz/questions/{question_id}", resend).status_code == 302
    assert _body(app, question_id)["title"] == "Mine"


def test_preview_without_saving(app: Flask, world: World) -> None:
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    resp = staff.post(_new_url(world, "single_choice"), {**SINGLE, "action": "preview"})
    assert resp.status_code == 200
    page = text(resp)
    assert "Not saved yet:" in page
    preview = page.split('class="quiz-preview"', 1)[1].split("</section>", 1)[0]
    assert "Which city is the capital of Italy?" in preview and "Milan" in preview
    assert "Yes." not in preview
    assert input_value(resp, "f-choice-0-text") == "Rome"
    bad = staff.post(_new_url(world, "single_choice"), {**SINGLE, "text": "", "action": "preview"})
    assert bad.status_code == 422 and "quiz-preview" not in text(bad)
    question_id = world.questions["true_false"]
    values = form_values("true_false", _body(app, question_id))
    resp = staff.post(
        f"/teach/quiz/questions/{question_id}",
        {**values, "text": "Edited, not saved.", "action": "preview"},
    )
    assert resp.status_code == 200
    page = text(resp)
    assert "Not saved yet:" in page
    preview = page.split('class="quiz-preview"', 1)[1].split("</section>", 1)[0]
    assert "Edited, not saved." in preview
    assert snapshot(app) == before


# ---------------------------------------------------------------- review fixes


class _FormInputs(HTMLParser):
    """What a browser would send for one form: its inputs, textareas and selects."""

    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.inside = False
        self.values: dict[str, str] = {}
        self._textarea: str | None = None
        self._select: str | None = None
        self._first_option: str | None = None
        self._option_chosen = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id") == self.form_id:
            self.inside = True
        if not self.inside:
            return
        name = a.get("name", "")
        if tag == "input" and name and a.get("type") != "submit":
            if a.get("type") in ("checkbox", "radio"):
                if "checked" in a:
                    self.values[name] = a.get("value", "on")
            else:
                self.values[name] = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.values[name] = ""
        elif tag == "select" and name:
            self._select, self._first_option, self._option_chosen = name, None, False
        elif tag == "option" and self._select:
            value = a.get("value", "")
            if self._first_option is None:
                self._first_option = value
            if "selected" in a:
                self.values[self._select] = value
                self._option_chosen = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.inside:
            self.inside = False
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select" and self._select:
            if not self._option_chosen:
                self.values[self._select] = self._first_option or ""
            self._select = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            # a browser drops the newline that follows <textarea>
            current = self.values[self._textarea]
            self.values[self._textarea] = current + (
                data[1:] if not current and data.startswith("\n") else data
            )


def _rendered_form(page: str) -> dict[str, str]:
    parser = _FormInputs("question-form")
    parser.feed(page)
    assert parser.values, "no question form"
    return parser.values


@pytest.mark.parametrize("qtype", sorted(FORMS))
def test_the_rendered_form_posted_back_changes_nothing(
    app: Flask, world: World, qtype: str
) -> None:
    """Every input as the page prints it, sent back as a browser would: the same question."""
    question_id = world.questions[qtype]
    before = _body(app, question_id)
    staff = browse_as(app, world.instructor)
    values = _rendered_form(text(staff.get(f"/teach/quiz/questions/{question_id}")))
    values.pop("csrf_token", None)
    assert values["version"] == "1" and values["type"] == qtype
    resp = staff.post(f"/teach/quiz/questions/{question_id}", {**values, "action": "save"})
    assert resp.status_code == 302, field_errors(resp) or text(resp)[:3000]
    assert _body(app, question_id) == before
    assert _version(app, question_id) == 2


FIVE_THOUSAND_DIGITS = "9" * 5000


@pytest.mark.parametrize("page", ["²", "-1", "1.5", FIVE_THOUSAND_DIGITS])
def test_a_bad_page_number_shows_a_page(app: Flask, world: World, page: str) -> None:
    _fill_bank(app, world, 60)
    staff = browse_as(app, world.ta)
    resp = staff.get(f"/teach/courses/{world.course.id}/quiz/bank?page={page}")
    assert resp.status_code == 200
    assert "Page 1 of 2" in text(resp)  # not a page number: the first page


@pytest.mark.parametrize("rows", ["²", "٣", FIVE_THOUSAND_DIGITS])
def test_a_bad_row_count_reads_no_rows(app: Flask, world: World, rows: str) -> None:
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    resp = staff.post(_new_url(world, "single_choice"), {**SINGLE, "choice-rows": rows})
    assert resp.status_code == 422
    assert "at least 2 items" in text(resp)
    assert snapshot(app) == before


@pytest.mark.parametrize("move", ["item-²:up", "item-٣:up", f"item-{FIVE_THOUSAND_DIGITS}:down"])
def test_a_bad_move_changes_nothing(app: Flask, world: World, move: str) -> None:
    question_id = world.questions["ordering"]
    staff = browse_as(app, world.instructor)
    values = form_values("ordering", _body(app, question_id))
    before = snapshot(app)
    resp = staff.post(f"/teach/quiz/questions/{question_id}", {**values, "move": move})
    assert resp.status_code == 200
    assert input_value(resp, "f-item-0-text") == "Atom"
    assert snapshot(app) == before


@pytest.mark.parametrize("version", ["²", "x", "-1", FIVE_THOUSAND_DIGITS])
def test_a_bad_version_is_refused_with_the_input_kept(
    app: Flask, world: World, version: str
) -> None:
    question_id = world.questions["true_false"]
    staff = browse_as(app, world.instructor)
    values = form_values("true_false", _body(app, question_id))
    before = snapshot(app)
    resp = staff.post(
        f"/teach/quiz/questions/{question_id}", {**values, "title": "Mine", "version": version}
    )
    assert resp.status_code == 422
    assert "version number is not valid" in text(resp)
    assert input_value(resp, "f-title") == "Mine"
    assert snapshot(app) == before


def test_a_bad_move_on_the_attempt_page_changes_nothing(app: Flask, world: World) -> None:
    ordering = world.questions["ordering"]
    quiz = world.add_quiz("Order", questions=[ordering])
    attempt = world.start(quiz)
    shown = [i["id"] for i in attempt["questions"][0]["items"]]
    pages = browse_as(app, world.learner)
    for move in (f"{ordering}:²:up", f"{ordering}:{FIVE_THOUSAND_DIGITS}:down"):
        resp = pages.post(f"/quiz/attempts/{attempt['id']}", {f"q-{ordering}": shown, "move": move})
        assert resp.status_code == 302, text(resp)[:500]
    with get_db(app).session() as sess:
        row = sess.scalar(select(Attempt).where(Attempt.public_id == attempt["id"]))
        assert row is not None and row.status == "in_progress"


@pytest.mark.parametrize(
    "points",
    ["1,000", "12,345", "1,000.5", "1.000,5", "nan", "inf", "-Infinity", "1e999", "1_0", "²"],
)
def test_an_ambiguous_or_infinite_number_is_refused_inline(
    app: Flask, world: World, points: str
) -> None:
    staff = browse_as(app, world.instructor)
    before = snapshot(app)
    resp = staff.post(_new_url(world, "single_choice"), {**SINGLE, "points": points})
    assert resp.status_code == 422
    assert field_errors(resp).get("f-points") == "Enter a number."
    assert input_value(resp, "f-points") == points
    assert snapshot(app) == before


@pytest.mark.parametrize(
    ("points", "stored"), [("2,5", 2.5), ("1,0000", 1.0), (",5", 0.5), ("3.000", 3.0)]
)
def test_a_decimal_comma_is_read(app: Flask, world: World, points: str, stored: float) -> None:
    staff = browse_as(app, world.instructor)
    resp = staff.post(_new_url(world, "single_choice"), {**SINGLE, "points": points})
    assert resp.status_code == 302, field_errors(resp)
    assert _body(app, _created_id(resp.headers["Location"]))["points"] == stored


def test_a_save_racing_another_is_refused(
    app: Flask, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version check and the save are one step: a save landing in between wins, not ours."""
    from plugins.quiz import web_bank

    question_id = world.questions["true_false"]
    staff = browse_as(app, world.instructor)
    values = {**form_values("true_false", _body(app, question_id)), "version": "1"}
    real_check = web_bank._check

    def check_then_someone_saves(*args: Any, **kwargs: Any) -> Any:
        # another instructor's save commits after our version check passed
        with get_db(app).session() as sess:
            row = sess.scalar(select(BankQuestion).where(BankQuestion.public_id == question_id))
            assert row is not None
            row.body = {**row.body, "title": "Theirs"}
            row.title = "Theirs"
            row.version = 2
            sess.commit()
        return real_check(*args, **kwargs)

    monkeypatch.setattr(web_bank, "_check", check_then_someone_saves)
    resp = staff.post(f"/teach/quiz/questions/{question_id}", {**values, "title": "Mine"})
    assert resp.status_code == 409, text(resp)[:2000]
    assert "now version 2" in text(resp)
    assert input_value(resp, "f-title") == "Mine"
    assert _body(app, question_id)["title"] == "Theirs"
    assert _version(app, question_id) == 2


def _mark_actions(page: str) -> list[str]:
    return [
        unescape(a) for a in re.findall(r'<form method="post" action="([^"]*/mark[^"]*)"', page)
    ]


def test_a_mark_returns_to_its_page_of_the_grading_queue(
    app: Flask, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "GRADING_PAGE", 2)
    _essays(world, 5)
    staff = browse_as(app, world.ta)
    first = text(staff.get(f"/teach/courses/{world.course.id}/quiz/grading"))
    found = re.search(r'href="([^"]+)" rel="next"', first)
    assert found
    second_url = unescape(found.group(1))
    second = text(staff.get(second_url))
    assert re.findall(r"Answer \d", second) == ["Answer 2", "Answer 3"]
    cursor = second_url.split("after=", 1)[1]
    actions = _mark_actions(second)
    assert actions and all(f"after={cursor}" in a for a in actions)

    # a refused mark shows the same page again, with the error and the input
    before = snapshot(app)
    refused = staff.post(actions[0], {"points": "lots", "feedback": "Kept."})
    assert refused.status_code == 422
    page = text(refused)
    assert re.findall(r"Answer \d", page) == ["Answer 2", "Answer 3"]
    assert "Enter the points as a number." in page and "Kept." in page
    assert snapshot(app) == before

    # a saved mark comes back to page 2, where the next answer moved up
    saved = staff.post(actions[0], {"points": "0.5", "feedback": "Fine."})
    assert saved.status_code == 302
    assert saved.headers["Location"].endswith(f"after={cursor}")
    again = text(staff.get(saved.headers["Location"]))
    assert "Mark saved" in again
    assert re.findall(r"Answer \d", again) == ["Answer 3", "Answer 4"]


def test_bank_page_and_api_match_titles_alike(app: Flask, world: World) -> None:
    """One title rule for both: a case-insensitive substring, % and _ taken literally."""
    for title in ("Straße", "50% off", "500 off", "snake_case", "snakeXcase"):
        world.add_question({"type": "true_false", "title": title, "text": "T?", "correct": True})
    staff = browse_as(app, world.ta)
    for needle in ("ss", "STRASSE", "0%", "e_c", "OFF"):
        page = text(staff.get(f"/teach/courses/{world.course.id}/quiz/bank?q={quote(needle)}"))
        api_titles = [
            q["title"]
            for q in ok(
                call(
                    world.client,
                    "GET",
                    f"/courses/{world.course.id}/quiz/questions?q={quote(needle)}",
                    world.ta.headers,
                )
            )["items"]
        ]
        assert sorted(_titles(page)) == sorted(api_titles), needle
    assert _titles(text(staff.get(f"/teach/courses/{world.course.id}/quiz/bank?q=0%25"))) == [
        "50% off"
    ]


def test_bank_pages_use_the_page_size(
    app: Flask, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "BANK_PAGE", 5)
    _fill_bank(app, world, 60)
    staff = browse_as(app, world.ta)
    page = text(staff.get(f"/teach/courses/{world.course.id}/quiz/bank?page=2"))
    assert "Questions 6 to 10 of 70" in page and "Page 2 of 14" in page
    assert len(_titles(page)) == 5
    tagged = text(staff.get(f"/teach/courses/{world.course.id}/quiz/bank?tag=even&page=6"))
    assert "Questions 26 to 30 of 30" in tagged and "Page 6 of 6" in tagged


def test_an_instructor_of_another_course_cannot_use_the_editor(
    app: Flask, world: World, users: Users
) -> None:
    stranger = person(users, "prof2@example.org", creator=True)
    other = ok(call(world.client, "POST", "/courses", stranger.headers, {"title": "Other"}), 201)
    question_id = world.questions["single_choice"]
    pages = browse_as(app, stranger)
    values = form_values("single_choice", _body(app, question_id))
    before = snapshot(app)
    for path in (
        f"/teach/quiz/questions/{question_id}",
        f"/teach/quiz/questions/{question_id}/delete",
        f"/teach/courses/{world.course.id}/quiz/bank",
        _new_url(world, "single_choice"),
    ):
        assert pages.get(path).status_code in (403, 404), path
    for path, data in (
        (f"/teach/quiz/questions/{question_id}", {**values, "title": "Taken over"}),
        (f"/teach/quiz/questions/{question_id}/delete", {}),
        (f"/teach/quiz/questions/{question_id}/regrade", {}),
        (_new_url(world, "single_choice"), SINGLE),
    ):
        assert pages.post(path, data).status_code in (403, 404), path
    assert snapshot(app) == before
    # their own course's editor works for them
    assert pages.get(f"/teach/courses/{other['id']}/quiz/questions/new").status_code == 200
