"""The ``quiz`` content type: a quiz is a course item whose config holds its settings.

The config names the questions (from the course's question bank) and how
attempts work; it never holds an answer key, and what a learner sees of it
(:meth:`QuizType.learner_view`) leaves out even which bank questions it uses.
Progress on a quiz comes only from graded attempts (stored through
:func:`core.progress.record_result`); a learner cannot report it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated
from typing import Any
from typing import ClassVar
from typing import Literal
from typing import Self

from flask_babel import gettext
from markupsafe import Markup
from pydantic import AwareDatetime
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationError
from pydantic import model_validator
from sqlalchemy import select

from core import db
from core.content import ContentType
from core.content import CourseRef
from core.content import ImportContext
from core.content import ItemConfigInvalid
from core.content import ItemView
from core.content import ProgressReportInvalid
from core.content import ProgressState
from plugins.quiz.models import BankQuestion
from plugins.quiz.questions import Category
from plugins.quiz.questions import Tag

log = logging.getLogger(__name__)

#: Most questions a quiz may present (fixed ones plus pool draws).
MAX_QUIZ_QUESTIONS = 200

#: Settings of one run of a course, left out of a course export.
RUN_DATES = ("open_at", "close_at")

ReviewPolicy = Literal["immediately", "after_submit", "after_close"]
QuestionRef = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class Pool(BaseModel):
    """Draw ``count`` random questions from the bank questions with ``tag`` or in ``category``.

    A category includes its sub-categories (``Algebra`` covers ``Algebra/Linear``).
    """

    model_config = ConfigDict(extra="forbid")

    tag: Tag | None = None
    category: Category | None = None
    count: int = Field(ge=1, le=MAX_QUIZ_QUESTIONS)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.tag is None) == (self.category is None):
            raise ValueError("a pool names either a tag or a category")
        return self


class QuizConfig(BaseModel):
    """A quiz's settings (an item's ``config``).

    ``attempts_allowed`` 0 means unlimited.  ``passing_score`` is a fraction
    of the quiz's points (0.5 = 50 %).  ``review`` says when a learner sees
    their graded answers and the correct ones: ``immediately`` (each answer
    is graded, shown with its feedback and locked as it is saved),
    ``after_submit``, or ``after_close`` (after ``close_at``; without one,
    once the learner has used every allowed attempt).
    """

    model_config = ConfigDict(extra="forbid")

    attempts_allowed: int = Field(
        default=1, ge=0, le=100, title="Attempts allowed", description="0 for unlimited."
    )
    time_limit_seconds: int | None = Field(
        default=None,
        ge=10,
        le=7 * 24 * 3600,
        title="Time limit (seconds)",
        description="Enforced by the server; empty for none.",
    )
    open_at: AwareDatetime | None = Field(
        default=None,
        title="Opens at",
        description="ISO 8601 with a time zone, e.g. 2030-01-31T09:00Z.",
    )
    close_at: AwareDatetime | None = Field(
        default=None, title="Closes at", description="Attempts in progress end then too."
    )
    shuffle_questions: bool = Field(default=False, title="Shuffle questions")
    shuffle_choices: bool = Field(default=True, title="Shuffle choices")
    questions: list[QuestionRef] = Field(
        default_factory=list,
        max_length=MAX_QUIZ_QUESTIONS,
        title="Questions",
        description="Ids of questions from the course's bank, in order.",
    )
    pools: list[Pool] = Field(
        default_factory=list,
        max_length=20,
        title="Random pools",
        description='Draws per attempt, e.g. [{"tag": "week1", "count": 5}].',
    )
    passing_score: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        title="Passing score",
        description="A fraction of the points: 0.5 is 50 %.",
    )
    review: ReviewPolicy = Field(
        default="after_submit",
        title="Show answers",
        description="When learners see their graded answers and the correct ones.",
    )
    show_feedback: bool = Field(default=True, title="Show feedback in the review")
    show_correct_answers: bool = Field(default=True, title="Show correct answers in the review")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.questions and not self.pools:
            raise ValueError("a quiz needs at least one question or pool")
        if len(set(self.questions)) != len(self.questions):
            raise ValueError("questions must not repeat")
        if len(self.questions) + sum(p.count for p in self.pools) > MAX_QUIZ_QUESTIONS:
            raise ValueError(f"a quiz presents at most {MAX_QUIZ_QUESTIONS} questions")
        if self.open_at and self.close_at and self.close_at <= self.open_at:
            raise ValueError("close_at must be after open_at")
        return self


def parse_config(config: dict[str, Any]) -> QuizConfig:
    """The stored config of a quiz item as a model (it was validated when saved)."""
    return QuizConfig.model_validate(config)


def pool_filter(course_id: int, pool: Pool) -> Any:
    """The SQL condition selecting a pool's bank questions."""
    cond = BankQuestion.course_id == course_id
    if pool.category is not None:
        cat = pool.category.strip("/")
        return cond & ((BankQuestion.category == cat) | BankQuestion.category.startswith(cat + "/"))
    return cond


def pool_members(sess: Any, course_id: int, pool: Pool) -> list[BankQuestion]:
    """The bank questions a pool draws from, oldest first (tags are matched in Python:
    they are a JSON list, which SQLite and PostgreSQL query differently)."""
    rows = sess.scalars(
        select(BankQuestion).where(pool_filter(course_id, pool)).order_by(BankQuestion.id)
    )
    if pool.tag is None:
        return list(rows)
    return [q for q in rows if pool.tag in (q.tags or [])]


def check_against_bank(sess: Any, course_id: int, config: QuizConfig) -> list[dict[str, str]]:
    """Problems of ``config`` against the course's bank: question ids the bank does not
    hold, and pools holding fewer questions (besides the fixed ones) than they draw."""
    errors: list[dict[str, str]] = []
    if config.questions:
        found = set(
            sess.scalars(
                select(BankQuestion.public_id).where(
                    BankQuestion.course_id == course_id,
                    BankQuestion.public_id.in_(config.questions),
                )
            )
        )
        for n, qid in enumerate(config.questions):
            if qid not in found:
                errors.append(
                    {"loc": f"questions.{n}", "msg": f"no question {qid} in this course's bank"}
                )
    fixed = set(config.questions)
    for n, pool in enumerate(config.pools):
        size = len([q for q in pool_members(sess, course_id, pool) if q.public_id not in fixed])
        if pool.count > size:
            errors.append(
                {
                    "loc": f"pools.{n}.count",
                    "msg": f"the pool holds {size} question(s) besides the fixed ones;"
                    f" cannot draw {pool.count}",
                }
            )
    return errors


def _settings(config: Any) -> QuizConfig:
    """The validated settings of a quiz item's config.

    :raise ItemConfigInvalid: a setting is invalid.
    """
    try:
        return QuizConfig.model_validate(config)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]) or "config", "msg": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        raise ItemConfigInvalid("invalid quiz config", errors) from exc


class QuizType(ContentType):
    """Quizzes: settings in the item's config, questions from the course's bank."""

    name: ClassVar[str] = "quiz"
    label: ClassVar[str] = "Quiz"
    config_model: ClassVar[type[BaseModel]] = QuizConfig
    learner_completes: ClassVar[bool] = False

    def validate_config(self, config: Any) -> dict[str, Any]:
        """Validate the settings alone (no course at hand: structure only).

        :raise ItemConfigInvalid: a setting is invalid.
        """
        return _settings(config).model_dump(mode="json")

    def validate_for_course(self, config: Any, course: CourseRef) -> dict[str, Any]:
        """Validate the settings, then the questions and pools against ``course``'s bank.

        :raise ItemConfigInvalid: a setting is invalid, a question id is not in
            the course's bank, or a pool holds fewer questions than it draws.
        """
        model = _settings(config)
        errors = check_against_bank(db.session(), course.key, model)
        if errors:
            raise ItemConfigInvalid("the quiz does not match the question bank", errors)
        return model.model_dump(mode="json")

    def learner_view(self, item: ItemView) -> dict[str, Any]:
        """The settings a learner needs before starting; no question ids, no answer keys."""
        cfg = parse_config(item.config)
        return {
            "attempts_allowed": cfg.attempts_allowed,
            "time_limit_seconds": cfg.time_limit_seconds,
            "open_at": _iso(cfg.open_at),
            "close_at": _iso(cfg.close_at),
            "question_count": len(cfg.questions) + sum(p.count for p in cfg.pools),
            "passing_score": cfg.passing_score,
            "review": cfg.review,
        }

    def apply_progress(
        self, item: ItemView, previous: ProgressState, report: dict[str, Any]
    ) -> ProgressState:
        """Accept only "I opened it" (``in_progress``); scores and completion come from attempts.

        :raise ProgressReportInvalid: the report claims completion, a score or data.
        """
        if "score" in report:
            raise ProgressReportInvalid("quiz scores come from graded attempts")
        if report.get("data"):
            raise ProgressReportInvalid("quiz progress data is kept by the server")
        status = report.get("status", previous.status)
        if status == "completed":
            raise ProgressReportInvalid("a quiz is completed by passing it")
        if status not in ("not_started", "in_progress"):
            raise ProgressReportInvalid(f"unknown status {status!r}")
        if previous.status != "not_started":
            return ProgressState(previous.status, previous.score, dict(previous.data))
        return ProgressState(status, previous.score, dict(previous.data))

    def render_learner_html(self, item: ItemView, state: ProgressState) -> Markup:
        """The quiz's rules and the learner's standing (best score, passed); no questions.

        Attempts are taken through the quiz API (``/api/v1/items/<id>/quiz/attempts``).
        """
        cfg = parse_config(item.config)
        count = len(cfg.questions) + sum(p.count for p in cfg.pools)
        rows = [
            (gettext("Questions"), str(count)),
            (
                gettext("Attempts allowed"),
                str(cfg.attempts_allowed) if cfg.attempts_allowed else gettext("Unlimited"),
            ),
            (gettext("Passing score"), f"{cfg.passing_score * 100:g} %"),
        ]
        if cfg.time_limit_seconds:
            rows.append((gettext("Time limit"), f"{cfg.time_limit_seconds // 60} min"))
        if cfg.open_at:
            rows.append((gettext("Opens"), cfg.open_at.isoformat()))
        if cfg.close_at:
            rows.append((gettext("Closes"), cfg.close_at.isoformat()))
        if state.score is not None:
            rows.append((gettext("Your best score"), f"{state.score * 100:g} %"))
        if state.data.get("passed"):
            rows.append((gettext("Result"), gettext("Passed")))
        body = Markup("").join(Markup("<dt>{}</dt><dd>{}</dd>").format(k, v) for k, v in rows)
        return Markup('<dl class="item-fields quiz-summary">{}</dl>').format(body)

    def is_complete(self, state: ProgressState) -> bool:
        """A quiz is complete once the learner passed it."""
        return bool(state.data.get("passed"))

    def export_config(self, item: ItemView) -> dict[str, Any]:
        """The settings without this run's dates (``open_at``, ``close_at``).

        Question ids refer to the course's bank, which the plugin's
        ``export_course_data`` exports with the course.
        """
        return {k: v for k, v in item.config.items() if k not in RUN_DATES}

    def import_config(
        self, data: dict[str, Any], context: ImportContext | None = None
    ) -> dict[str, Any]:
        """The settings with each question id replaced by its new bank question's.

        :param context: its ``references`` are what the plugin's
            ``import_course_data`` returned: ``{"questions": {old: new}}``.
        :raise ItemConfigInvalid: a setting is invalid, or a question is not
            in the exported bank.
        """
        config = dict(data)
        questions = config.get("questions")
        if context is not None and isinstance(questions, list):
            mapping = context.references.get("questions", {})
            errors = [
                {"loc": f"questions.{n}", "msg": f"question {q} is not in the exported bank"}
                for n, q in enumerate(questions)
                if not isinstance(q, str) or q not in mapping
            ]
            if errors:
                raise ItemConfigInvalid("the quiz refers to questions the export lacks", errors)
            config["questions"] = [mapping[q] for q in questions]
        return _settings(config).model_dump(mode="json")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
