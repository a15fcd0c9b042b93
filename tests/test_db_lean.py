"""core.db's lean reads give the same rows as SQLAlchemy, and its JSON columns store any JSON."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime

from flask import Flask
from sqlalchemy import Float
from sqlalchemy import bindparam
from sqlalchemy import cast
from sqlalchemy import select

from core.db import LeanRead
from core.db import core_execute
from core.db import get_db
from core.db import has_connection
from core.db import json_dumps
from core.db import json_loads
from core.models import AuditLog
from core.models import Progress
from tests.conftest import Users
from tests.course_helpers import build_course
from tests.course_helpers import call
from tests.course_helpers import enrol
from tests.course_helpers import ok
from tests.course_helpers import person


def test_lean_read_matches_sqlalchemy(app: Flask, users: Users) -> None:
    owner = users.create()
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    with get_db(app).session() as sess:
        sess.add(
            AuditLog(
                at=stamp,
                actor_id=owner.id,
                action="Ünïcode",
                detail={"subject": "Arts", "n": [1, 2]},
            )
        )
    statement = select(
        AuditLog.id,
        AuditLog.action,
        AuditLog.at,
        AuditLog.detail,
        cast(AuditLog.id, Float).label("ratio"),  # drivers that need a type code for numbers
    ).where(AuditLog.action == bindparam("title"))
    lean = LeanRead(statement)
    with get_db(app).sessions() as sess:
        row = lean.first(sess, {"title": "Ünïcode"})
        assert not has_connection(sess)  # it ran outside the session's transaction
        expected = core_execute(sess, statement, {"title": "Ünïcode"}).first()
        assert has_connection(sess)
        assert expected is not None
        assert tuple(row) == tuple(expected)
        assert row.at == stamp and row.at.tzinfo is not None
        assert row.detail == {"subject": "Arts", "n": [1, 2]}
        assert isinstance(row.ratio, float)
        # with a connection held, it runs in the session's transaction
        assert tuple(lean.first(sess, {"title": "Ünïcode"})) == tuple(expected)
        assert lean.first(sess, {"title": "nothing"}) is None
    with get_db(app).sessions() as sess:
        assert lean.first(sess, {"title": "nothing"}) is None


def test_json_columns_take_what_the_standard_library_takes() -> None:
    # beyond 64 bits orjson refuses: the standard library writes it instead
    big = {"n": 10**30, "nested": [{"m": -(10**25)}]}
    assert json_loads(json_dumps(big)) == big
    # keys that are not strings become strings, as json.dumps makes them
    assert json_loads(json_dumps({1: "a", False: "b", None: "c"})) == {
        "1": "a",
        "false": "b",
        "null": "c",
    }
    value = {"text": "é ✓ \u2028", "f": 0.1, "list": [1, 2.5, None, False]}
    assert json_loads(json_dumps(value)) == value
    assert json_dumps({"a": [1, 2]}) == '{"a":[1,2]}'


def test_a_heartbeat_with_a_huge_number_is_stored(app: Flask, users: Users) -> None:
    owner = person(users, "owner@example.org", creator=True)
    learner = person(users, "learner@example.org")
    client = app.test_client()
    built = build_course(client, owner, items=1)
    enrol(client, built, learner)
    body = {"status": "in_progress", "data": {"position": 10**30}}
    ok(call(client, "PUT", f"/items/{built.items[0]}/progress", learner.headers, body))
    with get_db(app).session() as sess:
        stored = sess.scalars(select(Progress.data)).one()
    assert stored == {"position": 10**30}
