"""Plugins can exempt self-authenticating endpoints from CSRF, and only those."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint

from core import create_app
from core import hookimpl
from core.auth.csrf import csrf_exempt
from tests.conftest import base_config


def test_only_marked_views_skip_the_csrf_check(tmp_path: Path) -> None:
    bp = Blueprint("hooks_test", __name__, url_prefix="/hooks")

    @bp.post("/signed")
    @csrf_exempt
    def signed() -> dict[str, bool]:
        return {"accepted": True}

    @bp.post("/plain")
    def plain() -> dict[str, bool]:
        return {"accepted": True}

    class Webhooks:
        @hookimpl
        def register_blueprints(self) -> list[Blueprint]:
            return [bp]

    app = create_app(tmp_path, base_config(tmp_path), extra_plugins={"webhooks": Webhooks()})
    client = app.test_client()
    assert client.post("/hooks/signed", json={}).json == {"accepted": True}
    refused = client.post("/hooks/plain", json={})
    assert refused.status_code == 400
    assert refused.mimetype == "application/problem+json"
    assert "CSRF" in refused.json["detail"]
    # core's own unsafe endpoints stay protected
    assert client.post("/api/v1/auth/login", json={}).status_code == 400
