"""Server-side grading: scores, partial credit, feedback, and refused responses."""

from __future__ import annotations

import itertools
import random
import re
from typing import Any

import pytest

from plugins.quiz.grading import MAX_RESPONSE_LENGTH
from plugins.quiz.grading import GradeResult
from plugins.quiz.grading import MalformedResponse
from plugins.quiz.grading import ManualGradeInvalid
from plugins.quiz.grading import QuestionNotGradable
from plugins.quiz.grading import ResponseInvalid
from plugins.quiz.grading import ResponseTooLong
from plugins.quiz.grading import UnknownOption
from plugins.quiz.grading import grade
from plugins.quiz.grading import grade_manually
from plugins.quiz.grading import longest_increasing_run
from plugins.quiz.grading import wildcard_match
from plugins.quiz.questions import ChoiceGap
from plugins.quiz.questions import Numeric
from plugins.quiz.questions import NumericAnswer
from plugins.quiz.questions import Ordering
from plugins.quiz.questions import Question
from plugins.quiz.questions import ShortAnswer
from plugins.quiz.questions import SingleChoice
from plugins.quiz.questions import TextAnswer
from plugins.quiz.questions import Unit
from plugins.quiz.questions import Whitespace
from tests.quiz.samples import ORDER
from tests.quiz.samples import SAMPLES
from tests.quiz.samples import cloze
from tests.quiz.samples import description
from tests.quiz.samples import essay
from tests.quiz.samples import matching
from tests.quiz.samples import multiple_response
from tests.quiz.samples import numeric
from tests.quiz.samples import ordering
from tests.quiz.samples import short_answer
from tests.quiz.samples import single_choice
from tests.quiz.samples import true_false


def _score(question: Question, response: Any) -> float | None:
    return grade(question, response).score


# ---------------------------------------------------------------- single choice


def test_single_choice_scores_the_picked_weight_with_its_feedback() -> None:
    question = single_choice()
    right = grade(question, "c-paris")
    assert (right.score, right.correct, right.feedback) == (1.0, True, ["Right, Paris."])
    assert right.general_feedback == "Paris has been the capital since 987."
    half = grade(question, "c-lyon")
    assert (half.score, half.correct, half.feedback) == (0.25, False, ["Second city."])
    assert grade(question, "c-nice").score == 0.0


def test_single_choice_negative_weight_is_clamped() -> None:
    question = SingleChoice(
        text="Q",
        choices=[{"id": "a", "text": "a", "weight": 1}, {"id": "b", "text": "b", "weight": -0.5}],
    )
    result = grade(question, "b")
    assert result.score == 0.0
    assert result.parts[0].score == -0.5


@pytest.mark.parametrize("name", [n for n in SAMPLES if n != "description"])
def test_no_answer_scores_zero(name: str) -> None:
    result = grade(SAMPLES[name](), None)
    assert (result.score, result.needs_manual_grading) == (0.0, False)


# ---------------------------------------------------------------- multiple response


@pytest.mark.parametrize(
    ("picked", "score"),
    [
        (["m-2", "m-3"], 1.0),
        (["m-3", "m-2"], 1.0),
        (["m-2"], 0.5),
        (["m-2", "m-3", "m-9"], 0.75),  # a plain wrong pick costs the 0.25 penalty
        (["m-2", "m-3", "m-4"], 0.25),  # its own -0.5 plus the penalty
        (["m-2", "m-4"], 0.0),  # clamped at zero
        (["m-2", "m-3", "m-4", "m-9"], 0.0),
        ([], 0.0),
    ],
)
def test_multiple_response_partial_credit_and_penalties(picked: list[str], score: float) -> None:
    assert _score(multiple_response(), picked) == pytest.approx(score)


def test_multiple_response_parts_say_which_choices_were_right() -> None:
    result = grade(multiple_response(), ["m-2", "m-9"])
    assert [(p.id, p.correct) for p in result.parts] == [
        ("m-2", True),
        ("m-3", False),
        ("m-4", True),
        ("m-9", False),
    ]
    assert result.feedback == ["2 is the even prime."]


def test_multiple_response_without_penalty_uses_weights_only() -> None:
    question = multiple_response().model_copy(update={"wrong_pick_penalty": 0.0})
    assert _score(question, ["m-2", "m-3", "m-9"]) == 1.0
    assert _score(question, ["m-2", "m-3", "m-4"]) == 0.5


def test_multiple_response_weights_that_add_up_almost_to_one_still_give_full_marks() -> None:
    question = SAMPLES["multiple_response"]().model_validate(
        {
            "type": "multiple_response",
            "text": "Thirds",
            "choices": [{"id": f"c{i}", "text": str(i), "weight": 0.3333333} for i in range(3)]
            + [{"id": "w", "text": "wrong"}],
        }
    )
    assert _score(question, ["c0", "c1", "c2"]) == 1.0


# ---------------------------------------------------------------- true/false


def test_true_false() -> None:
    question = true_false()
    right = grade(question, True)
    assert (right.score, right.feedback) == (1.0, ["Yes, in the east."])
    wrong = grade(question, False)
    assert (wrong.score, wrong.feedback) == (0.0, ["It really does."])


# ---------------------------------------------------------------- numeric


@pytest.mark.parametrize(
    ("response", "score", "feedback"),
    [
        ("1.5", 1.0, "Exactly."),
        (1.5, 1.0, "Exactly."),
        ("1.509", 1.0, "Exactly."),
        (" 1.5 m ", 1.0, "Exactly."),
        ("150 cm", 1.0, "Exactly."),
        ("150cm", 1.0, "Exactly."),
        ("1.5e0", 1.0, "Exactly."),
        ("+1.5", 1.0, "Exactly."),
        ("1.45", 0.5, "Close."),
        ("1.6", 0.5, "Close."),
        ("145 cm", 0.5, "Close."),
        ("2", 0.0, "Measure again."),
        (2, 0.0, "Measure again."),
        ("abc", 0.0, "Measure again."),
        ("1.5.0", 0.0, "Measure again."),
        ("nan", 0.0, "Measure again."),
        ("inf", 0.0, "Measure again."),
        ("1e999", 0.0, "Measure again."),
        ("", 0.0, "Measure again."),
        ("1,5", 0.0, "Measure again."),
        ("1.5 furlongs", 0.9, "Exactly."),  # an unknown unit costs the unit penalty
        ("1.5 m/s", 0.9, "Exactly."),
        ("1.5 m extra", 0.0, "Measure again."),
        ("m 1.5", 0.0, "Measure again."),
    ],
)
def test_numeric_tolerance_ranges_and_units(response: Any, score: float, feedback: str) -> None:
    result = grade(numeric(), response)
    assert result.score == pytest.approx(score)
    assert result.feedback == [feedback]


def test_numeric_unknown_unit_is_not_fully_correct() -> None:
    assert grade(numeric(), "1.5 furlongs").correct is False


def test_numeric_required_unit_missing_costs_the_penalty() -> None:
    question = numeric().model_copy(update={"unit_required": True, "unit_penalty": 0.2})
    assert _score(question, "1.5") == pytest.approx(0.8)
    assert _score(question, 1.5) == pytest.approx(0.8)
    assert _score(question, "1.5 m") == 1.0
    assert _score(question, "1.45") == pytest.approx(0.3)


def test_numeric_without_units_refuses_any_unit() -> None:
    question = Numeric(text="N", answers=[NumericAnswer(value=4)])
    assert _score(question, "4") == 1.0
    assert _score(question, "4 apples") == 0.0


def test_numeric_tolerance_bounds_are_inclusive_despite_binary_floats() -> None:
    question = Numeric(text="pi", answers=[NumericAnswer(value=3.1415, tolerance=0.0005)])
    assert _score(question, "3.141") == 1.0
    assert _score(question, "3.142") == 1.0
    assert _score(question, "3.1409") == 0.0
    assert _score(question, "3.1421") == 0.0


def test_numeric_best_matching_answer_wins() -> None:
    question = Numeric(
        text="Grant",
        answers=[
            NumericAnswer(value=1822, tolerance=2, weight=0.5, feedback="close"),
            NumericAnswer(value=1822, feedback="exact"),
        ],
    )
    assert grade(question, "1822").feedback == ["exact"]
    assert grade(question, "1823").feedback == ["close"]


# ---------------------------------------------------------------- short answer


@pytest.mark.parametrize(
    ("response", "score"),
    [
        ("no one", 1.0),
        ("No One", 1.0),
        ("  no    one ", 1.0),
        ("no\tone", 1.0),
        ("\uff4e\uff4f \uff4f\uff4e\uff45", 1.0),  # full-width letters, NFKC
        ("nobody", 1.0),
        ("noone", 0.0),
        ("General Grant", 0.5),
        ("Grant", 0.5),
        ("Ulysses Grant and wife", 0.5),
        ("", 0.0),
        ("someone", 0.0),
    ],
)
def test_short_answer_normalisation_and_wildcards(response: str, score: float) -> None:
    assert _score(short_answer(), response) == score


def test_short_answer_feedback_comes_from_the_best_match() -> None:
    question = ShortAnswer(
        text="Q",
        answers=[
            TextAnswer(text="*", weight=0.0, feedback="Anything else is wrong."),
            TextAnswer(text="paris", feedback="Yes."),
        ],
    )
    assert grade(question, "Paris").feedback == ["Yes."]
    assert grade(question, "Rome").feedback == ["Anything else is wrong."]
    assert grade(question, "Rome").score == 0.0


@pytest.mark.parametrize(
    ("pattern", "response", "case_sensitive", "whitespace", "expected"),
    [
        ("Paris", "paris", True, "collapse", False),
        ("Paris", "Paris", True, "collapse", True),
        ("no one", "noone", False, "ignore", True),
        ("no one", "n o o n e", False, "ignore", True),
        ("no one", "no  one", False, "exact", False),
        ("no one", " no one", False, "exact", False),
        ("no one", "no one", False, "exact", True),
        ("New *", "Newton", False, "collapse", False),
        ("New *", "New York", False, "collapse", True),
        ("a\\*b", "a*b", False, "collapse", True),
        ("a\\*b", "axb", False, "collapse", False),
        ("a\\b", "a\\b", False, "collapse", True),
        ("*", "", False, "collapse", True),
        ("**", "anything", False, "collapse", True),
        ("a*a", "a", False, "collapse", False),
        ("a*a", "aa", False, "collapse", True),
        ("*ab*ab*", "abab", False, "collapse", True),
        ("*ab*ab*", "aba", False, "collapse", False),
        ("x*y*z", "xzy", False, "collapse", False),
        ("x*y*z", "x y z", False, "collapse", True),
        ("Straße", "STRASSE", False, "collapse", True),  # case folding, not lower()
    ],
)
def test_wildcard_match(
    pattern: str, response: str, case_sensitive: bool, whitespace: Whitespace, expected: bool
) -> None:
    result = wildcard_match(pattern, response, case_sensitive=case_sensitive, whitespace=whitespace)
    assert result is expected


def _reference_match(pattern: str, text: str) -> bool:
    regex = ".*".join(re.escape(segment) for segment in pattern.split("*"))
    return re.fullmatch(regex, text, re.DOTALL) is not None


def test_wildcard_match_agrees_with_a_regex_reference() -> None:
    rng = random.Random(4)
    for _ in range(3000):
        pattern = "".join(rng.choice("ab*") for _ in range(rng.randint(0, 6)))
        text = "".join(rng.choice("ab") for _ in range(rng.randint(0, 8)))
        got = wildcard_match(pattern, text, case_sensitive=True, whitespace="exact")
        assert got is _reference_match(pattern, text), (pattern, text)


def test_hostile_patterns_and_responses_stay_cheap() -> None:
    # a backtracking regex for this pattern would take exponential time
    pattern = "*a" * 99 + "*b"
    question = ShortAnswer(text="Q", answers=[TextAnswer(text=pattern)])
    assert _score(question, "a" * MAX_RESPONSE_LENGTH) == 0.0


# ---------------------------------------------------------------- cloze


def test_cloze_gaps_are_weighted_by_their_points() -> None:
    question = cloze()
    right = {"g-city": "g-paris", "g-country": " france ", "g-pop": "2.0"}
    assert _score(question, right) == 1.0
    assert _score(question, right | {"g-city": "g-rome"}) == 0.75
    assert _score(question, right | {"g-country": "Italy"}) == 0.5
    assert _score(question, {"g-pop": 2.1}) == 0.25
    assert _score(question, {}) == 0.0
    result = grade(question, right | {"g-pop": None})
    assert [(p.id, p.correct) for p in result.parts] == [
        ("g-city", True),
        ("g-country", True),
        ("g-pop", False),
    ]
    assert result.feedback == ["Yes, Paris."]


def test_cloze_choice_gap_negative_weight_counts_as_zero() -> None:
    question = cloze()
    gap = question.gaps[0]
    assert isinstance(gap, ChoiceGap)
    gap.choices[1].weight = -1.0
    assert _score(question, {"g-city": "g-rome", "g-country": "France", "g-pop": "2"}) == 0.75


# ---------------------------------------------------------------- matching


def test_matching_scores_each_pair() -> None:
    question = matching()
    right = {"p-ca": "a-ottawa", "p-it": "a-rome", "p-jp": "a-tokyo"}
    assert _score(question, right) == 1.0
    assert _score(question, right | {"p-jp": "a-sydney"}) == pytest.approx(2 / 3)
    assert _score(question, right | {"p-jp": None}) == pytest.approx(2 / 3)
    assert _score(question, {"p-ca": "a-ottawa"}) == pytest.approx(1 / 3)
    assert _score(question, {"p-ca": "a-rome", "p-it": "a-ottawa"}) == 0.0
    result = grade(question, {"p-ca": "a-ottawa", "p-it": "a-ottawa"})
    assert [(p.id, p.correct) for p in result.parts] == [
        ("p-ca", True),
        ("p-it", False),
        ("p-jp", False),
    ]


# ---------------------------------------------------------------- ordering


def _order(*names: str) -> list[str]:
    return [f"o-{n}" for n in names]


@pytest.mark.parametrize(
    ("names", "subsequence", "position", "all_or_nothing"),
    [
        (ORDER, 1.0, 1.0, 1.0),
        (["planet", "atom", "cell", "mouse", "whale"], 0.75, 0.0, 0.0),  # last moved to front
        (["cell", "atom", "mouse", "whale", "planet"], 0.75, 0.6, 0.0),  # one adjacent swap
        (ORDER[::-1], 0.0, 0.2, 0.0),  # reversed: "mouse" stays in the middle
        (["atom", "whale", "mouse", "cell", "planet"], 0.5, 0.6, 0.0),
    ],
)
def test_ordering_scoring_modes(
    names: list[str], subsequence: float, position: float, all_or_nothing: float
) -> None:
    question = ordering()
    for scoring, expected in (
        ("subsequence", subsequence),
        ("position", position),
        ("all_or_nothing", all_or_nothing),
    ):
        variant = question.model_copy(update={"scoring": scoring})
        assert _score(variant, _order(*names)) == pytest.approx(expected), scoring


def test_ordering_parts_mark_the_items_in_the_longest_ordered_run() -> None:
    result = grade(ordering(), _order("planet", "atom", "cell", "mouse", "whale"))
    assert [(p.id, p.correct) for p in result.parts] == [
        ("o-planet", False),
        ("o-atom", True),
        ("o-cell", True),
        ("o-mouse", True),
        ("o-whale", True),
    ]


def _brute_force_lis(values: list[int]) -> int:
    best = 0
    for size in range(len(values), 0, -1):
        for combo in itertools.combinations(values, size):
            if all(a < b for a, b in itertools.pairwise(combo)):
                return size
    return best


def test_longest_increasing_run_against_brute_force() -> None:
    rng = random.Random(11)
    assert longest_increasing_run([]) == []
    for _ in range(400):
        values = list(range(rng.randint(1, 8)))
        rng.shuffle(values)
        run = longest_increasing_run(values)
        assert run == sorted(run)
        assert all(values[a] < values[b] for a, b in itertools.pairwise(run))
        assert len(run) == _brute_force_lis(values)


def test_ordering_scores_stay_in_range_for_every_permutation() -> None:
    question = Ordering(text="O", items=[{"id": f"i{n}", "text": str(n)} for n in range(5)])
    for scoring in ("subsequence", "position", "all_or_nothing"):
        variant = question.model_copy(update={"scoring": scoring})
        perfect = 0
        for permutation in itertools.permutations([f"i{n}" for n in range(5)]):
            score = _score(variant, list(permutation))
            assert score is not None and 0.0 <= score <= 1.0
            perfect += score == 1.0
        assert perfect == 1


# ---------------------------------------------------------------- essay and description


def test_essay_waits_for_a_grader() -> None:
    question = essay()
    result = grade(question, "Three causes: ...")
    assert (result.score, result.correct, result.needs_manual_grading) == (None, None, True)
    marked = grade_manually(question, result, 0.8, "Good, but cite sources.")
    assert (marked.score, marked.needs_manual_grading) == (0.8, False)
    assert marked.grader_feedback == "Good, but cite sources."
    assert grade(question, "   ").score == 0.0


@pytest.mark.parametrize("score", [-0.1, 1.1, float("nan"), True, "1"])
def test_manual_grade_out_of_range_is_refused(score: Any) -> None:
    question = essay()
    with pytest.raises(ManualGradeInvalid):
        grade_manually(question, grade(question, "text"), score)


def test_manual_grade_only_for_essays() -> None:
    question = single_choice()
    with pytest.raises(ManualGradeInvalid, match="graded automatically"):
        grade_manually(question, grade(question, "c-paris"), 0.5)


def test_description_takes_no_response() -> None:
    with pytest.raises(QuestionNotGradable):
        grade(description(), "anything")


# ---------------------------------------------------------------- refused responses

BAD_RESPONSES = [
    ("single_choice", "c-tampered", UnknownOption),
    ("single_choice", "x" * 10_000, UnknownOption),
    ("single_choice", 3, MalformedResponse),
    ("single_choice", ["c-paris"], MalformedResponse),
    ("single_choice", {"id": "c-paris"}, MalformedResponse),
    ("multiple_response", "m-2", MalformedResponse),
    ("multiple_response", ["m-2", "m-2"], MalformedResponse),
    ("multiple_response", ["m-2", "m-5"], UnknownOption),
    ("multiple_response", ["m-2", 3], MalformedResponse),
    ("multiple_response", ["m-2"] * 50, MalformedResponse),
    ("true_false", "true", MalformedResponse),
    ("true_false", 1, MalformedResponse),
    ("numeric", True, MalformedResponse),
    ("numeric", [1.5], MalformedResponse),
    ("numeric", "1" * (MAX_RESPONSE_LENGTH + 1), ResponseTooLong),
    ("short_answer", 42, MalformedResponse),
    ("short_answer", "x" * (MAX_RESPONSE_LENGTH + 1), ResponseTooLong),
    ("cloze", "Paris", MalformedResponse),
    ("cloze", {"g-unknown": "x"}, UnknownOption),
    ("cloze", {"g-city": "g-tampered"}, UnknownOption),
    ("cloze", {"g-city": ["g-paris"]}, MalformedResponse),
    ("cloze", {"g-country": "x" * (MAX_RESPONSE_LENGTH + 1)}, ResponseTooLong),
    ("cloze", {"g-pop": False}, MalformedResponse),
    ("matching", ["a-ottawa"], MalformedResponse),
    ("matching", {"p-unknown": "a-ottawa"}, UnknownOption),
    ("matching", {"p-ca": "a-unknown"}, UnknownOption),
    ("matching", {"p-ca": 1}, MalformedResponse),
    ("ordering", "o-atom", MalformedResponse),
    ("ordering", _order("atom", "cell", "mouse", "whale"), MalformedResponse),
    ("ordering", _order("atom", "atom", "mouse", "whale", "planet"), MalformedResponse),
    ("ordering", _order("atom", "cell", "mouse", "whale", "moon"), UnknownOption),
    ("ordering", _order(*ORDER, "moon"), MalformedResponse),
    ("essay", "x" * 201, ResponseTooLong),
    ("essay", {"text": "essay"}, MalformedResponse),
]


@pytest.mark.parametrize(("name", "response", "error"), BAD_RESPONSES)
def test_bad_responses_raise_a_named_error(
    name: str, response: Any, error: type[ResponseInvalid]
) -> None:
    question = SAMPLES[name]()
    before = question.model_dump()
    with pytest.raises(error) as info:
        grade(question, response)
    assert isinstance(info.value, ResponseInvalid)
    assert str(info.value)
    assert question.model_dump() == before


def test_refusal_messages_do_not_echo_huge_input() -> None:
    with pytest.raises(UnknownOption) as info:
        grade(single_choice(), "x" * 10_000)
    assert len(str(info.value)) < 200


def _random_response(question: Question, rng: random.Random) -> Any:
    data = question.model_dump()
    kind = data["type"]
    if kind == "single_choice":
        return rng.choice(data["choices"])["id"]
    if kind == "multiple_response":
        ids = [c["id"] for c in data["choices"]]
        return rng.sample(ids, rng.randint(0, len(ids)))
    if kind == "true_false":
        return rng.random() < 0.5
    if kind == "numeric":
        return f"{rng.uniform(1, 2):.3f} {rng.choice(['', 'm', 'cm', 'km'])}"
    if kind == "short_answer":
        return rng.choice(["no one", "Grant", "x", "", "NOBODY"])
    if kind == "cloze":
        return {
            "g-city": rng.choice(["g-paris", "g-rome", None]),
            "g-country": rng.choice(["France", "Italy"]),
            "g-pop": rng.uniform(1.5, 2.5),
        }
    if kind == "matching":
        answers = [a["id"] for a in data["answers"]]
        return {p["id"]: rng.choice(answers) for p in data["prompts"]}
    if kind == "ordering":
        return rng.sample([i["id"] for i in data["items"]], len(data["items"]))
    return "some essay text"


def test_scores_are_always_fractions() -> None:
    rng = random.Random(3)
    for name, make in SAMPLES.items():
        if name == "description":
            continue
        question = make()
        for _ in range(200):
            result: GradeResult = grade(question, _random_response(question, rng))
            if result.score is None:
                assert result.needs_manual_grading
            else:
                assert 0.0 <= result.score <= 1.0


def test_grading_is_deterministic() -> None:
    rng = random.Random(5)
    for make in SAMPLES.values():
        question = make()
        if question.type == "description":
            continue
        response = _random_response(question, rng)
        assert grade(question, response) == grade(question, response)


def test_numeric_units_must_be_known_to_convert() -> None:
    question = Numeric(
        text="N",
        answers=[NumericAnswer(value=1000)],
        units=[Unit(name="g"), Unit(name="kg", multiplier=0.001)],
    )
    assert _score(question, "1 kg") == 1.0
    assert _score(question, "1000 g") == 1.0
    assert _score(question, "1000") == 1.0
