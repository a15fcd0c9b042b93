"""The public identity documents over HTTP: instance document, JWKS, per-key kid URLs."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from core import create_app
from core.db import get_db
from federation import keys
from federation.config import FederationConfigError
from federation.config import federation_settings
from tests.conftest import base_config

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def test_instance_document(client: FlaskClient) -> None:
    response = client.get("/.well-known/trivium")

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == {
        "id": "http://testserver",
        "type": "TriviumInstance",
        "name": "Test U",
        "protocol_version": "1",
        "jwks_uri": "http://testserver/.well-known/jwks.json",
        "endpoints": {
            "instance": "http://testserver/.well-known/trivium",
            "jwks": "http://testserver/.well-known/jwks.json",
            "key": "http://testserver/federation/keys/{key_id}",
            "inbox": "http://testserver/federation/v1/inbox",
            "catalog": "http://testserver/federation/v1/catalog",
        },
        "http_signatures": {
            "label": "trivium",
            "tag": "trivium",
            "algorithms": ["ed25519"],
            "digest_algorithms": ["sha-256"],
            "max_age": 300,
        },
    }
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("path", ["/.well-known/trivium", "/.well-known/jwks.json"])
def test_documents_are_cacheable_with_an_etag(keyed: Path, client: FlaskClient, path: str) -> None:
    first = client.get(path)
    etag = first.headers["ETag"]

    again = client.get(path, headers={"If-None-Match": etag})

    assert first.status_code == 200
    assert "public" in first.headers["Cache-Control"]
    assert "max-age=300" in first.headers["Cache-Control"]
    assert again.status_code == 304
    assert again.data == b""
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


def test_jwks_publishes_the_public_keys(app: Flask, client: FlaskClient) -> None:
    response = client.get("/.well-known/jwks.json")

    assert response.status_code == 200
    body: dict[str, Any] = response.json or {}
    assert sorted(k["kty"] for k in body["keys"]) == ["OKP", "RSA"]
    for jwk in body["keys"]:
        assert not PRIVATE_MEMBERS & jwk.keys()
        assert jwk["kid"].startswith("http://testserver/federation/keys/")


def test_each_kid_resolves_to_its_key(keyed: Path, client: FlaskClient) -> None:
    jwks: dict[str, Any] = client.get("/.well-known/jwks.json").json or {}

    for jwk in jwks["keys"]:
        response = client.get(urlsplit(jwk["kid"]).path)
        assert response.status_code == 200
        assert response.json == jwk

    missing = client.get("/federation/keys/no-such-key", headers={"Accept": "application/json"})
    assert missing.status_code == 404
    assert missing.mimetype == "application/problem+json"


def test_a_rotation_shows_in_the_next_response(
    keyed: Path, app: Flask, client: FlaskClient
) -> None:
    before = client.get("/.well-known/jwks.json")
    path = app.extensions["trivium.settings"].path

    new = keys.rotate_key(path)  # as `trivium keys rotate` would, from another process

    after = client.get("/.well-known/jwks.json", headers={"If-None-Match": before.headers["ETag"]})
    assert after.status_code == 200
    kids = [k["kid"] for k in (after.json or {})["keys"]]
    assert kids[0] == f"http://testserver/federation/keys/{new.id}"
    assert {k["kid"] for k in (before.json or {})["keys"]} < set(kids)


def test_the_id_has_no_trailing_slash(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["instance"]["base_url"] = "https://lms.example.edu/"
    app = create_app(tmp_path, config)
    try:
        document: dict[str, Any] = app.test_client().get("/.well-known/trivium").json or {}
    finally:
        get_db(app).dispose()
    assert document["id"] == "https://lms.example.edu"
    assert document["jwks_uri"] == "https://lms.example.edu/.well-known/jwks.json"


def test_the_signature_window_is_configurable(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["plugins"] = {"federation": {"signature_max_age": 120}}
    app = create_app(tmp_path, config)
    try:
        document: dict[str, Any] = app.test_client().get("/.well-known/trivium").json or {}
    finally:
        get_db(app).dispose()
    assert document["http_signatures"]["max_age"] == 120
    settings = app.extensions["trivium.settings"]
    assert federation_settings(settings).verify_policy().max_age == 120


def test_an_invalid_federation_setting_stops_start_up(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["plugins"] = {"federation": {"signature_max_age": 5}}
    with pytest.raises(FederationConfigError) as refused:
        create_app(tmp_path, config)
    assert str(refused.value).startswith("plugin federation: [plugins.federation]:")
    assert "signature_max_age" in str(refused.value)
