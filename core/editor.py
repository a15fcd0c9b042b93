"""Item editor forms: the fields a content type shows in the course builder.

A content type describes its editor as a list of :class:`EditorField` (see
:meth:`core.content.ContentType.editor_fields`); core renders them as
labelled inputs and turns the submitted form back into a config with
:func:`parse_form`, which the content type's ``validate_config`` then checks.
The default list is derived from the type's pydantic ``config_model``: text,
numbers, yes/no and choices get their own inputs, anything more complex one
JSON text area.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Literal

from flask_babel import gettext

EditorKind = Literal["text", "textarea", "html", "integer", "number", "checkbox", "select", "json"]

#: Strings longer than this (``maxLength``) get a text area instead of a line.
TEXTAREA_OVER = 500

#: Form fields of an item's config are named ``config.<field name>``.
FORM_PREFIX = "config."


@dataclass(frozen=True)
class EditorField:
    """One input of an item editor.

    :ivar name: the config key the input edits.
    :ivar label: the visible label.
    :ivar kind: ``text`` (one line), ``textarea``, ``html`` (a text area whose
        content is HTML, sanitised by the type), ``integer``, ``number``,
        ``checkbox``, ``select`` (``choices``) or ``json`` (any JSON value).
    :ivar help: a sentence under the input, or ``""``.
    :ivar required: the config must have a value.
    :ivar nullable: an empty input means ``None`` rather than "not given".
    :ivar default: the value a new item starts with.
    :ivar choices: ``(value, label)`` pairs of a ``select``.
    :ivar minimum: the lowest number accepted, if any.
    :ivar maximum: the highest number accepted, if any.
    :ivar max_length: the longest text accepted, if any.
    :ivar attrs: extra HTML attributes of the input (``{"rows": 20}``).
    """

    name: str
    label: str
    kind: EditorKind = "text"
    help: str = ""
    required: bool = False
    nullable: bool = False
    default: Any = None
    choices: tuple[tuple[str, str], ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def display(self, config: Mapping[str, Any] | None) -> Any:
        """The value to show in the input for ``config`` (a new item's default when None).

        Text inputs get a string, a checkbox a bool.
        """
        value = config[self.name] if config is not None and self.name in config else self.default
        if self.kind == "checkbox":
            return bool(value)
        if self.kind == "json":
            return "" if value is None else json.dumps(value, indent=2, ensure_ascii=False)
        return "" if value is None else str(value)


@dataclass(frozen=True)
class FormError:
    """One problem with a submitted editor form."""

    loc: str
    msg: str


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = root.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return merged
    return dict(schema)


def _simplify(schema: Mapping[str, Any], root: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Resolve references and ``anyOf: [X, null]``.

    :return: the schema of the value and whether ``null`` is allowed.
    """
    resolved = _resolve(schema, root)
    options = resolved.get("anyOf")
    if isinstance(options, list):
        non_null = [o for o in options if o.get("type") != "null"]
        nullable = len(non_null) < len(options)
        if len(non_null) == 1:
            inner = _resolve(non_null[0], root)
            outer = {k: v for k, v in resolved.items() if k != "anyOf"}
            return {**inner, **outer}, nullable
        return resolved, nullable
    return resolved, False


def _kind(schema: Mapping[str, Any]) -> EditorKind:
    if "enum" in schema and all(isinstance(v, str) for v in schema["enum"]):
        return "select"
    kind = schema.get("type")
    if kind == "string":
        if schema.get("format") in {"textarea", "html"}:
            return "html" if schema["format"] == "html" else "textarea"
        if schema.get("format"):
            # date-time, date, email, uri, ...: one line whatever the length
            return "text"
        max_length = schema.get("maxLength")
        return "textarea" if max_length is None or max_length > TEXTAREA_OVER else "text"
    if kind == "integer":
        return "integer"
    if kind == "number":
        return "number"
    if kind == "boolean":
        return "checkbox"
    return "json"


def _label(name: str, schema: Mapping[str, Any]) -> str:
    title = schema.get("title")
    if isinstance(title, str) and title:
        return title
    return name.replace("_", " ").capitalize()


_FORMAT_HINTS = {
    "date-time": lambda: gettext("A date and time such as 2026-09-01T09:00:00+00:00."),
    "date": lambda: gettext("A date such as 2026-09-01."),
    "email": lambda: gettext("An e-mail address."),
    "uri": lambda: gettext("A full web address starting with https://."),
}


def fields_from_schema(schema: Mapping[str, Any]) -> list[EditorField]:
    """Editor fields for each property of a JSON Schema object (pydantic's output).

    :param schema: ``config_model.model_json_schema()``.
    :return: one field per property, in declaration order.
    """
    required = set(schema.get("required", []))
    out = []
    for name, raw in schema.get("properties", {}).items():
        prop, nullable = _simplify(raw, schema)
        kind = _kind(prop)
        choices: tuple[tuple[str, str], ...] = ()
        if kind == "select":
            choices = tuple((str(v), str(v)) for v in prop["enum"])
        minimum = prop.get("minimum", prop.get("exclusiveMinimum"))
        maximum = prop.get("maximum", prop.get("exclusiveMaximum"))
        help_text = str(prop.get("description", ""))
        if not help_text and prop.get("format") in _FORMAT_HINTS:
            help_text = _FORMAT_HINTS[prop["format"]]()
        out.append(
            EditorField(
                name=name,
                label=_label(name, prop),
                kind=kind,
                help=help_text,
                required=name in required,
                nullable=nullable,
                default=prop.get("default"),
                choices=choices,
                minimum=minimum if kind in {"integer", "number"} else None,
                maximum=maximum if kind in {"integer", "number"} else None,
                max_length=prop.get("maxLength") if kind in {"text", "textarea", "html"} else None,
            )
        )
    return out


def _is_on(raw: str | None) -> bool:
    return raw is not None and raw.strip().lower() in {"on", "1", "true", "yes"}


def parse_form(
    fields: list[EditorField], form: Mapping[str, str]
) -> tuple[dict[str, Any], list[FormError]]:
    """Turn submitted editor inputs into a config (not yet validated by the type).

    An input that was not sent, or is empty and not nullable, is left out so
    the model's default (or its "field required" error) applies.

    :param form: the submitted values by config key (without :data:`FORM_PREFIX`).
    :return: the config and any input that could not be read (a number that is
        not a number, JSON that does not parse).
    """
    config: dict[str, Any] = {}
    errors: list[FormError] = []
    for f in fields:
        raw = form.get(f.name)
        if f.kind == "checkbox":
            config[f.name] = _is_on(raw)
            continue
        if raw is None:
            continue
        text = raw.replace("\r\n", "\n")
        if f.kind in {"text", "textarea", "html"}:
            if text == "" and f.nullable:
                config[f.name] = None
            elif text != "" or not f.required:
                config[f.name] = text
            continue
        if text.strip() == "":
            if f.nullable:
                config[f.name] = None
            continue
        if f.kind == "integer":
            try:
                config[f.name] = int(text.strip())
            except ValueError:
                errors.append(FormError(f.name, gettext("Enter a whole number.")))
        elif f.kind == "number":
            try:
                config[f.name] = float(text.strip())
            except ValueError:
                errors.append(FormError(f.name, gettext("Enter a number.")))
        elif f.kind == "select":
            config[f.name] = text
        else:
            try:
                config[f.name] = json.loads(text)
            except ValueError as exc:
                errors.append(FormError(f.name, gettext("Not valid JSON: %(error)s", error=exc)))
    return config, errors


def field_errors(errors: list[dict[str, Any]] | list[FormError]) -> dict[str, list[str]]:
    """Group problems by the top-level config key they concern.

    A nested location (``questions.0.text``) belongs to its first part's
    input; the rest of the path is kept in the message.

    :param errors: ``ItemConfigInvalid.errors`` or :func:`parse_form` errors.
    """
    out: dict[str, list[str]] = {}
    for err in errors:
        loc, msg = (err.loc, err.msg) if isinstance(err, FormError) else (err["loc"], err["msg"])
        head, _, rest = str(loc).partition(".")
        out.setdefault(head, []).append(f"{rest}: {msg}" if rest else str(msg))
    return out


__all__ = [
    "FORM_PREFIX",
    "EditorField",
    "EditorKind",
    "FormError",
    "field_errors",
    "fields_from_schema",
    "parse_form",
]
