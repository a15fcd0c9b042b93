"""The quiz plugin's part of a course export, import and copy: the course's question bank.

A quiz item's config names bank questions by id (:class:`plugins.quiz.content.QuizConfig`),
so the bank travels with the course: ``export_course_data`` gives every
question of the course's bank, answer key included (the document is for the
course's instructors), as ``{"questions": [<question>, ...]}``, each as
:func:`plugins.quiz.questions.dump_question` writes it, its ``id`` the
exporting bank's.  ``import_course_data`` validates each one like a new bank
question, stores it in the new course's bank under a new id and returns
``{"questions": {old id: new id}}``, which :meth:`QuizType.import_config
<plugins.quiz.content.QuizType.import_config>` uses to point the imported
quizzes at the new questions.  Pools name tags and categories, which the
questions keep.  Never attempts, answers or grades.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from core import db
from core.course_transfer import CourseDataInvalid
from core.models import Course
from plugins.quiz.models import BankQuestion
from plugins.quiz.questions import QuestionInvalid
from plugins.quiz.questions import dump_question
from plugins.quiz.questions import parse_question

#: Most questions an imported bank may hold.
MAX_IMPORTED_QUESTIONS = 10_000

log = logging.getLogger(__name__)


def export_course_data(course: Course) -> dict[str, Any] | None:
    """The course's question bank, oldest question first; None when it is empty."""
    rows = db.session().scalars(
        select(BankQuestion).where(BankQuestion.course_id == course.id).order_by(BankQuestion.id)
    )
    questions = [dict(row.body, id=row.public_id) for row in rows]
    return {"questions": questions} if questions else None


def import_course_data(course: Course, data: dict[str, Any]) -> dict[str, Any]:
    """Add the exported questions to ``course``'s bank under new ids (flushed).

    :return: ``{"questions": {old id: new id}}``.
    :raise CourseDataInvalid: the section is malformed or a question does not
        validate (each problem located as ``questions.<n>...``); nothing is added.
    """
    questions = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(questions, list):
        raise CourseDataInvalid("the quiz section needs a list of questions")
    if len(questions) > MAX_IMPORTED_QUESTIONS:
        raise CourseDataInvalid(
            f"a question bank import holds at most {MAX_IMPORTED_QUESTIONS} questions"
        )
    mapping: dict[str, str] = {}
    rows: list[BankQuestion] = []
    errors: list[dict[str, Any]] = []
    for n, body in enumerate(questions):
        old = body.get("id") if isinstance(body, dict) else None
        if not isinstance(old, str) or not old:
            errors.append({"loc": f"questions.{n}", "msg": "a question with a text id"})
            continue
        if old in mapping:
            errors.append({"loc": f"questions.{n}.id", "msg": f"question id {old} repeats"})
            continue
        new_id = db.new_public_id()
        try:
            question = parse_question({**body, "id": new_id})
        except QuestionInvalid as exc:
            errors.extend({"loc": f"questions.{n}.{e['loc']}", "msg": e["msg"]} for e in exc.errors)
            continue
        mapping[old] = new_id
        rows.append(
            BankQuestion(
                public_id=new_id,
                course_id=course.id,
                type=question.type,
                title=question.title,
                category=question.category,
                tags=list(question.tags),
                body=dump_question(question),
            )
        )
    if errors:
        raise CourseDataInvalid("the question bank does not validate", errors)
    sess = db.session()
    sess.add_all(rows)
    sess.flush()
    log.info("quiz_questions=imported count=%d course=%s", len(rows), course.public_id)
    return {"questions": mapping}
