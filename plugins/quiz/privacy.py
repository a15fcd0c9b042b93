"""The quiz plugin's part of a person's data export (the ``export_user_data`` hook).

What the quiz tables hold about a person:

- their attempts (``quiz_attempts``): the quiz and course, number, state,
  start, deadline and submission times, and once submitted the score, the
  maximum and whether it passed, as the learner's own attempt list shows them;
- their answers (``quiz_answers``): for each question of an attempt, the
  question as they were shown it (the attempt's frozen layout, without answer
  keys) and their response.  Each answer's score, needs-grading flag, the
  grader's comment and when it was graded are given only when the quiz's
  review policy shows them to the learner (:func:`plugins.quiz.attempts.review_open`,
  or during an attempt with immediate review), as the review page would;
- answers they graded as staff: quiz, course, question and when, without the
  learner or their response (someone else's data).

Left out: the attempt's ``snapshot`` (the questions with their answer keys),
correct answers, who graded an answer (another person), the draw's internal
question list beyond what the layout shows.  The question bank holds no
personal data; its change history is in core's audit log, which core exports.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from core import db
from core.db import utcnow
from core.models import Course
from core.models import Item
from core.models import User
from plugins.quiz import attempts as svc
from plugins.quiz.content import QuizConfig
from plugins.quiz.content import parse_config
from plugins.quiz.models import Answer
from plugins.quiz.models import Attempt


def _at(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export_user_data(user: User) -> dict[str, Any] | None:
    """The person's quiz attempts, answers and grading, with public ids only.

    :return: ``{"attempts": [...], "graded_answers": [...]}``, or None when
        the person has neither.
    """
    sess = db.session()
    rows = sess.execute(
        select(Attempt, Item.public_id, Item.title, Item.config, Course.public_id)
        .join(Item, Item.id == Attempt.item_id)
        .join(Course, Course.id == Attempt.course_id)
        .where(Attempt.user_id == user.id)
        .order_by(Attempt.id)
    ).all()
    answers: dict[int, dict[str, Answer]] = {}
    if rows:
        for answer in sess.scalars(
            select(Answer).where(Answer.attempt_id.in_([r[0].id for r in rows]))
        ):
            answers.setdefault(answer.attempt_id, {})[answer.question_id] = answer
    used = Counter(attempt.item_id for attempt, *_ in rows)
    now = utcnow()
    out = [
        _attempt(
            attempt,
            item_id,
            title,
            _config(config),
            course_id,
            answers.get(attempt.id, {}),
            used[attempt.item_id],
            now,
        )
        for attempt, item_id, title, config, course_id in rows
    ]
    graded = _graded_by(user)
    if not out and not graded:
        return None
    return {"attempts": out, "graded_answers": graded}


#: The xAPI context extension naming the attempt a quiz statement belongs to.
ATTEMPT_EXTENSION = "/xapi/extensions/attempt"


def withhold_from_export(user: User, statements: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The quiz statements of attempts whose review is still closed, without their ``result``.

    Each submitted question is recorded as an ``answered`` statement with its
    score; before the quiz's review opens (:func:`plugins.quiz.attempts.review_open`)
    the person must not learn from their export which answers were right.
    """
    by_attempt: dict[str, list[dict[str, Any]]] = {}
    for statement in statements:
        extensions = (statement.get("context") or {}).get("extensions") or {}
        for key, value in extensions.items():
            if key.endswith(ATTEMPT_EXTENSION) and isinstance(value, str) and "result" in statement:
                by_attempt.setdefault(value, []).append(statement)
    if not by_attempt:
        return None
    sess = db.session()
    rows = sess.execute(
        select(Attempt, Item.config)
        .join(Item, Item.id == Attempt.item_id)
        .where(Attempt.user_id == user.id, Attempt.public_id.in_(list(by_attempt)))
    ).all()
    used = Counter(
        sess.scalars(
            select(Attempt.item_id).where(
                Attempt.user_id == user.id,
                Attempt.item_id.in_({attempt.item_id for attempt, _ in rows}),
            )
        )
    )
    now = utcnow()
    closed = set(by_attempt)  # an attempt not found (deleted, reset): its scores stay hidden
    for attempt, config in rows:
        cfg = _config(config)
        if cfg is not None and svc.review_open(cfg, attempt, used[attempt.item_id], now):
            closed.discard(attempt.public_id)
    hidden: dict[str, Any] = {}
    for attempt_id in closed:
        for statement in by_attempt[attempt_id]:
            if statement.get("verb", {}).get("id", "").endswith("/answered"):
                hidden[statement["id"]] = {k: v for k, v in statement.items() if k != "result"}
    return hidden


def _config(config: dict[str, Any]) -> QuizConfig | None:
    try:
        return parse_config(config)
    except ValidationError:
        return None  # no longer a valid quiz: show no grades rather than guess


def _attempt(
    attempt: Attempt,
    item_id: str,
    title: str,
    cfg: QuizConfig | None,
    course_id: str,
    answers: dict[str, Answer],
    used: int,
    now: datetime,
) -> dict[str, Any]:
    submitted = attempt.status != "in_progress"
    review = cfg is not None and svc.review_open(cfg, attempt, used, now)
    # the grades an attempt page shows while it runs, when the quiz reviews at once
    grades = review or (cfg is not None and not submitted and cfg.review == "immediately")
    feedback = grades and cfg is not None and cfg.show_feedback
    shown = {view.get("id"): view for view in attempt.layout if isinstance(view, dict)}
    return {
        "id": attempt.public_id,
        "quiz": {"id": item_id, "title": title},
        "course": course_id,
        "number": attempt.number,
        "status": attempt.status,
        "started_at": _at(attempt.started_at),
        "deadline": _at(attempt.deadline),
        "submitted_at": _at(attempt.submitted_at),
        "score": attempt.score if submitted else None,
        "max_score": attempt.max_score,
        "passed": attempt.passed if submitted else None,
        "review_available": review,
        "answers": [
            _answer(qid, shown.get(qid), answers.get(qid), grades, feedback)
            for qid in attempt.question_ids
            if qid in shown or qid in answers
        ],
    }


def _answer(
    question_id: str,
    shown: dict[str, Any] | None,
    answer: Answer | None,
    grades: bool,
    feedback: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "question_id": question_id,
        "question": shown,
        "response": answer.response if answer is not None else None,
        "saved_at": _at(answer.autosaved_at) if answer is not None else None,
    }
    if grades and answer is not None:
        out.update(
            score=answer.score,
            needs_grading=answer.needs_grading,
            graded_at=_at(answer.graded_at),
        )
        if feedback:  # the grader's comment, where the quiz shows it in its review
            out["feedback"] = answer.feedback
    return out


def _graded_by(user: User) -> list[dict[str, Any]]:
    """Answers ``user`` marked as a grader: what and when, never whose or what was answered."""
    rows = db.session().execute(
        select(Item.public_id, Course.public_id, Answer.question_id, Answer.graded_at)
        .join(Attempt, Attempt.id == Answer.attempt_id)
        .join(Item, Item.id == Attempt.item_id)
        .join(Course, Course.id == Attempt.course_id)
        .where(Answer.graded_by == user.id)
        .order_by(Answer.id)
    )
    return [
        {"quiz": item_id, "course": course_id, "question_id": qid, "graded_at": _at(at)}
        for item_id, course_id, qid, at in rows
    ]
