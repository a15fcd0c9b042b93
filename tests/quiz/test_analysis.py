"""Item analysis: difficulty, point-biserial discrimination, flags and degenerate cases."""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

import pytest

from plugins.quiz.analysis import ItemStats
from plugins.quiz.analysis import ScoreMatrixInvalid
from plugins.quiz.analysis import item_analysis
from plugins.quiz.analysis import point_biserial


def _by_id(stats: list[ItemStats]) -> dict[str, ItemStats]:
    return {s.question_id: s for s in stats}


def _textbook_point_biserial(item: list[float], rest: list[float]) -> float:
    """(M1 - M0) / s * sqrt(p q), with the population standard deviation of ``rest``."""
    right = [r for i, r in zip(item, rest, strict=True) if i == 1]
    wrong = [r for i, r in zip(item, rest, strict=True) if i == 0]
    p = len(right) / len(item)
    spread = statistics.pstdev(rest)
    return (statistics.fmean(right) - statistics.fmean(wrong)) / spread * math.sqrt(p * (1 - p))


# eight learners from strongest to weakest: q1..q3 follow ability, q4 goes against it
COLUMNS: dict[str, list[float]] = {
    "q1": [1, 1, 1, 1, 1, 1, 0, 0],
    "q2": [1, 1, 1, 1, 0, 0, 0, 0],
    "q3": [1, 1, 0.5, 0.5, 0.5, 0, 0, 0],
    "q4": [0, 0, 0, 1, 0, 1, 1, 1],
}
MATRIX = [{q: float(COLUMNS[q][n]) for q in COLUMNS} for n in range(8)]


def test_difficulty_and_share_correct() -> None:
    stats = _by_id(item_analysis(MATRIX))
    assert list(stats) == ["q1", "q2", "q3", "q4"]
    assert (stats["q1"].difficulty, stats["q1"].share_correct) == (0.75, 0.75)
    assert (stats["q3"].difficulty, stats["q3"].share_correct) == (0.4375, 0.25)
    assert all(s.attempts == 8 for s in stats.values())


def test_discrimination_is_the_point_biserial_item_rest_correlation() -> None:
    stats = _by_id(item_analysis(MATRIX))
    for question in ("q1", "q2", "q4"):
        item = [a[question] for a in MATRIX]
        rest = [(sum(a.values()) - a[question]) / 3 for a in MATRIX]
        expected = _textbook_point_biserial(item, rest)
        assert stats[question].discrimination == pytest.approx(expected)
        assert stats[question].note is None
    assert stats["q2"].discrimination == pytest.approx(0.6299407883)


def test_questions_that_do_not_discriminate_are_flagged() -> None:
    stats = _by_id(item_analysis(MATRIX, threshold=0.2))
    assert [q for q, s in stats.items() if s.flagged] == ["q4"]
    q4 = stats["q4"].discrimination
    assert q4 is not None and q4 < 0
    assert all(
        s.discrimination is not None and s.discrimination > 0.2
        for q, s in stats.items()
        if q != "q4"
    )


def test_threshold_is_configurable() -> None:
    q1 = _by_id(item_analysis(MATRIX))["q1"]
    assert q1.discrimination is not None
    above = _by_id(item_analysis(MATRIX, threshold=q1.discrimination + 0.01))["q1"]
    assert above.flagged


def test_everyone_scoring_the_same_is_flagged_without_a_coefficient() -> None:
    matrix = [{"easy": 1.0, "q": float(n % 2)} for n in range(6)]
    easy = _by_id(item_analysis(matrix))["easy"]
    assert (easy.discrimination, easy.note, easy.flagged) == (None, "no_item_variance", True)
    assert easy.difficulty == 1.0


def test_rest_of_test_without_variance_is_not_judged() -> None:
    matrix = [{"q": float(n % 2), "same": 0.5} for n in range(6)]
    q = _by_id(item_analysis(matrix))["q"]
    assert (q.discrimination, q.note, q.flagged) == (None, "no_rest_variance", False)


def test_too_few_attempts_are_not_judged() -> None:
    stats = _by_id(item_analysis(MATRIX[:4], min_attempts=5))
    assert {(s.discrimination, s.note, s.flagged) for s in stats.values()} == {
        (None, "too_few_attempts", False)
    }
    assert stats["q2"].difficulty == 1.0


def test_random_draws_give_questions_fewer_observations() -> None:
    matrix: list[dict[str, float]] = [
        {"q1": 1.0, "q2": 1.0},
        {"q1": 0.0, "q3": 0.0},
        {"q2": 1.0, "q3": 1.0},
        {"q1": 1.0, "q2": 0.0, "q3": 1.0},
        {"solo": 1.0},  # one question only: no rest score
    ]
    stats = _by_id(item_analysis(matrix, min_attempts=2))
    assert (stats["q1"].attempts, stats["q2"].attempts, stats["q3"].attempts) == (3, 3, 3)
    assert (stats["solo"].attempts, stats["solo"].note) == (1, "too_few_attempts")
    q1_scores = [1.0, 0.0, 1.0]
    q1_rest = [1.0, 0.0, 0.5]
    assert stats["q1"].discrimination == pytest.approx(point_biserial(q1_scores, q1_rest))


def test_no_attempts() -> None:
    assert item_analysis([]) == []


@pytest.mark.parametrize("score", [1.2, -0.1, math.nan, math.inf, True, "1", None])
def test_invalid_scores_are_refused(score: Any) -> None:
    with pytest.raises(ScoreMatrixInvalid, match=r"is not a fraction 0\.\.1"):
        item_analysis([{"q1": 1.0}, {"q1": score}])


def test_point_biserial_edge_cases() -> None:
    assert point_biserial([], []) is None
    assert point_biserial([1.0], [0.5]) is None
    assert point_biserial([1.0, 1.0, 1.0], [0.1, 0.5, 0.9]) is None
    assert point_biserial([0.0, 1.0], [0.3, 0.3]) is None
    assert point_biserial([0.0, 1.0], [0.1, 0.9]) == pytest.approx(1.0)
    assert point_biserial([0.0, 1.0], [0.9, 0.1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="paired"):
        point_biserial([1.0], [0.5, 0.5])


def test_point_biserial_properties() -> None:
    rng = random.Random(9)
    for _ in range(300):
        n = rng.randint(3, 30)
        item = [float(rng.random() < 0.5) for _ in range(n)]
        rest = [rng.random() for _ in range(n)]
        r = point_biserial(item, rest)
        if len(set(item)) < 2:
            assert r is None
            continue
        assert r is not None and -1.0 <= r <= 1.0
        assert r == pytest.approx(_textbook_point_biserial(item, rest))
        # symmetric, and unchanged by rescaling the rest score
        assert point_biserial(rest, item) == pytest.approx(r)
        assert point_biserial(item, [3 * x + 7 for x in rest]) == pytest.approx(r)
        assert point_biserial([1 - x for x in item], rest) == pytest.approx(-r)
