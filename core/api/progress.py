"""Progress and events API: learners report and read their own progress, staff see all."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from typing import Literal

from flask import jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel
from pydantic import Field
from sqlalchemy import select

from core import courses
from core import db
from core import progress as svc
from core import progress_buffer
from core import rbac
from core.api import bp
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
from core.errors import ValidationFailed
from core.events import UnknownVerb
from core.events import verb_iri
from core.models import Course
from core.models import Event
from core.models import Item
from core.models import Module

log = logging.getLogger(__name__)

TAGS = ("progress",)

ProgressStatus = Literal["not_started", "in_progress", "completed"]


class ProgressReport(Body):
    """A learner's report; the item's content type decides what it means."""

    status: ProgressStatus | None = None
    data: dict[str, Any] | None = None


class ProgressOut(BaseModel):
    """One learner's progress on one item."""

    item_id: str
    status: ProgressStatus
    score: float | None
    data: dict[str, Any]
    updated_at: datetime | None
    completed_at: datetime | None


class ProgressReportOut(ProgressOut):
    """The stored progress after a report, and what the report completed."""

    item_completed: bool
    course_completed: bool


class Completion(BaseModel):
    """Required items and how many are complete."""

    required: int
    completed: int
    percent: float


class MyCourseProgress(BaseModel):
    """The caller's progress through a course."""

    course_id: str
    completed_at: datetime | None
    progress: Completion
    items: list[ProgressOut]


class ProgressColumn(BaseModel):
    """An item as a column of the staff table."""

    id: str
    module_id: str
    title: str
    type: str
    required: bool


class ProgressCell(BaseModel):
    """A learner's state on one item."""

    status: ProgressStatus
    score: float | None
    completed_at: datetime | None


class LearnerProgress(BaseModel):
    """One learner's row; ``cells`` is keyed by item id (missing: not started)."""

    user: UserBrief
    enrolment_id: str
    completed_at: datetime | None
    progress: Completion
    cells: dict[str, ProgressCell]


class ProgressTable(BaseModel):
    """A page of learners by items."""

    columns: list[ProgressColumn]
    items: list[LearnerProgress]
    next_cursor: str | None


class ProgressTableQuery(PageQuery):
    """Which learners to list."""

    status: Literal["active", "withdrawn", "all"] = "active"


class EventQuery(PageQuery):
    """Filter events by verb (an ADL short name or an IRI)."""

    verb: str | None = Field(default=None, max_length=200)


class EventOut(BaseModel):
    """A stored learning event and its xAPI statement."""

    id: str
    timestamp: datetime
    verb: str
    object_id: str
    statement: dict[str, Any]


class EventPage(BaseModel):
    """A page of events, newest first."""

    items: list[EventOut]
    next_cursor: str | None


def completion(counts: svc.Counts) -> Completion:
    """Serialise completion counts."""
    return Completion(required=counts.required, completed=counts.completed, percent=counts.percent)


def _progress_fields(item: Item, row: svc.ProgressLike | None) -> dict[str, Any]:
    if row is None:
        return {
            "item_id": item.public_id,
            "status": "not_started",
            "score": None,
            "data": {},
            "updated_at": None,
            "completed_at": None,
        }
    return {
        "item_id": item.public_id,
        "status": row.status,
        "score": row.score,
        "data": row.data or {},
        "updated_at": row.updated_at,
        "completed_at": row.completed_at,
    }


def progress_out(item: Item, row: svc.ProgressLike | None) -> ProgressOut:
    """Serialise a progress row or buffered record (or the not-started default)."""
    return ProgressOut.model_validate(_progress_fields(item, row))


def report_out(item: Item, outcome: svc.ProgressOutcome) -> ProgressReportOut:
    """Serialise the progress a report left and what it completed."""
    fields = _progress_fields(item, outcome.progress)
    fields["item_completed"] = outcome.item_completed
    fields["course_completed"] = outcome.course_completed
    return ProgressReportOut.model_validate(fields)


# ---------------------------------------------------------------- learners


@bp.put("/items/<item_id>/progress")
@operation(
    "Report your progress on an item",
    tags=TAGS,
    body=ProgressReport,
    response=ProgressReportOut,
    errors=(404, 409),
)
def report(item_id: str) -> ResponseReturnValue:
    """Apply a progress report through the item's content type."""
    user = require_user(attach=False)  # a heartbeat may touch no table in the request
    sess = db.session()
    item, course = svc.load_item_for_report(sess, item_id, user)
    rbac.require(user, "progress.own", course, what="item")
    data = parse_body(ProgressReport)
    outcome = svc.report_progress(
        sess,
        user,
        item,
        course,
        data.model_dump(exclude_none=True),
        buffer=progress_buffer.get_buffer(),
    )
    out = report_out(item, outcome)
    if sess.in_transaction():
        sess.commit()  # a buffered heartbeat may not have touched the session at all
    svc.announce(outcome)
    return json_response(out)


class BatchReport(ProgressReport):
    """One report of a batch: the item, then what :class:`ProgressReport` holds."""

    item_id: str = Field(min_length=1, max_length=64)


class ProgressBatch(Body):
    """Reports on several items at once, applied in order (a player catching up)."""

    reports: list[BatchReport] = Field(min_length=1, max_length=svc.MAX_BATCH)


class ProgressBatchOut(BaseModel):
    """The stored progress after each report, in the order sent."""

    items: list[ProgressReportOut]


@bp.post("/me/progress")
@operation(
    "Report your progress on several items at once",
    tags=TAGS,
    body=ProgressBatch,
    response=ProgressBatchOut,
    errors=(404, 409),
)
def report_batch() -> ResponseReturnValue:
    """Apply up to ``MAX_BATCH`` reports in order, all of them or none.

    A report that would be refused (unknown item, not enrolled, refused by the
    content type) refuses the batch with its problem, naming the report by its
    index (``report``), and nothing is stored.
    """
    user = require_user()
    sess = db.session()
    data = parse_body(ProgressBatch)
    loaded: list[tuple[Item, Course, dict[str, Any]]] = []
    items: dict[str, tuple[Item, Course]] = {}
    for n, entry in enumerate(data.reports):
        with svc.naming_report(n):
            found = items.get(entry.item_id)
            if found is None:  # each item is loaded and checked once
                found = svc.load_item_for_report(sess, entry.item_id, user)
                rbac.require(user, "progress.own", found[1], what="item")
                items[entry.item_id] = found
        report = entry.model_dump(exclude_none=True, exclude={"item_id"})
        loaded.append((found[0], found[1], report))
    outcomes = svc.report_many(sess, user, loaded, buffer=progress_buffer.get_buffer())
    out = ProgressBatchOut(
        items=[
            report_out(item, outcome)
            for (item, _, _), outcome in zip(loaded, outcomes, strict=True)
        ]
    )
    sess.commit()
    for outcome in outcomes:
        svc.announce(outcome)
    return json_response(out)


@bp.get("/items/<item_id>/progress")
@operation("Your progress on an item", tags=TAGS, response=ProgressOut, errors=(404,))
def item_progress(item_id: str) -> ResponseReturnValue:
    """Show the caller's progress on one item."""
    user, item, _ = load_item(item_id, "progress.own")
    return json_response(progress_out(item, svc.item_progress(db.session(), user, item)))


@bp.get("/courses/<course_id>/progress/me")
@operation("Your progress through a course", tags=TAGS, response=MyCourseProgress, errors=(404,))
def my_course_progress(course_id: str) -> ResponseReturnValue:
    """Show the caller's progress on every item of a course."""
    user, course = load_course(course_id, "progress.own")
    sess = db.session()
    rows, counts = svc.course_progress(sess, user, course)
    enrolment = courses.find_enrolment(sess, user, course)
    out = MyCourseProgress(
        course_id=course.public_id,
        completed_at=enrolment.completed_at if enrolment is not None else None,
        progress=completion(counts),
        items=[progress_out(i, p) for i, p in rows],
    )
    return json_response(out)


# ---------------------------------------------------------------- staff


@bp.get("/courses/<course_id>/progress")
@operation(
    "Every learner's progress (staff), a page of learners at a time",
    tags=TAGS,
    query=ProgressTableQuery,
    response=ProgressTable,
    errors=(404, 422),
)
def progress_table(course_id: str) -> ResponseReturnValue:
    """Show the learners by items table."""
    _, course = load_course(course_id, "progress.view_all")
    query = parse_query(ProgressTableQuery)
    statuses = ("active", "withdrawn") if query.status == "all" else (query.status,)
    sess = db.session()
    items, rows, next_key = svc.progress_table(
        sess, course, statuses=statuses, after=cursor_key(query), limit=query.limit
    )
    module_ids: dict[int, str] = {
        mid: pid
        for mid, pid in sess.execute(
            select(Module.id, Module.public_id).where(Module.course_id == course.id)
        )
    }
    by_id = {i.id: i for i in items}
    columns = [
        ProgressColumn(
            id=i.public_id,
            module_id=module_ids[i.module_id],
            title=i.title,
            type=i.type,
            required=i.required,
        )
        for i in items
    ]
    learners = [
        LearnerProgress.model_validate(
            {
                "user": user_brief(r.user),
                "enrolment_id": r.enrolment.public_id,
                "completed_at": r.enrolment.completed_at,
                "progress": completion(r.counts),
                "cells": {
                    by_id[iid].public_id: {
                        "status": p.status,
                        "score": p.score,
                        "completed_at": p.completed_at,
                    }
                    for iid, p in r.progress.items()
                    if iid in by_id
                },
            }
        )
        for r in rows
    ]
    body = page([lp.model_dump(mode="json") for lp in learners], next_key)
    body["columns"] = [c.model_dump(mode="json") for c in columns]
    return jsonify(body)


@bp.get("/courses/<course_id>/events")
@operation(
    "A course's learning events (staff), newest first",
    tags=TAGS,
    query=EventQuery,
    response=EventPage,
    errors=(404, 422),
)
def course_events(course_id: str) -> ResponseReturnValue:
    """List the course's stored xAPI statements."""
    _, course = load_course(course_id, "events.view_all")
    query = parse_query(EventQuery)
    progress_buffer.flush_before_reading()  # staff see waiting events too
    before = cursor_key(query)
    stmt = select(Event).where(Event.course_id == course.id)
    if query.verb:
        iri = query.verb if "/" in query.verb else _verb_or_none(query.verb)
        stmt = stmt.where(Event.verb == iri)
    if before is not None:
        stmt = stmt.where(Event.id < before)
    rows = list(db.session().scalars(stmt.order_by(Event.id.desc()).limit(query.limit + 1)))
    next_key = rows[query.limit - 1].id if len(rows) > query.limit else None
    items = [
        EventOut.model_validate(
            {
                "id": e.public_id,
                "timestamp": e.timestamp,
                "verb": e.verb,
                "object_id": e.object_id,
                "statement": e.statement,
            }
        ).model_dump(mode="json")
        for e in rows[: query.limit]
    ]
    return jsonify(page(items, next_key))


def _verb_or_none(verb: str) -> str:
    try:
        return verb_iri(verb)
    except UnknownVerb as exc:
        raise ValidationFailed(str(exc)) from exc
