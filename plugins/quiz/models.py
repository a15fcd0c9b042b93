"""The quiz plugin's tables: the per-course question bank, attempts and their answers.

Declared on :class:`core.db.Base`; the Alembic branch ``quiz`` in
``plugins/quiz/migrations/versions`` creates them.  A quiz itself is a core
item of content type ``quiz`` whose config holds its settings
(:class:`plugins.quiz.content.QuizConfig`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON
from sqlalchemy import Boolean
from sqlalchemy import Float
from sqlalchemy import ForeignKey
from sqlalchemy import Index
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import Text
from sqlalchemy import UniqueConstraint
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from core.db import Base
from core.db import new_public_id
from core.db import utcnow

__all__ = ["ATTEMPT_STATES", "Answer", "Attempt", "BankQuestion"]

ATTEMPT_STATES = ("in_progress", "awaiting_grading", "graded")
"""``in_progress`` until submitted; then ``graded``, or ``awaiting_grading`` while an
essay waits for a grader."""


class BankQuestion(Base):
    """One question of a course's question bank.

    ``body`` is the question as :func:`plugins.quiz.questions.dump_question`
    writes it, answer key included; its ``id`` is this row's ``public_id``.
    ``type``, ``title``, ``category`` and ``tags`` are copied out of it for
    filtering.  Each edit bumps ``version``.
    """

    __tablename__ = "quiz_questions"
    __table_args__ = (Index("ix_quiz_questions_course_id_category", "course_id", "category"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(30))
    title: Mapped[str] = mapped_column(String(255), default="")
    category: Mapped[str] = mapped_column(String(255), default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    body: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Attempt(Base):
    """A learner's attempt at a quiz item.

    The questions drawn, their order and the order of their choices are
    frozen when the attempt starts: ``layout`` holds what the learner is
    shown (learner views only), ``snapshot`` the questions with their answer
    keys as they were then, so editing the bank never changes a running or
    finished attempt by itself; an instructor's explicit regrade
    (:mod:`plugins.quiz.regrade`) re-grades submitted ones with the current
    key.  ``score`` and ``max_score`` are in points.
    """

    __tablename__ = "quiz_attempts"
    __table_args__ = (
        UniqueConstraint("item_id", "user_id", "number"),
        Index("ix_quiz_attempts_course_id_status", "course_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    """1 for the learner's first attempt at this quiz, 2 for the second..."""
    status: Mapped[str] = mapped_column(String(20), default="in_progress")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline: Mapped[datetime | None]
    """Answers are refused after this (plus the grace period); None: no time limit."""
    submitted_at: Mapped[datetime | None]
    question_ids: Mapped[list[str]] = mapped_column(JSON)
    layout: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    snapshot: Mapped[dict[str, Any]]
    score: Mapped[float | None] = mapped_column(Float)
    max_score: Mapped[float] = mapped_column(Float, default=0.0)
    needs_manual_grading: Mapped[bool] = mapped_column(Boolean, default=False)
    passed: Mapped[bool | None] = mapped_column(Boolean)


class Answer(Base):
    """A learner's response to one question of an attempt, and its grade.

    ``score`` is a fraction of the question's points (0..1); None until the
    attempt is submitted, and for an essay until a grader marks it.
    """

    __tablename__ = "quiz_answers"
    __table_args__ = (UniqueConstraint("attempt_id", "question_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("quiz_attempts.id", ondelete="CASCADE"))
    question_id: Mapped[str] = mapped_column(String(64))
    response: Mapped[Any | None] = mapped_column(JSON)
    autosaved_at: Mapped[datetime | None]
    score: Mapped[float | None] = mapped_column(Float)
    needs_grading: Mapped[bool] = mapped_column(Boolean, default=False)
    feedback: Mapped[str] = mapped_column(Text, default="")
    """A grader's comment to the learner."""
    graded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    graded_at: Mapped[datetime | None]
