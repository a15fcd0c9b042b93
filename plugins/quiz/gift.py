"""Moodle GIFT import and export.

GIFT is the plain-text question format instructors already keep their
question banks in.  :func:`parse_gift` follows Moodle's own importer
(``question/format/gift/format.php``) and maps each question onto our models:

=============================== =======================================
GIFT                            question
=============================== =======================================
``{~a =b ~%50%c}``              single choice (one ``=`` answer)
``{~%50%a ~%50%b ~%-50%c}``     multiple response (no ``=`` answer)
``{T}`` ``{FALSE#wrong#right}`` true/false
``{=a =%50%b}``                 short answer
``{#3.14:0.01}`` ``{#1..5}``    numeric (``=%50%``-weighted answers too)
``{=a -> b = -> c}``            matching (``= -> c``: a distractor)
``{}``                          essay
no braces                       description
text ``{...}`` more text        missing word: a cloze with one gap
=============================== =======================================

Blocks are separated by blank lines; ``//`` lines are comments (Moodle's
``[tag:name]`` tokens in them become tags); ``::title::``, ``[html]`` /
``[markdown]`` / ``[plain]`` / ``[moodle]`` formats, ``#`` feedback,
``####`` general feedback, ``$CATEGORY:`` and the escapes ``\\~ \\= \\#
\\{ \\} \\: \\\\ \\n`` are understood.

Nothing is dropped silently: a block that does not make a valid question
becomes a :class:`GiftIssue` with its line number, and the other questions
are still imported.  Forms Moodle accepts but we do not model (a true/false,
matching, essay or multiple-response question in missing-word form; mixed
text formats within one question) are reported the same way.

:func:`export_gift` writes questions back; parsing its output gives equal
models.  A question GIFT cannot express (ordering, cloze with several gaps,
numeric units, case-sensitive short answers) is left out and reported;
settings GIFT has no place for (points, shuffle, essay grader notes) are
written without and reported as warnings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from plugins.quiz import questions
from plugins.quiz.questions import Choice
from plugins.quiz.questions import ChoiceGap
from plugins.quiz.questions import Cloze
from plugins.quiz.questions import Description
from plugins.quiz.questions import Essay
from plugins.quiz.questions import Matching
from plugins.quiz.questions import MultipleResponse
from plugins.quiz.questions import Numeric
from plugins.quiz.questions import NumericKey
from plugins.quiz.questions import Question
from plugins.quiz.questions import QuestionInvalid
from plugins.quiz.questions import ShortAnswer
from plugins.quiz.questions import ShortAnswerGap
from plugins.quiz.questions import ShortAnswerKey
from plugins.quiz.questions import SingleChoice
from plugins.quiz.questions import TextFormat
from plugins.quiz.questions import TrueFalse

logger = logging.getLogger(__name__)

#: Largest GIFT text accepted, in characters.
MAX_GIFT_CHARS = 2_000_000
#: Most questions imported from one file; the rest are reported.
MAX_GIFT_QUESTIONS = 2_000

# Escaped control characters are swapped for private-use code points while a
# block is parsed, as Moodle does with its "&&058;" placeholders.
_ESCAPABLE = "\\~=#{}:n"
_PLACEHOLDERS = {c: chr(0xE000 + i) for i, c in enumerate(_ESCAPABLE)}
_RESTORE = str.maketrans(
    {p: ("\n" if c == "n" else c) for c, p in _PLACEHOLDERS.items()},
)
_RESERVED = re.compile("[\ue000-\ue007]")

_WEIGHT = re.compile(r"%(-?\d{1,3}(?:\.\d+)?)%")
_FORMAT = re.compile(r"\[(html|markdown|plain|moodle)\]")
_FORMATS: dict[str, TextFormat] = {
    "html": "html",
    "markdown": "markdown",
    "plain": "plain",
    "moodle": "plain",
}
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_TAG = re.compile(r"\[tag:((?:\\\]|[^\]\x00-\x1f])+)\]")
_TRUE_FALSE = {"T": True, "TRUE": True, "F": False, "FALSE": False}
_GAP = "[[1]]"


class GiftTooLarge(Exception):
    """The GIFT text is longer than :data:`MAX_GIFT_CHARS` (→ 413)."""


class GiftNotText(Exception):
    """The uploaded GIFT file is not UTF-8 text (→ 422)."""


class GiftQuestionError(Exception):
    """One GIFT question cannot be imported; becomes a :class:`GiftIssue`."""

    def __init__(self, message: str, title: str = "") -> None:
        super().__init__(message)
        self.title = title


class _Unexportable(Exception):
    """A question has no faithful GIFT form."""


@dataclass(frozen=True)
class GiftIssue:
    """A question that was not imported: where it starts, why, and its title if known."""

    line: int
    message: str
    title: str = ""


@dataclass(frozen=True)
class GiftItem:
    """An imported question and the line its text starts on."""

    line: int
    question: Question


@dataclass
class GiftImport:
    """The result of :func:`parse_gift`: questions imported and questions refused."""

    items: list[GiftItem] = field(default_factory=list)
    errors: list[GiftIssue] = field(default_factory=list)

    @property
    def questions(self) -> list[Question]:
        """The imported questions, in file order."""
        return [item.question for item in self.items]


@dataclass(frozen=True)
class ExportIssue:
    """A question left out of an export, or written with something lost."""

    question_id: str
    title: str
    message: str


@dataclass
class GiftExport:
    """The result of :func:`export_gift`."""

    text: str
    skipped: list[ExportIssue] = field(default_factory=list)
    warnings: list[ExportIssue] = field(default_factory=list)


# ---------------------------------------------------------------- reading


def decode_gift(data: bytes) -> str:
    """Decode an uploaded GIFT file (UTF-8, with or without a byte-order mark).

    :raise GiftTooLarge: more than :data:`MAX_GIFT_CHARS` bytes.
    :raise GiftNotText: not valid UTF-8.
    """
    if len(data) > MAX_GIFT_CHARS:
        raise GiftTooLarge(f"the file has {len(data)} bytes; the limit is {MAX_GIFT_CHARS}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GiftNotText(f"the file is not UTF-8 text (byte {exc.start})") from exc


@dataclass
class _Block:
    lines: list[tuple[int, str]]
    tags: list[str]


def _blocks(text: str) -> Iterator[_Block]:
    """Split GIFT text into blank-line separated blocks of trimmed, non-comment lines."""
    block = _Block([], [])
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            if block.lines:
                yield block
            block = _Block([], [])
        elif line.startswith("//"):
            block.tags += [t.replace("\\]", "]").strip() for t in _TAG.findall(line)]
        else:
            block.lines.append((number, line))
    if block.lines:
        yield block


def _protect(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        nxt = text[i + 1 : i + 2]
        if text[i] == "\\" and nxt and nxt in _ESCAPABLE:
            out.append(_PLACEHOLDERS[nxt])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _restore(text: str) -> str:
    return text.translate(_RESTORE).strip()


def _rich(raw: str, fmt: TextFormat) -> str:
    """A text in the question's format: drop a matching ``[format]`` prefix, unescape."""
    raw = raw.strip()
    match = _FORMAT.match(raw)
    if match:
        own = _FORMATS[match.group(1)]
        if own != fmt:
            raise GiftQuestionError(
                f"a part marked [{match.group(1)}] in a {fmt} question:"
                " mixed text formats in one question are not supported"
            )
        raw = raw[match.end() :]
    return _restore(raw)


def _entries(answer: str, marker: str) -> list[str]:
    """Split an answer block at ``marker``; text before the first marker is an answer too.

    That is Moodle's reading: ``{a =b}`` has the answers ``a`` and ``b``.
    """
    pieces = answer.split(marker)
    head = pieces[0].strip()
    entries = ([head] if head else []) + [p.strip() for p in pieces[1:]]
    if any(not e for e in entries):
        raise GiftQuestionError(f"an empty answer after '{marker}'")
    return entries


def _take_weight(entry: str, default: float) -> tuple[float, str]:
    match = _WEIGHT.match(entry)
    if match is None:
        return default, entry
    return float(match.group(1)) / 100, entry[match.end() :].strip()


def _with_feedback(entry: str, fmt: TextFormat) -> tuple[str, str]:
    text, _, feedback = entry.partition("#")
    return _rich(text, fmt), _rich(feedback, fmt)


def _choices(answer: str, fmt: TextFormat, new_id: Callable[[], str]) -> list[dict[str, Any]]:
    out = []
    for entry in _entries(answer.replace("=", "~="), "~"):
        if entry.startswith("="):
            entry = entry[1:].strip()
            if _WEIGHT.match(entry):
                raise GiftQuestionError(
                    "'=' marks the fully correct answer; write partial credit as ~%50%answer"
                )
            weight = 1.0
        else:
            weight, entry = _take_weight(entry, 0.0)
        text, feedback = _with_feedback(entry, fmt)
        out.append({"id": new_id(), "text": text, "weight": weight, "feedback": feedback})
    return out


def _short_answers(answer: str, fmt: TextFormat, new_id: Callable[[], str]) -> dict[str, Any]:
    answers = []
    for entry in _entries(answer, "="):
        weight, entry = _take_weight(entry, 1.0)
        text, feedback = _with_feedback(entry, fmt)
        answers.append({"id": new_id(), "text": text, "weight": weight, "feedback": feedback})
    return {"answers": answers}


def _number(text: str) -> float:
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        raise GiftQuestionError(f"{_restore(text)!r} is not a number")
    return float(text)


def _numeric(answer: str, fmt: TextFormat, new_id: Callable[[], str]) -> dict[str, Any]:
    body = answer[1:]
    wrong_feedback = ""
    tilde = body.find("~")
    if tilde >= 0:
        other = body[tilde + 1 :].strip()
        body = body[:tilde]
        if other and not other.startswith("#"):
            raise GiftQuestionError("feedback for any other number is written ~#feedback")
        wrong_feedback = _rich(other[1:], fmt)
    answers = []
    if not body.strip():
        raise GiftQuestionError("a numeric question needs at least one answer")
    for entry in _entries(body, "="):
        weight, entry = _take_weight(entry, 1.0)
        spec, _, feedback = entry.partition("#")
        spec = spec.strip()
        data: dict[str, Any] = {"id": new_id(), "weight": weight, "feedback": _rich(feedback, fmt)}
        if ".." in spec[1:]:
            low, _, high = spec.partition("..")
            data |= {"low": _number(low), "high": _number(high)}
        elif ":" in spec[1:]:
            value, _, tolerance = spec.partition(":")
            data |= {"value": _number(value), "tolerance": _number(tolerance)}
        else:
            data["value"] = _number(spec)
        answers.append(data)
    return {"answers": answers, "wrong_feedback": wrong_feedback}


def _matching(answer: str, fmt: TextFormat, new_id: Callable[[], str]) -> dict[str, Any]:
    answer_ids: dict[str, str] = {}
    pairs = []
    for entry in _entries(answer, "="):
        if "->" not in entry:
            raise GiftQuestionError(f"matching pair {_restore(entry)!r} has no '->'")
        left, _, right = entry.partition("->")
        prompt = _rich(left, fmt)
        target = _restore(right)
        if not target:
            raise GiftQuestionError(f"matching pair {_restore(entry)!r} has nothing after '->'")
        if target not in answer_ids:
            answer_ids[target] = new_id()
        pairs.append((prompt, answer_ids[target]))
    return {
        "prompts": [
            {"id": new_id(), "text": prompt, "answer_id": answer_id}
            for prompt, answer_id in pairs
            if prompt
        ],
        "answers": [{"id": i, "text": t} for t, i in answer_ids.items()],
    }


def _true_false(answer: str, fmt: TextFormat) -> dict[str, Any]:
    key, *feedback = answer.split("#", 2)
    wrong = _rich(feedback[0], fmt) if feedback else ""
    right = _rich(feedback[1], fmt) if len(feedback) > 1 else ""
    correct = _TRUE_FALSE[key.strip()]
    return {
        "correct": correct,
        "feedback_true": right if correct else wrong,
        "feedback_false": wrong if correct else right,
    }


def _kind(answer: str) -> str:
    """Moodle's order of deciding a question's type from its answer block."""
    if answer == "":
        return "essay"
    if answer.startswith("#"):
        return "numeric"
    if "~" in answer:
        return "single_choice" if "=" in answer else "multiple_response"
    if "=" in answer and "->" in answer:
        return "matching"
    if answer.split("#", 1)[0].strip() in _TRUE_FALSE:
        return "true_false"
    return "short_answer"


def _answer_key(kind: str, answer: str, fmt: TextFormat, new_id: Callable[[], str]) -> Any:
    if kind in ("single_choice", "multiple_response"):
        return {"choices": _choices(answer, fmt, new_id)}
    if kind == "numeric":
        return _numeric(answer, fmt, new_id)
    if kind == "matching":
        return _matching(answer, fmt, new_id)
    if kind == "true_false":
        return _true_false(answer, fmt)
    if kind == "short_answer":
        return _short_answers(answer, fmt, new_id)
    return {}


_GAP_KINDS = {"single_choice": "choice", "short_answer": "short_answer", "numeric": "numeric"}
_KIND_NAMES = {
    "essay": "an essay",
    "true_false": "a true/false question",
    "matching": "a matching question",
    "multiple_response": "a multiple-response question",
}


def _parse_block(text: str, category: str, tags: list[str], new_id: Callable[[], str]) -> Question:
    """Parse one question block.

    :raise GiftQuestionError: the block is not a question we can import.
    """
    if _RESERVED.search(text):
        raise GiftQuestionError("the text contains reserved characters U+E000..U+E007")
    raw = _protect(text)
    title = ""
    if raw.startswith("::"):
        end = raw.find("::", 2)
        if end < 0:
            raise GiftQuestionError("the question title is not closed with '::'")
        title = _restore(raw[2:end])
        raw = raw[end + 2 :].strip()
    try:
        return _parse_body(raw, title, category, tags, new_id)
    except GiftQuestionError as exc:
        raise GiftQuestionError(str(exc), title) from exc


def _parse_body(
    raw: str, title: str, category: str, tags: list[str], new_id: Callable[[], str]
) -> Question:
    fmt: TextFormat = "plain"
    match = _FORMAT.match(raw)
    if match:
        fmt = _FORMATS[match.group(1)]
        raw = raw[match.end() :]
    data: dict[str, Any] = {
        "id": new_id(),
        "title": title,
        "text_format": fmt,
        "category": category,
        "tags": tags,
    }
    start = raw.find("{")
    end = raw.find("}")
    if start < 0 and end < 0:
        data |= {"type": "description", "text": _restore(raw)}
        return _validated(data)
    if start < 0 or end < start:
        raise GiftQuestionError(
            "unbalanced braces: write the answers as {...} and literal braces as \\{ \\}"
        )
    if raw.find("{", end) >= 0 or raw.find("}", end + 1) >= 0:
        raise GiftQuestionError("more than one {...} answer block; GIFT allows one per question")
    answer = raw[start + 1 : end].strip()
    after = raw[end + 1 :]
    separator = answer.rfind("####")
    if separator >= 0:
        data["general_feedback"] = _rich(answer[separator + 4 :], fmt)
        answer = answer[:separator].strip()
    kind = _kind(answer)
    key = _answer_key(kind, answer, fmt, new_id)
    if not after.strip():
        data |= {"type": kind, "text": _restore(raw[:start])} | key
        return _validated(data)
    if kind not in _GAP_KINDS:
        raise GiftQuestionError(
            f"{_KIND_NAMES[kind]} in missing-word form (text after the answer block)"
            " is not supported"
        )
    gap = {"type": _GAP_KINDS[kind], "id": new_id()} | key
    data |= {"type": "cloze", "text": _restore(raw[:start] + _GAP + after), "gaps": [gap]}
    return _validated(data)


def _validated(data: dict[str, Any]) -> Question:
    try:
        return questions.parse_question(data)
    except QuestionInvalid as exc:
        problems = []
        for error in exc.errors:
            # the first part of a location is the question type, the same for every error
            loc = error["loc"].partition(".")[2]
            problems.append(f"{loc}: {error['msg']}" if loc else error["msg"])
        raise GiftQuestionError("; ".join(problems)) from exc


def parse_gift(text: str, *, new_id: Callable[[], str] = questions.new_id) -> GiftImport:
    """Import GIFT text.

    :param text: the file's text (see :func:`decode_gift` for uploads).
    :param new_id: makes the ids of questions and their parts; tests pass a
        deterministic one.
    :return: the questions imported, each with its line, and one
        :class:`GiftIssue` per block that could not be imported.
    :raise GiftTooLarge: the text is longer than :data:`MAX_GIFT_CHARS`.
    """
    if len(text) > MAX_GIFT_CHARS:
        raise GiftTooLarge(f"the text has {len(text)} characters; the limit is {MAX_GIFT_CHARS}")
    result = GiftImport()
    category = ""
    for block in _blocks(text):
        lines = block.lines
        if lines[0][1].startswith("$CATEGORY:"):
            category = lines[0][1].removeprefix("$CATEGORY:").strip()
            lines = lines[1:]
            if not lines:
                continue
        line = lines[0][0]
        if len(result.items) + len(result.errors) >= MAX_GIFT_QUESTIONS:
            result.errors.append(
                GiftIssue(line, f"more than {MAX_GIFT_QUESTIONS} questions; the rest were skipped")
            )
            break
        try:
            question = _parse_block(
                "\n".join(content for _, content in lines), category, block.tags, new_id
            )
        except GiftQuestionError as exc:
            result.errors.append(GiftIssue(line, str(exc), exc.title))
        else:
            result.items.append(GiftItem(line, question))
    logger.info("gift_import questions=%d errors=%d", len(result.items), len(result.errors))
    return result


# ---------------------------------------------------------------- writing

_SPECIALS = {
    "\\": "\\\\",
    "~": "\\~",
    "=": "\\=",
    "#": "\\#",
    "{": "\\{",
    "}": "\\}",
    ":": "\\:",
    "\n": "\\n",
    "\r": "",
}


def _esc(text: str) -> str:
    return "".join(_SPECIALS.get(c, c) for c in text)


def _esc_rich(text: str, fmt: TextFormat) -> str:
    # a text that itself starts with "[html]" would lose it to the format parser
    prefix = f"[{fmt}]" if _FORMAT.match(text) else ""
    return prefix + _esc(text)


def _num(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _pct(weight: float) -> str:
    return _num(round(weight * 100, 5))


def _feedback(text: str, fmt: TextFormat) -> str:
    return f"#{_esc_rich(text, fmt)}" if text else ""


def _choice_entries(choices: list[Choice], single: bool, fmt: TextFormat) -> list[str]:
    entries = []
    for choice in choices:
        if single and choice.weight == 1.0:
            if _WEIGHT.match(choice.text):
                raise _Unexportable(
                    f"the correct choice {choice.text!r} starts like a GIFT weight (%n%)"
                )
            mark = "="
        elif choice.weight == 0 and not _WEIGHT.match(choice.text):
            mark = "~"
        else:
            mark = f"~%{_pct(choice.weight)}%"
        entries.append(mark + _esc_rich(choice.text, fmt) + _feedback(choice.feedback, fmt))
    return entries


def _short_entries(key: ShortAnswerKey, fmt: TextFormat) -> list[str]:
    if key.case_sensitive or key.whitespace != "collapse":
        raise _Unexportable("GIFT short answers are case-insensitive with whitespace collapsed")
    entries = []
    for answer in key.answers:
        if "->" in answer.text:
            raise _Unexportable(f"the accepted answer {answer.text!r} contains '->'")
        plain = answer.weight == 1.0 and not _WEIGHT.match(answer.text)
        mark = "=" if plain else f"=%{_pct(answer.weight)}%"
        entries.append(mark + _esc_rich(answer.text, fmt) + _feedback(answer.feedback, fmt))
    return entries


def _numeric_entries(key: NumericKey, fmt: TextFormat) -> list[str]:
    if key.units:
        raise _Unexportable("GIFT has no syntax for units")
    entries = []
    for answer in key.answers:
        if answer.value is not None:
            spec = _num(answer.value)
            if answer.tolerance:
                spec += f":{_num(answer.tolerance)}"
        else:
            assert answer.low is not None and answer.high is not None
            spec = f"{_num(answer.low)}..{_num(answer.high)}"
        mark = "=" if answer.weight == 1.0 else f"=%{_pct(answer.weight)}%"
        entries.append(mark + spec + _feedback(answer.feedback, fmt))
    if key.wrong_feedback:
        entries.append("~" + _feedback(key.wrong_feedback, fmt))
    return entries


def _block(entries: list[str], general_feedback: str, fmt: TextFormat, *, inline: bool) -> str:
    if general_feedback:
        entries = [*entries, "####" + _esc_rich(general_feedback, fmt)]
    if inline:
        return "{" + " ".join(entries) + "}"
    return "{\n" + "".join(f"\t{e}\n" for e in entries) + "}"


def _gap_block(question: Cloze, fmt: TextFormat) -> str:
    if len(question.gaps) != 1:
        raise _Unexportable("GIFT has no syntax for a cloze question with several gaps")
    gap = question.gaps[0]
    if isinstance(gap, ChoiceGap):
        entries = _choice_entries(gap.choices, True, fmt)
    elif isinstance(gap, ShortAnswerGap):
        entries = _short_entries(gap, fmt)
    else:
        entries = _numeric_entries(gap, fmt)
        entries[0] = "#" + entries[0]
    return _block(entries, question.general_feedback, fmt, inline=True)


def _answer_block(question: Question, fmt: TextFormat) -> str:
    gf = question.general_feedback
    if isinstance(question, SingleChoice):
        return _block(_choice_entries(question.choices, True, fmt), gf, fmt, inline=False)
    if isinstance(question, MultipleResponse):
        penalty = question.wrong_pick_penalty
        choices = [
            c.model_copy(update={"weight": max(-1.0, c.weight - penalty)}) if c.weight <= 0 else c
            for c in question.choices
        ]
        return _block(_choice_entries(choices, False, fmt), gf, fmt, inline=False)
    if isinstance(question, TrueFalse):
        right = question.feedback_true if question.correct else question.feedback_false
        wrong = question.feedback_false if question.correct else question.feedback_true
        body = "TRUE" if question.correct else "FALSE"
        if wrong or right:
            body += "#" + _esc_rich(wrong, fmt)
        if right:
            body += "#" + _esc_rich(right, fmt)
        return _block([body], gf, fmt, inline=True)
    if isinstance(question, ShortAnswer):
        return _block(_short_entries(question, fmt), gf, fmt, inline=False)
    if isinstance(question, Numeric):
        entries = _numeric_entries(question, fmt)
        if len(entries) == 1 and not gf and entries[0].startswith("=") and "#" not in entries[0]:
            return "{#" + entries[0][1:] + "}"  # the short form, {#1822:1}
        return "{#" + _block(entries, gf, fmt, inline=False)[1:]
    if isinstance(question, Matching):
        answers = {a.id: a.text for a in question.answers}
        entries = []
        for prompt in question.prompts:
            if "->" in prompt.text:
                raise _Unexportable(f"the matching prompt {prompt.text!r} contains '->'")
            entries.append(f"={_esc_rich(prompt.text, fmt)} -> {_esc(answers[prompt.answer_id])}")
        used = {p.answer_id for p in question.prompts}
        entries += [f"= -> {_esc(a.text)}" for a in question.answers if a.id not in used]
        return _block(entries, gf, fmt, inline=False)
    if isinstance(question, Essay):
        return _block([], gf, fmt, inline=True)
    raise _Unexportable(f"GIFT has no syntax for {question.type} questions")


def _warnings(question: Question) -> list[str]:
    out = []
    if question.points not in (0.0, 1.0):
        out.append(f"points ({question.points:g}) are not part of GIFT")
    if getattr(question, "shuffle", True) is False:
        out.append("'do not shuffle' is not part of GIFT")
    if isinstance(question, MultipleResponse) and question.wrong_pick_penalty:
        out.append("wrong_pick_penalty was written into the wrong choices' weights")
    if isinstance(question, Essay) and (
        question.grader_info or question.response_template or question.max_length != 10_000
    ):
        out.append("essay grader notes, response template and length limit are not part of GIFT")
    if isinstance(question, Description) and question.general_feedback:
        out.append("a description's general feedback is not part of GIFT")
    if isinstance(question, Cloze) and question.gaps[0].points != 1.0:
        out.append("gap points are not part of GIFT")
    if isinstance(question, Cloze) and getattr(question.gaps[0], "shuffle", True) is False:
        out.append("'do not shuffle' is not part of GIFT")
    return out


def _write_question(question: Question) -> str:
    fmt = question.text_format
    if isinstance(question, Cloze):
        block = _gap_block(question, fmt)
        before, _, after = question.text.partition(_GAP)
        if not after.strip():
            raise _Unexportable("a gap must have text after it to be a GIFT missing-word question")
        lead = before
        body = _esc(before) + block + _esc(after)
    elif isinstance(question, Description):
        lead, body = question.text, _esc(question.text)
    else:
        lead, block = question.text, _answer_block(question, fmt)
        body = _esc(question.text) + block
    # a format prefix protects text that would otherwise read as a format or a comment
    needs_prefix = fmt != "plain" or _FORMAT.match(lead) or lead.startswith("//")
    out = f"[{fmt}]" + body if needs_prefix else body
    if question.title:
        out = f"::{_esc(question.title)}::" + out
    if question.tags:
        tags = " ".join("[tag:" + t.replace("]", "\\]") + "]" for t in question.tags)
        out = f"// {tags}\n{out}"
    return out


def export_gift(items: Iterable[Question]) -> GiftExport:
    """Write questions as GIFT text.

    :param items: the questions, in the order to write them.
    :return: the text, the questions left out (with why) and warnings about
        settings that GIFT could not carry.
    """
    blocks = []
    result = GiftExport("")
    category = ""
    for question in items:
        try:
            block = _write_question(question)
        except _Unexportable as exc:
            result.skipped.append(ExportIssue(question.id, question.title, str(exc)))
            continue
        result.warnings += [
            ExportIssue(question.id, question.title, w) for w in _warnings(question)
        ]
        if question.category != category:
            blocks.append(f"$CATEGORY: {question.category}")
            category = question.category
        blocks.append(block)
    result.text = "\n\n".join(blocks) + "\n" if blocks else ""
    logger.info("gift_export questions=%d skipped=%d", len(blocks), len(result.skipped))
    return result
