"""Course export, import and copy: one course as a portable JSON document.

An instructor exports a course (``GET /api/v1/courses/<id>/export``,
"Export" on the builder page, ``trivium courses export``) and imports the
document next term, or on another instance, as a new draft course
(``POST /api/v1/courses/import``, "Import a course", ``trivium courses
import``); a copy (``POST /api/v1/courses/<id>/copy``) is both in one step.

The document (``format`` ``trivium.course``, :data:`FORMAT_VERSION`)::

    {"format", "format_version", "exported_at",
     "source": {"instance", "base_url", "course_id"},
     "course": {title, summary, description, language, subject, level,
                visibility, enrolment_mode},
     "modules": [{"title", "position",
                  "items": [{"type", "title", "required", "position", "config"}]}],
     "plugins": {<plugin name>: <its export_course_data section>}}

What each of the course's columns becomes:

- kept: ``title``, ``summary``, ``description``, ``language``, ``subject``,
  ``level``, ``enrolment_mode`` and ``visibility`` (a preference, harmless
  since an imported course is a draft nobody but its staff sees).  A course
  has no completion settings of its own: its rule is "every required item",
  carried by each item's ``required``.
- left out: ``status`` (an imported course is always a draft, published when
  its new instructor decides); ``invite_code_hash`` (this run's secret: an
  imported course in ``invite`` mode has no code until its staff make one);
  ``created_by_id``, ``created_at``, ``updated_at`` and ``published_at``
  (facts of this run on this instance); ``id`` and ``public_id`` (the source
  course's id is given in ``source`` for the record only, and new ids are made
  for the course, its modules and items).
- items' configs are their content type's :meth:`~core.content.ContentType.export_config`;
  a plugin's own course data (the quiz plugin's question bank) is its
  ``export_course_data`` section, and on import its ``import_course_data``
  tells its content types' ``import_config`` what the exported ids became.

Never any learner data: no enrolments, progress, events, staff roles or
attempts; the importer becomes the new course's only instructor.

Import is all or nothing, in the caller's transaction (flushed, never
committed): an unsupported format, a document beyond :data:`MAX_MODULES` or
:data:`MAX_ITEMS`, an unknown or disabled content type, an item config its
type refuses and a plugin section that fails are each refused with a named
problem (422, 413 for size) and the caller stores nothing.  An export where a
content type or a plugin fails is refused (:class:`CourseExportFailed`,
naming it) rather than delivered incomplete: such a document would import as
a course that does not work.
"""

from __future__ import annotations

import inspect
import logging
from datetime import datetime
from typing import Any
from typing import Literal

import orjson
from flask import Response
from flask import current_app
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationError
from sqlalchemy.orm import Session

from core import courses as svc
from core.config import Settings
from core.content import ContentType
from core.content import CourseRef
from core.content import ImportContext
from core.content import ItemConfigInvalid
from core.content import ItemView
from core.db import plain_json
from core.db import utcnow
from core.errors import PayloadTooLarge
from core.errors import Problem
from core.errors import ValidationFailed
from core.models import Course
from core.models import Item
from core.models import Module
from core.models import User
from core.plugins import PluginHost
from core.plugins import UnknownContentType

log = logging.getLogger(__name__)

FORMAT = "trivium.course"
FORMAT_VERSION = 1
"""Raised when a member changes meaning or goes; new members keep the version."""

#: Most modules and items (in all modules) a document may hold.
MAX_MODULES = 200
MAX_ITEMS = 2_000

EXPORT_HOOK = "export_course_data"
IMPORT_HOOK = "import_course_data"

COPY_SUFFIX = " (copy)"
TITLE_MAX = 300


# ---------------------------------------------------------------- errors


class CourseDataInvalid(Exception):
    """A plugin refuses its section of an imported course (raise it in ``import_course_data``).

    The message and ``errors`` are shown to the importer.

    :ivar errors: a list of ``{"loc": ..., "msg": ...}`` describing each problem.

    .. versionadded:: 0.2
    """

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class UnsupportedCourseDocument(ValidationFailed):
    """The document is not a course export, or of a format version this instance cannot read."""

    type_slug = "unsupported-course-document"


class InvalidCourseDocument(ValidationFailed):
    """The document is a course export but does not have the expected shape."""

    type_slug = "invalid-course-document"


class CourseDocumentTooLarge(PayloadTooLarge):
    """The document holds more modules or items than an import accepts."""

    type_slug = "course-document-too-large"


class ImportedContentTypeUnknown(ValidationFailed):
    """An item of the document has a content type not installed or not enabled here."""

    type_slug = "unknown-content-type"


class ImportedItemRefused(ValidationFailed):
    """An item's content type refuses its config; ``module`` and ``item`` say which (from 1)."""

    type_slug = "imported-item-refused"


class PluginDataRefused(ValidationFailed):
    """A plugin's section of the document was refused, or the plugin failed importing it."""

    type_slug = "plugin-data-refused"


class CourseExportFailed(Problem):
    """A content type or plugin failed exporting its part; nothing is delivered."""

    status = 500
    title = "Course export failed"
    type_slug = "course-export-failed"


# ---------------------------------------------------------------- the document's shape


class _Strict(BaseModel):
    # an unknown member would be silently lost on import: refuse it instead
    model_config = ConfigDict(extra="forbid")


class CourseFields(_Strict):
    """A course's portable attributes."""

    title: str = Field(min_length=1, max_length=TITLE_MAX)
    summary: str = Field(default="", max_length=1000)
    description: str = Field(default="", max_length=100_000)
    language: str = Field(
        default="en", max_length=35, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"
    )
    subject: str = Field(default="", max_length=100)
    level: str = Field(default="", max_length=50)
    visibility: Literal["private", "instance", "federated"] = "instance"
    enrolment_mode: Literal["open", "approval", "invite"] = "open"


class ItemDocument(_Strict):
    """An item: its content type's name and its exported config."""

    type: str = Field(min_length=1, max_length=50)
    title: str = Field(min_length=1, max_length=300)
    required: bool = True
    position: int = Field(default=0, ge=0)
    config: dict[str, Any] = Field(default_factory=dict)


class ModuleDocument(_Strict):
    """A module with its items in order."""

    title: str = Field(min_length=1, max_length=300)
    position: int = Field(default=0, ge=0)
    items: list[ItemDocument] = Field(default_factory=list, max_length=MAX_ITEMS)


class SourceDocument(_Strict):
    """Where the document was exported, for the record only (it goes into the audit log)."""

    instance: str = Field(default="", max_length=300)
    base_url: str = Field(default="", max_length=2000)
    course_id: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9_-]*$")


class CourseDocument(BaseModel):
    """A course export (see :mod:`core.course_transfer`): what an import accepts."""

    format: Literal["trivium.course"]
    format_version: Literal[1]
    exported_at: datetime | None = None
    source: SourceDocument = Field(default_factory=SourceDocument)
    course: CourseFields
    modules: list[ModuleDocument] = Field(default_factory=list, max_length=MAX_MODULES)
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)


# ---------------------------------------------------------------- helpers


def _host() -> PluginHost:
    host: PluginHost = current_app.extensions["trivium.plugins"]
    return host


#: How deeply a document's values may nest (a course's own shapes need a dozen).
MAX_DEPTH = 64


def _check_values(document: Any) -> None:
    """Refuse NUL characters (PostgreSQL cannot store them) and nesting past :data:`MAX_DEPTH`.

    Walks with its own stack, so a hostile document cannot exhaust Python's.

    :raise InvalidCourseDocument: either is found.
    """
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise InvalidCourseDocument("text must not contain NUL characters")
        elif isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise InvalidCourseDocument(
                    f"the document nests deeper than {MAX_DEPTH} levels: not a course export"
                )
            children = (
                [x for pair in value.items() for x in pair] if isinstance(value, dict) else value
            )
            stack.extend((child, depth + 1) for child in children)


def _takes_context(ctype: ContentType) -> bool:
    # import_config gained ``context`` in 0.2; an override written before takes data
    # only (perhaps with keyword-only options or **kwargs): it must not get a second
    # positional argument
    try:
        inspect.signature(ctype.import_config).bind({}, None)
    except TypeError:
        return False
    except ValueError:  # no signature to read: call it the old way
        return False
    return True


# ---------------------------------------------------------------- export


def export_course(sess: Session, course: Course) -> dict[str, Any]:
    """The course as a portable document (see the module docstring).

    Reads only.  Called in an application context; plugins read with
    :func:`core.db.session`, so ``sess`` should be it.

    :raise core.courses.ContentTypeUnavailable: an item's content type is no
        longer installed (its config cannot be exported).
    :raise CourseExportFailed: a content type's ``export_config`` or a
        plugin's ``export_course_data`` failed; the problem names it.
    """
    settings: Settings = current_app.extensions["trivium.settings"]
    host = _host()
    modules = []
    for module in svc.modules_with_items(sess, course):
        items = []
        for item in module.items:
            ctype = svc.content_type_for(item.type)
            view = ItemView(
                id=item.public_id, course_id=course.public_id, title=item.title, config=item.config
            )
            try:
                config = plain_json(ctype.export_config(view))
                if not isinstance(config, dict):
                    raise TypeError(f"export_config returned {type(config).__name__}, not a dict")
            except Exception as exc:
                host.record_failure(f"content-type:{ctype.name}", "export_config", exc)
                raise CourseExportFailed(
                    f"content type {ctype.name!r} failed to export item {item.title!r}",
                    content_type=ctype.name,
                ) from exc
            items.append(
                {
                    "type": item.type,
                    "title": item.title,
                    "required": item.required,
                    "position": item.position,
                    "config": config,
                }
            )
        modules.append({"title": module.title, "position": module.position, "items": items})
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exported_at": utcnow().isoformat(),
        "source": {
            "instance": settings.instance.name,
            "base_url": settings.instance.base_url,
            "course_id": course.public_id,
        },
        "course": {name: getattr(course, name) for name in CourseFields.model_fields},
        "modules": modules,
        "plugins": _plugin_sections(host, course),
    }


def _plugin_sections(host: PluginHost, course: Course) -> dict[str, Any]:
    sections: dict[str, Any] = {}
    kwargs = {"course": course}
    for name, function, argnames in host.implementations(EXPORT_HOOK):
        try:
            result = function(*[kwargs[arg] for arg in argnames])
            if result is None:
                continue
            if not isinstance(result, dict):
                raise TypeError(f"{EXPORT_HOOK} returned {type(result).__name__}, not a dict")
            sections[name] = plain_json(result)
        except Exception as exc:
            host.record_failure(name, EXPORT_HOOK, exc)
            raise CourseExportFailed(
                f"plugin {name!r} failed to export its part of the course; "
                "the instance's operators find the error in its log",
                plugin=name,
            ) from exc
    return sections


def to_json(document: dict[str, Any]) -> bytes:
    """The document as indented UTF-8 JSON text."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


def file_name(course: Course) -> str:
    """The download's name: ``trivium-course-<id>-<date>.json``."""
    return f"trivium-course-{course.public_id}-{utcnow().date().isoformat()}.json"


def download(course: Course, document: dict[str, Any]) -> Response:
    """The document as a file download that no cache keeps (it holds answer keys)."""
    resp = Response(to_json(document), mimetype="application/json")
    resp.headers["Content-Disposition"] = f'attachment; filename="{file_name(course)}"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


# ---------------------------------------------------------------- import


def parse_document(raw: Any) -> CourseDocument:
    """Check a decoded document: format and version, size, then shape.

    :raise UnsupportedCourseDocument: not a course export, or another version.
    :raise CourseDocumentTooLarge: more than :data:`MAX_MODULES` modules or
        :data:`MAX_ITEMS` items.
    :raise InvalidCourseDocument: the shape is wrong (details in ``errors``).
    """
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UnsupportedCourseDocument(f"this is not a course export (format {FORMAT!r})")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise UnsupportedCourseDocument(
            f"course export format version {version!r} is not supported here "
            f"(this instance reads version {FORMAT_VERSION})"
        )
    modules = raw.get("modules")
    if isinstance(modules, list):
        items = sum(
            len(m["items"])
            for m in modules
            if isinstance(m, dict) and isinstance(m.get("items"), list)
        )
        if len(modules) > MAX_MODULES or items > MAX_ITEMS:
            raise CourseDocumentTooLarge(
                f"an import holds at most {MAX_MODULES} modules and {MAX_ITEMS} items; "
                f"this one has {len(modules)} modules and {items} items"
            )
    _check_values(raw)
    try:
        return CourseDocument.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]) or "document", "msg": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        raise InvalidCourseDocument(
            "the course export does not have the expected shape", errors=errors
        ) from exc


def parse_bytes(data: bytes) -> CourseDocument:
    """Decode and check a document given as JSON text (an upload, a file).

    :raise InvalidCourseDocument: it is not JSON.
    :raise UnsupportedCourseDocument: see :func:`parse_document`.
    """
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidCourseDocument("the file is not a JSON course export") from exc
    return parse_document(raw)


def import_course(
    sess: Session,
    owner: User,
    document: CourseDocument | dict[str, Any],
    *,
    title: str | None = None,
    via: str = "api",
) -> Course:
    """Create a new draft course from ``document``, owned by ``owner`` (its instructor).

    The document's shape is checked first; the plugins' sections and each
    item's config are then checked as the course is built, in the caller's
    one transaction: on any refusal the caller must not commit, and no row
    is then stored.  Audited as ``course.create`` and ``course.import``, both
    by ``owner`` (from the command line: by no one, ``"via": "cli"``).
    Permission checks are the caller's.

    :param document: a parsed document, or its decoded JSON.
    :param title: the new course's title instead of the document's (a copy's).
    :param via: ``api``, ``web`` or ``cli``, for the audit entry.
    :raise UnsupportedCourseDocument: wrong format or version.
    :raise CourseDocumentTooLarge: too many modules or items.
    :raise InvalidCourseDocument: the shape is wrong.
    :raise ImportedContentTypeUnknown: an item's content type is not installed
        or not enabled here.
    :raise PluginDataRefused: a plugin refused its section, failed, or is not here.
    :raise ImportedItemRefused: a content type refused an item's config.
    """
    doc = document if isinstance(document, CourseDocument) else parse_document(document)
    host = _host()
    for m, checked in enumerate(doc.modules, 1):
        for i, item in enumerate(checked.items, 1):
            try:
                host.content_type(item.type)
            except UnknownContentType:
                raise ImportedContentTypeUnknown(
                    f"module {m}, item {i} ({item.title!r}): content type {item.type!r} "
                    "is not installed or not enabled on this instance",
                    content_type=item.type,
                    module=m,
                    item=i,
                ) from None
    importers = {impl[0]: impl for impl in host.implementations(IMPORT_HOOK)}
    missing = sorted(set(doc.plugins) - set(importers))
    if missing:
        raise PluginDataRefused(
            f"the export holds data of plugin(s) {', '.join(missing)}, "
            "which this instance does not have (or which cannot import course data)",
            plugins=missing,
        )

    fields = doc.course.model_dump()
    if title is not None:
        fields["title"] = title
    course = svc.create_course(sess, owner, fields, via_cli=via == "cli")
    references = _import_plugin_sections(host, importers, course, doc.plugins)
    sess.flush()  # the plugins' rows, which items' configs are checked against

    ref = CourseRef(id=course.public_id, key=course.id)
    modules = sorted(enumerate(doc.modules), key=lambda pair: (pair[1].position, pair[0]))
    item_count = 0
    for m_pos, (m_index, module_doc) in enumerate(modules):
        module = Module(course_id=course.id, title=module_doc.title, position=m_pos)
        sess.add(module)
        sess.flush()
        items = sorted(enumerate(module_doc.items), key=lambda pair: (pair[1].position, pair[0]))
        for i_pos, (i_index, item_doc) in enumerate(items):
            where = (m_index + 1, i_index + 1, item_doc.title)
            ctype = host.content_type(item_doc.type)
            context = ImportContext(
                course=ref, references=references.get(host.content_type_owner(ctype.name) or "", {})
            )
            config = _imported_config(ctype, item_doc.config, context, where)
            sess.add(
                Item(
                    module_id=module.id,
                    course_id=course.id,
                    type=item_doc.type,
                    title=item_doc.title,
                    config=config,
                    required=item_doc.required,
                    position=i_pos,
                )
            )
            item_count += 1
    sess.flush()
    svc.audit(
        sess,
        None if via == "cli" else owner,  # from the command line the operator acted
        "course.import",
        course,
        via=via,
        owner=owner.public_id,
        source=doc.source.model_dump(),
        modules=len(doc.modules),
        items=item_count,
    )
    sess.flush()
    log.info(
        "course=imported course=%s source=%s items=%d",
        course.public_id,
        doc.source.course_id,
        item_count,
    )
    return course


def _import_plugin_sections(
    host: PluginHost, importers: dict[str, Any], course: Course, sections: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    references: dict[str, dict[str, Any]] = {}
    for name, data in sections.items():
        _, function, argnames = importers[name]
        kwargs = {"course": course, "data": data}
        try:
            result = function(*[kwargs[arg] for arg in argnames])
            if result is not None and not isinstance(result, dict):
                raise TypeError(f"{IMPORT_HOOK} returned {type(result).__name__}, not a dict")
        except CourseDataInvalid as exc:
            raise PluginDataRefused(
                f"plugin {name!r} refused its part of the course: {exc}",
                plugin=name,
                errors=exc.errors,
            ) from exc
        except Exception as exc:
            host.record_failure(name, IMPORT_HOOK, exc)
            raise PluginDataRefused(
                f"plugin {name!r} failed to import its part of the course; "
                "the instance's operators find the error in its log",
                plugin=name,
            ) from exc
        references[name] = result or {}
    return references


def _imported_config(
    ctype: ContentType, data: dict[str, Any], context: ImportContext, where: tuple[int, int, str]
) -> dict[str, Any]:
    """The item's config from its type's ``import_config``, validated for the new course.

    :raise ImportedItemRefused: the content type refuses it (or fails).
    """
    module, item, title = where
    prefix = f"module {module}, item {item} ({title!r})"
    try:
        if _takes_context(ctype):
            config = ctype.import_config(data, context)
        else:
            config = ctype.import_config(data)
        return ctype.validate_for_course(config, context.course)
    except ItemConfigInvalid as exc:
        raise ImportedItemRefused(
            f"{prefix}: {exc}", module=module, item=item, errors=exc.errors
        ) from exc
    except Exception as exc:
        _host().record_failure(f"content-type:{ctype.name}", "import_config", exc)
        raise ImportedItemRefused(
            f"{prefix}: content type {ctype.name!r} failed to import it; "
            "the instance's operators find the error in its log",
            module=module,
            item=item,
        ) from exc


def copy_course(sess: Session, actor: User, course: Course, *, via: str = "api") -> Course:
    """Export ``course`` and import it at once as a new draft owned by ``actor``.

    The title gets :data:`COPY_SUFFIX`.  Audited as ``course.copy`` on the
    source course (and ``course.create``/``course.import`` on the new one).

    :raise CourseExportFailed: see :func:`export_course`.
    :raise ValidationFailed: see :func:`import_course`.
    """
    document = export_course(sess, course)
    title = course.title[: TITLE_MAX - len(COPY_SUFFIX)] + COPY_SUFFIX
    new = import_course(sess, actor, document, title=title, via=via)
    svc.audit(sess, actor, "course.copy", course, copy=new.public_id, via=via)
    sess.flush()
    return new


def record_export(sess: Session, actor: User | None, course: Course, via: str) -> None:
    """Audit an export of ``course`` as ``course.export`` (stored with the caller's commit).

    :param actor: who asked; None for an operator's command.
    :param via: ``api``, ``web`` or ``cli``.
    """
    svc.audit(sess, actor, "course.export", course, via=via)
