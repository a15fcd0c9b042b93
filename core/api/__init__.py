"""The JSON API under ``/api/v1``: request parsing, pagination and the OpenAPI document.

Every API view is declared with :func:`operation`, which records its body,
query and response models on the view function.  The OpenAPI document is built
from the app's URL map, so a route without that declaration is visible as
missing (and a test fails).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from typing import TypeVar

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from flask import jsonify
from flask import request
from pydantic import BaseModel
from pydantic import ValidationError

from core.errors import BadRequest
from core.errors import UnsupportedMediaType
from core.errors import ValidationFailed

API_PREFIX = "/api/v1"
OPENAPI_ATTR = "_trivium_operation"

bp = Blueprint("api", __name__, url_prefix=API_PREFIX)

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Operation:
    """OpenAPI facts about one view function."""

    summary: str
    tags: tuple[str, ...] = ()
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: bool = True
    errors: tuple[int, ...] = ()


def operation(
    summary: str,
    *,
    tags: tuple[str, ...] = (),
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    auth: bool = True,
    errors: tuple[int, ...] = (),
) -> Callable[[F], F]:
    """Declare a view's API contract for the OpenAPI document.

    Apply it *under* the route decorator.  It does not parse anything: views
    call :func:`parse_body` / :func:`parse_query` with the same models.
    """

    def mark(fn: F) -> F:
        setattr(
            fn,
            OPENAPI_ATTR,
            Operation(summary, tags, body, query, response, status, auth, errors),
        )
        return fn

    return mark


def _validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"loc": ".".join(str(p) for p in e["loc"]) or "body", "msg": e["msg"]}
        for e in exc.errors(include_url=False)
    ]


#: Validation context key: the body holds no NUL character (checked on the raw bytes).
NUL_FREE = "trivium.nul_free"


def parse_body(model: type[M]) -> M:
    """Parse and validate the JSON body.

    :raise UnsupportedMediaType: the body is not ``application/json``.
    :raise BadRequest: the body is not valid JSON.
    :raise ValidationFailed: it does not match ``model`` (details in ``errors``).
    """
    if not request.is_json:
        raise UnsupportedMediaType("send the body as application/json")
    raw = request.get_data(cache=True)
    # JSON text can only carry NUL escaped (a raw control character is invalid
    # JSON), so a body without the escape needs no NUL check per string
    context = None if b"\\u0000" in raw else {NUL_FREE: True}
    try:
        return model.model_validate_json(raw or b"null", context=context)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise BadRequest("the body is not valid JSON") from exc
        raise ValidationFailed(
            "the body does not match the expected shape", errors=_validation_errors(exc)
        ) from exc


def parse_query(model: type[M]) -> M:
    """Validate the query string against ``model``.

    :raise ValidationFailed: a parameter has the wrong type or value.
    """
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise ValidationFailed("invalid query parameters", errors=_validation_errors(exc)) from exc


def json_response(model: BaseModel, status: int = 200) -> Response:
    """Serialise a response model as JSON (by pydantic, in one step)."""
    return current_app.response_class(
        model.model_dump_json(), status=status, mimetype="application/json"
    )


def encode_cursor(value: int) -> str:
    """An opaque pagination cursor for the last row's internal key."""
    return base64.urlsafe_b64encode(f"c{value}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """Inverse of :func:`encode_cursor`.

    :raise ValidationFailed: the cursor was not produced by us.
    """
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("c"):
            raise ValueError(text)
        return int(text[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValidationFailed("invalid cursor") from exc


def page(items: list[dict[str, Any]], next_key: int | None) -> dict[str, Any]:
    """The standard page envelope: ``{"items": [...], "next_cursor": ...}``."""
    return {"items": items, "next_cursor": encode_cursor(next_key) if next_key else None}


# ------------------------------------------------------------------ OpenAPI


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _openapi_path(rule: str) -> str:
    out = []
    for part in rule.split("/"):
        if part.startswith("<") and part.endswith(">"):
            part = "{" + part[1:-1].split(":")[-1] + "}"
        out.append(part)
    return "/".join(out)


PROBLEM_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}


def build_openapi(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every ``/api/v1`` route of ``app``.

    A route whose view lacks :func:`operation` is listed with
    ``x-undocumented: true`` so tests can find it.
    """
    components: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API_PREFIX):
            continue
        view = app.view_functions[rule.endpoint]
        op: Operation | None = getattr(view, OPENAPI_ATTR, None)
        path = _openapi_path(rule.rule[len(API_PREFIX) :] or "/")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            entry: dict[str, Any] = {"operationId": f"{rule.endpoint}.{method.lower()}"}
            if op is None:
                entry["x-undocumented"] = True
                paths.setdefault(path, {})[method.lower()] = entry
                continue
            entry["summary"] = op.summary
            if op.tags:
                entry["tags"] = list(op.tags)
            params = [
                {"name": arg, "in": "path", "required": True, "schema": {"type": "string"}}
                for arg in sorted(rule.arguments)
            ]
            if op.query is not None:
                qschema = op.query.model_json_schema()
                for name, prop in qschema.get("properties", {}).items():
                    params.append(
                        {
                            "name": name,
                            "in": "query",
                            "required": name in qschema.get("required", []),
                            "schema": prop,
                        }
                    )
            if params:
                entry["parameters"] = params
            if op.body is not None:
                entry["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": _schema(op.body, components)}},
                }
            ok: dict[str, Any] = {"description": "OK"}
            if op.response is not None:
                ok["content"] = {"application/json": {"schema": _schema(op.response, components)}}
            responses: dict[str, Any] = {str(op.status): ok}
            codes = set(op.errors) | ({400, 415, 422} if op.body else set())
            if op.auth:
                codes |= {401, 403}
            for code in sorted(codes):
                responses[str(code)] = {
                    "description": "Problem",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
            entry["responses"] = responses
            if op.auth:
                entry["security"] = [{"session": []}, {"token": []}]
            paths.setdefault(path, {})[method.lower()] = entry
    settings = current_app.extensions["trivium.settings"]
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{settings.instance.name} API", "version": "1"},
        "servers": [{"url": settings.instance.base_url.rstrip("/") + API_PREFIX}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "trivium_session"},
                "token": {"type": "http", "scheme": "bearer"},
            },
        },
    }


@bp.get("/openapi.json")
@operation("This API's OpenAPI document", tags=("meta",), auth=False)
def openapi_document() -> Any:
    """Serve the OpenAPI document."""
    return jsonify(build_openapi(current_app))


# The feature modules attach their views to ``bp`` on import; they import this
# module, so they come last.
from core.api import admin  # noqa: E402, F401
from core.api import courses  # noqa: E402, F401
from core.api import enrolments  # noqa: E402, F401
from core.api import me  # noqa: E402, F401
from core.api import progress  # noqa: E402, F401
from core.api import transfer  # noqa: E402, F401
