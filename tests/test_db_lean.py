"""core.db.LeanRead gives the same rows as SQLAlchemy, on every backend."""

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
from core.models import AuditLog
from tests.conftest import Users


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
