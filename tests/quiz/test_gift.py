"""GIFT import and export: Moodle's own files, every construct, errors with line numbers."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from pathlib import Path

import pytest

from plugins.quiz import gift
from plugins.quiz.gift import GiftNotText
from plugins.quiz.gift import GiftTooLarge
from plugins.quiz.gift import decode_gift
from plugins.quiz.gift import export_gift
from plugins.quiz.gift import parse_gift
from plugins.quiz.grading import grade
from plugins.quiz.questions import Choice
from plugins.quiz.questions import ChoiceGap
from plugins.quiz.questions import Cloze
from plugins.quiz.questions import Description
from plugins.quiz.questions import Essay
from plugins.quiz.questions import Matching
from plugins.quiz.questions import MultipleResponse
from plugins.quiz.questions import Numeric
from plugins.quiz.questions import NumericAnswer
from plugins.quiz.questions import NumericGap
from plugins.quiz.questions import Question
from plugins.quiz.questions import ShortAnswer
from plugins.quiz.questions import ShortAnswerGap
from plugins.quiz.questions import SingleChoice
from plugins.quiz.questions import TextAnswer
from plugins.quiz.questions import TrueFalse
from tests.quiz.samples import SAMPLES
from tests.quiz.samples import canonical
from tests.quiz.samples import counter_ids
from tests.quiz.samples import matching
from tests.quiz.samples import multiple_response
from tests.quiz.samples import single_choice
from tests.quiz.samples import true_false

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "gift"
EXAMPLES = FIXTURES / "moodle-examples.gift.txt"
IN_CATEGORY = FIXTURES / "moodle-questions-in-category.gift.txt"

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="GIFT fixtures not present")

#: where each question type starts in Moodle's examples.txt; nothing there is refused
EXAMPLES_BY_TYPE = {
    "single_choice": [8, 25, 35, 98, 115, 143, 148, 167, 190],
    "cloze": [10, 27, 29, 45, 72, 74, 93, 117, 169, 184, 195],  # missing-word questions
    "true_false": [12, 49, 51, 113, 171],
    "short_answer": [14, 43, 90, 103, 108, 123, 173],
    "numeric": [16, 70, 76, 85, 175, 202],
    "matching": [55, 61, 177],
    "multiple_response": [130, 136],
}
IN_CATEGORY_BY_TYPE = {
    "matching": [5],
    "single_choice": [14],
    "short_answer": [22],
    "true_false": [27],
}


def _parse(text: str) -> gift.GiftImport:
    return parse_gift(text, new_id=counter_ids())


def _by_type(result: gift.GiftImport) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for item in result.items:
        out[item.question.type].append(item.line)
    return dict(out)


def _one(text: str) -> Question:
    result = _parse(text)
    assert result.errors == []
    assert len(result.items) == 1
    return result.items[0].question


def _error(text: str) -> gift.GiftIssue:
    result = _parse(text)
    assert result.items == []
    assert len(result.errors) == 1
    return result.errors[0]


# ---------------------------------------------------------------- Moodle's files


def test_moodle_examples_import_completely() -> None:
    result = _parse(EXAMPLES.read_text())
    assert result.errors == []
    assert len(result.items) == 43
    assert _by_type(result) == EXAMPLES_BY_TYPE


def test_moodle_questions_in_category_import_completely() -> None:
    result = _parse(IN_CATEGORY.read_text())
    assert result.errors == []
    assert _by_type(result) == IN_CATEGORY_BY_TYPE
    assert {q.category for q in result.questions} == {"$course$/Default for New Features"}
    assert {q.text_format for q in result.questions} == {"html"}
    assert [q.title for q in result.questions] == [
        "Moodle activities",
        "Greeting",
        "Moodle user",
        "Moodle acronym",
    ]


@pytest.mark.parametrize("path", [EXAMPLES, IN_CATEGORY], ids=lambda p: p.name)
def test_fixture_export_then_import_gives_equal_models(path: Path) -> None:
    first = _parse(path.read_text())
    exported = export_gift(first.questions)
    assert exported.skipped == []
    assert exported.warnings == []
    second = _parse(exported.text)
    assert second.errors == []
    assert second.questions == first.questions
    assert export_gift(second.questions).text == exported.text


def _examples() -> dict[int, Question]:
    return {item.line: item.question for item in _parse(EXAMPLES.read_text()).items}


def test_examples_multiple_choice_with_weights_and_feedback() -> None:
    question = _examples()[190]
    assert isinstance(question, SingleChoice)
    assert [(c.text, c.weight, c.feedback) for c in question.choices] == [
        ("wrong answer", 0.0, "comment on wrong answer"),
        ("half credit answer", 0.5, "comment on answer"),
        ("full credit answer", 1.0, "well done!"),
    ]


def test_examples_missing_word_becomes_a_one_gap_cloze() -> None:
    question = _examples()[117]
    assert isinstance(question, Cloze)
    assert question.title == "Jesus' hometown"
    assert question.text == "Jesus Christ was from [[1]]."
    gap = question.gaps[0]
    assert isinstance(gap, ChoiceGap)
    assert [(c.text, c.weight) for c in gap.choices] == [
        ("Jerusalem", 0.0),
        ("Bethlehem", 0.25),
        ("Galilee", 0.5),
        ("Nazareth", 1.0),
    ]
    thanksgiving = _examples()[29]
    assert thanksgiving.text == (
        "The American holiday of Thanksgiving is celebrated on the [[1]] Thursday of November."
    )
    pi = _examples()[74]
    assert isinstance(pi, Cloze) and isinstance(pi.gaps[0], NumericGap)
    assert (pi.gaps[0].answers[0].low, pi.gaps[0].answers[0].high) == (3.141, 3.142)
    two_plus_two = _examples()[45]
    assert isinstance(two_plus_two, Cloze)
    assert isinstance(two_plus_two.gaps[0], ShortAnswerGap)


def test_examples_numeric_forms() -> None:
    examples = _examples()
    exact = examples[70]
    assert isinstance(exact, Numeric)
    assert [(a.value, a.tolerance) for a in exact.answers] == [(1822.0, 0.0)]
    weighted = examples[202]
    assert isinstance(weighted, Numeric)
    assert [(a.value, a.tolerance, a.weight, a.feedback) for a in weighted.answers] == [
        (1822.0, 0.0, 1.0, "Correct! 100% credit"),
        (1822.0, 2.0, 0.5, "He was born in 1822.\nYou get 50% credit for being close."),
    ]
    assert grade(weighted, "1823").score == 0.5


def test_examples_true_false_feedback_goes_to_the_wrong_answer() -> None:
    question = _examples()[113]
    assert isinstance(question, TrueFalse)
    assert question.correct is False
    assert question.feedback_true == "No one is buried in Grant's tomb."
    assert question.feedback_false == ""


def test_examples_escapes_and_multi_line_feedback() -> None:
    question = _examples()[148]
    assert isinstance(question, SingleChoice)
    assert question.title == "GIFT Control Characters"
    assert [c.text for c in question.choices] == ["~", "=", "#", "{", "}", "\\"]
    assert question.choices[5].weight == 1.0
    assert question.choices[5].feedback.startswith("Correct! \\ (backslash) is not")
    assert "BUT,\nit is used" in question.choices[5].feedback
    equals = _examples()[143]
    assert isinstance(equals, SingleChoice)
    assert [c.text for c in equals.choices] == ["= 2 + 2", "= 2 + 3", "= 2 + 4"]


def test_examples_multiple_response_negative_weights() -> None:
    question = _examples()[136]
    assert isinstance(question, MultipleResponse)
    assert [c.weight for c in question.choices] == [-0.5, 0.5, 0.5, -0.5]
    ids = [c.id for c in question.choices]
    assert grade(question, ids[1:3]).score == 1.0
    assert grade(question, ids).score == 0.0


def test_examples_markdown_and_titles() -> None:
    examples = _examples()
    assert examples[108].text_format == "markdown"
    assert examples[108].text == "Who's buried in **Grant's tomb**?"
    assert examples[90].title == "Kanji Origins"
    assert examples[90].text == "Japanese characters originally\ncame from what country?"


def test_category_file_matching_distractor_and_html() -> None:
    questions = _parse(IN_CATEGORY.read_text()).questions
    activities = questions[0]
    assert isinstance(activities, Matching)
    assert [a.text for a in activities.answers] == ["Forum", "Choice", "Database", "Wiki", "Chat"]
    assert len(activities.prompts) == 4  # "= -> Chat" is a distractor, not a prompt
    greeting = questions[1]
    assert greeting.text.startswith('<a href="http://demo.moodle.net/file.php/5/media/bonjour.mp3"')
    assert "Listen to this greeting:</a>" in greeting.text
    acronym = questions[3]
    assert "style" not in acronym.text  # sanitised html
    assert "<span>Modular Object-Oriented Dynamic Learning Environment</span>" in acronym.text


def test_fixture_answers_never_leak_through_ids() -> None:
    # parsing with the default factory gives opaque random ids
    result = parse_gift(EXAMPLES.read_text())
    ids = [c.id for q in result.questions if isinstance(q, SingleChoice) for c in q.choices]
    assert len(set(ids)) == len(ids)
    assert all(len(i) >= 16 for i in ids)


# ---------------------------------------------------------------- refused questions


REFUSED = [
    ("Q{=a\n", "unbalanced braces"),
    ("Q}{=a}", "unbalanced braces"),
    ("Q {~a =b} and {~c =d}.", "more than one {...} answer block"),
    ("Q {~a =b} and }.", "more than one {...} answer block"),
    ("::Untitled Q {=a}", "the question title is not closed with '::'"),
    ("Two {T} words.", "a true/false question in missing-word form"),
    ("Match {=a -> b =c -> d} here.", "a matching question in missing-word form"),
    ("Essay {} here.", "an essay in missing-word form"),
    ("Pick {~%50%a ~%50%b} here.", "a multiple-response question in missing-word form"),
    ("Q{=a =b ~c}", "exactly one choice must be fully correct (weight 1), found 2"),
    ("Q{~a ~b}", "the positive choice weights must add up to 1 (100%), they add up to 0"),
    ("Q{~%150%a =b}", "choices.0.weight: Input should be less than or equal to 1"),
    ("Q{~a =%50%b}", "'=' marks the fully correct answer"),
    ("Q{~a ~ =b}", "an empty answer after '~'"),
    ("Q{#abc}", "'abc' is not a number"),
    ("Q{#1:x}", "'x' is not a number"),
    ("Q{#5..1}", "low (5.0) is greater than high (1.0)"),
    ("Q{#}", "a numeric question needs at least one answer"),
    ("Q{#=1 ~wrong}", "feedback for any other number is written ~#feedback"),
    ("Q{#=%50%1}", "at least one numeric answer must be fully correct"),
    ("Q{#nan}", "'nan' is not a number"),
    ("Q{=a -> }", "has nothing after '->'"),
    ("Q{=a -> b}", "prompts: List should have at least 2 items"),
    ("Q{=a -> b =c}", "matching pair 'c' has no '->'"),
    ("Q{=%50%a}", "at least one accepted answer must be fully correct"),
    ("Q{=%-50%a =b}", "answers.0.weight: Input should be greater than or equal to 0"),
    ("[html]Q{~a =[markdown]b}", "mixed text formats in one question are not supported"),
    ("{=a}", "text: String should have at least 1 character"),
    ("Q\ue001{=a}", "reserved characters"),
    ("::T::Q{~x =" + "y" * 1001 + "}", "at most 1000 characters"),
]


@pytest.mark.parametrize(("text", "message"), REFUSED)
def test_refused_questions_are_reported_with_line_and_reason(text: str, message: str) -> None:
    issue = _error(f"// a comment\n\n{text}")
    assert issue.line == 3
    assert message in issue.message, issue.message


def test_a_refused_question_carries_its_title() -> None:
    issue = _error("::Grant quiz::Who? {=a =%50%}")
    assert issue.title == "Grant quiz"
    assert issue.line == 1


def test_errors_do_not_stop_the_file_and_report_exact_lines() -> None:
    text = EXAMPLES.read_text()
    base = len(text.splitlines())
    bad = "\n".join(
        [
            "",
            "// appended: unsupported and malformed questions",
            "Grant is {T} in his tomb.",
            "",
            "::broken",
            "title {=a}",
            "",
            "Numbers {#one}",
            "",
            "The last one is fine.{=yes}",
        ]
    )
    result = _parse(text + bad)
    assert [(e.line, e.message) for e in result.errors] == [
        (
            base + 3,
            "a true/false question in missing-word form (text after the answer block)"
            " is not supported",
        ),
        (base + 5, "the question title is not closed with '::'"),
        (base + 8, "'one' is not a number"),
    ]
    assert len(result.items) == 44
    assert result.items[-1].line == base + 10


def test_comment_only_blocks_and_blank_lines_are_not_questions() -> None:
    assert _parse("// only\n// comments\n\n\n   \n").items == []
    assert _parse("").errors == []


def test_windows_line_endings_and_byte_order_mark() -> None:
    text = decode_gift("\ufeffQ1{=a}\r\n\r\n// c\r\nQ2{T}\r\n".encode())
    result = _parse(text)
    assert result.errors == []
    assert [(i.line, i.question.type) for i in result.items] == [
        (1, "short_answer"),
        (4, "true_false"),
    ]


def test_decode_refuses_non_utf8() -> None:
    with pytest.raises(GiftNotText, match="not UTF-8"):
        decode_gift(b"Q{=caf\xe9}")


def test_oversized_input_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gift, "MAX_GIFT_CHARS", 100)
    with pytest.raises(GiftTooLarge):
        parse_gift("Q{=a}\n\n" * 20)
    with pytest.raises(GiftTooLarge):
        decode_gift(b"x" * 101)


def test_too_many_questions_are_reported_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gift, "MAX_GIFT_QUESTIONS", 3)
    result = _parse("\n\n".join(f"Q{n}{{=a}}" for n in range(5)))
    assert len(result.items) == 3
    assert [(e.line, e.message) for e in result.errors] == [
        (7, "more than 3 questions; the rest were skipped")
    ]


# ---------------------------------------------------------------- single constructs


def test_description_and_essay() -> None:
    description = _one("::Intro::Read this first.")
    assert isinstance(description, Description)
    assert (description.title, description.text, description.points) == (
        "Intro",
        "Read this first.",
        0.0,
    )
    essay = _one("Discuss.{####Model answer: ...}")
    assert isinstance(essay, Essay)
    assert essay.general_feedback == "Model answer: ..."


def test_true_false_forms() -> None:
    for text, correct in (("{T}", True), ("{TRUE}", True), ("{F}", False), ("{FALSE}", False)):
        question = _one("Statement." + text)
        assert isinstance(question, TrueFalse) and question.correct is correct
    both = _one("Statement.{TRUE#wrong one#right one####general}")
    assert isinstance(both, TrueFalse)
    assert (both.feedback_true, both.feedback_false, both.general_feedback) == (
        "right one",
        "wrong one",
        "general",
    )
    # lower case is not true/false in GIFT: Moodle reads a short answer
    assert _one("Statement.{true}").type == "short_answer"


def test_short_answer_forms() -> None:
    question = _one("Who?{=no one#right =%50%*Grant*#half ####The tomb is empty.}")
    assert isinstance(question, ShortAnswer)
    assert [(a.text, a.weight, a.feedback) for a in question.answers] == [
        ("no one", 1.0, "right"),
        ("*Grant*", 0.5, "half"),
    ]
    assert question.general_feedback == "The tomb is empty."
    # Moodle reads text before the first '=' as an answer too
    lenient = _one("Who?{nobody =no one}")
    assert isinstance(lenient, ShortAnswer)
    assert [a.text for a in lenient.answers] == ["nobody", "no one"]


def test_numeric_forms() -> None:
    question = _one("N?{#=1822:0#exact =%50%1820..1824#close ~#wrong ####about Grant}")
    assert isinstance(question, Numeric)
    assert [(a.value, a.tolerance, a.low, a.high, a.weight) for a in question.answers] == [
        (1822.0, 0.0, None, None, 1.0),
        (None, 0.0, 1820.0, 1824.0, 0.5),
    ]
    assert (question.wrong_feedback, question.general_feedback) == ("wrong", "about Grant")
    negative = _one("N?{#-5..-1}")
    assert isinstance(negative, Numeric)
    assert (negative.answers[0].low, negative.answers[0].high) == (-5.0, -1.0)
    small = _one("N?{#-1.5e-3:1e-4}")
    assert isinstance(small, Numeric)
    assert (small.answers[0].value, small.answers[0].tolerance) == (-0.0015, 0.0001)


def test_matching_reuses_answers_by_text() -> None:
    question = _one("Where?{=Paris -> Europe =Rome -> Europe =Lima -> America = -> Asia}")
    assert isinstance(question, Matching)
    assert [a.text for a in question.answers] == ["Europe", "America", "Asia"]
    assert question.prompts[0].answer_id == question.prompts[1].answer_id


def test_formats() -> None:
    assert _one("[plain]<b>x</b>{T}").text == "<b>x</b>"
    assert _one("[moodle]x{T}").text_format == "plain"
    html = _one("[html]<p onclick='x()'>Hi</p>{~<i>a</i>#<b>fb</b> =[html]b}")
    assert isinstance(html, SingleChoice)
    assert (html.text, html.choices[0].text, html.choices[0].feedback) == (
        "<p>Hi</p>",
        "<i>a</i>",
        "<b>fb</b>",
    )
    assert html.choices[1].text == "b"
    # an unknown [name] is ordinary text, as in Moodle
    assert _one("[rtf]x{T}").text == "[rtf]x"


def test_categories_apply_until_changed_and_tags_come_from_comments() -> None:
    text = "\n".join(
        [
            "$CATEGORY: top/a",
            "",
            "// [tag:easy] [tag:grant\\]s] [id:ignored]",
            "Q1{T}",
            "",
            "$CATEGORY: top/b",
            "Q2{T}",
            "",
            "Q3{T}",
        ]
    )
    result = _parse(text)
    assert [(i.line, i.question.category) for i in result.items] == [
        (4, "top/a"),
        (7, "top/b"),
        (9, "top/b"),
    ]
    assert result.questions[0].tags == ["easy", "grant]s"]
    assert [q.tags for q in result.questions[1:]] == [[], []]


def test_tags_in_comments() -> None:
    question = _one("// question: 1 [tag:easy] [tag:grant tomb]\nQ1{T}")
    assert question.tags == ["easy", "grant tomb"]


def test_escaped_newline_and_backslash() -> None:
    question = _one("Line one\\nline two \\\\ done{T}")
    assert question.text == "Line one\nline two \\ done"
    assert _one("C:\\\\temp \\d{T}").text == "C:\\temp \\d"


# ---------------------------------------------------------------- export


def _round_trip(question: Question) -> Question:
    exported = export_gift([question])
    assert exported.skipped == []
    result = _parse(exported.text)
    assert result.errors == [], (exported.text, result.errors)
    assert len(result.questions) == 1
    return result.questions[0]


EXPORTABLE: list[Question] = [
    single_choice(),
    true_false(),
    matching(),
    TrueFalse(text="False.", correct=False, feedback_true="wrong", general_feedback="g"),
    TrueFalse(text="True.", correct=True, feedback_true="only right"),
    ShortAnswer(
        text="Who?",
        answers=[
            TextAnswer(text="no one", feedback="yes"),
            TextAnswer(text="*Grant*", weight=0.5),
            TextAnswer(text="a\\*b", weight=0.25),
            TextAnswer(text="%50% sure", weight=1.0),
        ],
        general_feedback="gf",
    ),
    Numeric(
        text="N",
        answers=[
            NumericAnswer(value=3.1415, tolerance=0.0005, feedback="pi"),
            NumericAnswer(low=-1e-3, high=2.5e10, weight=0.125),
        ],
        wrong_feedback="no",
    ),
    Numeric(text="N", answers=[NumericAnswer(value=-7)]),
    Cloze(
        text="[[1]] is the capital.",
        gaps=[
            ChoiceGap(choices=[Choice(text="Paris", weight=1, feedback="yes"), Choice(text="Lyon")])
        ],
        general_feedback="France",
    ),
    Cloze(
        text="Two plus two is [[1]].",
        gaps=[NumericGap(answers=[NumericAnswer(value=4)], wrong_feedback="count again")],
    ),
    Cloze(text="Grant is [[1]]!", gaps=[ShortAnswerGap(answers=[TextAnswer(text="entombed")])]),
    Essay(text="Discuss {this}: a=b #1 ~ok", general_feedback="model: answer"),
    Essay(text="Plain."),
    Description(text="// not a comment"),
    Description(text="[html] is not a format here"),
    SingleChoice(
        text="<b>[html]</b>",
        text_format="html",
        choices=[
            Choice(text="[html]<i>x</i>", weight=1, feedback="[markdown] too"),
            Choice(text="%50% off", feedback="percent"),
            Choice(text="a -> b"),
        ],
        title="Title: with {specials} = #1",
        category="top/sub: x",
        tags=["one", "two words", "[brackets]"],
    ),
    SingleChoice(
        text="Markdown **bold**\n\nparagraph",
        text_format="markdown",
        choices=[Choice(text="a", weight=1), Choice(text="b", weight=-0.333333)],
    ),
    MultipleResponse(
        text="Thirds",
        choices=[Choice(text=str(n), weight=0.3333333) for n in range(3)]
        + [Choice(text="none", weight=-1)],
        general_feedback="gf",
    ),
]


@pytest.mark.parametrize("question", EXPORTABLE, ids=lambda q: q.type)
def test_export_then_import_round_trips(question: Question) -> None:
    assert canonical(_round_trip(question)) == canonical(question)


def test_export_text_looks_like_moodles() -> None:
    text = export_gift([single_choice(), SAMPLES["true_false"](), _one("N{#1822:1}")]).text
    assert text == (
        "$CATEGORY: Secret/Category\n"
        "\n"
        "// [tag:secret-tag]\n"
        "::Secret title::Capital of France?{\n"
        "\t=Paris#Right, Paris.\n"
        "\t~%25%Lyon#Second city.\n"
        "\t~Nice#Not Nice.\n"
        "\t####Paris has been the capital since 987.\n"
        "}\n"
        "\n"
        "// [tag:secret-tag]\n"
        "::Secret title::The sun rises in the east.{TRUE#It really does.#Yes, in the east.}\n"
        "\n"
        "$CATEGORY: \n"
        "\n"
        "N{#1822:1}\n"
    )


def test_multiple_response_penalty_is_written_into_weights() -> None:
    question = multiple_response()
    exported = export_gift([question])
    assert [w.message for w in exported.warnings] == [
        "wrong_pick_penalty was written into the wrong choices' weights"
    ]
    imported = _parse(exported.text).questions[0]
    assert isinstance(imported, MultipleResponse)
    assert [c.weight for c in imported.choices] == [0.5, 0.5, -0.75, -0.25]
    ids = {c.text: c.id for c in imported.choices}
    # every possible pick grades the same before and after
    for size in range(5):
        for picked in itertools.combinations(["2", "3", "4", "9"], size):
            original = grade(question, [f"m-{p}" for p in picked]).score
            again = grade(imported, [ids[p] for p in picked]).score
            assert again == pytest.approx(original), picked


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ordering", "GIFT has no syntax for ordering questions"),
        ("cloze", "GIFT has no syntax for a cloze question with several gaps"),
        ("numeric", "GIFT has no syntax for units"),
    ],
)
def test_unexportable_questions_are_reported(name: str, message: str) -> None:
    question = SAMPLES[name]()
    exported = export_gift([single_choice(), question, true_false()])
    assert [(s.question_id, s.title, s.message) for s in exported.skipped] == [
        (question.id, question.title, message)
    ]
    assert [q.type for q in _parse(exported.text).questions] == ["single_choice", "true_false"]


@pytest.mark.parametrize(
    ("question", "message"),
    [
        (
            ShortAnswer(text="Q", answers=[TextAnswer(text="A")], case_sensitive=True),
            "case-insensitive",
        ),
        (
            ShortAnswer(text="Q", answers=[TextAnswer(text="A")], whitespace="exact"),
            "case-insensitive",
        ),
        (ShortAnswer(text="Q", answers=[TextAnswer(text="a->b")]), "contains '->'"),
        (
            Matching(
                text="M",
                prompts=[{"text": "a->b", "answer_id": "x"}, {"text": "c", "answer_id": "y"}],
                answers=[{"id": "x", "text": "X"}, {"id": "y", "text": "Y"}],
            ),
            "contains '->'",
        ),
        (
            SingleChoice(text="Q", choices=[Choice(text="%50%", weight=1), Choice(text="b")]),
            "starts like a GIFT weight",
        ),
        (
            Cloze(
                text="Ends with a gap [[1]]", gaps=[ShortAnswerGap(answers=[TextAnswer(text="x")])]
            ),
            "a gap must have text after it",
        ),
    ],
)
def test_questions_gift_cannot_express_are_skipped(question: Question, message: str) -> None:
    exported = export_gift([question])
    assert exported.text == ""
    assert len(exported.skipped) == 1
    assert message in exported.skipped[0].message


def test_lossy_settings_are_warned_about() -> None:
    question = SAMPLES["essay"]().model_copy(update={"points": 2.0})
    exported = export_gift([question, single_choice().model_copy(update={"shuffle": False})])
    assert [w.message for w in exported.warnings] == [
        "points (2) are not part of GIFT",
        "essay grader notes, response template and length limit are not part of GIFT",
        "'do not shuffle' is not part of GIFT",
    ]
    assert exported.skipped == []


def test_random_texts_survive_export_and_import() -> None:
    rng = random.Random(2024)
    alphabet = "ab ~=#{}:\\/[]%->*\n\tn"

    def text() -> str:
        while True:
            value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))).strip()
            if value:
                return value

    for _ in range(300):
        choices = [
            Choice(text=text(), weight=1, feedback=rng.choice(["", text()])),
            Choice(
                text=text(), weight=rng.choice([0, 0.5, -0.5]), feedback=rng.choice(["", text()])
            ),
        ]
        question = SingleChoice(
            text=text(),
            title=rng.choice(["", text().replace("\n", " ").replace("\t", " ")]),
            general_feedback=rng.choice(["", text()]),
            text_format=rng.choice(["plain", "markdown"]),
            choices=choices,
        )
        exported = export_gift([question])
        if exported.skipped:
            assert "starts like a GIFT weight" in exported.skipped[0].message
            continue
        assert canonical(_round_trip(question)) == canonical(question), exported.text
