"""The shared layout in a real browser: navigation, skip link, assets, error pages."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.browser.conftest import LiveServer
from tests.browser.conftest import assert_accessible


def test_home_page_loads_its_hashed_assets_and_passes_axe(page: Any, live: LiveServer) -> None:
    failed: list[str] = []
    page.on("requestfailed", lambda req: failed.append(req.url))
    page.on("console", lambda msg: failed.append(msg.text) if msg.type == "error" else None)
    page.goto("/")
    assert page.locator("h1").inner_text() == "Live U"
    stylesheet = page.locator('link[rel="stylesheet"]').get_attribute("href")
    assert stylesheet is not None and stylesheet.startswith("/static/dist/app.")
    # htmx was loaded from our own origin and ran
    assert page.evaluate("() => typeof window.htmx") == "object"
    assert failed == []
    assert_accessible(page)

    resp = requests.get(live.url + stylesheet, timeout=5)
    assert resp.status_code == 200
    assert "immutable" in resp.headers["Cache-Control"]
    assert "max-age=315360000" in resp.headers["Cache-Control"]


def test_skip_link_moves_focus_to_the_main_content(page: Any) -> None:
    page.goto("/")
    page.keyboard.press("Tab")
    skip = page.locator(".skip-link")
    assert skip.evaluate("el => el === document.activeElement")
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"


def test_unknown_page_is_a_friendly_accessible_404(page: Any) -> None:
    response = page.goto("/no/such/page")
    assert response is not None and response.status == 404
    assert "Page not found" in page.locator("h1").inner_text()
    assert "Traceback" not in page.content()
    assert_accessible(page)


@pytest.mark.parametrize("path", ["/login", "/signup", "/forgot-password", "/catalog"])
def test_pages_for_visitors_pass_axe(page: Any, path: str) -> None:
    response = page.goto(path)
    assert response is not None and response.status == 200
    assert_accessible(page)


def test_refused_login_passes_axe_with_its_errors_shown(page: Any) -> None:
    page.goto("/login")
    page.get_by_role("button", name="Log in").click()
    assert page.locator(".field-error").count() == 2
    assert_accessible(page)
