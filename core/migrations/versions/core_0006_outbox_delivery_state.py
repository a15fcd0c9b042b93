"""Outbox mail says where its delivery stands: state, tries, last error; an opaque id.

``state`` is ``outbox`` (kept here only), ``queued``, ``sent`` or ``failed``;
``attempts``, ``last_error`` and ``last_attempt_at`` tell what the SMTP
delivery job met.  ``public_id`` names a mail in the administration's URLs;
an index on ``(state, id)`` serves its lists and counts by state.

``sending_until`` is the lease of the delivery job sending it now, so that
two jobs for one mail (an operator's retry while one still waits) never
send it twice at once.

Existing rows: a mail with ``sent_at`` is ``sent``; an unsent one takes the
state of its newest ``core.deliver_mail`` job (queued or running: ``queued``;
failed: ``failed``, with the error's last line); the others are ``outbox``
(kept only).

Revision ID: core_0006
Revises: core_0005
Create Date: 2026-11-22 01:10:00
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "core_0006"
down_revision: str | Sequence[str] | None = "core_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OUTBOX = sa.table(
    "outbox_mail",
    sa.column("id", sa.Integer()),
    sa.column("public_id", sa.String(32)),
    sa.column("sent_at", sa.DateTime(timezone=True)),
    sa.column("state", sa.String(20)),
    sa.column("last_error", sa.Text()),
)
_JOBS = sa.table(
    "jobs",
    sa.column("id", sa.Integer()),
    sa.column("actor", sa.String(200)),
    sa.column("state", sa.String(20)),
    sa.column("message", sa.Text()),
    sa.column("error", sa.Text()),
)
#: The state of an unsent mail, by the state of its newest delivery job.
_BY_JOB = {"queued": "queued", "running": "queued", "failed": "failed"}


def _delivery_jobs(conn: sa.Connection) -> dict[int, tuple[str, str]]:
    """Each mail's newest ``core.deliver_mail`` job: its state and error, by mail id."""
    rows = conn.execute(
        sa.select(_JOBS.c.state, _JOBS.c.message, _JOBS.c.error)
        .where(_JOBS.c.actor == "core.deliver_mail")
        .order_by(_JOBS.c.id)
    )
    newest: dict[int, tuple[str, str]] = {}
    for state, text, error in rows:
        try:
            mail_id = int(json.loads(text)["args"][0])
        except (ValueError, KeyError, IndexError, TypeError):
            continue  # not a message this revision can read: the mail stays "outbox"
        newest[mail_id] = (state, error or "")
    return newest


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:2000] if lines else ""


def upgrade() -> None:
    with op.batch_alter_table("outbox_mail") as batch:
        batch.add_column(sa.Column("public_id", sa.String(length=32), nullable=True))
        batch.add_column(
            sa.Column("state", sa.String(length=20), nullable=False, server_default="outbox")
        )
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("sending_until", sa.DateTime(timezone=True), nullable=True))
    conn = op.get_bind()
    conn.execute(sa.update(_OUTBOX).where(_OUTBOX.c.sent_at.is_not(None)).values(state="sent"))
    jobs = _delivery_jobs(conn)
    unsent = conn.execute(sa.select(_OUTBOX.c.id).where(_OUTBOX.c.sent_at.is_(None)))
    for (mail_id,) in unsent.all():
        job_state, error = jobs.get(mail_id, ("", ""))
        state = _BY_JOB.get(job_state)
        if state is not None:
            values = {"state": state, "last_error": _last_line(error) if state == "failed" else ""}
            conn.execute(sa.update(_OUTBOX).where(_OUTBOX.c.id == mail_id).values(values))
    ids = conn.execute(sa.select(_OUTBOX.c.id)).scalars().all()
    if ids:
        conn.execute(
            sa.update(_OUTBOX)
            .where(_OUTBOX.c.id == sa.bindparam("mail_id"))
            .values(public_id=sa.bindparam("new_id")),
            [{"mail_id": mail_id, "new_id": uuid.uuid4().hex} for mail_id in ids],
        )
    with op.batch_alter_table("outbox_mail") as batch:
        batch.alter_column("public_id", existing_type=sa.String(length=32), nullable=False)
        batch.create_unique_constraint(batch.f("uq_outbox_mail_public_id"), ["public_id"])
        # the defaults were for the rows already there; new rows get the model's
        for name, kind in (
            ("state", sa.String(20)),
            ("attempts", sa.Integer()),
            ("last_error", sa.Text()),
        ):
            batch.alter_column(name, existing_type=kind, server_default=None)
    op.create_index("ix_outbox_mail_state_id", "outbox_mail", ["state", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_mail_state_id", table_name="outbox_mail")
    with op.batch_alter_table("outbox_mail") as batch:
        batch.drop_constraint(batch.f("uq_outbox_mail_public_id"), type_="unique")
        batch.drop_column("sending_until")
        batch.drop_column("last_attempt_at")
        batch.drop_column("last_error")
        batch.drop_column("attempts")
        batch.drop_column("state")
        batch.drop_column("public_id")
