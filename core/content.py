"""The base class of content types (``register_content_types`` returns subclasses).

A content type decides how an item of its kind is configured, what a learner
is shown, and how the learner's reports turn into progress.  Core stores the
item's config as validated JSON and calls these methods with plain values; a
content type never touches core's tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import ClassVar
from typing import Literal

from markupsafe import Markup
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import ValidationError

# Content types build their editors from these (part of this module's API).
from core.editor import EditorField as EditorField
from core.editor import fields_from_schema
from core.editor import parse_form

ProgressStatus = Literal["not_started", "in_progress", "completed"]


class ItemConfigInvalid(Exception):
    """An item's config was rejected by its content type.

    :ivar errors: a list of ``{"loc": ..., "msg": ...}`` describing each problem.
    """

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class ProgressReportInvalid(Exception):
    """A learner's progress report does not make sense for this content type."""


class EmptyConfig(BaseModel):
    """Config model of a content type with no settings."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ItemView:
    """What a content type sees of an item."""

    id: str
    course_id: str
    title: str
    config: dict[str, Any]


@dataclass(frozen=True)
class CourseRef:
    """The course an item is created or edited in, as a content type sees it.

    ``key`` is the course's primary key, for a plugin's own tables that
    reference ``courses.id`` (a quiz's question bank); ``id`` is its public id.
    """

    id: str
    key: int


@dataclass(frozen=True)
class ImportContext:
    """Where an item is being imported to (course import and copy), as a content type sees it.

    ``course`` is the new course, whose plugin data (``import_course_data``)
    is already stored.  ``references`` is what the content type's own plugin
    returned from ``import_course_data`` for this course, e.g. the new id of
    each exported question (``{"questions": {old_id: new_id}}``); empty when it
    returned nothing.  Read only.

    .. versionadded:: 0.2
    """

    course: CourseRef
    references: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ProgressState:
    """One learner's progress on one item."""

    status: ProgressStatus = "not_started"
    score: float | None = None
    data: dict[str, Any] = field(default_factory=dict)


class ContentType:
    """Subclass and return the class from ``register_content_types``.

    Required class attributes:

    ``name``
        Unique, lower-case identifier stored on every item (``"video"``).
    ``label``
        Human label for the course builder (``"Video"``).
    ``config_model``
        A pydantic model that validates an item's config; the default accepts
        only ``{}``.

    Optional:

    ``learner_completes``
        Whether a learner marks an item done themselves (the learn view's
        "Mark as complete" button); False for types whose completion the
        server decides (a graded quiz).  Default True.

    Every method has a working default so a minimal type only declares those.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    config_model: ClassVar[type[BaseModel]] = EmptyConfig
    learner_completes: ClassVar[bool] = True

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        """:param settings: the ``[plugins.<plugin>]`` table of instance.toml."""
        self.settings = settings or {}

    def validate_config(self, config: Any) -> dict[str, Any]:
        """Return the normalised config or raise :class:`ItemConfigInvalid`."""
        try:
            model = self.config_model.model_validate(config)
        except ValidationError as exc:
            errors = [
                {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()
            ]
            raise ItemConfigInvalid(f"invalid {self.name} config", errors) from exc
        return model.model_dump(mode="json")

    def validate_for_course(self, config: Any, course: CourseRef) -> dict[str, Any]:
        """Validate a config for an item of ``course`` (what core calls).

        The default is :meth:`validate_config`; override this instead when
        validity depends on the course, e.g. a quiz whose questions must be in
        that course's question bank.

        :raise ItemConfigInvalid: the config is not acceptable in this course.

        .. versionadded:: 0.2
        """
        return self.validate_config(config)

    def learner_view(self, item: ItemView) -> dict[str, Any]:
        """Return what a learner may see of the item's config (the API's ``content``).

        Override to hide anything a learner must not receive (answer keys).
        """
        return dict(item.config)

    def apply_progress(
        self, item: ItemView, previous: ProgressState, report: dict[str, Any]
    ) -> ProgressState:
        """Turn a learner's progress report into the new state.

        The default accepts ``{"status": ..., "data": {...}}`` from the learner
        and never lets progress go backwards from ``completed``; scores are not
        accepted from the learner (a graded type computes them server-side).

        :raise ProgressReportInvalid: the report is not acceptable.
        """
        status = report.get("status", previous.status)
        if status not in ("not_started", "in_progress", "completed"):
            raise ProgressReportInvalid(f"unknown status {status!r}")
        if "score" in report:
            raise ProgressReportInvalid(f"{self.name} items are not scored by the learner")
        data = report.get("data", {})
        if not isinstance(data, dict):
            raise ProgressReportInvalid("data must be an object")
        if previous.status == "completed":
            status = "completed"
        merged = {**previous.data, **data}
        return ProgressState(status=status, score=previous.score, data=merged)

    def is_complete(self, state: ProgressState) -> bool:
        """Whether this state counts towards the course's completion rule."""
        return state.status == "completed"

    def export_config(self, item: ItemView) -> dict[str, Any]:
        """Return a portable form of the item's config for course export.

        Leave out what makes no sense in another course or instance (this
        run's dates, ids of rows that are not exported).  What your plugin's
        ``export_course_data`` exports with the course may be referred to.
        """
        return dict(item.config)

    def import_config(
        self, data: dict[str, Any], context: ImportContext | None = None
    ) -> dict[str, Any]:
        """Inverse of :meth:`export_config`: the config of the imported item.

        Core then validates the result like a new item of the course
        (:meth:`validate_for_course`).  Override it to translate what the
        exported config refers to with ``context.references``.

        :param data: the exported config, as :meth:`export_config` gave it.
        :param context: the new course and your plugin's references (core
            passes it only to an override that accepts a second argument).
        :raise ItemConfigInvalid: the config cannot be imported; the message
            and errors are shown to the importer.

        .. versionchanged:: 0.2 the optional ``context``.
        """
        return self.validate_config(data)

    def render_learner_html(self, item: ItemView, state: ProgressState) -> Markup:
        """Return the item as HTML for the learn view (inside an ``<article>``).

        The default lists :meth:`learner_view`'s values, escaped; a content
        type with its own player or reader overrides this.  Escape or
        sanitise (``nh3.clean``) anything that came from a user.

        :param item: the item, as the content type sees it.
        :param state: the learner's progress on it.

        .. versionadded:: 0.1
        """
        shown = self.learner_view(item)
        rows = [
            Markup("<dt>{}</dt><dd>{}</dd>").format(key.replace("_", " ").capitalize(), value)
            for key, value in shown.items()
            if isinstance(value, str | int | float) and not isinstance(value, bool)
        ]
        if not rows:
            return Markup("")
        return Markup('<dl class="item-fields">{}</dl>').format(Markup("").join(rows))

    def editor_fields(self, config: dict[str, Any] | None) -> list[EditorField]:
        """The inputs of this type's item editor in the course builder.

        The default derives them from ``config_model``'s JSON Schema: strings
        become text inputs (a text area when long), integers and numbers
        number inputs, booleans checkboxes, string enums selects, and
        anything else a JSON text area checked by :meth:`validate_config`.
        Give a field a ``title`` and ``description`` for its label and help.

        :param config: the item's current config, or None for a new item
            (field values come from :meth:`EditorField.display`).
        """
        return fields_from_schema(self.config_model.model_json_schema())

    def config_from_form(self, form: dict[str, str]) -> dict[str, Any]:
        """Turn the submitted editor inputs into a config for :meth:`validate_config`.

        :param form: the submitted values keyed by :attr:`EditorField.name`
            (a checkbox that was not ticked is absent).
        :raise ItemConfigInvalid: an input cannot be read (a number that is not one).
        """
        config, errors = parse_form(self.editor_fields(None), form)
        if errors:
            raise ItemConfigInvalid(
                f"invalid {self.name} form", [{"loc": e.loc, "msg": e.msg} for e in errors]
            )
        return config
