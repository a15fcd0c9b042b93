"""Question models: validation with clear messages, and the learner's view without answers."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from plugins.quiz.questions import MAX_TEXT_LENGTH
from plugins.quiz.questions import Choice
from plugins.quiz.questions import Matching
from plugins.quiz.questions import MultipleResponse
from plugins.quiz.questions import Ordering
from plugins.quiz.questions import Question
from plugins.quiz.questions import QuestionInvalid
from plugins.quiz.questions import SingleChoice
from plugins.quiz.questions import dump_question
from plugins.quiz.questions import learner_view
from plugins.quiz.questions import new_id
from plugins.quiz.questions import parse_question
from tests.quiz.samples import ORDER
from tests.quiz.samples import SAMPLES
from tests.quiz.samples import SECRET
from tests.quiz.samples import matching
from tests.quiz.samples import ordering
from tests.quiz.samples import single_choice


def _choice(text: str, weight: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {"text": text, "weight": weight, **extra}


def _single(**overrides: Any) -> dict[str, Any]:
    data = {
        "type": "single_choice",
        "text": "Pick one",
        "choices": [_choice("a", 1), _choice("b")],
    }
    return data | overrides


def _errors(data: Any) -> list[dict[str, str]]:
    with pytest.raises(QuestionInvalid) as info:
        parse_question(data)
    assert str(info.value) == "invalid question"
    return info.value.errors


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_survives_dump_and_parse(name: str) -> None:
    question = SAMPLES[name]()
    data = dump_question(question)
    assert json.loads(json.dumps(data)) == data
    assert parse_question(data) == question


def test_new_ids_are_opaque_and_unique() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) >= 16 for i in ids)


def test_parts_get_random_ids_by_default() -> None:
    first = parse_question(_single())
    second = parse_question(_single())
    assert isinstance(first, SingleChoice) and isinstance(second, SingleChoice)
    assert first.id != second.id
    assert first.choices[0].id != second.choices[0].id


BAD_QUESTIONS = [
    pytest.param(
        _single(choices=[_choice("a"), _choice("b")]),
        "exactly one choice must be fully correct (weight 1), found 0",
        id="single-none-correct",
    ),
    pytest.param(
        _single(choices=[_choice("a", 1), _choice("b", 1)]),
        "exactly one choice must be fully correct (weight 1), found 2",
        id="single-two-correct",
    ),
    pytest.param(
        _single(choices=[_choice("a", 1)]),
        "List should have at least 2 items",
        id="single-one-choice",
    ),
    pytest.param(
        _single(choices=[_choice("a", 1, id="same"), _choice("b", id="same")]),
        "ids within a question must be unique; repeated: same",
        id="duplicate-choice-ids",
    ),
    pytest.param(
        _single(id="c1", choices=[_choice("a", 1, id="c1"), _choice("b")]),
        "ids within a question must be unique; repeated: c1",
        id="choice-id-equals-question-id",
    ),
    pytest.param(
        _single(choices=[_choice("a", 1), _choice("b", 1.5)]),
        "less than or equal to 1",
        id="weight-above-1",
    ),
    pytest.param(
        _single(choices=[_choice("a", 1), _choice("b", -2)]),
        "greater than or equal to -1",
        id="weight-below-minus-1",
    ),
    pytest.param(
        _single(choices=[_choice("a", 1), _choice("   ")]),
        "at least 1 character",
        id="blank-choice",
    ),
    pytest.param(
        _single(choices=[_choice("a", 1, id="has space"), _choice("b")]),
        "should match pattern",
        id="id-characters",
    ),
    pytest.param(
        {
            "type": "multiple_response",
            "text": "Pick",
            "choices": [_choice("a", 0.5), _choice("b", 0.3), _choice("c", -1)],
        },
        "the positive choice weights must add up to 1 (100%), they add up to 0.8",
        id="multiple-weights-short",
    ),
    pytest.param(
        {"type": "multiple_response", "text": "Pick", "choices": [_choice("a"), _choice("b")]},
        "they add up to 0",
        id="multiple-no-correct",
    ),
    pytest.param(
        {
            "type": "multiple_response",
            "text": "Pick",
            "choices": [_choice("a", 1), _choice("b")],
            "wrong_pick_penalty": 2,
        },
        "less than or equal to 1",
        id="penalty-above-1",
    ),
    pytest.param(
        {"type": "true_false", "text": "Sky is blue"},
        "Field required",
        id="true-false-no-key",
    ),
    pytest.param(
        {"type": "short_answer", "text": "Say", "answers": [{"text": "x", "weight": 0.5}]},
        "at least one accepted answer must be fully correct (weight 1)",
        id="short-no-full-answer",
    ),
    pytest.param(
        {"type": "short_answer", "text": "Say", "answers": [{"text": "x", "weight": -0.5}]},
        "greater than or equal to 0",
        id="short-negative-weight",
    ),
    pytest.param(
        {"type": "short_answer", "text": "Say", "answers": [{"text": "x" * 1001}]},
        "at most 1000 characters",
        id="short-pattern-too-long",
    ),
    pytest.param(
        {"type": "numeric", "text": "N", "answers": [{"value": 1, "low": 0, "high": 2}]},
        "give either value (with tolerance) or low and high, not both",
        id="numeric-both-forms",
    ),
    pytest.param(
        {"type": "numeric", "text": "N", "answers": [{"low": 0}]},
        "give a value (with tolerance) or both low and high",
        id="numeric-half-range",
    ),
    pytest.param(
        {"type": "numeric", "text": "N", "answers": [{"low": 5, "high": 1}]},
        "low (5.0) is greater than high (1.0)",
        id="numeric-inverted-range",
    ),
    pytest.param(
        {"type": "numeric", "text": "N", "answers": [{"low": 1, "high": 5, "tolerance": 1}]},
        "tolerance only applies to a value",
        id="numeric-range-tolerance",
    ),
    pytest.param(
        {"type": "numeric", "text": "N", "answers": [{"value": 1, "tolerance": -1}]},
        "greater than or equal to 0",
        id="numeric-negative-tolerance",
    ),
    pytest.param(
        {"type": "numeric", "text": "N", "answers": [{"value": float("nan")}]},
        "finite number",
        id="numeric-nan",
    ),
    pytest.param(
        {"type": "numeric", "text": "N", "answers": [{"value": 1, "weight": 0.5}]},
        "at least one numeric answer must be fully correct",
        id="numeric-no-full-answer",
    ),
    pytest.param(
        {"type": "numeric", "text": "N", "answers": [{"value": 1}], "unit_required": True},
        "unit_required needs at least one unit",
        id="numeric-required-unit-missing",
    ),
    pytest.param(
        {
            "type": "numeric",
            "text": "N",
            "answers": [{"value": 1}],
            "units": [{"name": "m"}, {"name": "m", "multiplier": 2}],
        },
        "unit names must be unique; repeated: m",
        id="numeric-duplicate-units",
    ),
    pytest.param(
        {"type": "numeric", "text": "N", "answers": [{"value": 1}], "units": [{"name": "2m"}]},
        "should match pattern",
        id="numeric-unit-starting-with-digit",
    ),
    pytest.param(
        {
            "type": "cloze",
            "text": "No markers here",
            "gaps": [{"type": "short_answer", "answers": [{"text": "x"}]}],
        },
        "each gap marker [[1]]..[[1]] exactly once; found none",
        id="cloze-missing-marker",
    ),
    pytest.param(
        {
            "type": "cloze",
            "text": "[[1]] and [[1]] and [[3]]",
            "gaps": [
                {"type": "short_answer", "answers": [{"text": "x"}]},
                {"type": "numeric", "answers": [{"value": 1}]},
            ],
        },
        "found [[1]], [[1]], [[3]]",
        id="cloze-wrong-markers",
    ),
    pytest.param(
        {
            "type": "cloze",
            "text": "[[1]]",
            "gaps": [{"type": "choice", "choices": [_choice("a"), _choice("b")]}],
        },
        "exactly one choice must be fully correct",
        id="cloze-gap-validated",
    ),
    pytest.param(
        {
            "type": "cloze",
            "text": "[[1]]",
            "gaps": [{"type": "essay", "answers": [{"text": "x"}]}],
        },
        "does not match any of the expected tags",
        id="cloze-unknown-gap-type",
    ),
    pytest.param(
        {
            "type": "matching",
            "text": "M",
            "prompts": [
                {"id": "p1", "text": "a", "answer_id": "x1"},
                {"id": "p2", "text": "b", "answer_id": "nope"},
            ],
            "answers": [{"id": "x1", "text": "A"}, {"id": "x2", "text": "B"}],
        },
        "prompt p2 names unknown answer nope",
        id="matching-unknown-answer",
    ),
    pytest.param(
        {
            "type": "matching",
            "text": "M",
            "prompts": [
                {"text": "a", "answer_id": "x1"},
                {"text": "b", "answer_id": "x2"},
            ],
            "answers": [{"id": "x1", "text": "A"}, {"id": "x2", "text": "A"}],
        },
        "answer texts must be unique; repeated: A",
        id="matching-duplicate-answer-text",
    ),
    pytest.param(
        {"type": "ordering", "text": "O", "items": [{"text": "only"}]},
        "List should have at least 2 items",
        id="ordering-one-item",
    ),
    pytest.param(
        {"type": "essay", "text": "E", "max_length": 10**6},
        "less than or equal to 50000",
        id="essay-limit",
    ),
    pytest.param(
        {"type": "description", "text": "D", "points": 1},
        "less than or equal to 0",
        id="description-points",
    ),
    pytest.param(
        {"type": "poll", "text": "P"}, "does not match any of the expected tags", id="type"
    ),
    pytest.param({"text": "no type"}, "Unable to extract tag using discriminator", id="no-type"),
    pytest.param(_single(answer_key="x"), "Extra inputs are not permitted", id="extra-field"),
    pytest.param(_single(text=""), "at least 1 character", id="empty-text"),
    pytest.param(
        _single(text="x" * (MAX_TEXT_LENGTH + 1)), "at most 20000 characters", id="long-text"
    ),
    pytest.param(_single(title="two\nlines"), "should match pattern", id="title-newline"),
    pytest.param(_single(tags=["a", "a"]), "tags must be unique; repeated: a", id="dup-tags"),
    pytest.param(_single(tags=["a\\b"]), "should match pattern", id="tag-backslash"),
    pytest.param(_single(category="a\\b"), "should match pattern", id="category-backslash"),
    pytest.param(_single(points=-1), "greater than or equal to 0", id="negative-points"),
    pytest.param(_single(text_format="rtf"), "Input should be 'plain'", id="format"),
    pytest.param(["not", "an", "object"], "", id="not-an-object"),
]


@pytest.mark.parametrize(("data", "message"), BAD_QUESTIONS)
def test_invalid_questions_are_refused_with_a_clear_message(data: Any, message: str) -> None:
    errors = _errors(data)
    assert errors
    assert any(message in e["msg"] for e in errors), errors


def test_error_locations_name_the_field() -> None:
    errors = _errors(_single(choices=[_choice("a", 1), _choice("b", 3)]))
    assert [e["loc"] for e in errors] == ["single_choice.choices.1.weight"]


def test_weights_are_rounded_to_seven_places() -> None:
    question = MultipleResponse(
        text="Three",
        choices=[Choice(text=t, weight=0.333333333333) for t in "abc"],
    )
    assert [c.weight for c in question.choices] == [0.3333333] * 3


def test_html_is_sanitised_in_every_rich_field() -> None:
    script = "<script>alert(1)</script><b>ok</b>"
    question = parse_question(
        _single(
            text_format="html",
            text=script,
            general_feedback=script,
            choices=[_choice(script, 1, feedback=script), _choice("b")],
        )
    )
    assert isinstance(question, SingleChoice)
    for value in (
        question.text,
        question.general_feedback,
        question.choices[0].text,
        question.choices[0].feedback,
    ):
        assert value == "<b>ok</b>"


def test_parts_passed_in_are_revalidated_not_edited() -> None:
    choice = Choice(text="<script>x</script>ok", weight=1)
    question = SingleChoice(text_format="html", text="Q", choices=[choice, Choice(text="b")])
    assert question.choices[0].text == "ok"
    assert choice.text == "<script>x</script>ok"
    choice.weight = 5.0  # changed behind pydantic's back
    with pytest.raises(ValueError, match="less than or equal to 1"):
        SingleChoice(text="Q", choices=[choice, Choice(text="b")])


def test_plain_and_markdown_text_is_kept_as_written() -> None:
    text = "<b>x</b> & **y**"
    for fmt in ("plain", "markdown"):
        question = parse_question(_single(text_format=fmt, text=text))
        assert question.text == text


# ---------------------------------------------------------------- learner view

ALLOWED_KEYS = {
    "id",
    "type",
    "text",
    "text_format",
    "points",
    "choices",
    "units",
    "gaps",
    "prompts",
    "answers",
    "items",
    "response_template",
    "max_length",
}

#: strings of each sample's answer key that the learner's view must not contain
ANSWER_KEYS = {
    "single_choice": ["Right, Paris.", "Second city.", "Not Nice.", "since 987"],
    "multiple_response": ["2 is the even prime.", "4 is 2 times 2.", "-0.5", "0.25"],
    "true_false": ["Yes, in the east.", "It really does.", ": true", ": false"],
    "numeric": ["1.5", "0.01", "1.4", "1.6", "Exactly.", "Close.", "Measure again.", "100"],
    "short_answer": ["no one", "nobody", "Grant*", "Right: no one.", "Entombed"],
    "cloze": ["France", "2.1", "0.2", "Yes, Paris."],
    "matching": ["answer_id", 'a-ottawa", "p-', "weight"],
    "ordering": [],
    "essay": ["Look for three distinct causes."],
    "description": [],
}


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


@pytest.mark.parametrize("name", SAMPLES)
def test_learner_view_carries_no_answer_key(name: str) -> None:
    question = SAMPLES[name]()
    view = learner_view(question, rng=random.Random(1))
    assert _keys(view) <= ALLOWED_KEYS
    text = json.dumps(view)
    forbidden = [
        "weight",
        "feedback",
        "correct",
        "grader_info",
        "tolerance",
        "multiplier",
        SECRET["title"],
        SECRET["category"],
        *SECRET["tags"],
        *ANSWER_KEYS[name],
    ]
    for secret in forbidden:
        assert secret not in text, (secret, text)
    assert (view["id"], view["type"], view["text"]) == (question.id, question.type, question.text)


def test_learner_view_lists_what_the_learner_needs() -> None:
    assert [c["text"] for c in learner_view(single_choice())["choices"]] != []
    numeric_view = learner_view(SAMPLES["numeric"]())
    assert numeric_view["units"] == ["m", "cm"]
    cloze_view = learner_view(SAMPLES["cloze"]())
    assert [g["type"] for g in cloze_view["gaps"]] == ["choice", "short_answer", "numeric"]
    assert sorted(c["text"] for c in cloze_view["gaps"][0]["choices"]) == ["Paris", "Rome"]
    essay_view = learner_view(SAMPLES["essay"]())
    assert (essay_view["response_template"], essay_view["max_length"]) == ("I think", 200)
    match_view = learner_view(matching())
    assert [p["text"] for p in match_view["prompts"]] == ["Canada", "Italy", "Japan"]
    assert sorted(a["text"] for a in match_view["answers"]) == ["Ottawa", "Rome", "Sydney", "Tokyo"]


def test_shuffling_follows_the_rng_and_the_setting() -> None:
    question = single_choice()
    first = learner_view(question, rng=random.Random(7))
    again = learner_view(question, rng=random.Random(7))
    assert first == again
    orders = {
        tuple(c["id"] for c in learner_view(question, rng=random.Random(seed))["choices"])
        for seed in range(30)
    }
    assert len(orders) > 1
    fixed = question.model_copy(update={"shuffle": False})
    assert [c["id"] for c in learner_view(fixed)["choices"]] == ["c-paris", "c-lyon", "c-nice"]


def test_ordering_is_never_shown_in_the_correct_order() -> None:
    question = ordering()
    correct = [f"o-{n}" for n in ORDER]
    two = Ordering(text="Two", items=[{"id": "i1", "text": "a"}, {"id": "i2", "text": "b"}])
    for seed in range(200):
        view = learner_view(question, rng=random.Random(seed))
        assert [i["id"] for i in view["items"]] != correct
        assert sorted(i["id"] for i in view["items"]) == sorted(correct)
        assert [i["id"] for i in learner_view(two, rng=random.Random(seed))["items"]] == [
            "i2",
            "i1",
        ]


def test_matching_answers_are_shuffled_whatever_the_stored_order() -> None:
    question = matching()
    orders = {
        tuple(a["id"] for a in learner_view(question, rng=random.Random(seed))["answers"])
        for seed in range(30)
    }
    assert len(orders) > 1


def test_default_shuffle_is_not_derivable_from_the_question() -> None:
    # seeding with the question's id would let a learner undo the shuffle
    question: Question = ordering()
    orders = {tuple(i["id"] for i in learner_view(question)["items"]) for _ in range(30)}
    assert len(orders) > 1


def test_learner_view_of_matching_has_no_pairing() -> None:
    question = Matching(
        text="M",
        prompts=[{"id": "p1", "text": "a", "answer_id": "x1"}, {"text": "b", "answer_id": "x2"}],
        answers=[{"id": "x1", "text": "A"}, {"id": "x2", "text": "B"}],
    )
    view = learner_view(question)
    assert view["prompts"][0] == {"id": "p1", "text": "a"}
