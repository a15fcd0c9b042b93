"""Question models: every item type of the quiz plugin, validated with pydantic.

A question is one member of the :data:`Question` union, told apart by its
``type`` field.  The models hold the full answer key (weights, accepted
answers, feedback), so they never go to a learner as they are:
:func:`learner_view` builds the part a learner may see, by listing what to
include rather than what to leave out.

Every choice, matching prompt and answer, ordering item and cloze gap has an
opaque random id (:func:`new_id`).  Learners answer with these ids, so a
tampered id is simply one the question does not contain (see
:mod:`plugins.quiz.grading`).

Weights are fractions of the question's marks: ``1.0`` is fully correct,
``0.5`` half credit, a negative weight a penalty.
"""

from __future__ import annotations

import random
import re
import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Annotated
from typing import Any
from typing import Literal
from typing import Self

import nh3
from pydantic import AfterValidator
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import TypeAdapter
from pydantic import ValidationError
from pydantic import field_validator
from pydantic import model_validator

#: Longest question text, feedback or other rich text, in characters.
MAX_TEXT_LENGTH = 20_000
#: Longest choice text, accepted answer or matching answer, in characters.
MAX_ANSWER_LENGTH = 1_000
#: Most choices, answers, prompts, items or gaps in one question.
MAX_OPTIONS = 50
#: Upper bound of an essay's ``max_length``.
MAX_ESSAY_LENGTH = 50_000
#: Tolerance on "the positive weights of a multiple-response question add up to 1".
WEIGHT_SUM_TOLERANCE = 0.001

TextFormat = Literal["plain", "html", "markdown"]
Whitespace = Literal["collapse", "ignore", "exact"]
OrderingScoring = Literal["all_or_nothing", "position", "subsequence"]

#: A gap marker in a cloze question's text: ``[[1]]`` is the first gap.
GAP_MARKER = re.compile(r"\[\[(\d{1,3})\]\]")


def new_id() -> str:
    """Return a fresh opaque id for a question or one of its parts.

    Random rather than sequential, so a learner cannot guess another choice's
    id from their own.
    """
    return secrets.token_urlsafe(12)


class _RichText:
    """Marks a text field that is written in the question's ``text_format``.

    When the format is ``html`` those fields are sanitised on validation.
    """


_RICH = _RichText()


def _round_weight(value: float) -> float:
    # GIFT writes weights as percentages; rounding keeps export -> import exact
    return round(value, 7)


OpaqueId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Weight = Annotated[float, Field(ge=-1.0, le=1.0), AfterValidator(_round_weight)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0), AfterValidator(_round_weight)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Points = Annotated[float, Field(gt=0.0, le=1_000.0, allow_inf_nan=False)]
RichText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_LENGTH), _RICH]
Feedback = Annotated[str, Field(max_length=MAX_TEXT_LENGTH), _RICH]
AnswerText = Annotated[str, Field(min_length=1, max_length=MAX_ANSWER_LENGTH)]
Title = Annotated[str, Field(max_length=255, pattern=r"^[^\x00-\x1f]*$")]
Category = Annotated[str, Field(max_length=255, pattern=r"^[^\x00-\x1f\\]*$")]
Tag = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[^\x00-\x1f\\]+$")]


class QuestionInvalid(Exception):
    """A question does not validate (→ 422 for an author, a per-question import error).

    :ivar errors: a list of ``{"loc": ..., "msg": ...}`` describing each problem.
    """

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class _Model(BaseModel):
    # revalidating nested model instances checks parts changed after creation and
    # keeps html sanitising from editing objects the caller still holds
    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, revalidate_instances="always"
    )


def _require_unique(values: list[str], what: str) -> None:
    repeated = sorted(v for v, n in Counter(values).items() if n > 1)
    if repeated:
        raise ValueError(f"{what} must be unique; repeated: {', '.join(repeated)}")


def _submodels(model: BaseModel) -> Iterator[BaseModel]:
    """Yield ``model`` and every model nested in its fields, depth first."""
    yield model
    for name in type(model).model_fields:
        value = getattr(model, name)
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, BaseModel):
                yield from _submodels(child)


def _sanitise_rich_fields(model: BaseModel) -> None:
    for sub in _submodels(model):
        for name, info in type(sub).model_fields.items():
            value = getattr(sub, name)
            if _RICH in info.metadata and isinstance(value, str) and value:
                setattr(sub, name, nh3.clean(value))


# ---------------------------------------------------------------- parts


class Choice(_Model):
    """One option of a single-choice or multiple-response question."""

    id: OpaqueId = Field(default_factory=new_id)
    text: Annotated[str, Field(min_length=1, max_length=MAX_ANSWER_LENGTH), _RICH]
    #: fraction of the marks this choice earns when picked; negative is a penalty
    weight: Weight = 0.0
    #: shown to a learner who picked this choice
    feedback: Feedback = ""


class TextAnswer(_Model):
    """One accepted answer of a short-answer question.

    ``text`` is a pattern: ``*`` matches any run of characters (as in Moodle)
    and ``\\*`` is a literal asterisk.  No other character is special.
    """

    id: OpaqueId = Field(default_factory=new_id)
    text: AnswerText
    weight: Fraction = 1.0
    feedback: Feedback = ""


class NumericAnswer(_Model):
    """One accepted numeric answer: ``value`` ± ``tolerance``, or ``low``..``high``."""

    id: OpaqueId = Field(default_factory=new_id)
    value: Finite | None = None
    tolerance: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0
    low: Finite | None = None
    high: Finite | None = None
    weight: Fraction = 1.0
    feedback: Feedback = ""

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if self.value is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either value (with tolerance) or low and high, not both")
        elif self.low is None or self.high is None:
            raise ValueError("give a value (with tolerance) or both low and high")
        elif self.tolerance:
            raise ValueError("tolerance only applies to a value, not to a low..high range")
        elif self.low > self.high:
            raise ValueError(f"low ({self.low}) is greater than high ({self.high})")
        return self

    def bounds(self) -> tuple[float, float]:
        """Return the accepted closed interval."""
        if self.value is not None:
            return self.value - self.tolerance, self.value + self.tolerance
        assert self.low is not None and self.high is not None
        return self.low, self.high


class Unit(_Model):
    """A unit a numeric answer may be given in: the value is divided by ``multiplier``.

    With the answers in metres, ``Unit(name="cm", multiplier=100)`` accepts
    ``150 cm`` for 1.5.
    """

    name: Annotated[str, Field(min_length=1, max_length=20, pattern=r"^[^\s\d+\-.,][^\s]*$")]
    multiplier: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 1.0


class MatchPrompt(_Model):
    """The left side of a matching pair; ``answer_id`` names its right side."""

    id: OpaqueId = Field(default_factory=new_id)
    text: RichText
    answer_id: OpaqueId


class MatchAnswer(_Model):
    """An option on the right side of a matching question (plain text)."""

    id: OpaqueId = Field(default_factory=new_id)
    text: AnswerText


class OrderItem(_Model):
    """One item of an ordering question."""

    id: OpaqueId = Field(default_factory=new_id)
    text: RichText


# ---------------------------------------------------------------- answer keys


class ChoiceKey(_Model):
    """Choices of which exactly one is fully correct (single choice, choice gap)."""

    choices: list[Choice] = Field(min_length=2, max_length=MAX_OPTIONS)
    shuffle: bool = True

    @model_validator(mode="after")
    def _exactly_one_correct(self) -> Self:
        full = [c for c in self.choices if c.weight == 1.0]
        if len(full) != 1:
            raise ValueError(
                f"exactly one choice must be fully correct (weight 1), found {len(full)}"
            )
        return self


class ShortAnswerKey(_Model):
    """Accepted text answers and how responses are compared with them."""

    answers: list[TextAnswer] = Field(min_length=1, max_length=MAX_OPTIONS)
    case_sensitive: bool = False
    whitespace: Whitespace = "collapse"

    @model_validator(mode="after")
    def _one_full_answer(self) -> Self:
        if not any(a.weight == 1.0 for a in self.answers):
            raise ValueError("at least one accepted answer must be fully correct (weight 1)")
        return self


class NumericKey(_Model):
    """Accepted numbers and units (numeric question, numeric gap)."""

    answers: list[NumericAnswer] = Field(min_length=1, max_length=MAX_OPTIONS)
    units: list[Unit] = Field(default_factory=list, max_length=20)
    #: when True a missing unit costs ``unit_penalty``; an unknown unit always does
    unit_required: bool = False
    unit_penalty: Fraction = 0.1
    #: shown when the response matches no answer
    wrong_feedback: Feedback = ""

    @model_validator(mode="after")
    def _check_key(self) -> Self:
        if not any(a.weight == 1.0 for a in self.answers):
            raise ValueError("at least one numeric answer must be fully correct (weight 1)")
        _require_unique([u.name for u in self.units], "unit names")
        if self.unit_required and not self.units:
            raise ValueError("unit_required needs at least one unit")
        return self


# ---------------------------------------------------------------- questions


class _QuestionBase(_Model):
    id: OpaqueId = Field(default_factory=new_id)
    #: the author's name for the question; never shown to learners
    title: Title = ""
    text: RichText
    text_format: TextFormat = "plain"
    #: shown to every learner once feedback may be seen, whatever they answered
    general_feedback: Feedback = ""
    #: the question's marks in a quiz
    points: Annotated[float, Field(ge=0.0, le=1_000.0, allow_inf_nan=False)] = 1.0
    #: a slash-separated path in the course's question bank
    category: Category = ""
    tags: list[Tag] = Field(default_factory=list, max_length=20)

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, tags: list[str]) -> list[str]:
        _require_unique(tags, "tags")
        return tags

    @model_validator(mode="after")
    def _check_tree(self) -> Self:
        ids = [i for m in _submodels(self) if isinstance(i := getattr(m, "id", None), str)]
        _require_unique(ids, "ids within a question")
        if self.text_format == "html":
            _sanitise_rich_fields(self)
        return self


class SingleChoice(_QuestionBase, ChoiceKey):
    """Pick one choice; exactly one is fully correct, others may carry partial credit."""

    type: Literal["single_choice"] = "single_choice"


class MultipleResponse(_QuestionBase):
    """Pick any number of choices.

    The score is the sum of the picked choices' weights, less
    ``wrong_pick_penalty`` for each picked choice whose weight is zero or
    negative, clamped to 0..1.  The positive weights must add up to 1, so
    picking exactly the correct choices earns full marks.
    """

    type: Literal["multiple_response"] = "multiple_response"
    choices: list[Choice] = Field(min_length=2, max_length=MAX_OPTIONS)
    wrong_pick_penalty: Fraction = 0.0
    shuffle: bool = True

    @model_validator(mode="after")
    def _weights_add_up(self) -> Self:
        positive = sum(c.weight for c in self.choices if c.weight > 0)
        if abs(positive - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise ValueError(
                f"the positive choice weights must add up to 1 (100%), they add up to {positive:g}"
            )
        return self


class TrueFalse(_QuestionBase):
    """A statement that is true or false."""

    type: Literal["true_false"] = "true_false"
    correct: bool
    #: shown to a learner who answered "true"
    feedback_true: Feedback = ""
    #: shown to a learner who answered "false"
    feedback_false: Feedback = ""


class Numeric(_QuestionBase, NumericKey):
    """A number, within a tolerance or range, optionally with a unit."""

    type: Literal["numeric"] = "numeric"


class ShortAnswer(_QuestionBase, ShortAnswerKey):
    """A short text compared with accepted answers (``*`` wildcards allowed)."""

    type: Literal["short_answer"] = "short_answer"


class ChoiceGap(ChoiceKey):
    """A cloze gap answered by picking one choice."""

    type: Literal["choice"] = "choice"
    id: OpaqueId = Field(default_factory=new_id)
    #: the gap's share of the question's marks, relative to the other gaps
    points: Points = 1.0


class ShortAnswerGap(ShortAnswerKey):
    """A cloze gap answered with a short text."""

    type: Literal["short_answer"] = "short_answer"
    id: OpaqueId = Field(default_factory=new_id)
    points: Points = 1.0


class NumericGap(NumericKey):
    """A cloze gap answered with a number."""

    type: Literal["numeric"] = "numeric"
    id: OpaqueId = Field(default_factory=new_id)
    points: Points = 1.0


Gap = Annotated[ChoiceGap | ShortAnswerGap | NumericGap, Field(discriminator="type")]


class Cloze(_QuestionBase):
    """A text with gaps: ``[[1]]`` in ``text`` is where ``gaps[0]`` goes.

    The score is the mean of the gaps' scores weighted by their ``points``.
    """

    type: Literal["cloze"] = "cloze"
    gaps: list[Gap] = Field(min_length=1, max_length=MAX_OPTIONS)

    @model_validator(mode="after")
    def _markers_match_gaps(self) -> Self:
        found = [int(m) for m in GAP_MARKER.findall(self.text)]
        expected = list(range(1, len(self.gaps) + 1))
        if sorted(found) != expected:
            raise ValueError(
                f"the text must contain each gap marker [[1]]..[[{len(self.gaps)}]] exactly once;"
                f" found {', '.join(f'[[{n}]]' for n in found) or 'none'}"
            )
        return self


class Matching(_QuestionBase):
    """Match each prompt with an answer; answers no prompt uses are distractors.

    The score is the share of prompts matched correctly.
    """

    type: Literal["matching"] = "matching"
    prompts: list[MatchPrompt] = Field(min_length=2, max_length=MAX_OPTIONS)
    answers: list[MatchAnswer] = Field(min_length=2, max_length=MAX_OPTIONS)

    @model_validator(mode="after")
    def _prompts_use_answers(self) -> Self:
        known = {a.id for a in self.answers}
        for prompt in self.prompts:
            if prompt.answer_id not in known:
                raise ValueError(f"prompt {prompt.id} names unknown answer {prompt.answer_id}")
        _require_unique([a.text for a in self.answers], "answer texts")
        return self


class Ordering(_QuestionBase):
    """Put items in order; ``items`` lists them in the correct order.

    ``scoring`` decides partial credit: ``all_or_nothing``; ``position``, the
    share of items in their correct position; or ``subsequence`` (default),
    ``(L - 1) / (n - 1)`` where ``L`` is the length of the longest run of items
    (not necessarily adjacent) that are in the correct relative order — so one
    item moved from the end to the front still earns most of the credit.
    """

    type: Literal["ordering"] = "ordering"
    items: list[OrderItem] = Field(min_length=2, max_length=MAX_OPTIONS)
    scoring: OrderingScoring = "subsequence"


class Essay(_QuestionBase):
    """A free-text answer, graded by hand."""

    type: Literal["essay"] = "essay"
    #: notes for graders; never shown to learners
    grader_info: Feedback = ""
    #: text the answer box starts with
    response_template: Annotated[str, Field(max_length=MAX_TEXT_LENGTH)] = ""
    max_length: Annotated[int, Field(ge=1, le=MAX_ESSAY_LENGTH)] = 10_000


class Description(_QuestionBase):
    """Text shown between questions; takes no answer and carries no marks."""

    type: Literal["description"] = "description"
    points: Annotated[float, Field(ge=0.0, le=0.0)] = 0.0


Question = Annotated[
    SingleChoice
    | MultipleResponse
    | TrueFalse
    | Numeric
    | ShortAnswer
    | Cloze
    | Matching
    | Ordering
    | Essay
    | Description,
    Field(discriminator="type"),
]

_QUESTION_ADAPTER: TypeAdapter[Question] = TypeAdapter(Question)


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Turn a pydantic error into ``{"loc": "choices.0.weight", "msg": ...}`` entries."""
    out = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        out.append({"loc": ".".join(str(p) for p in err["loc"]), "msg": msg})
    return out


def parse_question(data: Any) -> Question:
    """Validate ``data`` (a dict as stored or sent by an author) into a question.

    :param data: a mapping with a ``type`` key naming the question type.
    :return: the validated question.
    :raise QuestionInvalid: with one entry per problem.
    """
    try:
        return _QUESTION_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise QuestionInvalid("invalid question", validation_errors(exc)) from exc


def dump_question(question: Question) -> dict[str, Any]:
    """Return the question as JSON-ready data (the answer key included)."""
    return question.model_dump(mode="json")


# ---------------------------------------------------------------- the learner's view


def _shuffled(rng: random.Random, values: list[Any]) -> list[Any]:
    out = list(values)
    rng.shuffle(out)
    return out


def _choices_view(choices: list[Choice], shuffle: bool, rng: random.Random) -> list[dict[str, str]]:
    order = _shuffled(rng, choices) if shuffle else choices
    return [{"id": c.id, "text": c.text} for c in order]


def _gap_view(gap: ChoiceGap | ShortAnswerGap | NumericGap, rng: random.Random) -> dict[str, Any]:
    view: dict[str, Any] = {"id": gap.id, "type": gap.type}
    if isinstance(gap, ChoiceGap):
        view["choices"] = _choices_view(gap.choices, gap.shuffle, rng)
    elif isinstance(gap, NumericGap) and gap.units:
        view["units"] = [u.name for u in gap.units]
    return view


def learner_view(question: Question, *, rng: random.Random | None = None) -> dict[str, Any]:
    """Return what a learner may see of ``question`` while answering it.

    Only listed fields are copied: no weights, accepted answers, numeric
    values, matching pairs, correct order, feedback of any kind, grader
    notes, title, category or tags.  Matching answers and ordering items are
    always shuffled (their stored order would give the key away); an ordering
    is never shown already in the correct order.

    :param question: the question.
    :param rng: the random source for shuffling.  An attempt passes one seeded
        with a secret it stores, so a learner sees the same order on every page
        load.  The seed must not be derivable from anything the learner sees
        (such as the attempt's or the question's id): knowing it, the learner
        could undo the shuffle and read the ordering key.  Defaults to the
        system's random source.
    :return: JSON-ready data.
    """
    rng = rng or random.SystemRandom()
    view: dict[str, Any] = {
        "id": question.id,
        "type": question.type,
        "text": question.text,
        "text_format": question.text_format,
        "points": question.points,
    }
    if isinstance(question, SingleChoice | MultipleResponse):
        view["choices"] = _choices_view(question.choices, question.shuffle, rng)
    elif isinstance(question, Numeric) and question.units:
        view["units"] = [u.name for u in question.units]
    elif isinstance(question, Cloze):
        view["gaps"] = [_gap_view(g, rng) for g in question.gaps]
    elif isinstance(question, Matching):
        view["prompts"] = [{"id": p.id, "text": p.text} for p in question.prompts]
        view["answers"] = [{"id": a.id, "text": a.text} for a in _shuffled(rng, question.answers)]
    elif isinstance(question, Ordering):
        items = _shuffled(rng, question.items)
        if items == question.items:
            items = items[1:] + items[:1]
        view["items"] = [{"id": i.id, "text": i.text} for i in items]
    elif isinstance(question, Essay):
        view["response_template"] = question.response_template
        view["max_length"] = question.max_length
    return view
