"""Core's tables.  Plugins define their own on :class:`core.db.Base`.

Every row exposed in a URL carries an opaque ``public_id``; integer keys stay
internal (joins and indexes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON
from sqlalchemy import Boolean
from sqlalchemy import Float
from sqlalchemy import ForeignKey
from sqlalchemy import Index
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import Text
from sqlalchemy import UniqueConstraint
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.orm import relationship

from core.db import Base
from core.db import new_public_id
from core.db import utcnow

COURSE_STATUSES = ("draft", "published", "archived")
VISIBILITIES = ("private", "instance", "federated")
ENROLMENT_MODES = ("open", "approval", "invite")
STAFF_ROLES = ("instructor", "ta")
ENROLMENT_STATUSES = ("pending", "active", "withdrawn", "rejected")
PROGRESS_STATUSES = ("not_started", "in_progress", "completed")


def _public_id() -> Mapped[str]:
    return mapped_column(String(32), unique=True, default=new_public_id)


class User(Base):
    """An account on this instance (local, or linked to an OIDC/peer identity)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = _public_id()
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    can_create_courses: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    erased_at: Mapped[datetime | None]
    """When the account was erased (:mod:`core.erasure`); it holds no name or address since."""
    row_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """Moved by an erasure only (:mod:`core.erasure`); the ORM writes every change of
    the row over the version it read, so a request holding the row from before an
    erasure fails with a conflict instead of writing a password or a name back,
    while ordinary changes at once (two logins) do not conflict."""

    __mapper_args__ = {"version_id_col": row_version, "version_id_generator": False}

    identities: Mapped[list[Identity]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )


class Identity(Base):
    """A way to log in: ``local`` (password), ``oidc`` (an IdP) or ``peer`` (another instance)."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("provider", "issuer", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(20))
    issuer: Mapped[str] = mapped_column(String(500), default="")
    subject: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(back_populates="identities")


class RecoveryCode(Base):
    """A single-use TOTP recovery code, stored hashed."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None]


class ApiToken(Base):
    """A personal API token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = _public_id()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Invitation(Base):
    """An invitation to register on an instance whose registration is ``invite``."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = _public_id()
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class OutboxMail(Base):
    """Mail written by core's mail sender: the outbox, and with ``[mail] url`` the
    queue of the SMTP delivery job.

    ``state`` is ``outbox`` (kept here only: no SMTP server configured when it
    was written, or since), ``queued`` (a delivery job will try it; after a
    failed try ``last_error`` says why), ``sent`` (the server accepted it at
    ``sent_at``) or ``failed`` (refused for good, or every try failed).
    ``sending_until`` is the lease of the delivery job sending it right now.
    """

    __tablename__ = "outbox_mail"
    # the operators' lists and counts by state, newest first
    __table_args__ = (Index("ix_outbox_mail_state_id", "state", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = _public_id()
    to: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(20), default="outbox")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_attempt_at: Mapped[datetime | None]
    sending_until: Mapped[datetime | None]


class Course(Base):
    """A course: modules of ordered items, run by staff, taken by enrolled learners."""

    __tablename__ = "courses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = _public_id()
    title: Mapped[str] = mapped_column(String(300))
    summary: Mapped[str] = mapped_column(String(1000), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    language: Mapped[str] = mapped_column(String(35), default="en")
    subject: Mapped[str] = mapped_column(String(100), default="")
    level: Mapped[str] = mapped_column(String(50), default="")
    status: Mapped[str] = mapped_column(String(20), default="draft", index=True)
    visibility: Mapped[str] = mapped_column(String(20), default="instance")
    enrolment_mode: Mapped[str] = mapped_column(String(20), default="open")
    invite_code_hash: Mapped[str | None] = mapped_column(String(64))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    published_at: Mapped[datetime | None]

    modules: Mapped[list[Module]] = relationship(
        back_populates="course", order_by="Module.position", cascade="all, delete-orphan"
    )


class Module(Base):
    """An ordered section of a course."""

    __tablename__ = "modules"
    __table_args__ = (Index("ix_modules_course_position", "course_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = _public_id()
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(300))
    position: Mapped[int] = mapped_column(Integer, default=0)

    course: Mapped[Course] = relationship(back_populates="modules")
    items: Mapped[list[Item]] = relationship(
        back_populates="module", order_by="Item.position", cascade="all, delete-orphan"
    )


class Item(Base):
    """A piece of content of one installed content type, config validated by that type."""

    __tablename__ = "items"
    __table_args__ = (Index("ix_items_module_position", "module_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = _public_id()
    module_id: Mapped[int] = mapped_column(ForeignKey("modules.id", ondelete="CASCADE"))
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(50))
    title: Mapped[str] = mapped_column(String(300))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    required: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    module: Mapped[Module] = relationship(back_populates="items")


class CourseRole(Base):
    """A staff role in one course: ``instructor`` or ``ta``."""

    __tablename__ = "course_roles"
    __table_args__ = (UniqueConstraint("course_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Enrolment(Base):
    """A learner's place in a course; ``active`` makes them a learner there."""

    __tablename__ = "enrolments"
    __table_args__ = (UniqueConstraint("course_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = _public_id()
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None]


class Progress(Base):
    """One learner's progress on one item."""

    __tablename__ = "progress"
    __table_args__ = (
        UniqueConstraint("user_id", "item_id"),
        Index("ix_progress_course_user", "course_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default="not_started")
    score: Mapped[float | None] = mapped_column(Float)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None]


class Event(Base):
    """A learning event, xAPI-shaped: actor, verb, object, result, context."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_course_time", "course_id", "timestamp"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = _public_id()
    timestamp: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    course_id: Mapped[int | None] = mapped_column(ForeignKey("courses.id", ondelete="SET NULL"))
    verb: Mapped[str] = mapped_column(String(200))
    object_id: Mapped[str] = mapped_column(String(500))
    statement: Mapped[dict[str, Any]] = mapped_column(JSON)


class AuditLog(Base):
    """Who changed what: security and administrative actions."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(200), default="", index=True)
    ip: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Job(Base):
    """A background job message and its state.

    With the embedded ``db`` broker this table *is* the queue; with Redis or
    RabbitMQ it records state so operators can see failed jobs.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_queue_state_available", "queue", "state", "available_at"),
        # the operators' lists and counts by state, newest first
        Index("ix_jobs_state_id", "state", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    queue: Mapped[str] = mapped_column(String(100))
    actor: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None]
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CatalogEntry(Base):
    """One course in the search index: a local course (``source`` ``''``) or a peer's.

    :mod:`core.catalog` owns these rows.  Local rows follow the course
    (``external_id`` is its public id) and keep a tombstone once the course is
    no longer public; rows of another source hold what that source published.
    """

    __tablename__ = "catalog_entries"
    __table_args__ = (
        UniqueConstraint("source", "external_id"),
        Index("ix_catalog_entries_source_seq", "source", "seq"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(64), default="")
    """``''`` for this instance's courses, else an opaque key of the source (a peer's id)."""
    external_id: Mapped[str] = mapped_column(String(500))
    seq: Mapped[int] = mapped_column(Integer, default=0)
    """Change sequence: per source, grows with every change to the row."""
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    federated: Mapped[bool] = mapped_column(Boolean, default=False)
    """Local rows: the course is published with visibility ``federated``."""
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    """Local rows: the course was federated at some point, so peers hear of its changes."""
    title: Mapped[str] = mapped_column(String(300), default="")
    summary: Mapped[str] = mapped_column(String(1000), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    language: Mapped[str] = mapped_column(String(35), default="")
    subject: Mapped[str] = mapped_column(String(100), default="")
    level: Mapped[str] = mapped_column(String(50), default="")
    institution: Mapped[str] = mapped_column(String(200), default="")
    url: Mapped[str] = mapped_column(String(1000), default="")
    image: Mapped[str] = mapped_column(String(1000), default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Extra schema.org ``Course`` terms (JSON-LD members) beyond the columns."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CatalogState(Base):
    """The search index's version: one row (id 1), given a new random value by every change.

    :mod:`core.catalog` caches facet counts under it, so any change to
    ``catalog_entries`` made through core (and committed) makes them stale at
    once; a value is never reused, so a rolled-back change cannot either.
    """

    __tablename__ = "catalog_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(32), default="")
