"""Quiz pages: taking an attempt in the browser, its result, and the staff pages.

Learners start (or resume) an attempt from the quiz's learn view, answer
every question on one page and save with a plain form (a small ES module
saves on change without a reload; the page works without JavaScript),
confirm the submit, then see the result the review policy allows.  Staff
mark essays, read the gradebook and the item analysis, and manage the
question bank: filtered and paged here with GIFT import and export, edited
question by question in :mod:`plugins.quiz.web_bank`.

Every page checks the same permissions as the JSON API
(:mod:`plugins.quiz.api`), and another learner's attempt is a 404 as there.
Until the review policy allows it, nothing a learner is sent holds an
answer key: the attempt page is rendered from the learner views frozen at
the attempt's start.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import nh3
from flask import Blueprint
from flask import flash
from flask import jsonify
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_babel import gettext
from markupsafe import Markup
from markupsafe import escape
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers.response import Response as BaseResponse

from core import db
from core import rbac
from core.api import decode_cursor
from core.api import encode_cursor
from core.auth import current_user
from core.db import utcnow
from core.errors import Problem
from core.models import Course
from core.models import Item
from core.models import User
from plugins.quiz import api
from plugins.quiz import attempts as svc
from plugins.quiz import gift
from plugins.quiz.content import parse_config
from plugins.quiz.models import Answer
from plugins.quiz.models import Attempt
from plugins.quiz.models import BankQuestion
from plugins.quiz.questions import GAP_MARKER
from plugins.quiz.questions import Essay
from plugins.quiz.questions import parse_question

log = logging.getLogger(__name__)

bp = Blueprint(
    "quiz_web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/quiz/static",
)

Page = str | tuple[str, int] | BaseResponse

#: Largest GIFT file the import form accepts.
MAX_GIFT_UPLOAD = 2 * 1024 * 1024


# ---------------------------------------------------------------- helpers

_WHOLE = re.compile(r"[0-9]{1,9}")
# Digits with at most one separator: "2", "2.5", ",5", "1e-3".  ASCII only: str.isdigit()
# and float() also take "²", "٣", "1_000", "nan" and "inf".
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_THOUSANDS = re.compile(r"[+-]?[0-9]+,[0-9]{3}(?:[eE].*)?")


def whole_number(raw: str | None) -> int | None:
    """A form's or query's count, index or version: 0 to 999,999,999 in ASCII digits, else None.

    One rule for every number a page reads from a URL or a hidden input, so
    "²" (which ``str.isdigit`` accepts and ``int`` refuses) or a 5,000-digit
    string is a bad value, never a 500.
    """
    if raw is None or not _WHOLE.fullmatch(raw):
        return None
    return int(raw)


def decimal_number(raw: str) -> float | None:
    """A number typed by a person (a decimal point or comma), or None if it is not one.

    A comma is read as the decimal separator only when it is the one separator
    and is not followed by exactly three digits: "1,000" is ambiguous (a
    thousand, or one?) and is refused rather than stored as 1.0.  Not-a-number
    and infinities are refused too.
    """
    value = raw.strip()
    if len(value) > 40 or not _DECIMAL.fullmatch(value) or _THOUSANDS.fullmatch(value):
        return None
    number = float(value.replace(",", "."))
    return number if math.isfinite(number) else None


def _user() -> User | None:
    return current_user()


def _login_redirect() -> BaseResponse:
    return redirect(url_for("account.login", next=request.path))


def rich(text: str, text_format: str) -> Markup:
    """A question's text as HTML: sanitised HTML, or escaped plain text with line breaks."""
    if text_format == "html":
        return Markup(nh3.clean(text))  # noqa: S704 - sanitised by nh3
    return Markup("<br>").join(escape(line) for line in text.split("\n"))


def _own_attempt(attempt_id: str) -> tuple[User, Attempt, Item, Course]:
    """The learner's own attempt (a 404 for anyone else's, as in the API)."""
    return api._load_own_attempt(attempt_id[:64])


def _quiz(item_id: str, action: str) -> tuple[User, Item, Course]:
    return api._load_quiz(item_id[:64], action)


def _remaining(attempt: Attempt, now: datetime) -> int | None:
    """Whole seconds left before the attempt's deadline (None: untimed)."""
    if attempt.deadline is None:
        return None
    return max(0, int((attempt.deadline - now).total_seconds()))


def responses_from_form(layout: list[dict[str, Any]], form: MultiDict[str, str]) -> dict[str, Any]:
    """Read the attempt form back into responses, in the shapes the API takes.

    Empty inputs are "not answered" (None).  Values are passed on as sent;
    :func:`plugins.quiz.attempts.check_responses` refuses what does not fit.
    """
    out: dict[str, Any] = {}
    for view in layout:
        qid = view["id"]
        kind = view["type"]
        name = f"q-{qid}"
        if kind == "description":
            continue
        if kind in ("single_choice", "numeric", "short_answer", "essay"):
            value = form.get(name, "")
            out[qid] = value if value.strip() else None
        elif kind == "true_false":
            value = form.get(name, "")
            out[qid] = {"true": True, "false": False}.get(value, value or None)
        elif kind == "multiple_response" or kind == "ordering":
            out[qid] = form.getlist(name) or None
        elif kind == "cloze":
            gaps = {g["id"]: form.get(f"{name}-{g['id']}", "") for g in view["gaps"]}
            filled = {k: v for k, v in gaps.items() if v.strip()}
            out[qid] = filled or None
        elif kind == "matching":
            pairs = {p["id"]: form.get(f"{name}-{p['id']}", "") for p in view["prompts"]}
            chosen = {k: v for k, v in pairs.items() if v}
            out[qid] = chosen or None
    return out


def _apply_move(responses: dict[str, Any], move: str) -> str | None:
    """Move one ordering item up or down (``"<question>:<index>:up"``); return the question."""
    parts = move.split(":")
    index = whole_number(parts[1]) if len(parts) == 3 else None
    if index is None or parts[2] not in ("up", "down"):
        return None
    qid, direction = parts[0], parts[2]
    order = responses.get(qid)
    if not isinstance(order, list) or not 0 <= index < len(order):
        return None
    other = index - 1 if direction == "up" else index + 1
    if 0 <= other < len(order):
        order[index], order[other] = order[other], order[index]
    return qid


def _errors_by_question(problem: Problem) -> dict[str, str]:
    out: dict[str, str] = {}
    for error in problem.extra.get("errors", []):
        loc = str(error.get("loc", ""))
        if loc.startswith("answers."):
            out[loc.split(".", 1)[1]] = str(error.get("msg", ""))
    return out


def _choice_text(options: list[dict[str, str]], choice_id: Any) -> str:
    for option in options:
        if option["id"] == choice_id:
            return option["text"]
    return str(choice_id)


def describe(view: dict[str, Any], response: Any) -> str:
    """A response (or a correct response) in words, for the result page."""
    if response is None:
        return gettext("Not answered")
    kind = view["type"]
    if kind == "single_choice":
        return _choice_text(view["choices"], response)
    if kind == "multiple_response":
        return "; ".join(_choice_text(view["choices"], c) for c in response)
    if kind == "true_false":
        return gettext("True") if response else gettext("False")
    if kind == "ordering":
        return " → ".join(_choice_text(view["items"], i) for i in response)
    if kind == "matching":
        prompts = {p["id"]: p["text"] for p in view["prompts"]}
        return "; ".join(
            f"{prompts.get(p, p)}: {_choice_text(view['answers'], a)}" for p, a in response.items()
        )
    if kind == "cloze":
        parts = []
        for n, gap in enumerate(view["gaps"], 1):
            value = response.get(gap["id"]) if isinstance(response, dict) else None
            if gap["type"] == "choice":
                value = _choice_text(gap.get("choices", []), value) if value is not None else None
            parts.append(f"[{n}] {_words(value)}")
        return "; ".join(parts)
    return _words(response)


def _words(value: Any) -> str:
    if value is None:
        return gettext("Not answered")
    if isinstance(value, list):
        return " / ".join(_words(v) for v in value)
    if isinstance(value, dict) and "low" in value and "high" in value:
        if value["low"] == value["high"]:
            return f"{value['low']:g}"
        return f"{value['low']:g} to {value['high']:g}"
    return str(value)


def cloze_parts(view: dict[str, Any]) -> list[tuple[str, Any]]:
    """A cloze text cut at its gap markers: ``("text", Markup)`` and ``("gap", gap view)``."""
    html = rich(view["text"], view.get("text_format", "plain"))
    parts: list[tuple[str, Any]] = []
    last = 0
    gaps = view["gaps"]
    text = str(html)
    for match in GAP_MARKER.finditer(text):
        parts.append(("text", Markup(text[last : match.start()])))  # noqa: S704 - a slice of the sanitised text
        number = int(match.group(1))
        if 1 <= number <= len(gaps):
            parts.append(("gap", (number, gaps[number - 1])))
        last = match.end()
    parts.append(("text", Markup(text[last:])))  # noqa: S704 - a slice of the sanitised text
    return parts


def _template_globals() -> dict[str, Any]:
    return {"rich": rich, "describe": describe, "cloze_parts": cloze_parts}


@bp.app_context_processor
def _quiz_helpers() -> dict[str, Any]:
    if request.blueprint != bp.name:
        return {}
    return _template_globals()


# ---------------------------------------------------------------- learner: start and history


@bp.post("/learn/<item_id>/quiz/start")
def start(item_id: str) -> Page:
    """Start an attempt, or resume the one in progress, and show it."""
    if _user() is None:
        return _login_redirect()
    user, item, course = _quiz(item_id, "quiz.attempt")
    sess = db.session()
    try:
        with svc.writing(sess):
            started, outcome = svc.start(sess, user, item, course, utcnow())
            if started.created:
                api.jobs.schedule_close(sess, started.attempt, utcnow())
            attempt_id = started.attempt.public_id
            api._finish(outcome)
    except Problem as exc:
        sess.rollback()
        if exc.status == 409:
            flash(str(exc.detail), "error")
            return redirect(url_for("learner.learn", item_id=item.public_id))
        raise
    return redirect(url_for("quiz_web.attempt_page", attempt_id=attempt_id))


@bp.get("/learn/<item_id>/quiz/attempts")
def history(item_id: str) -> Page:
    """The learner's attempts at a quiz, newest first, with links to their results."""
    if _user() is None:
        return _login_redirect()
    user, item, course = _quiz(item_id, "quiz.attempt")
    rows = _history_rows(db.session(), user, item)
    return render_template(
        "quiz/history.html", item=item, course=course, rows=rows, cfg=parse_config(item.config)
    )


def _history_rows(sess: Session, user: User, item: Item) -> list[dict[str, Any]]:
    cfg = parse_config(item.config)
    attempts = list(
        sess.scalars(
            select(Attempt)
            .where(Attempt.user_id == user.id, Attempt.item_id == item.id)
            .order_by(Attempt.number.desc())
        )
    )
    now = utcnow()
    return [
        {
            "attempt": a,
            "review": svc.review_open(cfg, a, len(attempts), now),
            "percent": None
            if a.status != "graded"
            else round(100 * (a.score or 0) / a.max_score, 1)
            if a.max_score
            else 100.0,
        }
        for a in attempts
    ]


# ---------------------------------------------------------------- learner: the attempt


def _render_attempt(
    sess: Session,
    attempt: Attempt,
    item: Item,
    course: Course,
    shown: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    alert: str | None = None,
    status: int = 200,
) -> tuple[str, int]:
    cfg = parse_config(item.config)
    answers = svc.answers_of(sess, attempt)
    stored = {qid: a.response for qid, a in answers.items()}
    values = dict(stored)
    if shown is not None:
        values.update(shown)
    graded = api._immediate(attempt, cfg, answers)
    # An ordering not yet answered is shown (and sent) in its shuffled order.
    for view in attempt.layout:
        if view["type"] == "ordering" and not values.get(view["id"]):
            values[view["id"]] = [i["id"] for i in view["items"]]
    return (
        render_template(
            "quiz/attempt.html",
            attempt=attempt,
            item=item,
            course=course,
            cfg=cfg,
            questions=attempt.layout,
            values=values,
            graded=graded,
            errors=errors or {},
            alert=alert,
            remaining=_remaining(attempt, utcnow()),
            saved_at=max(
                (a.autosaved_at for a in answers.values() if a.autosaved_at), default=None
            ),
            **_template_globals(),
        ),
        status,
    )


@bp.get("/quiz/attempts/<attempt_id>")
def attempt_page(attempt_id: str) -> Page:
    """The attempt in progress: every question on one page (an overdue one is graded first)."""
    if _user() is None:
        return _login_redirect()
    user, attempt, item, course = _own_attempt(attempt_id)
    sess = db.session()
    now = utcnow()
    if attempt.status == "in_progress" and svc.overdue(attempt, now):
        outcome = svc.finish(sess, attempt, user, item, course, now)
        api._finish(outcome)
        flash(gettext("Your time was up: the attempt was submitted with your saved answers."))
    if attempt.status != "in_progress":
        return redirect(url_for("quiz_web.result", attempt_id=attempt.public_id))
    return _render_attempt(sess, attempt, item, course)


def _wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"


@bp.post("/quiz/attempts/<attempt_id>")
def save(attempt_id: str) -> Page:
    """Save the form's answers; then stay, go on to the submit confirmation, or move an item.

    The answers are stored all or none: a refused save shows the page again
    with what was sent still filled in and says why.
    """
    if _user() is None:
        return _login_redirect()
    user, attempt, item, course = _own_attempt(attempt_id)
    sess = db.session()
    sess.refresh(attempt, ["layout"])
    shown = responses_from_form(attempt.layout, request.form)
    moved = _apply_move(shown, request.form.get("move", ""))
    action = request.form.get("action", "save")
    stored = {qid: a for qid, a in svc.answers_of(sess, attempt).items()}
    changed = {
        qid: value
        for qid, value in shown.items()
        if (stored[qid].response if qid in stored else None) != value
        and not (
            qid in stored and stored[qid].score is not None and attempt.status == "in_progress"
        )
    }
    now = utcnow()
    try:
        with svc.writing(sess), api._concurrent_change():
            api._lock(sess, attempt)
            if changed:
                svc.save(sess, attempt, user, item, course, changed, now)
            elif attempt.status != "in_progress":
                raise svc.AttemptClosed(
                    "the attempt was submitted; its answers can no longer change"
                )
            sess.commit()
    except svc.AttemptClosed:
        sess.rollback()
        if _wants_json():
            return jsonify(saved=False, message=gettext("This attempt was already submitted.")), 409
        flash(gettext("This attempt was already submitted."), "error")
        return redirect(url_for("quiz_web.result", attempt_id=attempt.public_id))
    except (svc.DeadlinePassed, svc.AnswersInvalid, svc.AnswerLocked, api.AttemptBusy) as exc:
        sess.rollback()
        log.info("quiz_page=save_refused attempt=%s reason=%s", attempt.public_id, exc.type_slug)
        errors = _errors_by_question(exc)
        if _wants_json():
            return jsonify(saved=False, message=str(exc.detail), errors=errors), exc.status
        if isinstance(exc, svc.DeadlinePassed):
            message = gettext(
                "Time is up: these answers were not saved. Your earlier saved answers count."
            )
        else:
            message = gettext("Your answers were not saved: %(reason)s", reason=exc.detail)
        sess.refresh(attempt)
        return _render_attempt(sess, attempt, item, course, shown, errors, message, exc.status)
    if not changed and svc.overdue(attempt, now):
        # Nothing new to store: the attempt page grades the overdue attempt.
        if _wants_json():
            return jsonify(saved=False, message=gettext("Time is up.")), 409
        return redirect(url_for("quiz_web.attempt_page", attempt_id=attempt.public_id))
    if _wants_json():
        return jsonify(saved=True, saved_at=now.isoformat(), questions=sorted(changed))
    if action == "submit":
        return redirect(url_for("quiz_web.confirm", attempt_id=attempt.public_id))
    if moved is not None:
        return redirect(
            url_for("quiz_web.attempt_page", attempt_id=attempt.public_id) + f"#q-{moved}"
        )
    flash(gettext("Your answers are saved."), "success")
    return redirect(url_for("quiz_web.attempt_page", attempt_id=attempt.public_id))


@bp.get("/quiz/attempts/<attempt_id>/submit")
def confirm(attempt_id: str) -> Page:
    """Ask before submitting: how many questions are answered, and that answers then lock."""
    if _user() is None:
        return _login_redirect()
    _, attempt, item, course = _own_attempt(attempt_id)
    if attempt.status != "in_progress":
        return redirect(url_for("quiz_web.result", attempt_id=attempt.public_id))
    sess = db.session()
    answers = svc.answers_of(sess, attempt)
    questions = [v for v in attempt.layout if v["type"] != "description"]
    answered = sum(
        1 for v in questions if v["id"] in answers and answers[v["id"]].response is not None
    )
    return render_template(
        "quiz/confirm.html",
        attempt=attempt,
        item=item,
        course=course,
        answered=answered,
        total=len(questions),
        remaining=_remaining(attempt, utcnow()),
    )


@bp.post("/quiz/attempts/<attempt_id>/submit")
def submit(attempt_id: str) -> Page:
    """Submit the attempt with its saved answers and show the result."""
    if _user() is None:
        return _login_redirect()
    user, attempt, item, course = _own_attempt(attempt_id)
    sess = db.session()
    with svc.writing(sess), api._concurrent_change():
        api._lock(sess, attempt)
        outcome = svc.submit(sess, attempt, user, item, course, None, utcnow())
        api._finish(outcome)
    return redirect(url_for("quiz_web.result", attempt_id=attempt.public_id))


@bp.get("/quiz/attempts/<attempt_id>/result")
def result(attempt_id: str) -> Page:
    """The submitted attempt's score and, when the review policy allows, its review."""
    if _user() is None:
        return _login_redirect()
    user, attempt, item, course = _own_attempt(attempt_id)
    if attempt.status == "in_progress":
        return redirect(url_for("quiz_web.attempt_page", attempt_id=attempt.public_id))
    sess = db.session()
    cfg = parse_config(item.config)
    review = api._review_open(sess, attempt, item, cfg)
    questions = []
    if review:
        sess.refresh(attempt, ["layout"])
        questions = api._review(sess, attempt, item, user, full=False).questions
    return render_template(
        "quiz/result.html",
        attempt=attempt,
        item=item,
        course=course,
        cfg=cfg,
        review=review,
        questions=questions,
        percent=_percent(attempt),
        **_template_globals(),
    )


def _percent(attempt: Attempt) -> float | None:
    if attempt.status != "graded":
        return None
    if not attempt.max_score:
        return 100.0
    return round(100 * (attempt.score or 0.0) / attempt.max_score, 1)


# ---------------------------------------------------------------- staff


def _staff_course(course_id: str, action: str) -> tuple[User, Course]:
    return api.load_course(course_id[:64], action)


@bp.get("/teach/courses/<course_id>/quiz/grading")
def grading(course_id: str) -> Page:
    """Essay answers waiting for a mark, oldest submission first."""
    if _user() is None:
        return _login_redirect()
    _, course = _staff_course(course_id, "quiz.grade")
    return _render_grading(course)


#: Answers per page of the grading queue.
GRADING_PAGE = 50


def _render_grading(
    course: Course, errors: dict[str, str] | None = None, status: int = 200
) -> tuple[str, int]:
    sess = db.session()
    cursor = request.args.get("after", "")[:100]
    try:
        after = decode_cursor(cursor)
    except Problem:
        after = None
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
    rows = list(sess.execute(stmt.limit(GRADING_PAGE + 1)))
    next_url = None
    if len(rows) > GRADING_PAGE:
        rows = rows[:GRADING_PAGE]
        next_url = url_for(
            "quiz_web.grading", course_id=course.public_id, after=encode_cursor(rows[-1][0].id)
        )
    entries = []
    for answer, attempt, item, learner in rows:
        question = parse_question(attempt.snapshot[answer.question_id])
        entries.append(
            {
                "key": f"{attempt.public_id}-{answer.question_id}",
                "attempt": attempt,
                "item": item,
                "learner": learner,
                "question": question,
                "grader_info": question.grader_info if isinstance(question, Essay) else "",
                "response": answer.response,
            }
        )
    return (
        render_template(
            "quiz/grading.html",
            course=course,
            entries=entries,
            next_url=next_url,
            first_url=url_for("quiz_web.grading", course_id=course.public_id)
            if after is not None
            else None,
            # the page's own cursor: a mark sent from it comes back to it
            after=cursor if after is not None else None,
            errors=errors or {},
            values=request.form if request.method == "POST" else {},
            rich=rich,
        ),
        status,
    )


@bp.post("/teach/quiz/attempts/<attempt_id>/questions/<question_id>/mark")
def mark(attempt_id: str, question_id: str) -> Page:
    """Record a mark (points) and feedback on an essay answer."""
    if _user() is None:
        return _login_redirect()
    grader, attempt, item, course = api._load_staff_attempt(attempt_id[:64], "quiz.grade")
    sess = db.session()
    key = f"{attempt.public_id}-{question_id}"
    feedback = request.form.get("feedback", "")
    points = decimal_number(request.form.get("points", ""))
    if points is None:
        return _render_grading(course, {key: gettext("Enter the points as a number.")}, 422)
    if len(feedback) > 10_000:
        return _render_grading(course, {key: gettext("The feedback is too long.")}, 422)
    learner = sess.get_one(User, attempt.user_id)
    try:
        api._lock(sess, attempt)
        outcome = svc.mark(
            sess,
            grader,
            attempt,
            learner,
            item,
            course,
            question_id[:64],
            points,
            feedback,
            utcnow(),
        )
    except (svc.NotGradable, svc.AttemptClosed) as exc:
        sess.rollback()
        return _render_grading(course, {key: str(exc.detail)}, exc.status)
    api._finish(outcome)
    flash(gettext("Mark saved for %(name)s.", name=learner.display_name), "success")
    # Back to the page the mark was sent from (its cursor, if it is one).
    cursor = request.args.get("after", "")[:100]
    try:
        after = cursor if decode_cursor(cursor) is not None else None
    except Problem:
        after = None
    return redirect(url_for("quiz_web.grading", course_id=course.public_id, after=after))


@bp.get("/teach/courses/<course_id>/quiz/gradebook")
def gradebook(course_id: str) -> Page:
    """Active learners by quizzes: best and last graded score, attempts; with a CSV link."""
    if _user() is None:
        return _login_redirect()
    _, course = _staff_course(course_id, "quiz.gradebook")
    book = api._gradebook(db.session(), course)
    return render_template("quiz/gradebook.html", course=course, book=book)


@bp.get("/teach/quizzes/<item_id>/analysis")
def analysis_page(item_id: str) -> Page:
    """Difficulty and discrimination of each question of a quiz."""
    if _user() is None:
        return _login_redirect()
    _, item, course = _quiz(item_id, "quiz.analysis")
    report = api.analysis_of(db.session(), item)
    return render_template("quiz/analysis.html", course=course, item=item, report=report)


@bp.get("/teach/courses/<course_id>/quiz/bank")
def bank(course_id: str) -> Page:
    """The course's question bank, the GIFT import form and the export link."""
    if _user() is None:
        return _login_redirect()
    user, course = _staff_course(course_id, "quiz.bank.view")
    return _render_bank(user, course)


#: Questions per page of the bank.
BANK_PAGE = 50


def _bank_filters() -> dict[str, str]:
    args = request.args
    return {
        "q": args.get("q", "").strip()[:100],
        "type": args.get("type", "").strip()[:30],
        "category": args.get("category", "").strip().strip("/")[:255],
        "tag": args.get("tag", "").strip()[:50],
    }


def _page_number() -> int:
    number = whole_number(request.args.get("page"))
    return max(1, number) if number is not None else 1


def _render_bank(
    user: User,
    course: Course,
    problems: list[dict[str, Any]] | None = None,
    message: str | None = None,
    status: int = 200,
) -> tuple[str, int]:
    from plugins.quiz.web_bank import TYPE_LABELS

    filters = _bank_filters()
    number = _page_number()
    sess = db.session()
    # Only the listed columns: bodies are large JSON.
    columns = select(
        BankQuestion.id,
        BankQuestion.public_id,
        BankQuestion.title,
        BankQuestion.type,
        BankQuestion.category,
        BankQuestion.tags,
        BankQuestion.version,
    )
    stmt = api.bank_filtered(
        columns, course, qtype=filters["type"], category=filters["category"], q=filters["q"]
    ).order_by(BankQuestion.category, BankQuestion.id)
    shown: list[Any]
    if filters["tag"]:
        # Tags are a JSON list, matched here rather than in dialect-specific SQL.
        rows = [r for r in sess.execute(stmt) if filters["tag"] in (r.tags or [])]
        total = len(rows)
        pages = max(1, -(-total // BANK_PAGE))
        number = min(number, pages)
        shown = rows[(number - 1) * BANK_PAGE : number * BANK_PAGE]
    else:
        total = sess.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
        pages = max(1, -(-total // BANK_PAGE))
        number = min(number, pages)
        shown = list(sess.execute(stmt.offset((number - 1) * BANK_PAGE).limit(BANK_PAGE)))
    in_course = BankQuestion.course_id == course.id
    bank_size = sess.scalar(select(func.count(BankQuestion.id)).where(in_course)) or 0
    categories = list(
        sess.scalars(
            select(BankQuestion.category)
            .where(in_course, BankQuestion.category != "")
            .distinct()
            .order_by(BankQuestion.category)
        )
    )
    tags = sorted(
        {t for row in sess.scalars(select(BankQuestion.tags).where(in_course)) for t in row or []}
    )
    args: dict[str, Any] = {k: v for k, v in filters.items() if v}
    return (
        render_template(
            "quiz/bank.html",
            course=course,
            rows=shown,
            total=total,
            per_page=BANK_PAGE,
            bank_size=bank_size,
            filters=filters,
            categories=categories,
            tags=tags,
            types=list(TYPE_LABELS.items()),
            type_labels=TYPE_LABELS,
            page=number,
            pages=pages,
            prev_url=url_for("quiz_web.bank", course_id=course.public_id, page=number - 1, **args)
            if number > 1
            else None,
            next_url=url_for("quiz_web.bank", course_id=course.public_id, page=number + 1, **args)
            if number < pages
            else None,
            can_edit=rbac.can(user, "quiz.bank.edit", course),
            problems=problems or [],
            message=message,
        ),
        status,
    )


@bp.post("/teach/courses/<course_id>/quiz/bank/import")
def import_gift(course_id: str) -> Page:
    """Import a GIFT file; list each question that could not be read with its line."""
    if _user() is None:
        return _login_redirect()
    user, course = _staff_course(course_id, "quiz.bank.edit")
    upload = request.files.get("file")
    category = request.form.get("category", "").strip()[:200]
    if upload is None or not upload.filename:
        return _render_bank(
            user, course, message=gettext("Choose a GIFT file to import."), status=422
        )
    data = upload.stream.read(MAX_GIFT_UPLOAD + 1)
    if len(data) > MAX_GIFT_UPLOAD:
        return _render_bank(
            user, course, message=gettext("The file is larger than 2 MB."), status=413
        )
    try:
        parsed = gift.parse_gift(gift.decode_gift(data))
    except (gift.GiftNotText, gift.GiftTooLarge) as exc:
        return _render_bank(user, course, message=str(exc), status=422)
    problems = [{"line": e.line, "title": e.title, "message": e.message} for e in parsed.errors]
    if not parsed.items:
        message = gettext("No question could be read from the file; nothing was imported.")
        return _render_bank(user, course, problems, message, 422)
    sess = db.session()
    try:
        api.import_questions(
            sess, course, [e.question for e in parsed.items], category=category, actor=user
        )
    except api.QuestionRejected as exc:
        sess.rollback()
        return _render_bank(user, course, problems, str(exc.detail), 422)
    sess.commit()
    log.info(
        "quiz_gift=imported course=%s questions=%d skipped=%d",
        course.public_id,
        len(parsed.items),
        len(problems),
    )
    message = gettext("Imported %(count)d question(s).", count=len(parsed.items))
    if problems:
        flash(message, "success")
        return _render_bank(user, course, problems, gettext("Some questions were skipped:"))
    flash(message, "success")
    return redirect(url_for("quiz_web.bank", course_id=course.public_id))


# ---------------------------------------------------------------- slots


def quiz_links(user: User | None, item: Item | None, course: Course | None) -> Markup | None:
    """The quiz's part of the learn view: start or resume, history; staff links."""
    if user is None or course is None:
        return None
    parts: list[Markup] = []
    if item is not None and item.type == "quiz":
        if rbac.can(user, "quiz.attempt", course) and course.status == "published":
            sess = db.session()
            rows = _history_rows(sess, user, item)
            parts.append(
                Markup(  # noqa: S704 - rendered by autoescaping Jinja
                    render_template(
                        "quiz/_learn.html",
                        item=item,
                        course=course,
                        rows=rows,
                        cfg=parse_config(item.config),
                    )
                )
            )
        if rbac.can(user, "quiz.analysis", course):
            parts.append(
                Markup('<p><a href="{}">{}</a></p>').format(
                    url_for("quiz_web.analysis_page", item_id=item.public_id),
                    gettext("Item analysis of this quiz"),
                )
            )
    return Markup("").join(parts) if parts else None


def staff_links(user: User | None, course: Course | None) -> Markup | None:
    """Links to the quiz staff pages in a course's sidebar."""
    if user is None or course is None or not rbac.can(user, "quiz.grade", course):
        return None
    return Markup(render_template("quiz/_staff_links.html", course=course))  # noqa: S704 - rendered by autoescaping Jinja


def gradebook_csv_url(course: Course) -> str:
    """The API's CSV export of the gradebook."""
    return url_for("quiz_api.gradebook", course_id=course.public_id, format="csv")


def export_url(course: Course) -> str:
    """The API's GIFT download of the bank."""
    return url_for("quiz_api.export_gift", course_id=course.public_id, format="gift")


@bp.app_template_global("quiz_gradebook_csv_url")
def _gradebook_csv_url(course: Course) -> str:
    return gradebook_csv_url(course)


@bp.app_template_global("quiz_export_url")
def _export_url(course: Course) -> str:
    return export_url(course)


def asset(name: str) -> str:
    """URL of one of the plugin's static files (the content changes bust the cache)."""
    return url_for("quiz_web.static", filename=name, v=_VERSION)


def _static_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(STATIC.glob("*")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


STATIC = Path(__file__).parent / "static"
_VERSION = _static_version()


@bp.app_template_global("quiz_asset")
def _asset(name: str) -> str:
    return asset(name)


# The bank editor's pages register on this blueprint.
from plugins.quiz import web_bank  # noqa: E402,F401
