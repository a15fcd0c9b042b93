"""Outbox mail says where its delivery stands: state, tries, last error; an opaque id.

``state`` is ``outbox`` (kept here only), ``queued``, ``sent`` or ``failed``;
``attempts``, ``last_error`` and ``last_attempt_at`` tell what the SMTP
delivery job met.  ``public_id`` names a mail in the administration's URLs;
an index on ``(state, id)`` serves its lists and counts by state.

Existing rows: a mail with ``sent_at`` is ``sent``; any other is ``outbox``,
as nothing here says whether a delivery job still waits for it (one that
does sets the state when it runs, and ``trivium mail retry`` queues the
others again).

Revision ID: core_0006
Revises: core_0005
Create Date: 2026-11-22 01:10:00
"""

from __future__ import annotations

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
)


def upgrade() -> None:
    with op.batch_alter_table("outbox_mail") as batch:
        batch.add_column(sa.Column("public_id", sa.String(length=32), nullable=True))
        batch.add_column(
            sa.Column("state", sa.String(length=20), nullable=False, server_default="outbox")
        )
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True))
    conn = op.get_bind()
    conn.execute(sa.update(_OUTBOX).where(_OUTBOX.c.sent_at.is_not(None)).values(state="sent"))
    ids = conn.execute(sa.select(_OUTBOX.c.id)).scalars().all()
    for mail_id in ids:
        conn.execute(
            sa.update(_OUTBOX).where(_OUTBOX.c.id == mail_id).values(public_id=uuid.uuid4().hex)
        )
    with op.batch_alter_table("outbox_mail") as batch:
        batch.alter_column("public_id", existing_type=sa.String(length=32), nullable=False)
        batch.create_unique_constraint(batch.f("uq_outbox_mail_public_id"), ["public_id"])
    op.create_index("ix_outbox_mail_state_id", "outbox_mail", ["state", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_mail_state_id", table_name="outbox_mail")
    with op.batch_alter_table("outbox_mail") as batch:
        batch.drop_constraint(batch.f("uq_outbox_mail_public_id"), type_="unique")
        batch.drop_column("last_attempt_at")
        batch.drop_column("last_error")
        batch.drop_column("attempts")
        batch.drop_column("state")
        batch.drop_column("public_id")
