"""Hardened cookies and security headers."""

from __future__ import annotations

import json
from pathlib import Path

from flask.testing import FlaskClient

from core import create_app
from tests.conftest import base_config


def test_every_response_carries_security_headers(client: FlaskClient) -> None:
    for path in ("/", "/api/v1/openapi.json", "/api/v1/me", "/nowhere"):
        resp = client.get(path)
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert "Strict-Transport-Security" not in resp.headers


def test_static_files_carry_security_headers_too(client: FlaskClient) -> None:
    from core.web import assets

    manifest = json.loads(assets.MANIFEST.read_text())
    resp = client.get(f"/static/dist/{manifest['app.css']}")
    assert resp.status_code == 200
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


def test_a_page_keeps_its_own_policy_and_gets_the_rest(tmp_path: Path) -> None:
    app = create_app(tmp_path, base_config(tmp_path))

    @app.get("/_framed")
    def _framed() -> tuple[str, int, dict[str, str]]:
        return "", 200, {"content-security-policy": "default-src 'none'"}

    resp = app.test_client().get("/_framed")
    assert resp.headers.getlist("Content-Security-Policy") == ["default-src 'none'"]
    assert resp.headers["X-Frame-Options"] == "DENY"


def test_the_session_signer_is_reused_until_the_key_changes(tmp_path: Path) -> None:
    app = create_app(tmp_path, base_config(tmp_path))
    first = app.session_interface.get_signing_serializer(app)
    assert app.session_interface.get_signing_serializer(app) is first
    app.secret_key = "rotated-" + str(app.secret_key)
    rotated = app.session_interface.get_signing_serializer(app)
    assert rotated is not first
    assert rotated is not None
    assert rotated.loads(rotated.dumps({"a": 1})) == {"a": 1}


def test_https_instances_get_secure_cookies_and_hsts(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["instance"]["base_url"] = "https://lms.example.edu"
    app = create_app(tmp_path, config)
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    resp = app.test_client().get("/api/v1/openapi.json")
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_plain_http_instances_keep_cookies_usable_on_localhost(tmp_path: Path) -> None:
    app = create_app(tmp_path, base_config(tmp_path))
    assert app.config["SESSION_COOKIE_SECURE"] is False


def _remote_addr(app_config: dict[str, object], tmp_path: Path) -> str | None:
    app = create_app(tmp_path, app_config)
    seen: list[str | None] = []

    @app.get("/_ip")
    def _ip() -> str:
        from flask import request

        seen.append(request.remote_addr)
        return ""

    app.test_client().get(
        "/_ip",
        headers={"X-Forwarded-For": "203.0.113.9"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    return seen[0]


def test_forwarded_address_is_ignored_unless_a_proxy_is_trusted(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    assert _remote_addr(config, tmp_path) == "10.0.0.2"
    config["server"] = {"proxy_hops": 1}
    assert _remote_addr(config, tmp_path) == "203.0.113.9"
