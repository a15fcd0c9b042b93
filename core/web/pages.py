"""The instance's home page and the health check for load balancers."""

from __future__ import annotations

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import jsonify
from flask import render_template
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from core import db
from core.cache import get_cache
from core.config import Settings
from core.models import Course

bp = Blueprint("web", __name__)


#: How long the home page's course count may be reused.  Counting scans every
#: published course (milliseconds at 10,000 courses) and the home page is the
#: most requested page there is; a count a few seconds old is fine there.
COUNT_CACHE_SECONDS = 10
_COUNT_KEY = "web:home:published"
_PUBLISHED_COUNT = (
    select(func.count())
    .select_from(Course)
    .where(Course.status == "published", Course.visibility != "private")
)


def published_count() -> int:
    """How many courses are listed here (published, not private), cached briefly."""
    cache = get_cache()
    raw = cache.get(_COUNT_KEY)
    if raw is not None:
        try:
            return int(raw)
        except ValueError:  # written by something else: count again
            pass
    count = int(db.core_execute(db.session(), _PUBLISHED_COUNT).scalar() or 0)
    cache.set(_COUNT_KEY, str(count).encode(), COUNT_CACHE_SECONDS)
    return count


@bp.get("/")
def home() -> str:
    """The instance's home page: what it is, where to find courses, how to use its API."""
    settings: Settings = current_app.extensions["trivium.settings"]
    return render_template(
        "home.html",
        name=settings.instance.name,
        base_url=settings.instance.base_url.rstrip("/"),
        published=published_count(),
    )


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Liveness and database reachability, for load balancers and monitors."""
    try:
        db.session().execute(text("SELECT 1"))
    except SQLAlchemyError:
        current_app.logger.exception("healthz database=unreachable")
        return jsonify({"status": "unavailable", "database": "unreachable"}), 503
    return jsonify({"status": "ok", "database": "ok"}), 200
