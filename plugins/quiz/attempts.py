"""Attempts: start, autosave, submit, grade, review, manual marks.

Everything a learner sends is checked against the attempt as it was frozen
at its start (:class:`plugins.quiz.models.Attempt`): only its questions, only
ids those questions contain, only before the deadline.  Scores are computed
here, on the server, and stored in the learner's progress through
:func:`core.progress.record_result`; the best graded attempt counts.

Deadlines: an attempt's deadline is its start plus the quiz's time limit,
or the quiz's close date if that comes first.  Answers arriving up to
:data:`GRACE` after it are still accepted (network latency, a submit
pressed in the last second); later ones are refused.  An overdue attempt is
graded from the answers saved in time when the learner next submits it
without answers, opens it, or starts another.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import weakref
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.content import ProgressState
from core.db import new_public_id
from core.errors import Conflict
from core.errors import NotFound
from core.errors import ValidationFailed
from core.events import NewEvent
from core.events import item_iri
from core.events import record_event
from core.events import record_events
from core.models import Course
from core.models import Item
from core.models import User
from core.progress import CourseReadOnly
from core.progress import ProgressOutcome
from core.progress import record_result
from plugins.quiz import grading
from plugins.quiz.content import QuizConfig
from plugins.quiz.content import parse_config
from plugins.quiz.content import pool_members
from plugins.quiz.models import Answer
from plugins.quiz.models import Attempt
from plugins.quiz.models import BankQuestion
from plugins.quiz.questions import ChoiceGap
from plugins.quiz.questions import Cloze
from plugins.quiz.questions import Description
from plugins.quiz.questions import Essay
from plugins.quiz.questions import Matching
from plugins.quiz.questions import MultipleResponse
from plugins.quiz.questions import Numeric
from plugins.quiz.questions import NumericGap
from plugins.quiz.questions import NumericKey
from plugins.quiz.questions import Ordering
from plugins.quiz.questions import Question
from plugins.quiz.questions import ShortAnswer
from plugins.quiz.questions import ShortAnswerGap
from plugins.quiz.questions import ShortAnswerKey
from plugins.quiz.questions import SingleChoice
from plugins.quiz.questions import TrueFalse
from plugins.quiz.questions import learner_view
from plugins.quiz.questions import parse_question

log = logging.getLogger(__name__)

#: Answers up to this long after the deadline are still accepted.
GRACE = timedelta(seconds=15)
#: Largest response to one question, as JSON (an essay of 50,000 characters fits).
MAX_RESPONSE_BYTES = 256 * 1024


# ---------------------------------------------------------------- errors


class AttemptNotFound(NotFound):
    """No such attempt, or it is another learner's."""

    type_slug = "quiz-attempt-not-found"


class QuizNotOpen(Conflict):
    """The quiz's open date has not come yet."""

    type_slug = "quiz-not-open"


class QuizClosed(Conflict):
    """The quiz's close date has passed."""

    type_slug = "quiz-closed"


class NoAttemptsLeft(Conflict):
    """The learner has used every attempt the quiz allows."""

    type_slug = "quiz-no-attempts-left"


class QuizMisconfigured(Conflict):
    """The quiz names questions its course's bank no longer has enough of."""

    type_slug = "quiz-misconfigured"


class DeadlinePassed(Conflict):
    """The attempt's time is up: the answers sent were not stored."""

    type_slug = "quiz-deadline-passed"


class AttemptClosed(Conflict):
    """The attempt was submitted: its answers can no longer change."""

    type_slug = "quiz-attempt-closed"


class AnswerLocked(Conflict):
    """With immediate feedback, an answer is final once saved and graded."""

    type_slug = "quiz-answer-locked"


class AnswersInvalid(ValidationFailed):
    """A response names a question outside the attempt, a tampered id, or is too large."""

    type_slug = "quiz-answers-invalid"


class ReviewNotAvailable(Conflict):
    """The quiz's review policy does not show this attempt's answers yet."""

    type_slug = "quiz-review-not-available"


class NotGradable(ValidationFailed):
    """A manual mark for a question that is graded automatically, or out of range."""

    type_slug = "quiz-mark-invalid"


# ---------------------------------------------------------------- helpers

# SQLite lets one transaction write at a time and makes the others wait by
# sleeping in steps of up to 100 ms, so under load most of the time goes to
# sleeping.  Submits in one process therefore queue on this lock instead;
# PostgreSQL needs no such thing.
_SQLITE_WRITER = threading.Lock()


@contextmanager
def writing(sess: Session) -> Iterator[None]:
    """Hold this process's SQLite writer lock around a write transaction (no-op elsewhere)."""
    if sess.get_bind().dialect.name != "sqlite":
        yield
        return
    with _SQLITE_WRITER:
        yield


def attempt_seed(attempt_public_id: str) -> int:
    """The attempt's random seed: an HMAC of its id under the instance's secret key.

    The same attempt always gets the same draw and order, yet a learner who
    knows the attempt id cannot compute the seed (and so cannot undo the
    shuffle of an ordering question).
    """
    secret = str(current_app.config["SECRET_KEY"]).encode()
    digest = hmac.new(secret, f"quiz-attempt:{attempt_public_id}".encode(), hashlib.sha256)
    return int.from_bytes(digest.digest()[:16], "big")


def effective_deadline(attempt: Attempt) -> datetime | None:
    """The last moment an answer to ``attempt`` is accepted (deadline plus grace)."""
    return attempt.deadline + GRACE if attempt.deadline is not None else None


def overdue(attempt: Attempt, now: datetime) -> bool:
    """Whether an in-progress attempt's time is up (grace included)."""
    limit = effective_deadline(attempt)
    return limit is not None and now > limit


# An attempt's snapshot changes only in a regrade (which calls forget_parsed), so
# its parsed questions are kept for as long as the attempt object lives (one request).
_PARSED: weakref.WeakKeyDictionary[Attempt, dict[str, Question]] = weakref.WeakKeyDictionary()


def questions_of(attempt: Attempt) -> dict[str, Question]:
    """The attempt's frozen questions, with their answer keys, by id."""
    parsed = _PARSED.get(attempt)
    if parsed is None:
        parsed = {qid: parse_question(attempt.snapshot[qid]) for qid in attempt.question_ids}
        _PARSED[attempt] = parsed
    return parsed


def forget_parsed(attempt: Attempt) -> None:
    """Drop the parsed questions kept for ``attempt`` (after a regrade changed its snapshot)."""
    _PARSED.pop(attempt, None)


def _without_choice_shuffle(question: Question) -> Question:
    if isinstance(question, SingleChoice | MultipleResponse):
        return question.model_copy(update={"shuffle": False})
    if isinstance(question, Cloze):
        gaps = [
            g.model_copy(update={"shuffle": False}) if isinstance(g, ChoiceGap) else g
            for g in question.gaps
        ]
        return question.model_copy(update={"gaps": gaps})
    return question


def _kept_order(new: list[dict[str, Any]], old: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``new`` in ``old``'s order where their ids are in both; the rest after, as they come."""
    place = {entry["id"]: n for n, entry in enumerate(old)}
    kept = sorted((e for e in new if e["id"] in place), key=lambda e: place[e["id"]])
    return kept + [e for e in new if e["id"] not in place]


def refreshed_view(old: Mapping[str, Any], question: Question, seed: int) -> dict[str, Any]:
    """The learner view of ``question`` (a new version) in place of ``old`` in a layout.

    Used after a regrade replaced the question in an attempt's snapshot, so
    the attempt's review shows the text, points and choices it was graded
    with.  Choices, matching answers and ordering items keep the order the
    learner saw; ones the new version added follow them.

    :param old: the question's entry in ``Attempt.layout``.
    :param question: the version the attempt now holds.
    :param seed: the attempt's seed (:func:`attempt_seed`), for any new part's place.
    """
    rng = random.Random(seed)  # noqa: S311 - as in start()
    view = learner_view(_without_choice_shuffle(question), rng=rng)
    for key in ("choices", "answers", "items"):
        if key in view:
            view[key] = _kept_order(view[key], list(old.get(key) or []))
    if "gaps" in view:
        old_gaps = {g.get("id"): g for g in old.get("gaps") or []}
        for gap in view["gaps"]:
            if "choices" in gap:
                before = old_gaps.get(gap["id"], {}).get("choices") or []
                gap["choices"] = _kept_order(gap["choices"], list(before))
    return view


def answers_of(sess: Session, attempt: Attempt) -> dict[str, Answer]:
    """The attempt's stored answers by question id."""
    return {
        a.question_id: a
        for a in sess.scalars(select(Answer).where(Answer.attempt_id == attempt.id))
    }


def attempts_used(sess: Session, user_id: int, item_id: int) -> int:
    """How many attempts the user started at the item (internal keys)."""
    return int(
        sess.scalar(
            select(func.count(Attempt.id)).where(
                Attempt.user_id == user_id, Attempt.item_id == item_id
            )
        )
        or 0
    )


# ---------------------------------------------------------------- start


def _draw(sess: Session, course: Course, cfg: QuizConfig, rng: random.Random) -> list[BankQuestion]:
    fixed: list[BankQuestion] = []
    if cfg.questions:
        rows = {
            q.public_id: q
            for q in sess.scalars(
                select(BankQuestion).where(
                    BankQuestion.course_id == course.id,
                    BankQuestion.public_id.in_(cfg.questions),
                )
            )
        }
        missing = [qid for qid in cfg.questions if qid not in rows]
        if missing:
            raise QuizMisconfigured(
                "the quiz names questions that are no longer in the course's bank",
                missing=missing,
            )
        fixed = [rows[qid] for qid in cfg.questions]
    chosen = {q.public_id for q in fixed}
    drawn: list[BankQuestion] = []
    for n, pool in enumerate(cfg.pools):
        members = [q for q in pool_members(sess, course.id, pool) if q.public_id not in chosen]
        if len(members) < pool.count:
            raise QuizMisconfigured(
                f"pool {n} holds {len(members)} unused question(s); the quiz draws {pool.count}"
            )
        picked = rng.sample(members, pool.count)
        chosen.update(q.public_id for q in picked)
        drawn += picked
    order = fixed + drawn
    if cfg.shuffle_questions:
        rng.shuffle(order)
    return order


@dataclass(frozen=True)
class Started:
    """An attempt a learner is working on, and whether this request created it."""

    attempt: Attempt
    created: bool


def start(
    sess: Session, user: User, item: Item, course: Course, now: datetime
) -> tuple[Started, ProgressOutcome | None]:
    """Start an attempt, or return the learner's attempt in progress.

    An overdue attempt in progress is graded first (its outcome is returned
    for :func:`core.progress.announce`).

    :raise CourseReadOnly: the course is archived.
    :raise QuizNotOpen: before ``open_at``.
    :raise QuizClosed: after ``close_at``.
    :raise NoAttemptsLeft: every allowed attempt is used.
    :raise QuizMisconfigured: the bank lacks questions the quiz names.
    """
    if course.status == "archived":
        raise CourseReadOnly("the course is archived")
    cfg = parse_config(item.config)
    outcome = None
    current = sess.scalar(
        select(Attempt)
        .where(
            Attempt.user_id == user.id,
            Attempt.item_id == item.id,
            Attempt.status == "in_progress",
        )
        .with_for_update()
    )
    if current is not None:
        if not overdue(current, now):
            return Started(current, False), None
        outcome = finish(sess, current, user, item, course, now)
    if cfg.open_at is not None and now < cfg.open_at:
        raise QuizNotOpen(f"the quiz opens at {cfg.open_at.isoformat()}")
    if cfg.close_at is not None and now >= cfg.close_at:
        raise QuizClosed(f"the quiz closed at {cfg.close_at.isoformat()}")
    used = attempts_used(sess, user.id, item.id)
    if cfg.attempts_allowed and used >= cfg.attempts_allowed:
        raise NoAttemptsLeft(f"you have used all {cfg.attempts_allowed} attempt(s)")
    public_id = new_public_id()
    # Reproducible from the secret seed, which is what the learner must not know;
    # the generator itself need not be a cryptographic one.
    rng = random.Random(attempt_seed(public_id))  # noqa: S311
    rows = _draw(sess, course, cfg, rng)
    snapshot: dict[str, Any] = {}
    layout: list[dict[str, Any]] = []
    max_score = 0.0
    for row in rows:
        question = parse_question(row.body)
        snapshot[row.public_id] = row.body
        shown = question if cfg.shuffle_choices else _without_choice_shuffle(question)
        layout.append(learner_view(shown, rng=rng))
        if not isinstance(question, Description):
            max_score += question.points
    deadline = None
    if cfg.time_limit_seconds is not None:
        deadline = now + timedelta(seconds=cfg.time_limit_seconds)
    if cfg.close_at is not None and (deadline is None or cfg.close_at < deadline):
        deadline = cfg.close_at
    attempt = Attempt(
        public_id=public_id,
        user_id=user.id,
        item_id=item.id,
        course_id=course.id,
        number=used + 1,
        status="in_progress",
        started_at=now,
        deadline=deadline,
        question_ids=[r.public_id for r in rows],
        layout=layout,
        snapshot=snapshot,
        max_score=round(max_score, 6),
        needs_manual_grading=False,
    )
    sess.add(attempt)
    sess.flush()
    record_event(
        sess,
        user=user,
        verb="attempted",
        object_id=item_iri(item),
        course=course,
        context={"attempt": attempt.public_id, "attempt_number": attempt.number},
    )
    log.info(
        "quiz_attempt=started attempt=%s item=%s user=%s questions=%d",
        attempt.public_id,
        item.public_id,
        user.public_id,
        len(rows),
    )
    return Started(attempt, True), outcome


# ---------------------------------------------------------------- answers


@dataclass(frozen=True)
class Saved:
    """Answers stored by one request; with immediate review, their grades too."""

    question_ids: list[str]
    graded: dict[str, grading.GradeResult]


def check_responses(
    attempt: Attempt, responses: Mapping[str, Any]
) -> dict[str, grading.GradeResult]:
    """Validate responses against the attempt's frozen questions (grading each once).

    :return: each response's grade.
    :raise AnswersInvalid: with one error per bad response.
    """
    errors: list[dict[str, str]] = []
    results: dict[str, grading.GradeResult] = {}
    questions = questions_of(attempt)
    for qid, response in responses.items():
        if qid not in attempt.snapshot:
            errors.append({"loc": f"answers.{qid}", "msg": "this question is not in the attempt"})
            continue
        if len(json.dumps(response)) > MAX_RESPONSE_BYTES:
            errors.append(
                {"loc": f"answers.{qid}", "msg": f"longer than {MAX_RESPONSE_BYTES} bytes"}
            )
            continue
        try:
            results[qid] = grading.grade(questions[qid], response)
        except grading.QuestionNotGradable as exc:
            errors.append({"loc": f"answers.{qid}", "msg": str(exc)})
        except grading.ResponseInvalid as exc:
            errors.append({"loc": f"answers.{qid}", "msg": str(exc)})
    if errors:
        raise AnswersInvalid("some answers cannot be accepted", errors=errors)
    return results


def save(
    sess: Session,
    attempt: Attempt,
    user: User,
    item: Item,
    course: Course,
    responses: Mapping[str, Any],
    now: datetime,
) -> Saved:
    """Autosave responses to an attempt in progress (all or none of them).

    With ``review = "immediately"`` each saved response is graded at once,
    its feedback may be shown, and it cannot be changed afterwards.

    :raise AttemptClosed: the attempt was submitted.
    :raise DeadlinePassed: the attempt's time is up.
    :raise AnswersInvalid: see :func:`check_responses`.
    :raise AnswerLocked: immediate review, and a response was already graded.
    """
    if attempt.status != "in_progress":
        raise AttemptClosed("the attempt was submitted; its answers can no longer change")
    if overdue(attempt, now):
        raise DeadlinePassed("the attempt's time is up; these answers were not saved")
    results = check_responses(attempt, responses)
    cfg = parse_config(item.config)
    immediate = cfg.review == "immediately"
    stored = answers_of(sess, attempt)
    if immediate:
        locked = [q for q in responses if q in stored and stored[q].score is not None]
        if locked:
            raise AnswerLocked("these answers were already graded", question_ids=locked)
    for qid, response in responses.items():
        answer = stored.get(qid)
        if answer is None:
            answer = Answer(attempt_id=attempt.id, question_id=qid, feedback="")
            sess.add(answer)
        answer.response = response
        answer.autosaved_at = now
        if immediate and not results[qid].needs_manual_grading and response is not None:
            answer.score = results[qid].score
    sess.flush()
    return Saved(list(responses), results if immediate else {})


# ---------------------------------------------------------------- submit and grade


def submit(
    sess: Session,
    attempt: Attempt,
    user: User,
    item: Item,
    course: Course,
    responses: Mapping[str, Any] | None,
    now: datetime,
) -> ProgressOutcome | None:
    """Submit an attempt, optionally with its last answers, and grade it.

    A second submit changes nothing (its answers are ignored) and returns
    None: the caller shows the stored result.

    :raise DeadlinePassed: answers were sent after the deadline; nothing stored.
    :raise AnswersInvalid: see :func:`check_responses`; nothing stored.
    :raise AnswerLocked: immediate review, and a response was already graded.
    """
    if attempt.status != "in_progress":
        return None
    if not responses:
        return finish(sess, attempt, user, item, course, now)
    if overdue(attempt, now):
        raise DeadlinePassed("the attempt's time is up; these answers were not saved")
    results = check_responses(attempt, responses)
    return finish(sess, attempt, user, item, course, now, responses, results)


def finish(
    sess: Session,
    attempt: Attempt,
    user: User,
    item: Item,
    course: Course,
    now: datetime,
    responses: Mapping[str, Any] | None = None,
    results: Mapping[str, grading.GradeResult] | None = None,
) -> ProgressOutcome | None:
    """Grade an attempt from its saved answers (and ``responses``, checked) and close it.

    Essays answered go to the manual grading queue; the attempt is then
    ``awaiting_grading`` and counts once marked.  Everything is graded
    before anything is written, so the write transaction stays short.

    :param responses: last responses sent with the submit, already validated
        by :func:`check_responses`, whose ``results`` they come with.
    :raise AnswerLocked: immediate review, and a response was already graded.
    """
    responses = responses or {}
    results = results or {}
    questions = questions_of(attempt)
    stored = answers_of(sess, attempt)
    cfg = parse_config(item.config)
    if cfg.review == "immediately":
        locked = [q for q in responses if q in stored and stored[q].score is not None]
        if locked:
            raise AnswerLocked("these answers were already graded", question_ids=locked)
    graded: dict[str, tuple[Any, grading.GradeResult]] = {}
    for qid, question in questions.items():
        if isinstance(question, Description):
            continue
        if qid in responses:
            graded[qid] = (responses[qid], results[qid])
        else:
            response = stored[qid].response if qid in stored else None
            graded[qid] = (response, grading.grade(question, response))
    # Existing answers are updated through the session; missing ones are
    # inserted with one multi-row statement (a submit usually creates all 20).
    final: dict[str, Answer | _Scored] = dict(stored)
    new_rows: list[dict[str, Any]] = []
    for qid, (response, result) in graded.items():
        answer = stored.get(qid)
        if answer is None:
            row = {
                "attempt_id": attempt.id,
                "question_id": qid,
                "feedback": "",
                "score": result.score,
                "needs_grading": result.needs_manual_grading,
            }
            if qid in responses:
                row["response"] = response
                row["autosaved_at"] = now
            new_rows.append(row)
            final[qid] = _Scored(row.get("response"), result.score, result.needs_manual_grading)
            continue
        if qid in responses:
            answer.response = response
            answer.autosaved_at = now
        answer.score = result.score
        answer.needs_grading = result.needs_manual_grading
    attempt.submitted_at = now
    _total(attempt, final, cfg)
    sess.flush()
    if new_rows:
        sess.execute(insert(Answer), new_rows)
    iri = item_iri(item)
    context = {"attempt": attempt.public_id}
    events = [
        NewEvent(
            user,
            "answered",
            f"{iri}/questions/{qid}",
            course,
            _result(answer.score, questions[qid].points),
            context,
        )
        for qid, answer in final.items()
        if answer.response is not None
    ]
    events.append(NewEvent(user, "completed", iri, course, {"completion": True}, context))
    log.info(
        "quiz_attempt=submitted attempt=%s status=%s score=%s",
        attempt.public_id,
        attempt.status,
        attempt.score,
    )
    return _graded(sess, attempt, user, item, course, events)


def _result(score: float | None, points: float) -> dict[str, Any]:
    if score is None:
        return {"response_pending_grading": True}
    return {"score": {"scaled": score, "raw": round(score * points, 6), "max": points}}


@dataclass(frozen=True)
class _Scored:
    """A graded answer not loaded as a row (inserted in bulk by :func:`finish`)."""

    response: Any
    score: float | None
    needs_grading: bool


def _total(attempt: Attempt, stored: Mapping[str, Answer | _Scored], cfg: QuizConfig) -> None:
    questions = questions_of(attempt)
    pending = any(a.needs_grading for a in stored.values())
    total = 0.0
    for qid, answer in stored.items():
        if answer.score is not None and qid in questions:
            total += answer.score * questions[qid].points
    attempt.score = round(total, 6)
    attempt.needs_manual_grading = pending
    attempt.status = "awaiting_grading" if pending else "graded"
    if pending:
        attempt.passed = None
    else:
        attempt.passed = _fraction(attempt) + 1e-9 >= cfg.passing_score


def total(attempt: Attempt, stored: Mapping[str, Answer], cfg: QuizConfig) -> None:
    """Recompute an attempt's score, status and pass mark from its graded answers."""
    _total(attempt, stored, cfg)


def graded(
    sess: Session, attempt: Attempt, user: User, item: Item, course: Course
) -> ProgressOutcome | None:
    """Once ``attempt`` is fully graded, record its score events and the learner's progress.

    As after a submit or a mark: the best graded attempt counts.  Returns
    None while answers still wait for a grader.
    """
    return _graded(sess, attempt, user, item, course)


def _graded(
    sess: Session,
    attempt: Attempt,
    user: User,
    item: Item,
    course: Course,
    events: list[NewEvent] | None = None,
) -> ProgressOutcome | None:
    """Record ``events`` and, once the attempt is fully graded, its own events and the
    learner's progress on the quiz (all events in one batch)."""
    events = list(events or ())
    if attempt.status != "graded":
        record_events(sess, events)
        return None
    fraction = _fraction(attempt)
    result = {
        "score": {"scaled": round(fraction, 6), "raw": attempt.score, "max": attempt.max_score},
        "success": bool(attempt.passed),
    }
    context = {"attempt": attempt.public_id}
    iri = item_iri(item)
    events.append(NewEvent(user, "scored", iri, course, result, context))
    events.append(
        NewEvent(user, "passed" if attempt.passed else "failed", iri, course, result, context)
    )
    record_events(sess, events)
    # Only the columns the progress needs (the snapshots are large JSON).
    graded = list(
        sess.execute(
            select(
                Attempt.public_id,
                Attempt.number,
                Attempt.score,
                Attempt.max_score,
                Attempt.passed,
            ).where(
                Attempt.user_id == user.id,
                Attempt.item_id == item.id,
                Attempt.status == "graded",
            )
        )
    )
    best = max(graded, key=lambda a: (_fraction(a), -a.number))
    passed = any(a.passed for a in graded)
    state = ProgressState(
        status="completed" if passed else "in_progress",
        score=round(_fraction(best), 6),
        data={"passed": passed, "attempts": len(graded), "best_attempt": best.public_id},
    )
    return record_result(sess, user, item, course, state)


def _fraction(attempt: Any) -> float:
    """An attempt's score as a fraction of its points (a quiz of descriptions only: 1)."""
    if not attempt.max_score:
        return 1.0
    return min(1.0, max(0.0, float(attempt.score or 0.0) / float(attempt.max_score)))


def mark(
    sess: Session,
    grader: User,
    attempt: Attempt,
    learner: User,
    item: Item,
    course: Course,
    question_id: str,
    points: float,
    feedback: str,
    now: datetime,
) -> ProgressOutcome | None:
    """Record a grader's mark (in points) on an essay answer and regrade the attempt.

    :raise AttemptClosed: the attempt is still in progress.
    :raise NotGradable: no such essay in the attempt, or the points are out of range.
    """
    if attempt.status == "in_progress":
        raise AttemptClosed("the attempt has not been submitted yet")
    if question_id not in attempt.snapshot:
        raise NotGradable("this question is not in the attempt")
    question = parse_question(attempt.snapshot[question_id])
    if not isinstance(question, Essay):
        raise NotGradable(f"{question.type} questions are graded automatically")
    if not 0 <= points <= question.points:
        raise NotGradable(f"points must be between 0 and {question.points:g}")
    stored = answers_of(sess, attempt)
    answer = stored.get(question_id)
    if answer is None:
        answer = Answer(attempt_id=attempt.id, question_id=question_id, response=None)
        sess.add(answer)
        stored[question_id] = answer
    fraction = points / question.points if question.points else 0.0
    answer.score = round(fraction, 6)
    answer.needs_grading = False
    answer.feedback = feedback
    answer.graded_by = grader.id
    answer.graded_at = now
    _total(attempt, stored, parse_config(item.config))
    sess.flush()
    log.info(
        "quiz_attempt=marked attempt=%s question=%s grader=%s",
        attempt.public_id,
        question_id,
        grader.public_id,
    )
    return _graded(sess, attempt, learner, item, course)


# ---------------------------------------------------------------- review


def review_open(cfg: QuizConfig, attempt: Attempt, used: int, now: datetime) -> bool:
    """Whether the review policy lets the learner see ``attempt``'s graded answers."""
    if attempt.status == "in_progress":
        return False
    if cfg.review in ("immediately", "after_submit"):
        return True
    if cfg.close_at is not None:
        return now >= cfg.close_at
    return bool(cfg.attempts_allowed) and used >= cfg.attempts_allowed


def correct_response(question: Question) -> Any:
    """A fully correct response to ``question``, in the shape learners answer in.

    Numeric answers are given as their accepted intervals, short answers as
    every fully accepted pattern.  None for an essay or description.
    """
    if isinstance(question, SingleChoice):
        return next(c.id for c in question.choices if c.weight == 1.0)
    if isinstance(question, MultipleResponse):
        return [c.id for c in question.choices if c.weight > 0]
    if isinstance(question, TrueFalse):
        return question.correct
    if isinstance(question, Numeric):
        return _numeric_key(question)
    if isinstance(question, ShortAnswer):
        return _short_key(question)
    if isinstance(question, Cloze):
        out: dict[str, Any] = {}
        for gap in question.gaps:
            if isinstance(gap, ChoiceGap):
                out[gap.id] = next(c.id for c in gap.choices if c.weight == 1.0)
            elif isinstance(gap, ShortAnswerGap):
                out[gap.id] = _short_key(gap)
            elif isinstance(gap, NumericGap):
                out[gap.id] = _numeric_key(gap)
        return out
    if isinstance(question, Matching):
        return {p.id: p.answer_id for p in question.prompts}
    if isinstance(question, Ordering):
        return [i.id for i in question.items]
    return None


def _numeric_key(key: NumericKey) -> list[dict[str, float]]:
    out = []
    for answer in key.answers:
        if answer.weight == 1.0:
            low, high = answer.bounds()
            out.append({"low": low, "high": high})
    return out


def _short_key(key: ShortAnswerKey) -> list[str]:
    return [a.text for a in key.answers if a.weight == 1.0]


def graded_view(
    question: Question,
    answer: Answer | None,
    *,
    feedback: bool,
    correct: bool,
) -> dict[str, Any]:
    """One question of a review: the response, its grade and, if allowed, feedback and key."""
    response = answer.response if answer is not None else None
    score = answer.score if answer is not None else None
    out: dict[str, Any] = {
        "response": response,
        "score": score,
        "points": None if score is None else round(score * question.points, 6),
        "needs_grading": bool(answer is not None and answer.needs_grading),
    }
    if feedback:
        texts: list[str] = []
        if not isinstance(question, Description):
            try:
                result = grading.grade(question, response)
            except (grading.ResponseInvalid, grading.QuestionNotGradable):
                result = grading.GradeResult(score)
            texts = result.feedback
            if result.general_feedback:
                texts = [*texts, result.general_feedback]
        if answer is not None and answer.feedback:
            texts = [*texts, answer.feedback]
        out["feedback"] = texts
    if correct:
        out["correct_response"] = correct_response(question)
    return out
