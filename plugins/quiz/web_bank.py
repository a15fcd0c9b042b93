"""Question bank pages: create, edit, preview, delete and regrade questions in the browser.

One form per question type, built from a declarative description of the
type's fields (:data:`FORMS`): the same description renders the form, reads
it back into the data :func:`plugins.quiz.questions.parse_question` takes and
maps each pydantic error location (``choices.2.weight``) back to the input it
came from, so a refused form is shown again with its input kept and every
error next to its field.  Nothing is stored on error: questions go through
the same service functions as the JSON API (:func:`plugins.quiz.api.add_question`,
:func:`~plugins.quiz.api.change_question`, :func:`~plugins.quiz.api.remove_question`).

Repeating parts (choices, answers, pairs, items, gaps and their answers) are
numbered rows (``choice-0-text``, ``gap-1-answer-0-value``); a few blank rows
follow the filled ones and an "Add more rows" button re-renders the form with
more, so no JavaScript is needed.  Blank rows are ignored when reading.

Rights are the API's: ``quiz.bank.view`` (instructors and TAs) may open a
question and its preview, ``quiz.bank.edit`` (instructors) may change it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import update
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from core import db
from core import rbac
from core.errors import Problem
from core.models import Course
from core.models import User
from core.web.forms import FormState
from plugins.quiz import api
from plugins.quiz.models import BankQuestion
from plugins.quiz.questions import MAX_OPTIONS
from plugins.quiz.questions import QuestionInvalid
from plugins.quiz.questions import learner_view
from plugins.quiz.questions import new_id
from plugins.quiz.questions import parse_question
from plugins.quiz.web import Page
from plugins.quiz.web import _login_redirect
from plugins.quiz.web import _staff_course
from plugins.quiz.web import _template_globals
from plugins.quiz.web import _user
from plugins.quiz.web import bp
from plugins.quiz.web import decimal_number
from plugins.quiz.web import whole_number

log = logging.getLogger(__name__)

#: How many blank rows follow the filled ones; "Add more rows" adds as many again.
BLANK_ROWS = 2
MORE_ROWS = 3

TYPE_LABELS: dict[str, Any] = {
    "single_choice": _l("Single choice"),
    "multiple_response": _l("Multiple response"),
    "true_false": _l("True or false"),
    "numeric": _l("Numeric"),
    "short_answer": _l("Short answer"),
    "cloze": _l("Cloze (fill in the blanks)"),
    "matching": _l("Matching"),
    "ordering": _l("Ordering"),
    "essay": _l("Essay"),
    "description": _l("Description (no answer)"),
}

TYPE_HINTS: dict[str, Any] = {
    "single_choice": _l("Learners pick one choice; one choice is fully correct."),
    "multiple_response": _l("Learners pick any number of choices; weights add up to 100 %."),
    "true_false": _l("A statement that is true or false."),
    "numeric": _l("A number, within a tolerance or range, optionally with a unit."),
    "short_answer": _l("A short text compared with accepted answers (* is a wildcard)."),
    "cloze": _l("A text with blanks [[1]], [[2]]… each answered separately."),
    "matching": _l("Match each prompt with an answer; extra answers are distractors."),
    "ordering": _l("Put items in the right order."),
    "essay": _l("A free text answer, marked by a grader."),
    "description": _l("Text shown between questions; takes no answer."),
}


# ---------------------------------------------------------------- form description


@dataclass(frozen=True)
class Field:
    """One input: ``key`` in the question data, how it is read and shown.

    ``kind``: ``text``, ``textarea``, ``number``, ``integer``, ``percent``
    (a fraction shown as a percentage), ``checkbox``, ``select``, ``boolean``
    (a true/false select), ``tags`` (comma-separated) or ``hidden`` (a part's id).
    ``default`` is the form value of a blank row (and of a new question).
    """

    key: str
    label: Any
    kind: str = "text"
    options: tuple[tuple[str, Any], ...] = ()
    hint: Any = None
    default: str = ""
    required: bool = False


@dataclass(frozen=True)
class Rows:
    """A repeating part: the list ``key`` of the question data, one row per element.

    With ``variants`` each row's fields depend on the value of its
    ``discriminator`` field (a cloze gap's type).
    """

    key: str
    prefix: str
    heading: Any
    legend: Any
    fields: tuple[Field | Rows, ...] = ()
    variants: Mapping[str, tuple[Field | Rows, ...]] = field(default_factory=dict)
    discriminator: str = ""
    hint: Any = None
    #: rows get Move up / Move down buttons (their order matters)
    movable: bool = False

    def fields_for(self, variant: str) -> tuple[Field | Rows, ...]:
        """The row's fields (for a row whose discriminator is ``variant``)."""
        if not self.variants:
            return self.fields
        chosen = self.variants.get(variant) or next(iter(self.variants.values()))
        return self.fields + chosen


Spec = tuple[Field | Rows, ...]

TEXT_FORMATS = (("plain", _l("Plain text")), ("html", _l("HTML")), ("markdown", _l("Markdown")))
WHITESPACE = (
    ("collapse", _l("Collapse runs of spaces")),
    ("ignore", _l("Ignore all spaces")),
    ("exact", _l("Compare exactly")),
)
SCORING = (
    ("subsequence", _l("Longest run in the right relative order")),
    ("position", _l("Share of items in the right position")),
    ("all_or_nothing", _l("All or nothing")),
)
GAP_TYPES = (
    ("choice", _l("Pick a choice")),
    ("short_answer", _l("Short answer")),
    ("numeric", _l("Number")),
)

ID = Field("id", _l("Id"), "hidden")
WEIGHT = Field(
    "weight",
    _l("Weight (%)"),
    "percent",
    hint=_l("100 is fully correct, 50 half credit, a negative value a penalty."),
)
ANSWER_WEIGHT = Field(
    "weight", _l("Credit (%)"), "percent", default="100", hint=_l("100 is fully correct.")
)
FEEDBACK = Field("feedback", _l("Feedback"), "textarea")


def _choices(hint: Any) -> Rows:
    return Rows(
        "choices",
        "choice",
        _l("Choices"),
        _l("Choice %(n)s"),
        (ID, Field("text", _l("Text")), WEIGHT, FEEDBACK),
        hint=hint,
        movable=True,
    )


def _text_answers() -> Rows:
    return Rows(
        "answers",
        "answer",
        _l("Accepted answers"),
        _l("Accepted answer %(n)s"),
        (
            ID,
            Field("text", _l("Answer"), hint=_l("* matches any text; \\* is a literal asterisk.")),
            ANSWER_WEIGHT,
            FEEDBACK,
        ),
    )


def _short_rules() -> Spec:
    return (
        Field("case_sensitive", _l("Case matters"), "checkbox"),
        Field("whitespace", _l("Spaces in answers"), "select", WHITESPACE, default="collapse"),
    )


def _numeric_key() -> Spec:
    return (
        Rows(
            "answers",
            "answer",
            _l("Accepted numbers"),
            _l("Accepted number %(n)s"),
            (
                ID,
                Field("value", _l("Value"), "number"),
                Field("tolerance", _l("Tolerance (±)"), "number"),
                Field("low", _l("Or from"), "number"),
                Field("high", _l("up to"), "number"),
                ANSWER_WEIGHT,
                FEEDBACK,
            ),
            hint=_l("Give a value with an optional tolerance, or a range from … to."),
        ),
        Rows(
            "units",
            "unit",
            _l("Units"),
            _l("Unit %(n)s"),
            (
                Field("name", _l("Unit"), hint=_l("for example cm.")),
                Field(
                    "multiplier",
                    _l("Multiplier"),
                    "number",
                    default="1",
                    hint=_l("With answers in metres, cm has the multiplier 100."),
                ),
            ),
        ),
        Field("unit_required", _l("A unit is required"), "checkbox"),
        Field(
            "unit_penalty",
            _l("Penalty for a missing or unknown unit (%)"),
            "percent",
            default="10",
        ),
        Field("wrong_feedback", _l("Feedback when no answer matches"), "textarea"),
    )


COMMON: Spec = (
    Field("title", _l("Title"), hint=_l("For you and other staff; learners never see it.")),
    Field("text", _l("Question text"), "textarea", required=True),
    Field("text_format", _l("Text format"), "select", TEXT_FORMATS, default="plain"),
    Field("points", _l("Points"), "number", default="1"),
    Field("category", _l("Category"), hint=_l("A path such as Chemistry/Week 1.")),
    Field("tags", _l("Tags"), "tags", hint=_l("Separated by commas.")),
    Field("general_feedback", _l("General feedback"), "textarea"),
)

SHUFFLE = Field("shuffle", _l("Shuffle the choices"), "checkbox", default="1")

GAP = Rows(
    "gaps",
    "gap",
    _l("Blanks"),
    _l("Blank [[%(n)s]]"),
    (
        ID,
        Field("type", _l("Kind of blank"), "select", GAP_TYPES, default="choice"),
        Field("points", _l("Weight among the blanks"), "number", default="1"),
    ),
    variants={
        "choice": (
            SHUFFLE,
            _choices(_l("Exactly one choice has the weight 100.")),
        ),
        "short_answer": (*_short_rules(), _text_answers()),
        "numeric": _numeric_key(),
    },
    discriminator="type",
    hint=_l(
        "Blank 1 goes where the text says [[1]]. After changing a blank's kind, "
        "press “Update the form” to see its fields."
    ),
)

FORMS: dict[str, Spec] = {
    "single_choice": (
        *COMMON,
        SHUFFLE,
        _choices(_l("Exactly one choice has the weight 100; others may earn partial credit.")),
    ),
    "multiple_response": (
        *COMMON,
        SHUFFLE,
        Field(
            "wrong_pick_penalty",
            _l("Penalty for each wrong choice picked (%)"),
            "percent",
        ),
        _choices(_l("The positive weights add up to 100.")),
    ),
    "true_false": (
        *COMMON,
        Field(
            "correct",
            _l("The statement is"),
            "boolean",
            (("true", _l("True")), ("false", _l("False"))),
            default="true",
        ),
        Field("feedback_true", _l("Feedback for “true”"), "textarea"),
        Field("feedback_false", _l("Feedback for “false”"), "textarea"),
    ),
    "numeric": (*COMMON, *_numeric_key()),
    "short_answer": (*COMMON, *_short_rules(), _text_answers()),
    "cloze": (*COMMON, GAP),
    "matching": (
        *COMMON,
        Rows(
            "pairs",
            "pair",
            _l("Pairs"),
            _l("Pair %(n)s"),
            (
                Field("prompt_id", _l("Prompt id"), "hidden"),
                Field("prompt", _l("Prompt")),
                Field("answer_id", _l("Answer id"), "hidden"),
                Field("answer", _l("Its answer")),
            ),
            hint=_l("Prompts may share an answer."),
        ),
        Rows(
            "distractors",
            "distractor",
            _l("Distractors"),
            _l("Distractor %(n)s"),
            (ID, Field("text", _l("Wrong answer"))),
            hint=_l("Answers that match no prompt."),
        ),
    ),
    "ordering": (
        *COMMON,
        Field("scoring", _l("Partial credit"), "select", SCORING, default="subsequence"),
        Rows(
            "items",
            "item",
            _l("Items, in the correct order"),
            _l("Item %(n)s"),
            (ID, Field("text", _l("Text"))),
            hint=_l("Learners see them shuffled."),
            movable=True,
        ),
    ),
    "essay": (
        *COMMON,
        Field("grader_info", _l("Notes for graders"), "textarea"),
        Field("response_template", _l("Text the answer box starts with"), "textarea"),
        Field("max_length", _l("Longest answer (characters)"), "integer", default="10000"),
    ),
    "description": tuple(f for f in COMMON if f.key != "points"),
}


# ---------------------------------------------------------------- data <-> form values


def _name(prefix: str, key: str) -> str:
    return f"{prefix}-{key}" if prefix else key


def _number_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else ""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _field_text(spec: Field, value: Any) -> str:
    if value is None:
        return ""
    if spec.kind == "percent":
        return _number_text(round(float(value) * 100, 5))
    if spec.kind in ("number", "integer"):
        return _number_text(value)
    if spec.kind == "checkbox":
        return "1" if value else ""
    if spec.kind == "boolean":
        return "true" if value else "false"
    if spec.kind == "tags":
        return ", ".join(str(v) for v in value)
    return str(value)


def _matching_rows(body: Mapping[str, Any]) -> dict[str, Any]:
    answers = {a["id"]: a["text"] for a in body.get("answers", [])}
    used = {p["answer_id"] for p in body.get("prompts", [])}
    out = dict(body)
    out["pairs"] = [
        {
            "prompt_id": p["id"],
            "prompt": p["text"],
            "answer_id": p["answer_id"],
            "answer": answers.get(p["answer_id"], ""),
        }
        for p in body.get("prompts", [])
    ]
    out["distractors"] = [a for a in body.get("answers", []) if a["id"] not in used]
    return out


def form_values(qtype: str, body: Mapping[str, Any]) -> dict[str, str]:
    """The form values showing ``body`` (a stored question, or {} for a new one)."""
    if qtype == "matching":
        body = _matching_rows(body)
    values: dict[str, str] = {}
    _write(FORMS[qtype], body, "", values, fresh=not body)
    return values


def _write(
    spec: Spec, data: Mapping[str, Any], prefix: str, values: dict[str, str], fresh: bool
) -> None:
    for part in spec:
        if isinstance(part, Rows):
            name = _name(prefix, part.prefix)
            items = list(data.get(part.key) or [])
            count = min(MAX_OPTIONS, len(items) + BLANK_ROWS)
            values[f"{name}-rows"] = str(count)
            for index, item in enumerate(items):
                row = f"{name}-{index}"
                _write(part.fields_for(str(item.get("type", ""))), item, row, values, False)
            for index in range(len(items), count):
                values.update(_blank_values(part, f"{name}-{index}"))
            continue
        name = _name(prefix, part.key)
        if fresh:
            values[name] = part.default
        elif part.key in data:
            values[name] = _field_text(part, data[part.key])


def _blank_values(part: Rows, row: str) -> dict[str, str]:
    """The form values of a blank row: defaults, and blank rows of its own parts."""
    values: dict[str, str] = {}
    first = next(iter(part.variants), "")
    for sub in part.fields_for(first):
        if isinstance(sub, Rows):
            name = _name(row, sub.prefix)
            values[f"{name}-rows"] = str(BLANK_ROWS)
            for index in range(BLANK_ROWS):
                values.update(_blank_values(sub, f"{name}-{index}"))
        else:
            values[_name(row, sub.key)] = sub.default
    return values


@dataclass
class Reading:
    """Form input read back into question data, and where each part came from."""

    data: dict[str, Any]
    #: a question data path (without type tags) -> the input or row it came from
    names: dict[tuple[Any, ...], str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    #: hidden inputs (part ids): their errors are shown on their row
    hidden: set[str] = field(default_factory=set)


def _row_count(form: Mapping[str, str], name: str) -> int:
    count = whole_number(form.get(f"{name}-rows"))
    return min(MAX_OPTIONS, count) if count is not None else 0


def _blank_row(spec: Spec, form: Mapping[str, str], prefix: str) -> bool:
    for part in spec:
        if isinstance(part, Rows):
            name = _name(prefix, part.prefix)
            for index in range(_row_count(form, name)):
                row = f"{name}-{index}"
                variant = form.get(_name(row, part.discriminator), "") if part.discriminator else ""
                if not _blank_row(part.fields_for(variant), form, row):
                    return False
            continue
        if part.kind in ("hidden", "select", "checkbox", "boolean"):
            continue
        value = form.get(_name(prefix, part.key), "").strip()
        if value and value != part.default:
            return False
    return True


def _read(
    spec: Spec,
    form: Mapping[str, str],
    prefix: str,
    path: tuple[Any, ...],
    out: dict[str, Any],
    reading: Reading,
) -> None:
    for part in spec:
        if isinstance(part, Rows):
            name = _name(prefix, part.prefix)
            reading.names[(*path, part.key)] = name
            rows: list[dict[str, Any]] = []
            for index in range(_row_count(form, name)):
                row = f"{name}-{index}"
                variant = form.get(_name(row, part.discriminator), "") if part.discriminator else ""
                fields = part.fields_for(variant)
                if _blank_row(fields, form, row):
                    continue
                where = (*path, part.key, len(rows))
                reading.names[where] = row
                item: dict[str, Any] = {}
                _read(fields, form, row, where, item, reading)
                rows.append(item)
            out[part.key] = rows
            continue
        name = _name(prefix, part.key)
        reading.names[(*path, part.key)] = name
        raw = form.get(name, "")
        value = raw.strip()
        if part.kind == "hidden":
            reading.hidden.add(name)
            if value:
                out[part.key] = value
        elif part.kind == "checkbox":
            out[part.key] = bool(value)
        elif part.kind == "boolean":
            if value in ("true", "false"):
                out[part.key] = value == "true"
        elif part.kind == "tags":
            out[part.key] = [t.strip() for t in value.split(",") if t.strip()]
        elif part.kind in ("number", "percent", "integer"):
            if not value:
                continue
            number: float | None
            if part.kind == "integer":
                digits = value.removeprefix("-")
                number = whole_number(digits)
                if number is not None and digits != value:
                    number = -number
            else:
                number = decimal_number(value)
            if number is None:
                reading.errors[name] = (
                    gettext("Enter a whole number.")
                    if part.kind == "integer"
                    else gettext("Enter a number.")
                )
                continue
            out[part.key] = number / 100 if part.kind == "percent" else number
        elif part.kind == "textarea":
            out[part.key] = raw.replace("\r\n", "\n").strip()
        elif part.kind == "select":
            if value:  # none chosen: the model's default
                out[part.key] = value
        else:
            out[part.key] = value


def _matching_data(reading: Reading) -> None:
    """Turn the form's pairs and distractors into the model's prompts and answers."""
    data = reading.data
    names = reading.names
    prompts: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    by_text: dict[str, str] = {}
    used: set[str] = set()

    def answer(text: str, wanted: str, source: str) -> str:
        if text in by_text:
            return by_text[text]
        answer_id = wanted if wanted and wanted not in used else new_id()
        used.add(answer_id)
        by_text[text] = answer_id
        names[("answers", len(answers))] = source
        names[("answers", len(answers), "text")] = source
        answers.append({"id": answer_id, "text": text})
        return answer_id

    for index, pair in enumerate(data.pop("pairs", [])):
        row = names.get(("pairs", index), "")
        answer_id = answer(pair.get("answer", ""), pair.get("answer_id", ""), f"{row}-answer")
        names[("prompts", len(prompts))] = row
        names[("prompts", len(prompts), "text")] = f"{row}-prompt"
        prompt_id = pair.get("prompt_id", "")
        prompts.append(
            {
                "id": prompt_id if prompt_id and prompt_id not in used else new_id(),
                "text": pair.get("prompt", ""),
                "answer_id": answer_id,
            }
        )
        used.add(prompts[-1]["id"])
    for index, extra in enumerate(data.pop("distractors", [])):
        row = names.get(("distractors", index), "")
        answer(extra.get("text", ""), extra.get("id", ""), f"{row}-text")
    data["prompts"] = prompts
    data["answers"] = answers
    names[("prompts",)] = "pair"
    names[("answers",)] = "pair"


def read_form(qtype: str, form: Mapping[str, str]) -> Reading:
    """Read a question form back into question data (not yet validated)."""
    reading = Reading(data={"type": qtype})
    _read(FORMS[qtype], form, "", (), reading.data, reading)
    if qtype == "matching":
        _matching_data(reading)
    return reading


_GAP_TYPES = {value for value, _ in GAP_TYPES}


def _error_path(qtype: str, loc: str) -> tuple[Any, ...]:
    parts: list[Any] = [
        whole_number(p) if whole_number(p) is not None else p for p in loc.split(".") if p
    ]
    if parts and parts[0] == qtype:
        parts = parts[1:]
    out: list[Any] = []
    index = 0
    while index < len(parts):
        out.append(parts[index])
        # a gap's loc names its type after the index: gaps.0.choice.choices...
        if (
            len(out) >= 2
            and out[-2] == "gaps"
            and isinstance(out[-1], int)
            and index + 1 < len(parts)
            and parts[index + 1] in _GAP_TYPES
        ):
            index += 1
        index += 1
    return tuple(out)


def place_errors(
    qtype: str, reading: Reading, errors: list[dict[str, str]], form: FormState
) -> None:
    """Put each validation error next to the input (or row) it is about.

    An error the form cannot place (one about the whole question) is shown
    above the form.
    """
    for error in errors:
        path = _error_path(qtype, str(error.get("loc", "")))
        message = str(error.get("msg", ""))
        name = None
        for end in range(len(path), 0, -1):
            name = reading.names.get(path[:end])
            if name is not None:
                break
        if name in reading.hidden:
            name = name.rsplit("-", 1)[0]
        if name is None or not path:
            form.add(None, message)
        elif name not in form.errors:
            form.add(name, message)


# ---------------------------------------------------------------- rendering plan


def _widgets(
    spec: Spec,
    values: Mapping[str, str],
    form: FormState,
    prefix: str,
    more: str,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in spec:
        if isinstance(part, Rows):
            name = _name(prefix, part.prefix)
            shown = _row_count(values, name) if f"{name}-rows" in values else BLANK_ROWS
            count = min(MAX_OPTIONS, shown + MORE_ROWS) if more == name else shown
            rows = []
            for index in range(count):
                row = f"{name}-{index}"
                row_values: Mapping[str, str] = values
                if index >= shown or f"{name}-rows" not in values:
                    row_values = {**_blank_values(part, row), **values}
                variant = (
                    row_values.get(_name(row, part.discriminator), "") if part.discriminator else ""
                )
                rows.append(
                    {
                        "name": row,
                        "up": f"{row}:up" if part.movable and index > 0 else "",
                        "down": f"{row}:down" if part.movable and index < count - 1 else "",
                        # where the page should scroll to after the move
                        "above": f"{name}-{index - 1}",
                        "below": f"{name}-{index + 1}",
                        "legend": part.legend % {"n": index + 1},
                        "error": " ".join(form.errors.get(row, [])),
                        "widgets": _widgets(part.fields_for(variant), row_values, form, row, more),
                    }
                )
            # Each row repeats its fields: their hints are said once, for the group.
            hints = [part.hint] if part.hint else []
            hints.append(gettext("Clear a row to remove it."))
            hints += [
                f"{sub.label}: {sub.hint}"
                for sub in part.fields_for(next(iter(part.variants), ""))
                if isinstance(sub, Field) and sub.hint
            ]
            out.append(
                {
                    "kind": "rows",
                    "name": name,
                    "heading": part.heading,
                    "hint": " ".join(str(h) for h in hints),
                    "error": " ".join(form.errors.get(name, [])),
                    "count": count,
                    "full": count >= MAX_OPTIONS,
                    "rows": rows,
                }
            )
            continue
        name = _name(prefix, part.key)
        out.append(
            {
                "kind": part.kind,
                "name": name,
                "label": part.label,
                "hint": None if prefix else part.hint,
                "options": part.options,
                "value": values.get(name, ""),
                "required": part.required,
            }
        )
    return out


def moved(values: Mapping[str, str], move: str) -> dict[str, str] | None:
    """``values`` with one row swapped with its neighbour (``"item-2:up"``), or None.

    Every input of the two rows trades places, nested rows included.
    """
    row, _, direction = move.rpartition(":")
    group, _, index = row.rpartition("-")
    number = whole_number(index)
    if direction not in ("up", "down") or number is None or not group:
        return None
    other = number - 1 if direction == "up" else number + 1
    if not 0 <= other < _row_count(values, group) or number >= _row_count(values, group):
        return None
    mine, theirs = f"{group}-{number}-", f"{group}-{other}-"
    out: dict[str, str] = {}
    for key, value in values.items():
        if key.startswith(mine):
            out[theirs + key[len(mine) :]] = value
        elif key.startswith(theirs):
            out[mine + key[len(theirs) :]] = value
        else:
            out[key] = value
    return out


def _preview(body: Mapping[str, Any], seed: int, saved: bool) -> dict[str, Any] | None:
    """What the preview shows: the learner view of ``body`` (None if it does not validate)."""
    try:
        question = parse_question(body)
    except QuestionInvalid:
        return None
    # a fixed seed: the preview does not reshuffle on every reload
    view = learner_view(question, rng=random.Random(seed))  # noqa: S311
    value: Any = None
    if view["type"] == "ordering":
        value = [i["id"] for i in view["items"]]
    return {"q": view, "value": value, "saved": saved}


def _render_form(
    course: Course,
    qtype: str,
    values: Mapping[str, str],
    form: FormState,
    *,
    row: BankQuestion | None = None,
    can_edit: bool = True,
    more: str = "",
    status: int = 200,
    unsaved: Mapping[str, Any] | None = None,
) -> tuple[str, int]:
    """The question's form; the preview shows ``unsaved`` data if given, else the saved row."""
    widgets = _widgets(FORMS[qtype], values, form, "", more)
    preview = None
    if unsaved is not None:
        preview = _preview(unsaved, row.id if row is not None else 0, saved=False)
    elif row is not None:
        preview = _preview(row.body, row.id, saved=True)
    action = (
        url_for("quiz_web.edit_question", question_id=row.public_id)
        if row is not None
        else url_for("quiz_web.new_question", course_id=course.public_id, type=qtype)
    )
    return (
        render_template(
            "quiz/question_form.html",
            course=course,
            qtype=qtype,
            type_label=TYPE_LABELS[qtype],
            type_hint=TYPE_HINTS[qtype],
            widgets=widgets,
            form=form,
            row=row,
            action=action,
            can_edit=can_edit,
            preview=preview,
            used_by=api.quizzes_naming(db.session(), course, row.public_id) if row else [],
            regradable=qtype not in ("essay", "description"),
            **_template_globals(),
        ),
        status,
    )


# ---------------------------------------------------------------- pages


def _question(question_id: str, action: str) -> tuple[User, BankQuestion, Course]:
    return api._load_question(question_id[:64], action)


def _submitted(form: MultiDict[str, str]) -> dict[str, str]:
    return {key: form.get(key, "") for key in form}


def _check(
    qtype: str, values: Mapping[str, str], row: BankQuestion | None
) -> tuple[FormState, Reading]:
    """Read and validate the posted form; errors are on the returned form state."""
    form = FormState(values=dict(values))
    reading = read_form(qtype, values)
    for name, message in reading.errors.items():
        form.add(name, message)
    reading.data["id"] = row.public_id if row else new_id()
    try:
        parse_question(reading.data)
    except QuestionInvalid as exc:
        place_errors(qtype, reading, exc.errors, form)
    del reading.data["id"]
    return form, reading


class StaleVersion(Exception):
    """Someone saved the question after the form was opened: the save was not made."""


def _claim(sess: Session, row: BankQuestion, expected: int) -> None:
    """Take the question's row for this transaction if it is still at version ``expected``.

    A conditional UPDATE, so the check and the save that follows are one
    step: a concurrent save either waits for this transaction's row lock
    (PostgreSQL) or for the database's one writer (SQLite), and then finds
    the version changed.

    :raise StaleVersion: the stored version is another; nothing was written.
    """
    result = sess.execute(
        update(BankQuestion)
        .where(BankQuestion.id == row.id, BankQuestion.version == expected)
        .values(version=BankQuestion.version)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise StaleVersion(row.public_id)


def _save(
    qtype: str,
    course: Course,
    row: BankQuestion | None,
    expected: int | None = None,
    *,
    actor: User,
) -> tuple[FormState, Reading, BankQuestion | None]:
    """Validate the posted form and store it (new or changed) if it is valid, audited.

    :param expected: the version the form was opened at (a change only).
    :raise StaleVersion: the stored question is at another version; nothing was saved.
    """
    form, reading = _check(qtype, _submitted(request.form), row)
    if not form.ok:
        return form, reading, None
    sess = db.session()
    try:
        if row is None:
            row = api.add_question(sess, course, reading.data, actor=actor)
        else:
            try:
                _claim(sess, row, row.version if expected is None else expected)
            except StaleVersion:
                sess.rollback()
                raise
            api.change_question(sess, row, course, reading.data, actor=actor)
            sess.flush()
    except api.QuestionRejected as exc:
        sess.rollback()
        place_errors(qtype, reading, exc.extra.get("errors") or [], form)
        if form.ok:
            form.add(None, str(exc.detail))
        return form, reading, None
    sess.commit()
    return form, reading, row


@bp.route("/teach/courses/<course_id>/quiz/questions/new", methods=["GET", "POST"])
def new_question(course_id: str) -> Page:
    """Pick a question type, then fill in that type's form (instructors)."""
    if _user() is None:
        return _login_redirect()
    user, course = _staff_course(course_id, "quiz.bank.edit")
    qtype = request.values.get("type", "")
    if qtype not in FORMS:
        return render_template(
            "quiz/question_types.html",
            course=course,
            types=[(t, TYPE_LABELS[t], TYPE_HINTS[t]) for t in FORMS],
            unknown=bool(qtype),
        ), (404 if qtype else 200)
    if request.method == "GET":
        return _render_form(course, qtype, form_values(qtype, {}), FormState())
    values = _submitted(request.form)
    more = request.form.get("more", "")
    move = request.form.get("move", "")
    if more or move or request.form.get("action") == "update":
        values = moved(values, move) or values
        return _render_form(course, qtype, values, FormState(values=values), more=more)
    if request.form.get("action") == "preview":
        form, reading = _check(qtype, values, None)
        status = 200 if form.ok else 422
        unsaved = {**reading.data, "id": "preview"} if form.ok else None
        return _render_form(course, qtype, values, form, status=status, unsaved=unsaved)
    form, _, row = _save(qtype, course, None, actor=user)
    if row is None:
        return _render_form(course, qtype, values, form, status=422)
    flash(gettext("The question was added to the bank."), "success")
    return redirect(url_for("quiz_web.edit_question", question_id=row.public_id))


@bp.route("/teach/quiz/questions/<question_id>", methods=["GET", "POST"])
def edit_question(question_id: str) -> Page:
    """A question's form and its preview as learners see it (TAs: read only)."""
    if _user() is None:
        return _login_redirect()
    user, row, course = _question(question_id, "quiz.bank.view")
    qtype = row.type if row.type in FORMS else "description"
    can_edit = rbac.can(user, "quiz.bank.edit", course)
    if request.method == "GET":
        return _render_form(
            course, qtype, form_values(qtype, row.body), FormState(), row=row, can_edit=can_edit
        )
    rbac.require(user, "quiz.bank.edit", course, what="question")
    values = _submitted(request.form)
    more = request.form.get("more", "")
    move = request.form.get("move", "")
    if more or move or request.form.get("action") == "update":
        values = moved(values, move) or values
        return _render_form(course, qtype, values, FormState(values=values), row=row, more=more)
    if request.form.get("action") == "preview":
        form, reading = _check(qtype, values, row)
        status = 200 if form.ok else 422
        unsaved = {**reading.data, "id": row.public_id} if form.ok else None
        return _render_form(course, qtype, values, form, row=row, status=status, unsaved=unsaved)
    sent = request.form.get("version")
    expected = whole_number(sent) if sent is not None else row.version
    if expected is None:
        form = FormState(values=values)
        form.add(
            None,
            gettext(
                "This form's version number is not valid, so your changes were not saved."
                " Open the question again to edit it."
            ),
        )
        return _render_form(course, qtype, values, form, row=row, status=422)
    try:
        if expected != row.version:
            raise StaleVersion(row.public_id)
        form, _, saved = _save(qtype, course, row, expected, actor=user)
    except StaleVersion:
        return _stale(course, qtype, values, row)
    if saved is None:
        db.session().refresh(row)
        return _render_form(course, qtype, values, form, row=row, status=422)
    flash(gettext("The question was saved (version %(n)s).", n=saved.version), "success")
    return redirect(url_for("quiz_web.edit_question", question_id=saved.public_id))


def _stale(course: Course, qtype: str, values: Mapping[str, str], row: BankQuestion) -> Page:
    """The form again with the input kept, saying a newer version was saved meanwhile."""
    # Someone saved the question since this form was opened: do not overwrite it.
    form = FormState(values={**values, "version": str(row.version)})
    form.add(
        None,
        gettext(
            "Someone saved this question (now version %(n)s) after you opened it, so your"
            " changes were not saved. They are kept below: compare them with the preview"
            " and save again to replace that version.",
            n=row.version,
        ),
    )
    return _render_form(course, qtype, form.values, form, row=row, status=409)


@bp.route("/teach/quiz/questions/<question_id>/delete", methods=["GET", "POST"])
def delete_question(question_id: str) -> Page:
    """Ask, then delete a question; refused while a quiz still uses it."""
    if _user() is None:
        return _login_redirect()
    user, row, course = _question(question_id, "quiz.bank.edit")
    sess = db.session()
    used_by = api.quizzes_naming(sess, course, row.public_id)
    if request.method == "GET" or used_by:
        return render_template(
            "quiz/question_delete.html", course=course, row=row, used_by=used_by
        ), (409 if request.method == "POST" else 200)
    try:
        api.remove_question(sess, row, course, actor=user)
    except api.QuestionInUse:  # a quiz took it up meanwhile
        sess.rollback()
        used_by = api.quizzes_naming(sess, course, row.public_id)
        return render_template(
            "quiz/question_delete.html", course=course, row=row, used_by=used_by
        ), 409
    sess.commit()
    flash(
        gettext("The question “%(title)s” was deleted.", title=row.title or row.public_id),
        "success",
    )
    return redirect(url_for("quiz_web.bank", course_id=course.public_id))


@bp.post("/teach/quiz/questions/<question_id>/regrade")
def regrade(question_id: str) -> Page:
    """Regrade the submitted attempts containing the question with its current key."""
    if _user() is None:
        return _login_redirect()
    user, row, course = _question(question_id, "quiz.bank.edit")
    try:
        report = api.run_regrade(user, row, course)
    except Problem as exc:
        db.session().rollback()
        if exc.status != 409:
            raise
        flash(str(exc.detail), "error")
        return redirect(url_for("quiz_web.edit_question", question_id=row.public_id))
    message = gettext(
        "Regraded: %(checked)s submitted attempt(s) contain the question, %(changed)s changed.",
        checked=report.checked,
        changed=report.changed,
    )
    if report.skipped:
        message += " " + gettext(
            "%(n)s attempt(s) were left as they were because their answer no longer fits"
            " the question.",
            n=len(report.skipped),
        )
    if report.in_progress:
        message += " " + gettext(
            "%(n)s attempt(s) in progress contain the question: they are graded with the"
            " version they started with when submitted; regrade again after that to apply"
            " this one.",
            n=report.in_progress,
        )
    flash(message, "success")
    return redirect(url_for("quiz_web.edit_question", question_id=row.public_id))
