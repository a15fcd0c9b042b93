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
from core.config import Settings
from core.models import Course

bp = Blueprint("web", __name__)


@bp.get("/")
def home() -> str:
    """The instance's home page: what it is, where to find courses, how to use its API."""
    settings: Settings = current_app.extensions["trivium.settings"]
    published = db.session().scalar(
        select(func.count())
        .select_from(Course)
        .where(Course.status == "published", Course.visibility != "private")
    )
    return render_template(
        "home.html",
        name=settings.instance.name,
        base_url=settings.instance.base_url.rstrip("/"),
        published=published or 0,
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
