"""The plugin contract: every extension point of Trivium, one hookspec each.

Core always calls hooks with keyword arguments, so an implementation may
accept any subset of a spec's parameters.  Unless a spec says otherwise, all
implementations are called and a failing one is logged with its plugin's name
and skipped (see :func:`core.plugins.PluginHost.call`).

A plugin's only import from here is the marker::

    from core import hookimpl
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

import pluggy

if TYPE_CHECKING:
    import click
    from flask import Blueprint
    from flask import Flask
    from flask import Request
    from markupsafe import Markup
    from sqlalchemy.orm import Session

    from core.config import Settings
    from core.content import ContentType
    from core.demo import DemoInstance
    from core.events import LearningEvent
    from core.models import Course
    from core.models import User
    from core.tasks import ActorSpec

hookspec = pluggy.HookspecMarker("trivium")
hookimpl = pluggy.HookimplMarker("trivium")

# ---------------------------------------------------------------- startup


@hookspec
def startup(app: Flask) -> None:
    """Called once at the end of ``create_app``, after every other registration.

    Use it for start-up checks that need the assembled app.  An exception here
    is logged and the plugin is reported as failed on ``/api/v1/plugins``; the
    app still starts.  Except :class:`core.plugins.StartupError`: raise it when
    the instance must not run as it is (the message says what the operator
    should do); ``create_app`` then raises it, naming the plugin, and no later
    ``startup`` implementation is called.

    :param app: the Flask application being created.
    :return: ignored.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2 ``StartupError`` stops start-up.
    """


@hookspec
def register_migrations() -> list[str]:
    """Return folders of Alembic revisions this plugin owns.

    Called when core builds its Alembic configuration (``trivium db upgrade``
    and on start-up of an embedded instance).  Each folder is one Alembic
    branch; its first revision names a ``branch_labels`` equal to the plugin
    name and ``depends_on`` naming the core revision whose tables it references
    (``"core_0001"``).

    :return: absolute paths; ``None`` or ``[]`` if the plugin has no tables.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------- instance lifecycle


@hookspec
def init_instance(path: str, settings: Settings) -> None:
    """Called by ``trivium init`` and ``trivium demo`` once a new instance's files are written.

    Prepare what the plugin needs in a new instance folder (keys, folders)
    before the instance first starts.  No app exists yet and the database may
    not have been created.  ``trivium init --force`` calls it again on an
    existing folder: keep what is already there.  An implementation that
    raises is logged, and the command then exits with an error naming the
    plugin; the instance files already written are kept.

    :param path: the instance folder, absolute.
    :param settings: the new instance's validated settings.
    :return: ignored.

    .. versionadded:: 0.1
    """


@hookspec
def demo_instances_started(instances: list[DemoInstance]) -> list[str] | None:
    """Join the instances of ``trivium demo --peers N`` together.

    Called once per run of ``trivium demo --peers N`` (never for a single
    demo instance), in the command's own process, when every instance is
    served by a ``trivium serve`` process of its own and answers at its
    ``url``; through the plugin host of the first instance.  Each instance
    holds core's demo accounts and sample course (see ``core.demo``); a
    second run reuses the folders, so keep what a previous run added.  No
    application context is active: push ``instance.app.app_context()`` to
    use an instance's database (the same one its server uses; jobs queued
    there run in its server).  An implementation that raises is logged and
    named to the user; the instances keep running.

    :param instances: the :class:`core.demo.DemoInstance` values (``app``,
        ``path``, ``url``, ``name``), in port order.
    :return: lines telling the user what the plugin did; None or ``[]`` if it
        did nothing.  When no plugin returns a line, the command says that no
        plugin connected the instances.

    .. versionadded:: 0.2
    """


# ---------------------------------------------------------------- content


@hookspec
def register_content_types() -> list[type[ContentType]]:
    """Return the :class:`core.content.ContentType` subclasses this plugin provides.

    Called once at start-up.  Names must be unique across all plugins: a
    duplicate stops start-up with an error naming both plugins.

    :return: a list of classes (not instances); ``None`` for none.

    .. versionadded:: 0.1
    """


@hookspec
def export_course_data(course: Course) -> dict[str, Any] | None:
    """Return this plugin's part of a course export: what it stores for ``course``.

    Called when a course is exported (``GET /api/v1/courses/<id>/export``,
    "Export" on the course's builder page, ``trivium courses export``) and
    copied, inside an application context: read with
    :func:`core.db.session` and change nothing.  Core puts the result under
    ``plugins.<plugin name>`` of the document and gives it back to the same
    plugin's :func:`import_course_data` on import, possibly on another
    instance.  Give what a new course needs to work as this one does (a
    quiz's question bank), never learner data (attempts, answers, grades),
    and refer to rows by ids that mean something in the document: the ids
    your content types' ``export_config`` uses.  Every implementation is
    called.  An implementation that raises, or returns something that is not
    a JSON-compatible dict, is logged with the plugin's name and the export is
    refused, naming the plugin: an export without a plugin's part would import
    as a course that does not work.

    :param course: the course being exported, an object of
        :func:`core.db.session`.
    :return: a dict of JSON values (``datetime`` and ``date`` values are
        written as ISO 8601 text); None when the plugin stores nothing for the
        course, which adds no section.

    .. versionadded:: 0.2
    """


@hookspec
def import_course_data(course: Course, data: dict[str, Any]) -> dict[str, Any] | None:
    """Recreate this plugin's part of an imported course in the new ``course``.

    Called once per import or copy for each plugin whose section is in the
    document (what its :func:`export_course_data` gave, possibly on another
    instance), after the new draft course is created and before any of its
    items is: add your rows with :func:`core.db.session` and flush, never
    commit.  The import is one transaction: when anything is refused, every
    database row (yours too) is rolled back; what you keep elsewhere (files,
    caches) is not, so write such things only from rows, or after the commit.
    A document holding a section for a plugin without an implementation here
    is refused.  To refuse your
    section, raise :class:`core.course_transfer.CourseDataInvalid`: its
    message and ``errors`` are shown to the importer (422).  Any other
    exception is logged with the plugin's name and refuses the import too.

    :param course: the new draft course, an object of :func:`core.db.session`.
    :param data: this plugin's section of the document, as JSON values; not
        validated by core: check everything.
    :return: references for this plugin's content types: core passes them
        as ``context.references`` to their ``import_config`` (e.g. ``{"questions":
        {old_id: new_id}}``); None for none.

    .. versionadded:: 0.2
    """


# ---------------------------------------------------------------- routes


@hookspec
def register_blueprints() -> list[Blueprint]:
    """Return Flask blueprints to mount on the app.

    Called once in ``create_app``.  A plugin's blueprint name should start
    with the plugin's name; URL prefixes are the blueprint's own.

    :return: a list of blueprints; ``None`` for none.

    .. versionadded:: 0.1
    """


@hookspec
def register_actors() -> list[ActorSpec]:
    """Return background jobs as :class:`core.tasks.ActorSpec` values.

    Called once in ``create_app``; core declares each as a dramatiq actor on
    the instance's broker.  Actors run at least once: they must be idempotent.

    :return: a list of specs, usually built with :func:`core.tasks.actor`.

    .. versionadded:: 0.1
    """


@hookspec
def register_commands() -> list[click.Command]:
    """Return click commands to add to the ``trivium`` CLI.

    Called when the CLI starts.  Commands run inside an application context
    when the CLI was given an instance (``--instance`` or
    ``TRIVIUM_INSTANCE_PATH``).

    :return: a list of click commands or groups.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------- auth


@hookspec(firstresult=True)
def actor_from_request(request: Request) -> User | None:
    """Identify the user making ``request`` from something other than the session.

    Called for each request that carries no logged-in session.  The first
    non-None result wins.  Core's own implementation (``trylast``) reads
    ``Authorization: Bearer <personal API token>``.

    :param request: the current request.
    :return: the authenticated user, or None to let the next plugin try.
        It may belong to the request's session or to none (detached, as
        :func:`core.db.detached` builds one): core attaches it to the
        request's session when the request needs it there.

    .. versionadded:: 0.1
    """


@hookspec
def permission_allowed(user: User | None, action: str, course: Course | None) -> bool | None:
    """Vote on whether ``user`` may perform ``action`` (on ``course``).

    Called by :func:`core.rbac.can` for every permission check.  If any
    implementation returns False the action is denied; otherwise if any
    returns True it is allowed; if all return None core's role table decides.

    :param user: the acting user, None for anonymous; on learners' hot paths
        it may not be in a session yet: read its columns ``id``,
        ``public_id``, ``email``, ``display_name``, ``is_admin``,
        ``can_create_courses``, ``is_active`` and ``created_at`` only.
    :param action: a dotted permission name, e.g. ``"course.edit"``.
    :param course: the course concerned, if any; on learners' hot paths a
        read-only copy from :mod:`core.readcache` (read its columns, don't
        change it or relate rows to it).
    :return: True, False, or None to abstain.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def send_mail(to: str, subject: str, body: str) -> bool | None:
    """Deliver one plain-text mail (password resets, invitations, notices).

    Called each time core sends mail.  The first implementation returning
    True has delivered it.  Core's default (``trylast``) writes it to the
    ``outbox_mail`` table and the log, which is what an embedded instance uses,
    and with ``[mail] url`` set queues its SMTP delivery in the same
    transaction (the ``core.deliver_mail`` job).  Called in the caller's
    transaction, often a request's: queue slow work rather than calling out.

    :param to: the recipient address.
    :param subject: the subject line.
    :param body: the plain-text body.
    :return: True when sent; None to let the next implementation try.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------- privacy


@hookspec
def export_user_data(user: User) -> dict[str, Any] | None:
    """Return what this plugin stores about ``user``, for their copy of their personal data.

    Called each time a person downloads their data (``GET /api/v1/me/export``,
    "Download my data" on the account page) and when an operator runs
    ``trivium users export EMAIL`` (GDPR right of access and portability),
    inside an application context: read with :func:`core.db.session`, and
    change nothing.  Every implementation is called; core puts each result
    under ``plugins.<plugin name>`` of the document.  Give every row of your
    tables that is about the person, with public ids (never integer keys),
    and nothing they may not see: no hashes, keys or tokens, no answer keys
    or grades your own rules still hide from them, no other person's data.
    An implementation that raises, or returns something that is not a
    JSON-compatible dict, is logged with the plugin's name; its section then
    reads ``{"failed": true, "detail": ...}``, the plugin is listed in the
    document's ``plugins_failed``, and the rest of the document is exported.

    :param user: the person whose data is exported, an object of
        :func:`core.db.session`; possibly deactivated.
    :return: a dict of JSON values (``datetime`` and ``date`` values are
        written as ISO 8601 text); None when the plugin stores nothing about
        the person, which adds no section.

    .. versionadded:: 0.2
    """


@hookspec
def withhold_from_export(user: User, statements: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Say which of a person's learning events their export must show only in part, for now.

    Called with every xAPI statement of the person, in order, each time their
    data is exported (see :func:`export_user_data`), inside an application
    context (read with :func:`core.db.session`, change nothing).  Core exports
    every stored statement; a plugin whose rules still hide part of what its
    own statements hold from the person (a quiz's per-question scores before
    its review opens) returns, by statement ``id``, the statement to show
    instead (the same without ``result``, say).  Every implementation is
    called; replacements apply in turn.  An implementation that raises is
    logged, the plugin is listed in ``plugins_failed``, and every statement
    loses its ``result`` (what might be hidden is then hidden).

    :param user: the person whose data is exported.
    :param statements: the statements, as stored (do not change them).
    :return: replacements by statement id; None or an empty dict: none.

    .. versionadded:: 0.2
    """


@hookspec
def erase_user_data(user: User) -> None:
    """Erase or anonymise what this plugin stores that names or reaches ``user``.

    Called when an account is erased (a person erasing their own, an
    administrator's page, ``trivium users erase EMAIL``; GDPR right to
    erasure), inside an application context, in the erasure's transaction:
    write with :func:`core.db.session` and do not commit.  Core has already
    removed the account's identities, tokens and mail and withdrawn its
    enrolments; ``user`` still holds the person's address and display name
    (they are replaced after every plugin ran), so match rows on them if you
    must.  Delete what only served the person (drafts, uploads, messages
    addressed to them) and replace names and free text that identify them;
    keep the records an institution must keep (attempts, grades), attached
    to ``user.id``, whose row names no one afterwards.  Every implementation
    is called.  An implementation that raises stops the erasure: the
    transaction is rolled back, nothing is erased, and the person or
    operator is told which plugin failed.  Called again by the erasure's
    sweep jobs, seconds and about a minute after the commit, for what a
    request begun before it wrote afterwards: then ``user`` no longer holds
    the address or name, so keep matching on ``user.id``, and be idempotent
    (a failure there retries the job).

    :param user: the account being erased, an object of :func:`core.db.session`.
    :return: nothing; raise to refuse the erasure.

    .. versionadded:: 0.2
    """


# ---------------------------------------------------------------- events


@hookspec
def track_event(event: LearningEvent) -> None:
    """Called for every learning event as it is recorded.

    Runs inside the request that recorded the event, so keep it fast: enqueue
    a job for slow work.  Most events are already flushed to the database;
    progress heartbeats are written with the next batch (within
    ``[progress] flush_ms``), so don't read the event back from the table.

    :param event: the xAPI-shaped event (actor, verb, object, result, context).
    :return: ignored.

    .. versionadded:: 0.1
    """


@hookspec
def course_completed(user: User, course: Course) -> None:
    """Called once when a learner meets a course's completion rule.

    The completion and its ``completed`` event are already stored; credential
    issuers listen here.  Usually called in the request of the learner's last
    report; when an instructor deletes a required item or makes it optional,
    in a ``core.announce_completion`` job for each learner who now meets the
    rule.  Jobs run at least once, so a worker crash can repeat the call:
    make listeners idempotent (one credential per learner and course).

    :param user: the learner.
    :param course: the completed course, an object of the caller's session
        (``core.db.session()`` in a request).
    :return: ignored.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------- catalog and federation


@hookspec
def catalog_entry_metadata(course: Course) -> dict[str, Any] | None:
    """Return extra schema.org ``Course`` members for a course's catalog entry.

    Called by :func:`core.catalog.index_course` whenever a public course's
    entry is rebuilt (in the transaction of the change).  The members are
    stored with the entry and published in the federated catalog feed, e.g.
    ``{"timeRequired": "PT10H"}``.  The first plugin to give a key wins; a
    value that is not JSON drops the plugin's extras, logged.

    :param course: the published course being indexed.
    :return: JSON-compatible members to add, or None for none.

    .. versionadded:: 0.2
    """


@hookspec
def catalog_changed(session: Session, external_ids: list[str]) -> None:
    """Called when entries of this instance's catalog that peers know of changed.

    That is a course that is federated, or was and no longer is (its entry
    became a tombstone).  Runs inside the transaction of the change, before
    it commits: do slow work after commit (``sqlalchemy.event.listen(session,
    "after_commit", ..., once=True)``), e.g. enqueue a job there.

    :param session: the session holding the uncommitted change.
    :param external_ids: public ids of the courses whose entries changed.
    :return: ignored.

    .. versionadded:: 0.2
    """


# ---------------------------------------------------------------- template slots


@hookspec
def template_slot(slot: str, context: dict[str, Any]) -> Markup | None:
    """Return HTML to show at a named place of a core page.

    Called while a page renders, once per slot occurrence.  Core's slots:
    ``head`` (inside ``<head>``: styles, meta), ``nav`` (end of the top
    navigation), ``dashboard`` (the learner dashboard), ``course_sidebar``
    (course page and learn view), ``item_after`` (after an item's content),
    ``admin_nav`` (the administration pages' tabs: return ``<li>`` items, e.g.
    ``<li><a href="/admin/peers">Peers</a></li>``, marking your own page's
    link ``aria-current="page"``, for users allowed to open it).  Every
    implementation is called and the fragments are shown in call order.  An
    implementation that raises is logged and the page says which plugin
    failed in place of its fragment.

    :param slot: the slot's name; return None for slots you do not fill.
    :param context: what the page offers at this slot: always ``user`` (the
        logged-in user or None); ``course`` on course pages; ``item`` and
        ``state`` (the learner's :class:`core.content.ProgressState`) at
        ``item_after``.  Read only.
    :return: a :class:`markupsafe.Markup` fragment (escape anything user
        supplied: ``Markup("<b>{}</b>").format(value)``); a plain ``str`` is
        escaped; None adds nothing.

    .. versionadded:: 0.1
    """


__all__ = ["hookimpl", "hookspec"]
