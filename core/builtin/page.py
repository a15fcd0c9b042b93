"""The built-in ``page`` content type: a page of text (sanitised HTML).

Every LMS needs plain reading material; it also gives a fresh instance one
content type with no plugin installed.
"""

from __future__ import annotations

from typing import Any

import nh3
from flask_babel import gettext
from flask_babel import ngettext
from markupsafe import Markup
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import field_validator

from core.content import ContentType
from core.content import EditorField
from core.content import ItemView
from core.content import ProgressReportInvalid
from core.content import ProgressState
from core.hookspecs import hookimpl


class PageConfig(BaseModel):
    """A page's body, HTML sanitised on the way in."""

    model_config = ConfigDict(extra="forbid")
    body: str = Field(default="", max_length=200_000)
    estimated_minutes: int | None = Field(default=None, ge=0, le=10_000)

    @field_validator("body")
    @classmethod
    def _sanitise(cls, value: str) -> str:
        return nh3.clean(value)


class Page(ContentType):
    """Reading material; complete once the learner marks it read."""

    name = "page"
    label = "Page"
    config_model = PageConfig

    def editor_fields(self, config: dict[str, Any] | None) -> list[EditorField]:
        """The page's body as an HTML text area and an optional reading time."""
        return [
            EditorField(
                name="body",
                label=gettext("Body"),
                kind="html",
                help=gettext(
                    "HTML: paragraphs, headings, lists, links, images and tables. "
                    "Scripts, styles and event attributes are removed when you save."
                ),
                max_length=200_000,
                default="",
                attrs={"rows": 16},
            ),
            EditorField(
                name="estimated_minutes",
                label=gettext("Estimated reading time (minutes)"),
                kind="integer",
                help=gettext("Optional. Learners see it above the page."),
                nullable=True,
                minimum=0,
                maximum=10_000,
            ),
        ]

    def render_learner_html(self, item: ItemView, state: ProgressState) -> Markup:
        """The page's body, sanitised again on the way out (the policy may have changed)."""
        body = item.config.get("body", "")
        minutes = item.config.get("estimated_minutes")
        parts = []
        if isinstance(minutes, int) and minutes > 0:
            parts.append(
                Markup('<p class="meta">{}</p>').format(
                    ngettext(
                        "About %(num)d minute to read", "About %(num)d minutes to read", minutes
                    )
                )
            )
        parts.append(
            Markup('<div class="page-body">{}</div>').format(
                Markup(nh3.clean(body if isinstance(body, str) else ""))  # noqa: S704 - sanitised by nh3
            )
        )
        return Markup("").join(parts)

    def apply_progress(
        self, item: ItemView, previous: ProgressState, report: dict[str, Any]
    ) -> ProgressState:
        """Accept ``status`` and a ``scroll`` fraction in ``data``."""
        data = report.get("data", {})
        if isinstance(data, dict) and "scroll" in data:
            scroll = data["scroll"]
            if not isinstance(scroll, int | float) or not 0 <= scroll <= 1:
                raise ProgressReportInvalid("data.scroll must be a number between 0 and 1")
        return super().apply_progress(item, previous, report)


@hookimpl(trylast=True)
def register_content_types() -> list[type[ContentType]]:
    """Core's own content types."""
    return [Page]
