"""Item analysis: how hard each question was and whether it told learners apart.

Input is a score matrix: one mapping per submitted attempt, from the ids of
the questions that attempt presented to the score earned on each, as a
fraction 0..1.  Attempts drawn from a random pool present different
questions; a question simply has fewer observations.

For each question:

``difficulty``
    The mean score fraction (the "facility index": 1.0 means everyone got
    full marks, so higher is easier).
``share_correct``
    The share of attempts that earned full marks.
``discrimination``
    The point-biserial correlation between the question's score and the
    rest-of-test score (the attempt's mean fraction on its *other*
    questions, so the question does not correlate with itself).  For a
    right/wrong question this is exactly the point-biserial coefficient;
    for partial credit it is the same Pearson formula.  Near 0 or negative:
    strong learners do no better on it than weak ones.

Degenerate cases are reported, never hidden in a NaN: with fewer than
``min_attempts`` observations, or when every learner scored the same on the
question (``no_item_variance``) or on the rest of the test
(``no_rest_variance``), ``discrimination`` is None and ``note`` says why.  A
question everyone scored the same on does not discriminate, so it is flagged;
one whose rest-of-test scores do not vary cannot be judged, so it is not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

#: Point-biserial below this flags a question (a common rule of thumb).
DEFAULT_THRESHOLD = 0.2
#: Fewer observations than this give no discrimination and no flag.
DEFAULT_MIN_ATTEMPTS = 5

Note = Literal["too_few_attempts", "no_item_variance", "no_rest_variance"]


class ScoreMatrixInvalid(Exception):
    """A score in the matrix is not a finite fraction between 0 and 1."""


@dataclass(frozen=True)
class ItemStats:
    """Item analysis of one question."""

    question_id: str
    #: attempts that presented the question
    attempts: int
    #: mean score fraction (facility): higher is easier
    difficulty: float
    #: share of attempts with full marks
    share_correct: float
    #: point-biserial item-rest correlation; None when undefined (see ``note``)
    discrimination: float | None
    note: Note | None
    #: the question does not tell strong and weak learners apart
    flagged: bool


def point_biserial(item: Sequence[float], rest: Sequence[float]) -> float | None:
    """Pearson correlation of two equally long score lists.

    With ``item`` scores of 0 or 1 this is the point-biserial coefficient
    ``(M1 - M0) / s * sqrt(p * q)``.

    :return: the coefficient in -1..1, or None if there are fewer than two
        pairs or either list has no variance.
    :raise ValueError: the lists differ in length.
    """
    if len(item) != len(rest):
        raise ValueError("item and rest scores must be paired")
    n = len(item)
    if n < 2:
        return None
    mean_item = math.fsum(item) / n
    mean_rest = math.fsum(rest) / n
    dev_item = [x - mean_item for x in item]
    dev_rest = [y - mean_rest for y in rest]
    ss_item = math.fsum(d * d for d in dev_item)
    ss_rest = math.fsum(d * d for d in dev_rest)
    if ss_item <= 1e-12 or ss_rest <= 1e-12:
        return None
    cov = math.fsum(a * b for a, b in zip(dev_item, dev_rest, strict=True))
    return max(-1.0, min(1.0, cov / math.sqrt(ss_item * ss_rest)))


def _check(attempts: Sequence[Mapping[str, float]]) -> None:
    for number, attempt in enumerate(attempts):
        for question_id, score in attempt.items():
            if (
                isinstance(score, bool)
                or not isinstance(score, int | float)
                or not math.isfinite(score)
                or not 0.0 <= score <= 1.0
            ):
                raise ScoreMatrixInvalid(
                    f"attempt {number}, question {question_id}: {score!r} is not a fraction 0..1"
                )


def _variance_free(values: Sequence[float]) -> bool:
    return max(values) - min(values) <= 1e-12


def item_analysis(
    attempts: Sequence[Mapping[str, float]],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_attempts: int = DEFAULT_MIN_ATTEMPTS,
) -> list[ItemStats]:
    """Analyse every question that appears in ``attempts``.

    :param attempts: one ``{question_id: score fraction}`` per submitted attempt.
    :param threshold: flag a question whose discrimination is below this.
    :param min_attempts: fewer observations than this give no discrimination.
    :return: one :class:`ItemStats` per question, in order of first appearance.
    :raise ScoreMatrixInvalid: a score is not a finite fraction 0..1.
    """
    _check(attempts)
    order: dict[str, None] = {}
    for attempt in attempts:
        order.update(dict.fromkeys(attempt))
    out = []
    for question_id in order:
        scores: list[float] = []
        rests: list[float] = []
        for attempt in attempts:
            if question_id not in attempt:
                continue
            scores.append(float(attempt[question_id]))
            others = [float(s) for q, s in attempt.items() if q != question_id]
            if others:
                rests.append(math.fsum(others) / len(others))
            else:
                rests.append(math.nan)  # an attempt of one question has no rest score
        n = len(scores)
        difficulty = math.fsum(scores) / n
        share_correct = sum(1 for s in scores if s >= 1.0) / n
        paired = [(s, r) for s, r in zip(scores, rests, strict=True) if not math.isnan(r)]
        discrimination: float | None = None
        note: Note | None = None
        flagged = False
        if len(paired) < max(2, min_attempts):
            note = "too_few_attempts"
        elif _variance_free([s for s, _ in paired]):
            note = "no_item_variance"
            flagged = True
        elif _variance_free([r for _, r in paired]):
            note = "no_rest_variance"
        else:
            discrimination = point_biserial([s for s, _ in paired], [r for _, r in paired])
            flagged = discrimination is not None and discrimination < threshold
        out.append(
            ItemStats(question_id, n, difficulty, share_correct, discrimination, note, flagged)
        )
    return out
