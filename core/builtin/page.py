"""The built-in ``page`` content type: a page of text (sanitised HTML).

Every LMS needs plain reading material; it also gives a fresh instance one
content type with no plugin installed.
"""

from __future__ import annotations

from typing import Any

import nh3
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import field_validator

from core.content import ContentType
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
