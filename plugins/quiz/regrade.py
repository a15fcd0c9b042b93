"""Regrading: apply a question's current answer key to the attempts already graded.

An attempt freezes its questions when it starts (``Attempt.snapshot``), so
editing the bank never changes a score by itself.  When an instructor fixes
a wrong key they ask for a regrade explicitly: every submitted attempt that
contains the question is graded again against the bank's current version,
the attempt's total, pass mark and the learner's progress follow (as after a
submit or a mark), and the attempt's snapshot of that question becomes the
current version so its review shows the key it was graded with.  The
attempt's layout entry (what its review and result page show) is redrawn
from the new version too, keeping the order of the choices and items the
learner saw and putting new ones after them.

Attempts still in progress are not touched: they are graded on submit with
the version they started with, and are counted in the report
(``in_progress``) so the instructor can regrade again once they are in.

A regrade may lower a score below the pass mark: the learner's progress on
the quiz then goes back to not passed and their gradebook shows the new
score, but a course completion already recorded stays.  Core never
withdraws a course completion once recorded (:mod:`core.progress`): it may
have been announced to other plugins and peers, or a credential issued.

Only automatically graded types are regraded; an essay's score is a
grader's mark and stays.  An attempt whose saved response no longer fits the
question (a choice it picked was removed, an ordering gained an item, the
type changed) is skipped and reported, never guessed at.  Running a regrade
twice changes nothing the second time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.auth.audit import audit
from core.errors import Conflict
from core.models import Course
from core.models import Item
from core.models import User
from core.progress import CourseReadOnly
from core.progress import NotEnrolled
from core.progress import ProgressOutcome
from plugins.quiz import attempts as svc
from plugins.quiz import grading
from plugins.quiz.content import parse_config
from plugins.quiz.models import Answer
from plugins.quiz.models import Attempt
from plugins.quiz.models import BankQuestion
from plugins.quiz.questions import Description
from plugins.quiz.questions import Essay
from plugins.quiz.questions import parse_question

log = logging.getLogger(__name__)


class NotRegradable(Conflict):
    """Essays and descriptions are not graded automatically, so there is nothing to regrade."""

    type_slug = "quiz-not-regradable"


@dataclass(frozen=True)
class Skipped:
    """An attempt left as it was, and why."""

    attempt_id: str
    reason: str


@dataclass
class RegradeReport:
    """What a regrade looked at and changed."""

    question_id: str
    version: int
    #: submitted attempts that contain the question
    checked: int = 0
    #: attempts not yet submitted that contain the question (left as they are)
    in_progress: int = 0
    #: attempts whose score, maximum or pass mark changed
    changed: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    #: progress outcomes to announce once the transaction is committed
    outcomes: list[ProgressOutcome] = field(default_factory=list)


#: Attempt ids per query when loading the matching attempts and their answers.
_CHUNK = 500


def _matching_ids(sess: Session, course: Course, question_id: str) -> tuple[list[int], int]:
    """Ids of the course's submitted attempts containing the question, and how many in progress.

    No lock and only two small columns: most attempts of a course do not
    contain a given question.
    """
    submitted: list[int] = []
    running = 0
    rows = sess.execute(
        select(Attempt.id, Attempt.status, Attempt.question_ids)
        .where(Attempt.course_id == course.id)
        .order_by(Attempt.id)
    )
    for attempt_id, status, question_ids in rows:
        # question_ids is a JSON list: matched here rather than in dialect-specific SQL.
        if question_id not in (question_ids or []):
            continue
        if status == "in_progress":
            running += 1
        else:
            submitted.append(attempt_id)
    return submitted, running


def _locked(sess: Session, ids: list[int]) -> Iterator[tuple[Attempt, dict[str, Answer]]]:
    """The attempts, locked, with their answers by question id (a chunk at a time)."""
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        attempts = list(
            sess.scalars(
                select(Attempt)
                .where(Attempt.id.in_(chunk))
                .order_by(Attempt.id)
                # PostgreSQL: a mark on one of these attempts waits for the regrade, and
                # the other way round (as marks and submits take turns on one attempt).
                .with_for_update(of=Attempt)
            )
        )
        answers: dict[int, dict[str, Answer]] = {a.id: {} for a in attempts}
        for answer in sess.scalars(select(Answer).where(Answer.attempt_id.in_(chunk))):
            answers[answer.attempt_id][answer.question_id] = answer
        for attempt in attempts:
            yield attempt, answers[attempt.id]


def regrade_question(
    sess: Session, actor: User, row: BankQuestion, course: Course, now: datetime
) -> RegradeReport:
    """Grade every submitted attempt containing ``row`` again with its current key.

    Flushes but does not commit; after committing, pass each of
    ``report.outcomes`` to :func:`core.progress.announce`.

    :raise NotRegradable: the question is an essay or a description.
    :raise CourseReadOnly: the course is archived.
    """
    question = parse_question(row.body)
    if isinstance(question, Essay | Description):
        raise NotRegradable(f"{question.type} questions are not graded automatically")
    if course.status == "archived":
        raise CourseReadOnly("the course is archived: its grades can no longer change")
    report = RegradeReport(question_id=row.public_id, version=row.version)
    qid = row.public_id
    items: dict[int, Item] = {}
    learners: dict[int, User] = {}
    ids, report.in_progress = _matching_ids(sess, course, qid)
    for attempt, stored in _locked(sess, ids):
        report.checked += 1
        old = svc.questions_of(attempt).get(qid)
        if old is None or old.type != question.type:
            report.skipped.append(Skipped(attempt.public_id, "the question's type changed"))
            continue
        answer = stored.get(qid)
        response = answer.response if answer is not None else None
        try:
            result = grading.grade(question, response)
        except grading.ResponseInvalid as exc:
            reason = f"the saved response does not fit the current question: {exc}"
            report.skipped.append(Skipped(attempt.public_id, reason))
            continue
        before = (attempt.score, attempt.max_score, attempt.passed, attempt.status)
        if answer is None:
            answer = Answer(attempt_id=attempt.id, question_id=qid, response=None, feedback="")
            sess.add(answer)
            stored[qid] = answer
        answer.score = result.score
        answer.needs_grading = False
        if attempt.snapshot.get(qid) != row.body:
            attempt.snapshot = {**attempt.snapshot, qid: row.body}
            svc.forget_parsed(attempt)
            seed = svc.attempt_seed(attempt.public_id)
            attempt.layout = [
                svc.refreshed_view(view, question, seed) if view.get("id") == qid else view
                for view in attempt.layout
            ]
        questions = svc.questions_of(attempt)
        attempt.max_score = round(
            sum(q.points for q in questions.values() if not isinstance(q, Description)), 6
        )
        item = items.get(attempt.item_id) or sess.get_one(Item, attempt.item_id)
        items[item.id] = item
        svc.total(attempt, stored, parse_config(item.config))
        sess.flush()
        if (attempt.score, attempt.max_score, attempt.passed, attempt.status) == before:
            continue
        report.changed += 1
        learner = learners.get(attempt.user_id) or sess.get_one(User, attempt.user_id)
        learners[learner.id] = learner
        try:
            outcome = svc.graded(sess, attempt, learner, item, course)
        except NotEnrolled:
            # The learner left the course: the attempt is corrected, progress is theirs no more.
            outcome = None
        if outcome is not None:
            report.outcomes.append(outcome)
    audit(
        sess,
        actor,
        "quiz.question.regrade",
        target=f"quiz_question:{qid}",
        detail={
            "version": row.version,
            "checked": report.checked,
            "changed": report.changed,
            "skipped": len(report.skipped),
            "in_progress": report.in_progress,
        },
    )
    sess.flush()
    log.info(
        "quiz_question=regraded question=%s checked=%d changed=%d skipped=%d in_progress=%d at=%s",
        qid,
        report.checked,
        report.changed,
        len(report.skipped),
        report.in_progress,
        now.isoformat(),
    )
    return report
