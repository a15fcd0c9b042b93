"""The web foundation: error pages by client kind, assets, translations, template slots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask import render_template_string
from flask.testing import FlaskClient
from markupsafe import Markup

from core import hookimpl
from core.web import assets
from core.web.slots import UnknownSlot
from core.web.slots import render_slot
from tests.conftest import snapshot

ROOT = Path(__file__).resolve().parent.parent
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_browser_gets_a_friendly_404_page_with_the_layout(client: FlaskClient) -> None:
    resp = client.get("/no/such/page", headers=BROWSER)
    assert resp.status_code == 404
    assert resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert "Page not found" in page
    assert 'class="skip-link"' in page


@pytest.mark.parametrize(
    "path,headers",
    [
        ("/api/v1/no-such-thing", BROWSER),  # /api/ is always API
        ("/no/such/page", {"Accept": "*/*"}),  # peers and scripts
        ("/no/such/page", {"Accept": "application/json"}),
        ("/no/such/page", {"Accept": "application/json, text/html;q=0.5"}),
    ],
)
def test_api_callers_keep_problem_json(
    client: FlaskClient, path: str, headers: dict[str, str]
) -> None:
    resp = client.get(path, headers=headers)
    assert resp.status_code == 404
    assert resp.mimetype == "application/problem+json"
    assert resp.json is not None and resp.json["status"] == 404


def test_server_error_page_shows_no_stack_trace(app: Flask) -> None:
    @app.get("/boom-for-test")
    def boom() -> str:
        raise RuntimeError("secret internals /etc/passwd")

    client = app.test_client()
    resp = client.get("/boom-for-test", headers=BROWSER)
    assert resp.status_code == 500
    assert resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert "Something went wrong" in page
    assert "secret internals" not in page and "Traceback" not in page
    api = client.get("/boom-for-test")
    assert api.mimetype == "application/problem+json"
    assert "secret internals" not in api.get_data(as_text=True)


def test_stale_form_gets_a_csrf_page_and_changes_nothing(app: Flask, client: FlaskClient) -> None:
    before = snapshot(app)
    resp = client.post("/no/such/form", data={"csrf_token": "forged"}, headers=BROWSER)
    assert resp.status_code == 400
    assert resp.mimetype == "text/html"
    assert "expired" in resp.get_data(as_text=True)
    assert snapshot(app) == before
    api = client.post("/api/v1/auth/logout")
    assert (api.status_code, api.mimetype) == (400, "application/problem+json")


def test_assets_resolve_through_the_manifest_to_cacheable_files(
    app: Flask, client: FlaskClient
) -> None:
    manifest = json.loads(assets.MANIFEST.read_text())
    with app.test_request_context():
        url = assets.asset_url("app.css")
        with pytest.raises(assets.AssetNotBuilt):
            assets.asset_url("nope.css")
    assert url == f"/static/dist/{manifest['app.css']}"
    resp = client.get(url)
    assert resp.status_code == 200
    assert "immutable" in resp.headers["Cache-Control"]
    assert assets.immutable_file("", url)
    assert not assets.immutable_file("", "/static/dist/manifest.json")


def test_pages_use_the_translations_of_the_request(app: Flask) -> None:
    with app.test_request_context(headers={"Accept-Language": "de-DE,en;q=0.5"}):
        html = render_template_string("{{ current_locale() }} {{ _('Skip to main content') }}")
    assert html == "en Skip to main content"


def test_template_strings_are_all_in_the_shipped_catalog() -> None:
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po

    with (ROOT / "core" / "translations" / "messages.pot").open("rb") as fh:
        shipped = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(fh) if m.id}
    method_map = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
    found = set()
    for _, _, message, _, _ in extract_from_dir(str(ROOT / "core"), method_map):
        found.add(message if isinstance(message, str) else message[0])
    missing = sorted(found - shipped)
    assert not missing, "run the extract command in README (Translations): " + repr(missing[:5])


class SlotPlugin:
    @hookimpl
    def template_slot(self, slot: str, context: dict[str, Any]) -> Markup | str | None:
        if slot == "nav":
            return Markup('<li><a href="/chat">Chat</a></li>')
        if slot == "dashboard":
            return "<script>alert(1)</script>"
        return None


class BrokenSlotPlugin:
    @hookimpl
    def template_slot(self, slot: str, context: dict[str, Any]) -> Markup | None:
        raise RuntimeError("broken slot")


def test_hook_template_slot(app: Flask, client: FlaskClient) -> None:
    host = app.extensions["trivium.plugins"]
    host.register(SlotPlugin(), "slotty")
    host.register(BrokenSlotPlugin(), "broken_slot")
    try:
        page = client.get("/", headers=BROWSER).get_data(as_text=True)
        assert '<li><a href="/chat">Chat</a></li>' in page
        assert "The plugin broken_slot failed to show its part of this page." in page
        # once per slot on the page (head, nav), each logged under the plugin's name
        failed = [f.plugin for f in host.failures if f.hook == "template_slot"]
        assert set(failed) == {"broken_slot"} and len(failed) == 2
        with app.test_request_context():
            # a plain string is escaped, never trusted as HTML
            assert "&lt;script&gt;" in render_slot("dashboard", user=None)
            with pytest.raises(UnknownSlot):
                render_slot("no_such_slot")
    finally:
        host.unregister("slotty")
        host.unregister("broken_slot")
    assert "Chat" not in client.get("/", headers=BROWSER).get_data(as_text=True)
