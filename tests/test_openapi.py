"""The OpenAPI document covers every API route and is structurally valid."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from core.api import API_PREFIX

METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    """The served OpenAPI document."""
    resp = client.get(f"{API_PREFIX}/openapi.json")
    assert resp.status_code == 200
    body: dict[str, Any] = resp.get_json()
    return body


def _rules(app: Flask) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API_PREFIX):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule[len(API_PREFIX) :])
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            out.add((path, method.lower()))
    return out


def test_every_api_route_is_documented(app: Flask, document: dict[str, Any]) -> None:
    rules = _rules(app)
    assert len(rules) > 30
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert rules <= documented, sorted(rules - documented)
    undocumented = sorted(
        f"{method.upper()} {path}"
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        if op.get("x-undocumented")
    )
    assert undocumented == []


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        for sub in value.values():
            found += _refs(sub)
        return found
    if isinstance(value, list):
        return [ref for sub in value for ref in _refs(sub)]
    return []


def test_document_is_structurally_valid(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] and document["info"]["version"]
    schemas = document["components"]["schemas"]
    for name in schemas:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[-1] in schemas, ref
    operation_ids: list[str] = []
    for path, ops in document["paths"].items():
        assert path.startswith("/")
        template_params = set(re.findall(r"{([^}]+)}", path))
        for method, op in ops.items():
            assert method in METHODS
            operation_ids.append(op["operationId"])
            assert op["summary"]
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == template_params, (path, method)
            for param in op.get("parameters", []):
                assert param["in"] in {"path", "query"}
                assert "schema" in param
                if param["in"] == "path":
                    assert param["required"] is True
            assert op["responses"]
            for code, response in op["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", code), code
                assert response["description"]
            if "requestBody" in op:
                assert method in {"post", "put", "patch"}
                assert "application/json" in op["requestBody"]["content"]
            for scheme in op.get("security", []):
                assert set(scheme) <= set(document["components"]["securitySchemes"])
    assert len(operation_ids) == len(set(operation_ids))


def test_document_passes_the_spec_validator(document: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(document)


def test_paginated_operations_declare_cursor_and_limit(document: dict[str, Any]) -> None:
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            schema = op.get("responses", {}).get("200", {}).get("content", {})
            ref = schema.get("application/json", {}).get("schema", {}).get("$ref", "")
            target = document["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {})
            if "next_cursor" in target.get("properties", {}):
                names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
                assert {"cursor", "limit"} <= names, (method, path)
