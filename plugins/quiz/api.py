"""The quiz HTTP API under ``/api/v1``: question bank, GIFT, attempts, grading, gradebook.

Who may call what (checked through :func:`core.rbac.require`; the votes are
in :func:`plugins.quiz.plugin.permission_allowed`):

=====================  ===========================================================
``quiz.bank.view``     list, read and export bank questions: instructors and TAs
``quiz.bank.edit``     create, edit, delete, import and regrade questions: instructors
``quiz.attempt``       take quizzes: active learners of a published course
``quiz.grade``         the manual grading queue, marks, any attempt's review: staff
``quiz.gradebook``     learners by quizzes scores, JSON or CSV: staff
``quiz.analysis``      item analysis of a quiz: staff
=====================  ===========================================================

An attempt is visible only to the learner who owns it (anyone else gets a
404, as for an attempt that does not exist); staff read attempts through
the review and grading endpoints.  Nothing a learner receives before the
review policy allows it contains an answer key: attempts carry only the
learner views frozen at their start.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from typing import Literal
from typing import TypeVarTuple

from flask import Blueprint
from flask import Response
from flask import jsonify
from flask import request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel
from pydantic import Field
from pydantic import ValidationError
from sqlalchemy import Select
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm import defer

from core import db
from core import rbac
from core.api import API_PREFIX
from core.api import json_response
from core.api import operation
from core.api import page
from core.api import parse_body
from core.api import parse_query
from core.api.courses import Body
from core.api.courses import PageQuery
from core.api.courses import UserBrief
from core.api.courses import cursor_key
from core.api.courses import load_course
from core.api.courses import load_item
from core.api.courses import user_brief
from core.auth import require_user
from core.auth.audit import audit
from core.db import utcnow
from core.errors import Conflict
from core.errors import NotFound
from core.errors import PayloadTooLarge
from core.errors import ValidationFailed
from core.models import Course
from core.models import Enrolment
from core.models import Item
from core.models import Module
from core.models import User
from core.progress import ProgressOutcome
from core.progress import announce
from core.reports import csv_cell
from plugins.quiz import analysis
from plugins.quiz import attempts as svc
from plugins.quiz import gift
from plugins.quiz import jobs
from plugins.quiz import regrade
from plugins.quiz.content import QuizConfig
from plugins.quiz.content import parse_config
from plugins.quiz.models import Answer
from plugins.quiz.models import Attempt
from plugins.quiz.models import BankQuestion
from plugins.quiz.questions import Essay
from plugins.quiz.questions import Question
from plugins.quiz.questions import QuestionInvalid
from plugins.quiz.questions import dump_question
from plugins.quiz.questions import parse_question

log = logging.getLogger(__name__)

bp = Blueprint("quiz_api", __name__, url_prefix=API_PREFIX)

TAGS_BANK = ("quiz: question bank",)
TAGS_ATTEMPTS = ("quiz: attempts",)
TAGS_STAFF = ("quiz: grading and reports",)


# ---------------------------------------------------------------- errors


class QuestionNotFound(NotFound):
    """No such question in a bank the caller may see."""

    type_slug = "quiz-question-not-found"


class QuizNotFound(NotFound):
    """The item does not exist, is hidden from the caller, or is not a quiz."""

    type_slug = "quiz-not-found"


class QuestionRejected(ValidationFailed):
    """The question does not validate (details in ``errors``)."""

    type_slug = "quiz-question-invalid"


class QuestionInUse(Conflict):
    """A quiz names the question; remove it from those quizzes first."""

    type_slug = "quiz-question-in-use"


class AttemptBusy(Conflict):
    """Two requests changed one attempt at once; this one was undone and may be resent."""

    type_slug = "quiz-attempt-busy"


class GiftUnreadable(ValidationFailed):
    """The GIFT text yielded no question at all (each problem in ``errors``)."""

    type_slug = "quiz-gift-unreadable"


# ---------------------------------------------------------------- schemas


class QuestionWrite(Body):
    """A question of any type, as :mod:`plugins.quiz.questions` defines them.

    Its ``id`` is assigned by the bank and ignored if sent.
    """

    question: dict[str, Any]


class QuestionOut(BaseModel):
    """A bank question with its answer key (staff only)."""

    id: str
    type: str
    title: str
    category: str
    tags: list[str]
    version: int
    created_at: datetime
    updated_at: datetime
    question: dict[str, Any]


class QuestionPage(BaseModel):
    """A page of bank questions."""

    items: list[QuestionOut]
    next_cursor: str | None


class QuestionQuery(PageQuery):
    """Filter the bank: by type, tag, category (sub-categories included) or title text."""

    type: str | None = Field(default=None, max_length=30)
    tag: str | None = Field(default=None, max_length=50)
    category: str | None = Field(default=None, max_length=255)
    q: str | None = Field(default=None, max_length=100)


class GiftImportBody(Body):
    """GIFT text to add to the bank; ``category`` applies where the file sets none."""

    gift: str = Field(min_length=1, max_length=gift.MAX_GIFT_CHARS)
    category: str = Field(default="", max_length=255)


class GiftIssueOut(BaseModel):
    """A GIFT question that was not imported, and why."""

    line: int
    title: str
    message: str


class GiftImportOut(BaseModel):
    """What an import stored and what it skipped."""

    imported: list[QuestionOut]
    skipped: list[GiftIssueOut]


class ExportQuery(BaseModel):
    """Which bank questions to export, and as JSON (``json``) or a ``.gift`` file."""

    tag: str | None = Field(default=None, max_length=50)
    category: str | None = Field(default=None, max_length=255)
    format: Literal["json", "gift"] = "json"


class ExportIssueOut(BaseModel):
    """A question left out of the export, or written with something lost."""

    question_id: str
    title: str
    message: str


class GiftExportOut(BaseModel):
    """The GIFT text and what it could not carry."""

    gift: str
    skipped: list[ExportIssueOut]
    warnings: list[ExportIssueOut]


class AnswersBody(Body):
    """Responses by question id (shapes in :mod:`plugins.quiz.grading`); ``null`` clears."""

    answers: dict[str, Any] = Field(max_length=200)


class SubmitBody(Body):
    """Optionally the last responses, saved before the attempt is graded."""

    answers: dict[str, Any] = Field(default_factory=dict, max_length=200)


class AttemptSummary(BaseModel):
    """An attempt without its questions; ``score`` once submitted (in points)."""

    id: str
    item_id: str
    number: int
    status: Literal["in_progress", "awaiting_grading", "graded"]
    started_at: datetime
    deadline: datetime | None
    submitted_at: datetime | None
    score: float | None
    max_score: float
    passed: bool | None
    review_available: bool


class AttemptOut(AttemptSummary):
    """An attempt with its questions (learner views) and the responses saved so far."""

    questions: list[dict[str, Any]]
    answers: dict[str, Any]
    #: with immediate review: the graded answers, as in the review
    graded: dict[str, dict[str, Any]]


class AttemptPage(BaseModel):
    """The caller's attempts at a quiz, newest first."""

    items: list[AttemptSummary]
    attempts_allowed: int
    attempts_used: int


class SaveOut(BaseModel):
    """Which responses were saved, and (immediate review only) how they were graded."""

    saved: list[str]
    autosaved_at: datetime
    graded: dict[str, dict[str, Any]]


class ReviewQuestion(BaseModel):
    """One question of a review: what was shown, answered, earned, and the key if allowed."""

    question: dict[str, Any]
    response: Any
    score: float | None
    points: float | None
    needs_grading: bool
    feedback: list[str] | None = None
    correct_response: Any = None


class ReviewOut(BaseModel):
    """A submitted attempt with its graded answers."""

    attempt: AttemptSummary
    learner: UserBrief
    questions: list[ReviewQuestion]


class QueueEntry(BaseModel):
    """An essay answer waiting for a grader."""

    attempt_id: str
    item_id: str
    item_title: str
    learner: UserBrief
    question_id: str
    question_text: str
    grader_info: str
    points: float
    response: Any
    submitted_at: datetime | None


class QueuePage(BaseModel):
    """A page of the grading queue, oldest submission first."""

    items: list[QueueEntry]
    next_cursor: str | None


class MarkBody(Body):
    """A grader's mark in points (0 to the question's points) and a comment."""

    points: float = Field(ge=0, le=1000, allow_inf_nan=False)
    feedback: str = Field(default="", max_length=20_000)


class GradebookQuery(BaseModel):
    """``format=csv`` for a spreadsheet."""

    format: Literal["json", "csv"] = "json"


class GradebookColumn(BaseModel):
    """A quiz of the course."""

    item_id: str
    title: str
    max_score: float | None


class GradebookCell(BaseModel):
    """A learner's results on one quiz (fractions 0..1)."""

    best: float | None
    last: float | None
    attempts: int
    passed: bool


class GradebookRow(BaseModel):
    """One learner's results; ``cells`` keyed by item id."""

    learner: UserBrief
    cells: dict[str, GradebookCell]


class Gradebook(BaseModel):
    """Active learners by quizzes."""

    columns: list[GradebookColumn]
    rows: list[GradebookRow]


class QuestionStats(BaseModel):
    """Item analysis of one question (see :mod:`plugins.quiz.analysis`)."""

    question_id: str
    title: str
    type: str
    attempts: int
    difficulty: float
    share_correct: float
    discrimination: float | None
    note: str | None
    flagged: bool


class AnalysisOut(BaseModel):
    """Item analysis of a quiz over its graded attempts."""

    item_id: str
    attempts: int
    questions: list[QuestionStats]


# ---------------------------------------------------------------- loading


def _question_out(row: BankQuestion) -> QuestionOut:
    return QuestionOut(
        id=row.public_id,
        type=row.type,
        title=row.title,
        category=row.category,
        tags=list(row.tags or []),
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        question=row.body,
    )


def _load_question(question_id: str, action: str) -> tuple[User, BankQuestion, Course]:
    user = require_user()
    sess = db.session()
    row = sess.scalar(select(BankQuestion).where(BankQuestion.public_id == question_id))
    course = sess.get(Course, row.course_id) if row is not None else None
    if row is None or course is None:
        raise QuestionNotFound("no such question")
    rbac.require(user, action, course, what="question")
    return user, row, course


def _load_quiz(item_id: str, action: str) -> tuple[User, Item, Course]:
    user, item, course = load_item(item_id, action)
    if item.type != "quiz":
        raise QuizNotFound("no such quiz")
    return user, item, course


def _load_own_attempt(attempt_id: str) -> tuple[User, Attempt, Item, Course]:
    """The caller's attempt; anyone else's is a 404, as if it did not exist."""
    user = require_user()
    sess = db.session()
    attempt = sess.scalar(
        select(Attempt)
        .where(Attempt.public_id == attempt_id, Attempt.user_id == user.id)
        # what the learner is shown is loaded only by the views that show it
        .options(defer(Attempt.layout))
    )
    if attempt is None:
        raise svc.AttemptNotFound("no such attempt")
    item = sess.get_one(Item, attempt.item_id)
    course = sess.get_one(Course, attempt.course_id)
    rbac.require(user, "quiz.attempt", course, what="attempt")
    return user, attempt, item, course


def _load_staff_attempt(attempt_id: str, action: str) -> tuple[User, Attempt, Item, Course]:
    user = require_user()
    sess = db.session()
    attempt = sess.scalar(select(Attempt).where(Attempt.public_id == attempt_id))
    if attempt is None:
        raise svc.AttemptNotFound("no such attempt")
    course = sess.get_one(Course, attempt.course_id)
    rbac.require(user, action, course, what="attempt")
    return user, attempt, sess.get_one(Item, attempt.item_id), course


def _set_question(row: BankQuestion, question: Question) -> None:
    row.body = dump_question(question)
    row.type = question.type
    row.title = question.title
    row.category = question.category
    row.tags = list(question.tags)


def _validated(data: dict[str, Any], question_id: str) -> Question:
    try:
        return parse_question({**data, "id": question_id})
    except QuestionInvalid as exc:
        raise QuestionRejected(str(exc), errors=exc.errors) from exc


def _audit_question(
    sess: Session, actor: User, action: str, row: BankQuestion, course: Course
) -> None:
    audit(
        sess,
        actor,
        f"quiz.question.{action}",
        target=f"quiz_question:{row.public_id}",
        detail={"course": course.public_id, "type": row.type, "version": row.version},
    )


def _new_question(course: Course, data: dict[str, Any]) -> BankQuestion:
    """A new, validated bank question of ``course`` (not added to any session).

    :raise QuestionRejected: ``data`` does not validate.
    """
    row = BankQuestion(course_id=course.id)
    row.public_id = db.new_public_id()
    _set_question(row, _validated(data, row.public_id))
    return row


def add_question(
    sess: Session, course: Course, data: dict[str, Any], *, actor: User
) -> BankQuestion:
    """Validate ``data`` and add it to ``course``'s bank, audited (flushed, not committed).

    :raise QuestionRejected: the question does not validate; nothing is added.
    """
    row = _new_question(course, data)
    sess.add(row)
    sess.flush()
    _audit_question(sess, actor, "create", row, course)
    log.info("quiz_question=created question=%s course=%s", row.public_id, course.public_id)
    return row


def change_question(
    sess: Session, row: BankQuestion, course: Course, data: dict[str, Any], *, actor: User
) -> None:
    """Replace a bank question with a new validated version and bump ``version``, audited.

    :raise QuestionRejected: the new version does not validate; ``row`` is unchanged.
    """
    _set_question(row, _validated(data, row.public_id))
    row.version += 1
    row.updated_at = utcnow()
    _audit_question(sess, actor, "edit", row, course)


def import_questions(
    sess: Session,
    course: Course,
    questions: list[Question],
    *,
    category: str,
    actor: User,
) -> list[BankQuestion]:
    """Add parsed questions (a GIFT file's) to the bank, audited once (not committed).

    :param category: for questions that name none.
    :raise QuestionRejected: one does not validate; nothing is added.
    """
    rows = []
    for question in questions:
        body = dump_question(question)
        if not body.get("category") and category:
            body["category"] = category
        rows.append(_new_question(course, body))
    sess.add_all(rows)
    audit(
        sess,
        actor,
        "quiz.question.import",
        target=f"course:{course.public_id}",
        detail={"questions": len(rows)},
    )
    return rows


def quizzes_naming(sess: Session, course: Course, question_id: str) -> list[Item]:
    """The course's quizzes whose configuration names the question."""
    return [
        item
        for item in sess.scalars(
            select(Item).where(Item.course_id == course.id, Item.type == "quiz").order_by(Item.id)
        )
        if question_id in (item.config or {}).get("questions", [])
    ]


def remove_question(sess: Session, row: BankQuestion, course: Course, *, actor: User) -> None:
    """Delete a bank question that no quiz names, audited.

    :raise QuestionInUse: quizzes name it (their ids in ``items``); nothing is deleted.
    """
    users = [item.public_id for item in quizzes_naming(sess, course, row.public_id)]
    if users:
        raise QuestionInUse("quizzes name this question", items=users)
    _audit_question(sess, actor, "delete", row, course)
    sess.delete(row)
    sess.flush()
    log.info("quiz_question=deleted question=%s course=%s", row.public_id, course.public_id)


def _finish(outcome: ProgressOutcome | None) -> None:
    """Commit the request's changes, then announce a course completion."""
    db.session().commit()
    if outcome is not None:
        announce(outcome)


# ---------------------------------------------------------------- question bank

_Ts = TypeVarTuple("_Ts")


def bank_filtered(
    stmt: Select[*_Ts],
    course: Course,
    *,
    qtype: str | None = None,
    category: str | None = None,
    q: str | None = None,
) -> Select[*_Ts]:
    """``stmt`` (a select from the bank) limited to ``course`` and the SQL-side filters.

    The one filter rule of the API and the bank page: the type exactly, the
    category with its sub-categories, the title containing ``q`` in any case.
    Tags are a JSON list, so callers match them in Python, and only when a tag
    filter is set.
    """
    stmt = stmt.where(BankQuestion.course_id == course.id)
    if qtype:
        stmt = stmt.where(BankQuestion.type == qtype)
    if category:
        cat = category.strip("/")
        stmt = stmt.where(
            (BankQuestion.category == cat)
            | BankQuestion.category.startswith(cat + "/", autoescape=True)
        )
    if q:
        stmt = stmt.where(BankQuestion.title.icontains(q, autoescape=True))
    return stmt


@bp.get("/courses/<course_id>/quiz/questions")
@operation(
    "List the course's question bank (staff), filtered by type, tag, category or text",
    tags=TAGS_BANK,
    query=QuestionQuery,
    response=QuestionPage,
    errors=(404, 422),
)
def list_questions(course_id: str) -> ResponseReturnValue:
    """A page of bank questions, oldest first."""
    _, course = load_course(course_id, "quiz.bank.view")
    query = parse_query(QuestionQuery)
    stmt = bank_filtered(
        select(BankQuestion), course, qtype=query.type, category=query.category, q=query.q
    )
    after = cursor_key(query)
    if after is not None:
        stmt = stmt.where(BankQuestion.id > after)
    stmt = stmt.order_by(BankQuestion.id)
    out: list[BankQuestion] = []
    # Tags are a JSON list, matched here rather than in dialect-specific SQL.
    for row in db.session().scalars(stmt):
        if query.tag and query.tag not in (row.tags or []):
            continue
        out.append(row)
        if len(out) > query.limit:
            break
    next_key = out[query.limit - 1].id if len(out) > query.limit else None
    items = [_question_out(r).model_dump(mode="json") for r in out[: query.limit]]
    return jsonify(page(items, next_key))


@bp.post("/courses/<course_id>/quiz/questions")
@operation(
    "Add a question to the course's bank (instructors)",
    tags=TAGS_BANK,
    body=QuestionWrite,
    response=QuestionOut,
    status=201,
    errors=(404,),
)
def create_question(course_id: str) -> ResponseReturnValue:
    """Validate and store a new question."""
    user, course = load_course(course_id, "quiz.bank.edit")
    data = parse_body(QuestionWrite)
    sess = db.session()
    row = add_question(sess, course, data.question, actor=user)
    sess.commit()
    return json_response(_question_out(row), 201)


@bp.get("/quiz/questions/<question_id>")
@operation("Read a bank question (staff)", tags=TAGS_BANK, response=QuestionOut, errors=(404,))
def get_question(question_id: str) -> ResponseReturnValue:
    """One question with its answer key."""
    _, row, _ = _load_question(question_id, "quiz.bank.view")
    return json_response(_question_out(row))


@bp.put("/quiz/questions/<question_id>")
@operation(
    "Replace a bank question (instructors); running attempts keep the old version",
    tags=TAGS_BANK,
    body=QuestionWrite,
    response=QuestionOut,
    errors=(404,),
)
def update_question(question_id: str) -> ResponseReturnValue:
    """Validate the new version and bump ``version``."""
    user, row, course = _load_question(question_id, "quiz.bank.edit")
    data = parse_body(QuestionWrite)
    sess = db.session()
    change_question(sess, row, course, data.question, actor=user)
    sess.commit()
    return json_response(_question_out(row))


@bp.delete("/quiz/questions/<question_id>")
@operation(
    "Delete a bank question no quiz names (instructors); past attempts keep their copy",
    tags=TAGS_BANK,
    status=204,
    errors=(404, 409),
)
def delete_question(question_id: str) -> ResponseReturnValue:
    """Remove the question from the bank."""
    user, row, course = _load_question(question_id, "quiz.bank.edit")
    sess = db.session()
    remove_question(sess, row, course, actor=user)
    sess.commit()
    return Response(status=204)


class RegradeSkipOut(BaseModel):
    """An attempt the regrade left as it was, and why."""

    attempt_id: str
    reason: str


class RegradeOut(BaseModel):
    """What a regrade looked at and changed."""

    question_id: str
    version: int
    attempts_checked: int
    attempts_changed: int
    #: attempts not yet submitted that contain the question: not regraded, they are
    #: graded on submit with the version they started with
    in_progress: int
    skipped: list[RegradeSkipOut]


def regrade_out(report: regrade.RegradeReport) -> RegradeOut:
    """The API's view of a regrade report."""
    return RegradeOut(
        question_id=report.question_id,
        version=report.version,
        attempts_checked=report.checked,
        attempts_changed=report.changed,
        in_progress=report.in_progress,
        skipped=[RegradeSkipOut(attempt_id=s.attempt_id, reason=s.reason) for s in report.skipped],
    )


def run_regrade(user: User, row: BankQuestion, course: Course) -> regrade.RegradeReport:
    """Regrade, commit, then announce the course completions it caused."""
    sess = db.session()
    with svc.writing(sess):
        report = regrade.regrade_question(sess, user, row, course, utcnow())
        sess.commit()
    for outcome in report.outcomes:
        announce(outcome)
    return report


@bp.post("/quiz/questions/<question_id>/regrade")
@operation(
    "Regrade every submitted attempt containing the question with its current answer key "
    "(instructors; automatically graded types only, essay marks stay); a second run "
    "changes nothing",
    tags=TAGS_BANK,
    response=RegradeOut,
    errors=(404, 409),
)
def regrade_question(question_id: str) -> ResponseReturnValue:
    """Re-grade the attempts, update their scores and the learners' progress, audit it."""
    user, row, course = _load_question(question_id, "quiz.bank.edit")
    return json_response(regrade_out(run_regrade(user, row, course)))


@bp.post("/courses/<course_id>/quiz/import")
@operation(
    "Import Moodle GIFT into the bank (instructors); skipped questions listed with lines. "
    "Also accepts the .gift file itself as text/plain (category in ?category=)",
    tags=TAGS_BANK,
    body=GiftImportBody,
    response=GiftImportOut,
    status=201,
    errors=(404, 413),
)
def import_gift(course_id: str) -> ResponseReturnValue:
    """Store every question the file defines; report each one it could not import.

    A file from which no question at all can be read (not UTF-8 text, or no
    question block that parses) is refused (422) and nothing is stored.
    """
    user, course = load_course(course_id, "quiz.bank.edit")
    if request.mimetype == "text/plain":
        try:
            text = gift.decode_gift(request.get_data(cache=True))
        except gift.GiftNotText as exc:
            raise GiftUnreadable(str(exc), errors=[]) from exc
        except gift.GiftTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from exc
        try:
            data = GiftImportBody.model_validate(
                {"gift": text, "category": request.args.get("category", "")}
            )
        except ValidationError as exc:
            raise GiftUnreadable(
                "the file holds no GIFT text",
                errors=[
                    {"loc": ".".join(map(str, e["loc"])), "msg": e["msg"]} for e in exc.errors()
                ],
            ) from exc
    else:
        data = parse_body(GiftImportBody)
    try:
        parsed = gift.parse_gift(data.gift)
    except gift.GiftTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from exc
    skipped = [GiftIssueOut(line=e.line, title=e.title, message=e.message) for e in parsed.errors]
    if not parsed.items:
        raise GiftUnreadable(
            "no question could be read from the GIFT text",
            errors=[s.model_dump() for s in skipped]
            or [{"line": 1, "title": "", "message": "the text holds no question"}],
        )
    sess = db.session()
    rows = import_questions(
        sess, course, [e.question for e in parsed.items], category=data.category, actor=user
    )
    sess.commit()
    log.info(
        "quiz_gift=imported course=%s questions=%d skipped=%d",
        course.public_id,
        len(rows),
        len(skipped),
    )
    out = GiftImportOut(imported=[_question_out(r) for r in rows], skipped=skipped)
    return json_response(out, 201)


@bp.get("/courses/<course_id>/quiz/export")
@operation(
    "Export bank questions as Moodle GIFT (staff), listing what GIFT cannot carry",
    tags=TAGS_BANK,
    query=ExportQuery,
    response=GiftExportOut,
    errors=(404, 422),
)
def export_gift(course_id: str) -> ResponseReturnValue:
    """The GIFT text as JSON with the skipped questions, or as a ``.gift`` download."""
    _, course = load_course(course_id, "quiz.bank.view")
    query = parse_query(ExportQuery)
    stmt = bank_filtered(select(BankQuestion), course, category=query.category)
    rows = [
        r
        for r in db.session().scalars(stmt.order_by(BankQuestion.category, BankQuestion.id))
        if not query.tag or query.tag in (r.tags or [])
    ]
    result = gift.export_gift(parse_question(r.body) for r in rows)
    if query.format == "gift":
        resp = Response(result.text, mimetype="text/plain; charset=utf-8")
        resp.headers["Content-Disposition"] = f'attachment; filename="{course.public_id}.gift"'
        resp.headers["X-Quiz-Skipped"] = str(len(result.skipped))
        return resp
    out = GiftExportOut(
        gift=result.text,
        skipped=[ExportIssueOut(**vars(s)) for s in result.skipped],
        warnings=[ExportIssueOut(**vars(s)) for s in result.warnings],
    )
    return json_response(out)


# ---------------------------------------------------------------- attempts


def _summary(attempt: Attempt, item: Item, review: bool) -> AttemptSummary:
    submitted = attempt.status != "in_progress"
    return AttemptSummary.model_validate(
        {
            "id": attempt.public_id,
            "item_id": item.public_id,
            "number": attempt.number,
            "status": attempt.status,
            "started_at": attempt.started_at,
            "deadline": attempt.deadline,
            "submitted_at": attempt.submitted_at,
            "score": attempt.score if submitted else None,
            "max_score": attempt.max_score,
            "passed": attempt.passed if submitted else None,
            "review_available": review,
        }
    )


def _review_open(sess: Session, attempt: Attempt, item: Item, cfg: QuizConfig) -> bool:
    if attempt.status == "in_progress":
        return False
    # Only "after_close" without a close date depends on the attempts used.
    counted = cfg.review == "after_close" and cfg.close_at is None
    used = svc.attempts_used(sess, attempt.user_id, item.id) if counted else 0
    return svc.review_open(cfg, attempt, used, utcnow())


def _immediate(
    attempt: Attempt, cfg: QuizConfig, answers: dict[str, Answer]
) -> dict[str, dict[str, Any]]:
    """Graded answers shown during an attempt when the quiz gives immediate feedback."""
    if cfg.review != "immediately":
        return {}
    questions = svc.questions_of(attempt)
    return {
        qid: svc.graded_view(
            questions[qid],
            answer,
            feedback=cfg.show_feedback,
            correct=cfg.show_correct_answers,
        )
        for qid, answer in answers.items()
        if answer.score is not None and qid in questions
    }


def _attempt_out(sess: Session, attempt: Attempt, item: Item) -> AttemptOut:
    cfg = parse_config(item.config)
    answers = svc.answers_of(sess, attempt)
    summary = _summary(attempt, item, _review_open(sess, attempt, item, cfg))
    return AttemptOut(
        **summary.model_dump(),
        questions=attempt.layout,
        answers={qid: a.response for qid, a in answers.items() if a.response is not None},
        graded=_immediate(attempt, cfg, answers) if attempt.status == "in_progress" else {},
    )


@bp.post("/items/<item_id>/quiz/attempts")
@operation(
    "Start an attempt at a quiz (learners); returns the attempt in progress if there is one",
    tags=TAGS_ATTEMPTS,
    response=AttemptOut,
    status=201,
    errors=(404, 409),
)
def start_attempt(item_id: str) -> ResponseReturnValue:
    """Draw and shuffle the questions (frozen for the attempt) and start the clock."""
    user, item, course = _load_quiz(item_id, "quiz.attempt")
    sess = db.session()
    with svc.writing(sess):
        try:
            started, out = _start(sess, user, item, course)
        except IntegrityError:
            # A concurrent start by the same learner won the attempt number;
            # theirs is the attempt in progress now, so return it.
            sess.rollback()
            started, out = _start(sess, user, item, course)
    return json_response(out, 201 if started.created else 200)


def _start(sess: Session, user: User, item: Item, course: Course) -> tuple[svc.Started, AttemptOut]:
    now = utcnow()
    started, outcome = svc.start(sess, user, item, course, now)
    if started.created:
        jobs.schedule_close(sess, started.attempt, now)
    out = _attempt_out(sess, started.attempt, item)
    _finish(outcome)
    return started, out


@bp.get("/items/<item_id>/quiz/attempts")
@operation(
    "Your attempts at a quiz, newest first",
    tags=TAGS_ATTEMPTS,
    response=AttemptPage,
    errors=(404,),
)
def my_attempts(item_id: str) -> ResponseReturnValue:
    """The caller's attempt history with scores."""
    user, item, _ = _load_quiz(item_id, "quiz.attempt")
    sess = db.session()
    cfg = parse_config(item.config)
    rows = list(
        sess.scalars(
            select(Attempt)
            .where(Attempt.user_id == user.id, Attempt.item_id == item.id)
            .order_by(Attempt.number.desc())
        )
    )
    now = utcnow()
    out = AttemptPage(
        items=[_summary(a, item, svc.review_open(cfg, a, len(rows), now)) for a in rows],
        attempts_allowed=cfg.attempts_allowed,
        attempts_used=len(rows),
    )
    return json_response(out)


@bp.get("/quiz/attempts/<attempt_id>")
@operation(
    "Your attempt: its questions and saved answers (an overdue attempt is graded first)",
    tags=TAGS_ATTEMPTS,
    response=AttemptOut,
    errors=(404,),
)
def get_attempt(attempt_id: str) -> ResponseReturnValue:
    """Resume an attempt (or see a submitted one's summary)."""
    user, attempt, item, course = _load_own_attempt(attempt_id)
    sess = db.session()
    now = utcnow()
    outcome = None
    if attempt.status == "in_progress" and svc.overdue(attempt, now):
        outcome = svc.finish(sess, attempt, user, item, course, now)
    out = _attempt_out(sess, attempt, item)
    _finish(outcome)
    return json_response(out)


@bp.put("/quiz/attempts/<attempt_id>/answers")
@operation(
    "Autosave answers to your attempt (only its questions, only before the deadline)",
    tags=TAGS_ATTEMPTS,
    body=AnswersBody,
    response=SaveOut,
    errors=(404, 409, 413),
)
def save_answers(attempt_id: str) -> ResponseReturnValue:
    """Store the responses; all of them or, if one is invalid, none."""
    user, attempt, item, course = _load_own_attempt(attempt_id)
    data = parse_body(AnswersBody)
    sess = db.session()
    now = utcnow()
    with svc.writing(sess), _concurrent_change():
        _lock(sess, attempt)
        saved = svc.save(sess, attempt, user, item, course, data.answers, now)
        cfg = parse_config(item.config)
        answers = {a.question_id: a for a in _answers(sess, attempt, saved)}
        graded = _immediate(attempt, cfg, answers)
        sess.commit()
    return json_response(SaveOut(saved=saved.question_ids, autosaved_at=now, graded=graded))


def _lock(sess: Session, attempt: Attempt) -> None:
    """Reload the attempt under a row lock (PostgreSQL), so concurrent saves and
    submits of one attempt take turns and each sees the other's outcome."""
    sess.refresh(attempt, ["status"], with_for_update=True)
    if attempt.status != "in_progress":
        # Submitted meanwhile: show what that submit stored.
        sess.refresh(attempt)


@contextmanager
def _concurrent_change() -> Iterator[None]:
    try:
        yield
    except IntegrityError as exc:
        db.session().rollback()
        raise AttemptBusy("the attempt changed while this request ran; send it again") from exc


def _answers(sess: Session, attempt: Attempt, saved: svc.Saved) -> list[Answer]:
    if not saved.graded:
        return []
    return [a for qid, a in svc.answers_of(sess, attempt).items() if qid in saved.graded]


@bp.post("/quiz/attempts/<attempt_id>/submit")
@operation(
    "Submit your attempt, optionally with its last answers; a second submit changes nothing",
    tags=TAGS_ATTEMPTS,
    body=SubmitBody,
    response=AttemptSummary,
    errors=(404, 409, 413),
)
def submit_attempt(attempt_id: str) -> ResponseReturnValue:
    """Grade the attempt on the server; essays go to the grading queue."""
    user, attempt, item, course = _load_own_attempt(attempt_id)
    data = parse_body(SubmitBody) if request.get_data(cache=True) else SubmitBody()
    sess = db.session()
    with svc.writing(sess), _concurrent_change():
        _lock(sess, attempt)
        outcome = svc.submit(sess, attempt, user, item, course, data.answers, utcnow())
        out = _summary(attempt, item, _review_open(sess, attempt, item, parse_config(item.config)))
        _finish(outcome)
    return json_response(out)


def _review(sess: Session, attempt: Attempt, item: Item, learner: User, full: bool) -> ReviewOut:
    cfg = parse_config(item.config)
    questions = svc.questions_of(attempt)
    answers = svc.answers_of(sess, attempt)
    shown = {view["id"]: view for view in attempt.layout}
    out = []
    for qid in attempt.question_ids:
        view = svc.graded_view(
            questions[qid],
            answers.get(qid),
            feedback=full or cfg.show_feedback,
            correct=full or cfg.show_correct_answers,
        )
        out.append(ReviewQuestion(question=shown[qid], **view))
    return ReviewOut(
        attempt=_summary(attempt, item, True),
        learner=user_brief(learner),
        questions=out,
    )


@bp.get("/quiz/attempts/<attempt_id>/review")
@operation(
    "Review a submitted attempt: answers, grades, feedback and the correct answers, "
    "when the quiz's review policy allows (staff: always)",
    tags=TAGS_ATTEMPTS,
    response=ReviewOut,
    errors=(404, 409),
)
def review_attempt(attempt_id: str) -> ResponseReturnValue:
    """The learner's review, or a staff member's view of any attempt."""
    user = require_user()
    sess = db.session()
    attempt = sess.scalar(select(Attempt).where(Attempt.public_id == attempt_id))
    if attempt is None:
        raise svc.AttemptNotFound("no such attempt")
    course = sess.get_one(Course, attempt.course_id)
    item = sess.get_one(Item, attempt.item_id)
    if attempt.user_id != user.id:
        # Only staff may see someone else's attempt; to anyone else it does not exist.
        if not rbac.can(user, "quiz.grade", course):
            raise svc.AttemptNotFound("no such attempt")
        if attempt.status == "in_progress":
            raise svc.ReviewNotAvailable("the attempt is still in progress")
        learner = sess.get_one(User, attempt.user_id)
        return json_response(_review(sess, attempt, item, learner, full=True))
    rbac.require(user, "quiz.attempt", course, what="attempt")
    if not _review_open(sess, attempt, item, parse_config(item.config)):
        raise svc.ReviewNotAvailable("the quiz's review policy does not show this attempt yet")
    return json_response(_review(sess, attempt, item, user, full=False))


# ---------------------------------------------------------------- grading


@bp.get("/courses/<course_id>/quiz/grading")
@operation(
    "The manual grading queue: essay answers awaiting a mark (instructors and TAs)",
    tags=TAGS_STAFF,
    query=PageQuery,
    response=QueuePage,
    errors=(404, 422),
)
def grading_queue(course_id: str) -> ResponseReturnValue:
    """Answers to grade, oldest submission first."""
    _, course = load_course(course_id, "quiz.grade")
    query = parse_query(PageQuery)
    after = cursor_key(query)
    stmt = (
        select(Answer, Attempt, Item, User)
        .join(Attempt, Attempt.id == Answer.attempt_id)
        .join(Item, Item.id == Attempt.item_id)
        .join(User, User.id == Attempt.user_id)
        .where(Attempt.course_id == course.id, Answer.needs_grading.is_(True))
        .order_by(Answer.id)
    )
    if after is not None:
        stmt = stmt.where(Answer.id > after)
    rows = list(db.session().execute(stmt.limit(query.limit + 1)))
    next_key = rows[query.limit - 1][0].id if len(rows) > query.limit else None
    items = []
    for answer, attempt, item, learner in rows[: query.limit]:
        question = parse_question(attempt.snapshot[answer.question_id])
        entry = QueueEntry(
            attempt_id=attempt.public_id,
            item_id=item.public_id,
            item_title=item.title,
            learner=user_brief(learner),
            question_id=answer.question_id,
            question_text=question.text,
            grader_info=question.grader_info if isinstance(question, Essay) else "",
            points=question.points,
            response=answer.response,
            submitted_at=attempt.submitted_at,
        )
        items.append(entry.model_dump(mode="json"))
    return jsonify(page(items, next_key))


@bp.put("/quiz/attempts/<attempt_id>/answers/<question_id>/mark")
@operation(
    "Mark an essay answer (instructors and TAs); the attempt's score and progress follow",
    tags=TAGS_STAFF,
    body=MarkBody,
    response=AttemptSummary,
    errors=(404, 409),
)
def mark_answer(attempt_id: str, question_id: str) -> ResponseReturnValue:
    """Record the mark, regrade the attempt and, once fully graded, the learner's progress."""
    grader, attempt, item, course = _load_staff_attempt(attempt_id, "quiz.grade")
    data = parse_body(MarkBody)
    sess = db.session()
    learner = sess.get_one(User, attempt.user_id)
    _lock(sess, attempt)
    outcome = svc.mark(
        sess,
        grader,
        attempt,
        learner,
        item,
        course,
        question_id,
        data.points,
        data.feedback,
        utcnow(),
    )
    out = _summary(attempt, item, True)
    _finish(outcome)
    return json_response(out)


# ---------------------------------------------------------------- reports


def _gradebook(sess: Session, course: Course) -> Gradebook:
    quizzes = list(
        sess.scalars(
            select(Item)
            .join(Module, Module.id == Item.module_id)
            .where(Item.course_id == course.id, Item.type == "quiz")
            .order_by(Module.position, Item.position, Item.id)
        )
    )
    learners = list(
        sess.scalars(
            select(User)
            .join(Enrolment, Enrolment.user_id == User.id)
            .where(Enrolment.course_id == course.id, Enrolment.status == "active")
            .order_by(User.display_name, User.id)
        )
    )
    cells: dict[tuple[int, int], GradebookCell] = {}
    max_scores: dict[int, float] = {}
    rows = sess.scalars(
        select(Attempt)
        .where(Attempt.course_id == course.id, Attempt.status == "graded")
        .order_by(Attempt.number)
    )
    for attempt in rows:
        key = (attempt.user_id, attempt.item_id)
        fraction = (attempt.score or 0.0) / attempt.max_score if attempt.max_score else 1.0
        fraction = round(fraction, 4)
        max_scores[attempt.item_id] = attempt.max_score
        cell = cells.get(key) or GradebookCell(best=None, last=None, attempts=0, passed=False)
        cells[key] = GradebookCell(
            best=fraction if cell.best is None else max(cell.best, fraction),
            last=fraction,
            attempts=cell.attempts + 1,
            passed=cell.passed or bool(attempt.passed),
        )
    empty = GradebookCell(best=None, last=None, attempts=0, passed=False)
    return Gradebook(
        columns=[
            GradebookColumn(item_id=q.public_id, title=q.title, max_score=max_scores.get(q.id))
            for q in quizzes
        ],
        rows=[
            GradebookRow(
                learner=user_brief(u),
                cells={q.public_id: cells.get((u.id, q.id), empty) for q in quizzes},
            )
            for u in learners
        ],
    )


@bp.get("/courses/<course_id>/quiz/gradebook")
@operation(
    "The gradebook: active learners by quizzes, best and last graded score (staff; JSON or CSV)",
    tags=TAGS_STAFF,
    query=GradebookQuery,
    response=Gradebook,
    errors=(404, 422),
)
def gradebook(course_id: str) -> ResponseReturnValue:
    """Scores as fractions 0..1; ``?format=csv`` gives percentages in a spreadsheet."""
    _, course = load_course(course_id, "quiz.gradebook")
    query = parse_query(GradebookQuery)
    book = _gradebook(db.session(), course)
    if query.format == "json":
        return json_response(book)
    buf = io.StringIO()
    writer = csv.writer(buf)
    header = ["learner_id", "learner"]
    for col in book.columns:
        header += [f"{col.title} (best %)", f"{col.title} (last %)", f"{col.title} (attempts)"]
    writer.writerow([csv_cell(h) for h in header])
    for row in book.rows:
        line: list[object] = [row.learner.id, row.learner.display_name]
        for col in book.columns:
            cell = row.cells[col.item_id]
            line += [
                None if cell.best is None else round(cell.best * 100, 2),
                None if cell.last is None else round(cell.last * 100, 2),
                cell.attempts,
            ]
        writer.writerow([csv_cell(v) for v in line])
    resp = Response(buf.getvalue(), mimetype="text/csv; charset=utf-8")
    resp.headers["Content-Disposition"] = f'attachment; filename="gradebook-{course.public_id}.csv"'
    return resp


@bp.get("/items/<item_id>/quiz/analysis")
@operation(
    "Item analysis of a quiz: difficulty and discrimination per question (staff)",
    tags=TAGS_STAFF,
    response=AnalysisOut,
    errors=(404,),
)
def item_analysis(item_id: str) -> ResponseReturnValue:
    """Analyse every graded attempt; flag questions that do not discriminate."""
    _, item, _ = _load_quiz(item_id, "quiz.analysis")
    return json_response(analysis_of(db.session(), item))


def analysis_of(sess: Session, item: Item) -> AnalysisOut:
    """The item analysis of a quiz's graded attempts (also shown on the staff page)."""
    graded = list(
        sess.scalars(
            select(Attempt)
            .where(Attempt.item_id == item.id, Attempt.status == "graded")
            .order_by(Attempt.id)
        )
    )
    scores: dict[int, dict[str, float]] = {a.id: {} for a in graded}
    if graded:
        for answer in sess.scalars(
            select(Answer).where(
                Answer.attempt_id.in_([a.id for a in graded]), Answer.score.is_not(None)
            )
        ):
            scores[answer.attempt_id][answer.question_id] = answer.score or 0.0
    meta: dict[str, tuple[str, str]] = {}
    for attempt in graded:
        for qid, body in attempt.snapshot.items():
            meta[qid] = (str(body.get("title", "")), str(body.get("type", "")))
    stats = analysis.item_analysis([scores[a.id] for a in graded if scores[a.id]])
    return AnalysisOut(
        item_id=item.public_id,
        attempts=len(graded),
        questions=[
            QuestionStats(
                question_id=s.question_id,
                title=meta.get(s.question_id, ("", ""))[0],
                type=meta.get(s.question_id, ("", ""))[1],
                attempts=s.attempts,
                difficulty=round(s.difficulty, 4),
                share_correct=round(s.share_correct, 4),
                discrimination=None if s.discrimination is None else round(s.discrimination, 4),
                note=s.note,
                flagged=s.flagged,
            )
            for s in stats
        ],
    )


__all__ = ["bp"]
