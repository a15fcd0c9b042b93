"""Learning events: one pipe that stores each event and hands it to plugins.

Events are shaped like xAPI statements (actor, verb, object, result, context,
timestamp) so analytics plugins and a learning record store can take them as
they are.  Verbs are ADL vocabulary IRIs; object ids are absolute URLs on this
instance's ``base_url``.

Everything that records an event calls :func:`record_event` (or
:func:`record_events` for several at once), which stores an
:class:`~core.models.Event` row and then calls the ``track_event`` hook.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any
from typing import cast

from flask import current_app
from sqlalchemy import Table
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import Database
from core.db import json_copy
from core.db import new_time_ordered_id
from core.db import rowcount
from core.db import utcnow
from core.models import Course
from core.models import Event
from core.models import Item
from core.models import User
from core.plugins import PluginHost

log = logging.getLogger(__name__)

ADL_VERBS = "http://adlnet.gov/expapi/verbs/"
ADL_ACTIVITIES = "http://adlnet.gov/expapi/activities/"

#: Short names of the ADL verbs core and plugins may use in :func:`record_event`.
VERBS: Mapping[str, str] = MappingProxyType(
    {
        name: ADL_VERBS + name
        for name in (
            "answered",
            "attempted",
            "attended",
            "commented",
            "completed",
            "exited",
            "experienced",
            "failed",
            "initialized",
            "interacted",
            "launched",
            "mastered",
            "passed",
            "progressed",
            "registered",
            "resumed",
            "scored",
            "suspended",
            "terminated",
        )
    }
)

_ACTIVITY_TYPES = {"courses": "course", "modules": "module"}


class UnknownVerb(ValueError):
    """A verb is neither a known ADL short name nor an absolute IRI."""


class InvalidObjectId(ValueError):
    """An event's object is neither an absolute URL nor a path on this instance."""


@dataclass(frozen=True)
class Actor:
    """The learner an event is about, as an xAPI account on this instance."""

    id: str
    name: str
    home_page: str

    def to_agent(self) -> dict[str, Any]:
        """The xAPI ``Agent`` object."""
        return {
            "objectType": "Agent",
            "name": self.name,
            "account": {"homePage": self.home_page, "name": self.id},
        }


@dataclass(frozen=True)
class LearningEvent:
    """One learning event, as handed to ``track_event`` listeners.

    :ivar id: the event's public id (the statement id in hex).
    :ivar actor: who did it.
    :ivar verb: the verb IRI.
    :ivar object: the object's IRI (an absolute URL).
    :ivar result: an xAPI ``result`` (``completion``, ``success``, ``score``…) or None.
    :ivar context: extension values keyed by name or IRI, or None.
    :ivar timestamp: when it happened (UTC).
    :ivar course_id: the public id of the course it belongs to, if any.
    """

    id: str
    actor: Actor
    verb: str
    object: str
    result: Mapping[str, Any] | None
    context: Mapping[str, Any] | None
    timestamp: datetime
    course_id: str | None = None
    course_iri: str | None = None

    @property
    def verb_name(self) -> str:
        """The verb's last path segment (``"completed"``)."""
        return self.verb.rstrip("/").rsplit("/", 1)[-1]

    def to_statement(self) -> dict[str, Any]:
        """The event as an xAPI-like statement (a fresh, JSON-ready dict)."""
        return self._statement(json_copy)

    def _statement(self, copied: Callable[[Any], Any]) -> dict[str, Any]:
        """The statement, with ``result`` and extension values passed through ``copied``."""
        obj: dict[str, Any] = {"objectType": "Activity", "id": self.object}
        activity = _activity_type(self.object, self.actor.home_page)
        if activity is not None:
            obj["definition"] = {"type": ADL_ACTIVITIES + activity}
        statement: dict[str, Any] = {
            "id": _uuid_text(self.id),
            "actor": self.actor.to_agent(),
            "verb": {"id": self.verb, "display": {"en-US": self.verb_name}},
            "object": obj,
            "timestamp": self.timestamp.isoformat(),
        }
        if self.result is not None:
            statement["result"] = copied(dict(self.result))
        context: dict[str, Any] = {"platform": "Trivium"}
        if self.course_iri is not None and self.course_iri != self.object:
            context["contextActivities"] = {
                "parent": [{"objectType": "Activity", "id": self.course_iri}]
            }
        if self.context:
            base = self.actor.home_page.rstrip("/")
            context["extensions"] = {
                (key if _is_iri(key) else f"{base}/xapi/extensions/{key}"): copied(value)
                for key, value in self.context.items()
            }
        statement["context"] = context
        return statement


_HEX_ID = re.compile(r"[0-9a-f]{32}")


def _uuid_text(hex_id: str) -> str:
    """The UUID of a 32-digit hex id in its hyphenated form (as ``str(uuid.UUID(...))``)."""
    if _HEX_ID.fullmatch(hex_id) is None:
        return str(uuid.UUID(hex=hex_id))
    h = hex_id
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _is_iri(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _activity_type(iri: str, base: str) -> str | None:
    base = base.rstrip("/") + "/"
    if not iri.startswith(base):
        return None
    first = iri[len(base) :].split("/", 1)[0]
    return _ACTIVITY_TYPES.get(first)


def base_url() -> str:
    """This instance's base URL without a trailing slash."""
    settings: Any = current_app.extensions["trivium.settings"]
    return str(settings.instance.base_url).rstrip("/")


def course_iri(course: Course, base: str | None = None) -> str:
    """The absolute URL naming ``course`` in events (``base``: :func:`base_url`, if known)."""
    return f"{base or base_url()}/courses/{course.public_id}"


def item_iri(item: Item, base: str | None = None) -> str:
    """The absolute URL naming ``item`` in events (``base``: :func:`base_url`, if known)."""
    return f"{base or base_url()}/items/{item.public_id}"


def verb_iri(verb: str) -> str:
    """Expand an ADL short name to its IRI; absolute IRIs pass unchanged.

    :raise UnknownVerb: neither a known short name nor an IRI.
    """
    if _is_iri(verb):
        return verb
    try:
        return VERBS[verb]
    except KeyError:
        raise UnknownVerb(f"unknown verb {verb!r}; use an ADL short name or an IRI") from None


def _object_iri(object_id: str) -> str:
    if _is_iri(object_id):
        return object_id
    if object_id.startswith("/"):
        return base_url() + object_id
    raise InvalidObjectId(f"event object {object_id!r} is neither an absolute URL nor a path")


@dataclass(frozen=True)
class NewEvent:
    """One event to record with :func:`record_events` (the arguments of :func:`record_event`).

    :ivar user: the learner the event is about.
    :ivar verb: an ADL short name (``"completed"``) or a verb IRI.
    :ivar object_id: the object's absolute URL, or a path on this instance.
    :ivar course: the course the event belongs to, if any.
    :ivar result: an xAPI ``result`` object, or None.
    :ivar context: extension values keyed by a short name or an IRI, or None.
    """

    user: User
    verb: str
    object_id: str
    course: Course | None = None
    result: Mapping[str, Any] | None = None
    context: Mapping[str, Any] | None = None


def _build(new: NewEvent, home_page: str) -> LearningEvent:
    course = new.course
    return LearningEvent(
        id=new_time_ordered_id(),
        actor=Actor(id=new.user.public_id, name=new.user.display_name, home_page=home_page),
        verb=verb_iri(new.verb),
        object=_object_iri(new.object_id),
        result=MappingProxyType(json_copy(dict(new.result))) if new.result is not None else None,
        context=MappingProxyType(json_copy(dict(new.context))) if new.context is not None else None,
        timestamp=utcnow(),
        course_id=course.public_id if course is not None else None,
        course_iri=course_iri(course) if course is not None else None,
    )


_EVENTS = cast(Table, Event.__table__)


def _same(value: Any) -> Any:
    return value


def _row(new: NewEvent, event: LearningEvent, statement: dict[str, Any]) -> dict[str, Any]:
    return {
        "public_id": event.id,
        "timestamp": event.timestamp,
        "user_id": new.user.id,
        "course_id": new.course.id if new.course is not None else None,
        "verb": event.verb,
        "object_id": event.object,
        "statement": statement,
    }


def record_event(
    sess: Session,
    *,
    user: User,
    verb: str,
    object_id: str,
    course: Course | None = None,
    result: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> LearningEvent:
    """Store a learning event and pass it to every ``track_event`` listener.

    The row is flushed (not committed) in ``sess``; listeners are called after
    that through the safe call path, so a failing listener is logged and the
    event still stands.  To record several events at once, use
    :func:`record_events`.

    :param user: the learner the event is about.
    :param verb: an ADL short name (``"completed"``) or a verb IRI.
    :param object_id: the object's absolute URL, or a path on this instance
        (``"/items/<id>"``) made absolute with ``base_url``.
    :param course: the course the event belongs to (listed on its events page).
    :param result: an xAPI ``result`` object.
    :param context: extension values, keyed by a short name or an IRI.
    :return: the recorded event.
    :raise UnknownVerb: ``verb`` is not recognised.
    :raise InvalidObjectId: ``object_id`` is not a URL or path.
    """
    new = NewEvent(user, verb, object_id, course, result, context)
    event = _build(new, base_url() + "/")
    sess.add(Event(**_row(new, event, event.to_statement())))
    sess.flush()
    log.debug("event verb=%s object=%s user=%s", event.verb_name, event.object, user.public_id)
    host: PluginHost = current_app.extensions["trivium.plugins"]
    host.call("track_event", event=event)
    return event


def record_events(sess: Session, events: Iterable[NewEvent]) -> list[LearningEvent]:
    """Store several learning events with one multi-row insert, then pass each to listeners.

    The events are the same statements :func:`record_event` would store, in
    the given order; all are checked before any is written, so a bad one
    stores none.  The rows are inserted (not committed) in ``sess`` with one
    statement, then ``track_event`` is called once per event, in order,
    through the safe call path.  Use it where one action yields many events
    (a quiz submit: one ``answered`` per question, then ``completed``…).

    :param events: what to record.
    :return: the recorded events, in order (empty for no events).
    :raise UnknownVerb: a verb is not recognised; nothing stored.
    :raise InvalidObjectId: an object id is not a URL or path; nothing stored.
    """
    pending = list(events)
    if not pending:
        return []
    home_page = base_url() + "/"
    built = [_build(new, home_page) for new in pending]
    # The statements go straight to the database, so they may share the
    # events' own (already private) copies of result and context.
    rows = [
        _row(new, event, event._statement(_same)) for new, event in zip(pending, built, strict=True)
    ]
    sess.flush()
    sess.execute(insert(_EVENTS), rows)
    log.debug("events count=%d", len(built))
    host: PluginHost = current_app.extensions["trivium.plugins"]
    for event in built:
        host.call("track_event", event=event)
    return built


__all__ = [
    "VERBS",
    "Actor",
    "InvalidObjectId",
    "LearningEvent",
    "NewEvent",
    "UnknownVerb",
    "course_iri",
    "item_iri",
    "record_event",
    "record_events",
    "verb_iri",
]


# ---------------------------------------------------------------- retention

#: What ``trivium events prune`` deletes unless told other verbs: heartbeats'
#: statements, whose latest state the progress table keeps anyway.
PRUNED_BY_DEFAULT = ("progressed",)
PRUNE_BATCH = 5000


def prune(
    database: Database,
    before: datetime,
    verbs: Iterable[str] = PRUNED_BY_DEFAULT,
    *,
    batch: int = PRUNE_BATCH,
    dry_run: bool = False,
    done: Callable[[int], None] | None = None,
) -> int:
    """Delete the stored statements of ``verbs`` older than ``before``; return how many.

    For an instance's retention policy: every heartbeat is a ``progressed``
    statement, and the events table grows by one row per heartbeat, while
    ``progress`` keeps each learner's latest state.  One query finds the
    lowest and highest id of the statements to delete (it reads the table:
    ``events`` has no index on time alone, which would slow every
    heartbeat's write); the ids between are then deleted in ranges of
    ``batch``, each in a short transaction of its own, so reports go on
    meanwhile.  Each range checks the time again: a heartbeat written late
    has a higher id than newer ones.

    :param verbs: ADL short names or IRIs.
    :param dry_run: only count.
    :param done: called with each range's count once it is committed (a run
        that fails partway has deleted those).
    :raise UnknownVerb: a verb is neither.
    """
    iris = sorted({verb_iri(verb) for verb in verbs})
    old = (Event.timestamp < before, Event.verb.in_(iris))
    with database.session() as sess:
        first, last, count = sess.execute(
            select(func.min(Event.id), func.max(Event.id), func.count()).where(*old)
        ).one()
    if dry_run or not count:
        return int(count or 0)
    removed = 0
    low = first
    while low <= last:
        high = min(low + batch - 1, last)
        with database.session() as sess:
            gone = rowcount(
                sess.execute(delete(Event).where(Event.id >= low, Event.id <= high, *old))
            )
        removed += gone
        if done is not None:
            done(gone)
        low = high + 1
    log.info("events_pruned before=%s verbs=%s removed=%d", before.isoformat(), iris, removed)
    return removed
