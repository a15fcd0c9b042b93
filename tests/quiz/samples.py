"""One sample question of every type, with readable fixed ids, for the quiz tests."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from plugins.quiz.questions import Choice
from plugins.quiz.questions import ChoiceGap
from plugins.quiz.questions import Cloze
from plugins.quiz.questions import Description
from plugins.quiz.questions import Essay
from plugins.quiz.questions import MatchAnswer
from plugins.quiz.questions import Matching
from plugins.quiz.questions import MatchPrompt
from plugins.quiz.questions import MultipleResponse
from plugins.quiz.questions import Numeric
from plugins.quiz.questions import NumericAnswer
from plugins.quiz.questions import NumericGap
from plugins.quiz.questions import Ordering
from plugins.quiz.questions import OrderItem
from plugins.quiz.questions import Question
from plugins.quiz.questions import ShortAnswer
from plugins.quiz.questions import ShortAnswerGap
from plugins.quiz.questions import SingleChoice
from plugins.quiz.questions import TextAnswer
from plugins.quiz.questions import TrueFalse
from plugins.quiz.questions import Unit

#: Written into every sample; none of it may reach a learner.
SECRET: dict[str, Any] = {
    "title": "Secret title",
    "category": "Secret/Category",
    "tags": ["secret-tag"],
}


def single_choice() -> SingleChoice:
    """Capital of France: one right choice, one half-right, one wrong."""
    return SingleChoice(
        id="q-single",
        text="Capital of France?",
        general_feedback="Paris has been the capital since 987.",
        choices=[
            Choice(id="c-paris", text="Paris", weight=1, feedback="Right, Paris."),
            Choice(id="c-lyon", text="Lyon", weight=0.25, feedback="Second city."),
            Choice(id="c-nice", text="Nice", feedback="Not Nice."),
        ],
        **SECRET,
    )


def multiple_response() -> MultipleResponse:
    """Primes: two right choices, one penalised wrong one, and a 0.25 penalty per wrong pick."""
    return MultipleResponse(
        id="q-multi",
        text="Which are primes?",
        choices=[
            Choice(id="m-2", text="2", weight=0.5, feedback="2 is the even prime."),
            Choice(id="m-3", text="3", weight=0.5),
            Choice(id="m-4", text="4", weight=-0.5, feedback="4 is 2 times 2."),
            Choice(id="m-9", text="9"),
        ],
        wrong_pick_penalty=0.25,
        **SECRET,
    )


def true_false() -> TrueFalse:
    """A true statement with feedback on both answers."""
    return TrueFalse(
        id="q-tf",
        text="The sun rises in the east.",
        correct=True,
        feedback_true="Yes, in the east.",
        feedback_false="It really does.",
        **SECRET,
    )


def numeric() -> Numeric:
    """1.5 m ± 1 cm for full marks, 1.4..1.6 for half; metres or centimetres."""
    return Numeric(
        id="q-num",
        text="How long is the rod, in metres?",
        answers=[
            NumericAnswer(id="n-exact", value=1.5, tolerance=0.01, feedback="Exactly."),
            NumericAnswer(id="n-close", low=1.4, high=1.6, weight=0.5, feedback="Close."),
        ],
        units=[Unit(name="m"), Unit(name="cm", multiplier=100)],
        wrong_feedback="Measure again.",
        **SECRET,
    )


def short_answer() -> ShortAnswer:
    """Grant's tomb: two full answers and a half-credit wildcard."""
    return ShortAnswer(
        id="q-short",
        text="Who's buried in Grant's tomb?",
        answers=[
            TextAnswer(id="s-noone", text="no one", feedback="Right: no one."),
            TextAnswer(id="s-nobody", text="nobody"),
            TextAnswer(id="s-grant", text="*Grant*", weight=0.5, feedback="Entombed, not buried."),
        ],
        **SECRET,
    )


def cloze() -> Cloze:
    """Three gaps of the three kinds; the country gap counts double."""
    return Cloze(
        id="q-cloze",
        text="[[1]] is the capital of [[2]]; about [[3]] million people live there.",
        gaps=[
            ChoiceGap(
                id="g-city",
                choices=[
                    Choice(id="g-paris", text="Paris", weight=1, feedback="Yes, Paris."),
                    Choice(id="g-rome", text="Rome"),
                ],
            ),
            ShortAnswerGap(
                id="g-country", answers=[TextAnswer(id="g-fr", text="France")], points=2
            ),
            NumericGap(id="g-pop", answers=[NumericAnswer(id="g-2m", value=2.1, tolerance=0.2)]),
        ],
        **SECRET,
    )


def matching() -> Matching:
    """Countries and capitals, with Sydney as a distractor."""
    return Matching(
        id="q-match",
        text="Match the countries with their capitals.",
        prompts=[
            MatchPrompt(id="p-ca", text="Canada", answer_id="a-ottawa"),
            MatchPrompt(id="p-it", text="Italy", answer_id="a-rome"),
            MatchPrompt(id="p-jp", text="Japan", answer_id="a-tokyo"),
        ],
        answers=[
            MatchAnswer(id="a-ottawa", text="Ottawa"),
            MatchAnswer(id="a-rome", text="Rome"),
            MatchAnswer(id="a-tokyo", text="Tokyo"),
            MatchAnswer(id="a-sydney", text="Sydney"),
        ],
        **SECRET,
    )


ORDER = ["atom", "cell", "mouse", "whale", "planet"]


def ordering() -> Ordering:
    """Five things from smallest to largest."""
    return Ordering(
        id="q-order",
        text="Order from smallest to largest.",
        items=[OrderItem(id=f"o-{name}", text=name.title()) for name in ORDER],
        **SECRET,
    )


def essay() -> Essay:
    """A short essay with grader notes."""
    return Essay(
        id="q-essay",
        text="Discuss the causes.",
        grader_info="Look for three distinct causes.",
        response_template="I think",
        max_length=200,
        **SECRET,
    )


def description() -> Description:
    """Reading material between questions."""
    return Description(id="q-desc", text="Read the passage below.", **SECRET)


SAMPLES: dict[str, Callable[[], Question]] = {
    "single_choice": single_choice,
    "multiple_response": multiple_response,
    "true_false": true_false,
    "numeric": numeric,
    "short_answer": short_answer,
    "cloze": cloze,
    "matching": matching,
    "ordering": ordering,
    "essay": essay,
    "description": description,
}


def counter_ids(prefix: str = "id") -> Callable[[], str]:
    """A deterministic id factory: ``id1``, ``id2``, ..."""
    numbers = itertools.count(1)
    return lambda: f"{prefix}{next(numbers)}"


def canonical(question: Question) -> Any:
    """The question's data with every id replaced by its order of first appearance.

    Two questions with the same content but different (random) ids compare equal.
    """
    data = question.model_dump(mode="json")
    names: dict[str, str] = {}

    def rename(value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key in ("id", "answer_id"):
                    out[key] = names.setdefault(item, f"#{len(names)}")
                else:
                    out[key] = rename(item)
            return out
        if isinstance(value, list):
            return [rename(v) for v in value]
        return value

    return json.loads(json.dumps(rename(data)))
