"""Server-side grading: a learner's response to one question → a score fraction.

:func:`grade` takes a validated question and the learner's response as sent
(decoded JSON) and returns a :class:`GradeResult`: the score as a fraction
of the question's marks (0..1), one :class:`PartResult` per graded part, and
the feedback the learner earned.  An essay is not scored here: its result has
``score=None`` and ``needs_manual_grading=True`` until
:func:`grade_manually` records a grader's mark.

Responses by question type (``None`` always means "not answered", scored 0):

================== ===================================================
single_choice       a choice id
multiple_response   a list of distinct choice ids
true_false          ``true`` or ``false``
numeric             a number, or a string such as ``"1.5"`` or ``"150 cm"``
short_answer        a string
cloze               an object mapping gap ids to that gap's response
matching            an object mapping prompt ids to answer ids
ordering            a list of every item id, in the learner's order
essay               a string
================== ===================================================

A response of the wrong shape, an id the question does not contain (a
tampered id) or an over-long text raises a subclass of
:class:`ResponseInvalid`; the attempt API turns it into a 422 and stores
nothing.  A well-formed but wrong answer is never an error, only a low score.
"""

from __future__ import annotations

import math
import re
import unicodedata
from bisect import bisect_left
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

from plugins.quiz.questions import MAX_ANSWER_LENGTH
from plugins.quiz.questions import Choice
from plugins.quiz.questions import ChoiceGap
from plugins.quiz.questions import Cloze
from plugins.quiz.questions import Description
from plugins.quiz.questions import Essay
from plugins.quiz.questions import Matching
from plugins.quiz.questions import MultipleResponse
from plugins.quiz.questions import Numeric
from plugins.quiz.questions import NumericKey
from plugins.quiz.questions import Ordering
from plugins.quiz.questions import Question
from plugins.quiz.questions import ShortAnswer
from plugins.quiz.questions import ShortAnswerGap
from plugins.quiz.questions import ShortAnswerKey
from plugins.quiz.questions import SingleChoice
from plugins.quiz.questions import TextAnswer
from plugins.quiz.questions import TrueFalse
from plugins.quiz.questions import Whitespace

#: Longest short-answer or numeric response, in characters.
MAX_RESPONSE_LENGTH = MAX_ANSWER_LENGTH
#: Longest id a response may carry; anything longer cannot be one of ours.
MAX_ID_LENGTH = 64

_NUMBER = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([^\s\d+\-.,]\S*)?")


class ResponseInvalid(Exception):
    """A learner's response cannot be graded against this question (→ 422).

    Base class of the specific failures below; nothing is stored when it is
    raised.
    """


class MalformedResponse(ResponseInvalid):
    """The response has the wrong shape for the question type (e.g. a list for a choice)."""


class UnknownOption(ResponseInvalid):
    """The response names an id that is not part of this question (a tampered id)."""


class ResponseTooLong(ResponseInvalid):
    """A text response is longer than the question allows."""


class QuestionNotGradable(Exception):
    """The question takes no response (a description)."""


class ManualGradeInvalid(Exception):
    """A grader's mark is out of range or given for a question that is graded automatically."""


@dataclass(frozen=True)
class PartResult:
    """How one part of a response fared.

    ``id`` is the picked choice's id (single choice), a choice id (multiple
    response: one part per choice), a gap id (cloze), a prompt id (matching),
    an item id (ordering), or the question's id (true/false, numeric, short
    answer).  ``score`` is the part's contribution: the choice's weight, the
    gap's fraction, 1 or 0 for a matching pair or an ordering item.
    """

    id: str
    correct: bool
    score: float
    feedback: str = ""


@dataclass(frozen=True)
class GradeResult:
    """The outcome of grading one response."""

    #: fraction of the question's marks, 0..1; None while awaiting manual grading
    score: float | None
    parts: tuple[PartResult, ...] = ()
    general_feedback: str = ""
    needs_manual_grading: bool = False
    #: a grader's comment on a manually graded response
    grader_feedback: str = ""

    @property
    def correct(self) -> bool | None:
        """Whether the response earned full marks; None until graded."""
        return None if self.score is None else self.score >= 1.0

    @property
    def feedback(self) -> list[str]:
        """The non-empty feedback the response earned, part by part."""
        return [p.feedback for p in self.parts if p.feedback]


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


def _require_text(response: object, limit: int) -> str:
    if not isinstance(response, str):
        raise MalformedResponse(f"expected a string, got {type(response).__name__}")
    if len(response) > limit:
        raise ResponseTooLong(f"the response is {len(response)} characters; the limit is {limit}")
    return response


def _require_id(response: object, known: Mapping[str, object], what: str) -> str:
    if not isinstance(response, str):
        raise MalformedResponse(f"expected a {what} id, got {type(response).__name__}")
    if len(response) > MAX_ID_LENGTH or response not in known:
        raise UnknownOption(f"{response[:MAX_ID_LENGTH]!r} is not a {what} of this question")
    return response


def _require_mapping(response: object, what: str) -> Mapping[str, object]:
    if not isinstance(response, Mapping) or not all(isinstance(k, str) for k in response):
        raise MalformedResponse(f"expected an object mapping {what} ids to answers")
    return response


def _require_id_list(response: object, known: Mapping[str, object], what: str) -> list[str]:
    if not isinstance(response, list):
        raise MalformedResponse(f"expected a list of {what} ids, got {type(response).__name__}")
    if len(response) > len(known):
        raise MalformedResponse(f"more {what} ids than the question has")
    ids = [_require_id(value, known, what) for value in response]
    if len(set(ids)) != len(ids):
        raise MalformedResponse(f"a {what} id is repeated")
    return ids


# ---------------------------------------------------------------- choices


def _grade_single(choices: list[Choice], response: object) -> PartResult:
    by_id = {c.id: c for c in choices}
    picked = by_id[_require_id(response, by_id, "choice")]
    return PartResult(picked.id, picked.weight >= 1.0, picked.weight, picked.feedback)


def _grade_multiple(question: MultipleResponse, response: object) -> GradeResult:
    by_id = {c.id: c for c in question.choices}
    picked = set(_require_id_list(response, by_id, "choice"))
    parts = []
    raw = 0.0
    for choice in question.choices:
        selected = choice.id in picked
        contribution = 0.0
        if selected:
            contribution = choice.weight
            if choice.weight <= 0:
                contribution -= question.wrong_pick_penalty
        raw += contribution
        parts.append(
            PartResult(
                choice.id,
                selected == (choice.weight > 0),
                contribution,
                choice.feedback if selected else "",
            )
        )
    total = sum(c.weight for c in question.choices if c.weight > 0)
    return GradeResult(_clamp(raw / total), tuple(parts), question.general_feedback)


# ---------------------------------------------------------------- short answer


def _normalise(text: str, case_sensitive: bool, whitespace: Whitespace) -> str:
    text = unicodedata.normalize("NFKC", text)
    if not case_sensitive:
        text = text.casefold()
    if whitespace == "collapse":
        text = re.sub(r"\s+", " ", text)
    elif whitespace == "ignore":
        text = re.sub(r"\s+", "", text)
    return text


def _pattern_segments(pattern: str) -> list[str]:
    """Split an accepted answer at its unescaped ``*`` wildcards."""
    segments = [""]
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and pattern[i + 1 : i + 2] == "*":
            segments[-1] += "*"
            i += 2
            continue
        if char == "*":
            segments.append("")
        else:
            segments[-1] += char
        i += 1
    return segments


def wildcard_match(
    pattern: str, text: str, *, case_sensitive: bool, whitespace: Whitespace
) -> bool:
    """Whether ``text`` matches the accepted answer ``pattern``.

    ``*`` matches any run of characters, ``\\*`` a literal asterisk; both
    sides are normalised (Unicode NFKC, case folding unless
    ``case_sensitive``, whitespace per ``whitespace``).  No regular
    expression is built: segments are found left to right with
    :meth:`str.find`, which is correct for ``*``-only patterns and takes at
    most ``len(pattern) * len(text)`` steps, so a hostile pattern or response
    cannot stall the server.
    """
    segments = [_normalise(s, case_sensitive, whitespace) for s in _pattern_segments(pattern)]
    subject = _normalise(text, case_sensitive, whitespace)
    if whitespace == "collapse":
        segments[0] = segments[0].lstrip()
        segments[-1] = segments[-1].rstrip()
        subject = subject.strip()
    if len(segments) == 1:
        return subject == segments[0]
    head, *middle, tail = segments
    if len(head) + len(tail) > len(subject):
        return False
    if not subject.startswith(head) or not subject.endswith(tail):
        return False
    position = len(head)
    end = len(subject) - len(tail)
    for segment in middle:
        found = subject.find(segment, position, end)
        if found < 0:
            return False
        position = found + len(segment)
    return True


def _best_text_answer(key: ShortAnswerKey, response: str) -> TextAnswer | None:
    best: TextAnswer | None = None
    for answer in key.answers:
        if (best is None or answer.weight > best.weight) and wildcard_match(
            answer.text, response, case_sensitive=key.case_sensitive, whitespace=key.whitespace
        ):
            best = answer
    return best


def _grade_short(part_id: str, key: ShortAnswerKey, response: object) -> PartResult:
    text = _require_text(response, MAX_RESPONSE_LENGTH)
    answer = _best_text_answer(key, text)
    if answer is None:
        return PartResult(part_id, False, 0.0)
    return PartResult(part_id, answer.weight >= 1.0, answer.weight, answer.feedback)


# ---------------------------------------------------------------- numeric


def parse_number(response: object, key: NumericKey) -> tuple[float, bool] | None:
    """Read a numeric response as a value in the answers' unit.

    :return: ``(value, unit_ok)``, or None when it is not a number we accept
        (then it is simply wrong).  ``unit_ok`` is False when a unit was
        missing but required, or not one of the question's units.
    :raise MalformedResponse: neither a number nor a string.
    :raise ResponseTooLong: an over-long string.
    """
    if isinstance(response, bool) or not isinstance(response, int | float | str):
        raise MalformedResponse(f"expected a number or a string, got {type(response).__name__}")
    if not isinstance(response, str):
        value = float(response)
        return (value, not key.unit_required) if math.isfinite(value) else None
    text = _require_text(response, MAX_RESPONSE_LENGTH).strip()
    match = _NUMBER.fullmatch(text)
    if match is None:
        return None
    value = float(match.group(1))
    unit = match.group(2) or ""
    if not math.isfinite(value):
        return None
    if not unit:
        return value, not key.unit_required
    units = {u.name: u.multiplier for u in key.units}
    if not units:
        return None
    if unit in units:
        return value / units[unit], True
    return value, False


def _within(value: float, low: float, high: float) -> bool:
    # answers such as 3.1415 ± 0.0005 are not exact in binary floating point
    slack = 1e-9 * max(1.0, abs(low), abs(high))
    return low - slack <= value <= high + slack


def _grade_numeric(part_id: str, key: NumericKey, response: object) -> PartResult:
    parsed = parse_number(response, key)
    if parsed is None:
        return PartResult(part_id, False, 0.0, key.wrong_feedback)
    value, unit_ok = parsed
    matching = [a for a in key.answers if _within(value, *a.bounds())]
    if not matching:
        return PartResult(part_id, False, 0.0, key.wrong_feedback)
    best = max(matching, key=lambda a: a.weight)
    score = best.weight if unit_ok else max(0.0, best.weight - key.unit_penalty)
    return PartResult(part_id, unit_ok and best.weight >= 1.0, score, best.feedback)


# ---------------------------------------------------------------- structured types


def _grade_cloze(question: Cloze, response: object) -> GradeResult:
    answers = _require_mapping(response, "gap")
    gaps = {g.id: g for g in question.gaps}
    for gap_id in answers:
        _require_id(gap_id, gaps, "gap")
    parts = []
    for gap in question.gaps:
        value = answers.get(gap.id)
        if value is None:
            parts.append(PartResult(gap.id, False, 0.0))
        elif isinstance(gap, ChoiceGap):
            picked = _grade_single(gap.choices, value)
            parts.append(
                PartResult(gap.id, picked.correct, max(0.0, picked.score), picked.feedback)
            )
        elif isinstance(gap, ShortAnswerGap):
            parts.append(_grade_short(gap.id, gap, value))
        else:
            parts.append(_grade_numeric(gap.id, gap, value))
    total = sum(g.points for g in question.gaps)
    score = sum(g.points * p.score for g, p in zip(question.gaps, parts, strict=True)) / total
    return GradeResult(_clamp(score), tuple(parts), question.general_feedback)


def _grade_matching(question: Matching, response: object) -> GradeResult:
    pairs = _require_mapping(response, "prompt")
    prompts = {p.id: p for p in question.prompts}
    answers = {a.id: a for a in question.answers}
    chosen: dict[str, str] = {}
    for prompt_id, answer_id in pairs.items():
        _require_id(prompt_id, prompts, "prompt")
        if answer_id is not None:
            chosen[prompt_id] = _require_id(answer_id, answers, "answer")
    parts = []
    for prompt in question.prompts:
        right = chosen.get(prompt.id) == prompt.answer_id
        parts.append(PartResult(prompt.id, right, 1.0 if right else 0.0))
    score = sum(p.score for p in parts) / len(parts)
    return GradeResult(score, tuple(parts), question.general_feedback)


def longest_increasing_run(values: Sequence[int]) -> list[int]:
    """Return the positions (in ``values``) of one longest strictly increasing subsequence.

    Patience sorting, O(n log n).
    """
    tails: list[int] = []  # tails[k]: smallest tail value of an increasing run of length k+1
    tail_at: list[int] = []  # position in ``values`` of that tail
    previous = [-1] * len(values)
    for position, value in enumerate(values):
        k = bisect_left(tails, value)
        if k == len(tails):
            tails.append(value)
            tail_at.append(position)
        else:
            tails[k] = value
            tail_at[k] = position
        previous[position] = tail_at[k - 1] if k else -1
    run = []
    position = tail_at[-1] if tail_at else -1
    while position >= 0:
        run.append(position)
        position = previous[position]
    return run[::-1]


def _grade_ordering(question: Ordering, response: object) -> GradeResult:
    correct_index = {item.id: index for index, item in enumerate(question.items)}
    order = _require_id_list(response, correct_index, "item")
    if len(order) != len(correct_index):
        raise MalformedResponse("an ordering response must list every item exactly once")
    n = len(order)
    indices = [correct_index[item_id] for item_id in order]
    if question.scoring == "subsequence":
        in_run = {order[p] for p in longest_increasing_run(indices)}
        right = [item_id in in_run for item_id in order]
        score = (len(in_run) - 1) / (n - 1)
    else:
        right = [index == position for position, index in enumerate(indices)]
        all_or_nothing = 1.0 if all(right) else 0.0
        score = sum(right) / n if question.scoring == "position" else all_or_nothing
    parts = tuple(
        PartResult(item_id, ok, 1.0 if ok else 0.0)
        for item_id, ok in zip(order, right, strict=True)
    )
    return GradeResult(score, parts, question.general_feedback)


def _grade_essay(question: Essay, response: object) -> GradeResult:
    text = _require_text(response, question.max_length)
    if not text.strip():
        return GradeResult(0.0, (), question.general_feedback)
    return GradeResult(None, (), question.general_feedback, needs_manual_grading=True)


# ---------------------------------------------------------------- entry points


def grade(question: Question, response: object) -> GradeResult:
    """Grade one learner's response to one question.

    :param question: the question, with its answer key.
    :param response: the response as decoded from JSON (shapes in the module
        docstring); None for "not answered".
    :return: the score, per-part results and feedback.
    :raise ResponseInvalid: the response is malformed, names an unknown id,
        or is too long (see the subclasses).
    :raise QuestionNotGradable: the question is a description.
    """
    if isinstance(question, Description):
        raise QuestionNotGradable("a description takes no response")
    if response is None:
        return GradeResult(0.0, (), question.general_feedback)
    if isinstance(question, SingleChoice):
        part = _grade_single(question.choices, response)
        return GradeResult(_clamp(part.score), (part,), question.general_feedback)
    if isinstance(question, MultipleResponse):
        return _grade_multiple(question, response)
    if isinstance(question, TrueFalse):
        if not isinstance(response, bool):
            raise MalformedResponse(f"expected true or false, got {type(response).__name__}")
        right = response == question.correct
        feedback = question.feedback_true if response else question.feedback_false
        part = PartResult(question.id, right, 1.0 if right else 0.0, feedback)
        return GradeResult(part.score, (part,), question.general_feedback)
    if isinstance(question, Numeric):
        part = _grade_numeric(question.id, question, response)
        return GradeResult(part.score, (part,), question.general_feedback)
    if isinstance(question, ShortAnswer):
        part = _grade_short(question.id, question, response)
        return GradeResult(part.score, (part,), question.general_feedback)
    if isinstance(question, Cloze):
        return _grade_cloze(question, response)
    if isinstance(question, Matching):
        return _grade_matching(question, response)
    if isinstance(question, Ordering):
        return _grade_ordering(question, response)
    return _grade_essay(question, response)


def grade_manually(
    question: Question, result: GradeResult, score: float, feedback: str = ""
) -> GradeResult:
    """Record a grader's mark on a response awaiting manual grading.

    :param question: the question graded (an essay).
    :param result: the automatic result, with ``needs_manual_grading``.
    :param score: the grader's mark as a fraction, 0..1.
    :param feedback: the grader's comment to the learner.
    :return: the graded result.
    :raise ManualGradeInvalid: not an essay, or the score is out of range.
    """
    if not isinstance(question, Essay):
        raise ManualGradeInvalid(f"{question.type} questions are graded automatically")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise ManualGradeInvalid("a manual score is a fraction between 0 and 1")
    return GradeResult(float(score), result.parts, result.general_feedback, False, feedback)
