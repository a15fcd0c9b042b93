"""The peers operator page in a real browser: its states, an inline error, axe-core."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from flask import Flask

from core.db import get_db
from core.db import utcnow
from core.models import User
from federation.models import FederationPeer
from federation.models import PeerKey
from tests.browser.conftest import LiveServer
from tests.browser.conftest import assert_accessible
from tests.browser.seed import PASSWORD
from tests.browser.seed import unique_email
from tests.conftest import Users


def seed_peer(app: Flask, name: str, state: str, **fields: Any) -> str:
    """A peer row with two pinned keys, as the add command leaves it; returns its public id."""
    base = f"https://{uuid.uuid4().hex[:10]}.example"
    with app.app_context(), get_db(app).session() as sess:
        peer = FederationPeer(
            base_url=base,
            name=name,
            state=state,
            protocol_version="1",
            document={"id": base, "name": name},
            keys=[
                PeerKey(kid=f"{base}/federation/keys/{alg}-{uuid.uuid4().hex}", alg=alg, jwk={})
                for alg in ("Ed25519", "RS256")
            ],
            **fields,
        )
        sess.add(peer)
        sess.flush()
        return peer.public_id


def log_in_admin(page: Any, app: Flask) -> None:
    admin: User = Users(app).create(unique_email("peeradmin"), admin=True, password=PASSWORD)
    page.goto("/login")
    page.get_by_label("E-mail address").fill(admin.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def test_the_peers_page_passes_axe(page: Any, live: LiveServer) -> None:
    seed_peer(live.app, "Pending U", "pending")
    now = utcnow()
    approved = seed_peer(
        live.app,
        "Approved U",
        "approved",
        catalog_synced_at=now - timedelta(hours=1),
        catalog_next_sync_at=now + timedelta(minutes=5),
        catalog_failures=2,
        catalog_error="feed answered 503",
    )
    log_in_admin(page, live.app)

    page.goto("/admin/")
    page.get_by_role("navigation", name="Administration").get_by_role("link", name="Peers").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Peers"
    tab = page.get_by_role("navigation", name="Administration").get_by_role("link", name="Peers")
    assert tab.get_attribute("aria-current") == "page"
    section = page.locator(f"#peer-{approved}")
    shown = section.inner_text()
    assert "Last error: feed answered 503" in shown and "Failed 2 time(s) in a row." in shown
    assert section.get_by_role("button", name="Suspend Approved U").count() == 1
    assert section.get_by_role("button", name="Approve Approved U").count() == 0
    assert_accessible(page)

    # a refused address is shown inline, kept in the field, and the page stays accessible
    page.get_by_label("Address of the instance").fill("ftp://files.example")
    page.get_by_role("button", name="Fetch and add").click()
    page.wait_for_load_state()
    assert "This address cannot be used" in page.locator("#f-url-error").inner_text()
    assert page.get_by_label("Address of the instance").input_value() == "ftp://files.example"
    assert_accessible(page)

    page.goto(f"/admin/peers/{approved}/remove")
    assert "Remove the peer" in page.locator("h1").inner_text()
    assert_accessible(page)
