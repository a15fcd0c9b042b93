"""The peers operator pages: /admin/peers, over a real second instance on loopback."""

from __future__ import annotations

import re
import socket
from html import unescape
from typing import Any

import pytest
from flask import Flask
from markupsafe import Markup
from sqlalchemy import select

from core import hookimpl
from core.db import get_db
from core.models import AuditLog
from federation.models import FederationPeer
from federation.models import PeerKey
from tests.conftest import Users
from tests.conftest import snapshot
from tests.federation.conftest import Network
from tests.federation.instances import HostilePeer
from tests.federation.instances import json_reply
from tests.staff_pages import Browser
from tests.staff_pages import field_value
from tests.staff_pages import text

PAGE = "/admin/peers"


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    """The instance under test may peer over http (loopback instances answer quickly, but
    the first request of a fresh instance on a busy machine may take a second)."""
    config["plugins"] = {
        "federation": {"allow_http_peers": True, "connect_timeout": 2, "read_timeout": 5}
    }
    return config


@pytest.fixture
def web(app: Flask, users: Users) -> Browser:
    """A site admin's browser."""
    return Browser(app, users.create("root@example.org", admin=True))


def peers(app: Flask) -> list[FederationPeer]:
    with get_db(app).session() as sess:
        rows = list(sess.scalars(select(FederationPeer).order_by(FederationPeer.id)))
        for row in rows:
            _ = row.keys
        sess.expunge_all()
        return rows


def audit_rows(app: Flask) -> list[tuple[str, str, dict[str, Any]]]:
    with get_db(app).session() as sess:
        return [
            (row.action, row.target, row.detail)
            for row in sess.scalars(select(AuditLog).order_by(AuditLog.id))
        ]


def field_error(page: str, name: str) -> str | None:
    found = re.search(rf'<p class="field-error" id="f-{name}-error">(.*?)</p>', page, re.S)
    return unescape(found.group(1)).strip() if found else None


def closed_port() -> int:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- access


def test_only_site_admins_see_the_pages(app: Flask, users: Users) -> None:
    learner = Browser(app, users.create("learner@example.org"))
    teacher = Browser(app, users.create("teacher@example.org", creator=True))
    for who in (learner, teacher):
        resp = who.get(PAGE)
        assert resp.status_code == 403
        assert "Add a peer" not in text(resp)
    anonymous = Browser(app, None).get(PAGE)
    assert anonymous.status_code == 302
    assert "/login" in anonymous.headers["Location"] and "next=" in anonymous.headers["Location"]


def test_non_admins_change_nothing(
    app: Flask, users: Users, web: Browser, network: Network
) -> None:
    other = network.start("Other U")
    assert web.post(PAGE, {"url": other.url}).status_code == 303
    peer_id = peers(app)[0].public_id
    learner = Browser(app, users.create("learner@example.org"))
    before = snapshot(app)
    for path, data in [
        (PAGE, {"url": "http://127.0.0.1:1"}),
        (f"{PAGE}/{peer_id}/approve", {}),
        (f"{PAGE}/{peer_id}/suspend", {}),
        (f"{PAGE}/{peer_id}/refresh", {}),
        (f"{PAGE}/{peer_id}/remove", {}),
    ]:
        assert learner.post(path, data).status_code == 403, path
    assert learner.get(f"{PAGE}/{peer_id}/remove").status_code == 403
    assert Browser(app, None).post(f"{PAGE}/{peer_id}/approve", csrf=False).status_code in {
        302,
        400,
    }
    assert snapshot(app) == before


def test_forms_need_the_csrf_token(app: Flask, web: Browser, network: Network) -> None:
    other = network.start("Other U")
    assert web.post(PAGE, {"url": other.url}).status_code == 303
    peer_id = peers(app)[0].public_id
    before = snapshot(app)
    for path, data in [
        (PAGE, {"url": other.url}),
        (f"{PAGE}/{peer_id}/approve", {}),
        (f"{PAGE}/{peer_id}/suspend", {}),
        (f"{PAGE}/{peer_id}/refresh", {}),
        (f"{PAGE}/{peer_id}/remove", {}),
    ]:
        assert web.post(path, data, csrf=False).status_code == 400, path
        forged = [*data.items(), ("csrf_token", "forged")]
        assert web.post(path, forged, csrf=False).status_code == 400, path
    assert snapshot(app) == before


def test_the_admin_tabs_link_to_the_peers_page(app: Flask, web: Browser, users: Users) -> None:
    overview = text(web.get("/admin/"))
    assert f'<li><a href="{PAGE}">Peers</a></li>' in overview
    page = text(web.get(PAGE))
    assert f'<li><a href="{PAGE}" aria-current="page">Peers</a></li>' in page
    assert "No peers yet." in page


# ---------------------------------------------------------------- adding


def test_adding_a_real_instance_pins_its_keys_pending(
    app: Flask, web: Browser, network: Network
) -> None:
    other = network.start("Other U")

    resp = web.post(PAGE, {"url": other.url + "/"})

    assert resp.status_code == 303
    (peer,) = peers(app)
    assert (peer.base_url, peer.name, peer.state) == (other.url, "Other U", "pending")
    kids = sorted(k.kid for k in peer.keys)
    assert kids and all(kid.startswith(f"{other.url}/federation/keys/") for kid in kids)
    page = text(web.get(resp.headers["Location"]))
    assert "Other U was added and is pending" in page
    assert other.url in page and "pending" in page
    for kid in kids:
        assert kid.replace("/", "/<wbr>") in page
    assert "Last: never." in page
    assert audit_rows(app) == [
        (
            "federation.peer_add",
            f"peer:{peer.public_id}",
            {"url": other.url, "state": "pending", "keys": [k.kid for k in peer.keys]},
        )
    ]


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("", 422, "Enter the address"),
        ("ftp://x.example", 422, "This address cannot be used"),
        ("http://testserver", 422, "This address cannot be used"),  # ourselves
        ("https://" + "x" * 500 + ".example", 422, "too long"),
        ("http://127.0.0.1:{closed}", 502, "could not be reached"),
    ],
)
def test_unusable_addresses_are_refused_inline(
    app: Flask, web: Browser, url: str, status: int, message: str
) -> None:
    url = url.format(closed=closed_port())
    before = snapshot(app)

    resp = web.post(PAGE, {"url": url})

    assert resp.status_code == status
    page = text(resp)
    assert message in (field_error(page, "url") or "")
    assert unescape(field_value(page, "url") or "") == url
    assert 'aria-invalid="true"' in page
    assert snapshot(app) == before


def test_an_invalid_document_is_refused_inline(app: Flask, web: Browser) -> None:
    server = HostilePeer()
    try:
        server.routes["/.well-known/trivium"] = json_reply({"id": server.url, "name": 5})
        before = snapshot(app)
        resp = web.post(PAGE, {"url": server.url})
        assert resp.status_code == 502
        assert "could not be reached, or sent a document" in (field_error(text(resp), "url") or "")
        assert unescape(field_value(text(resp), "url") or "") == server.url
        assert snapshot(app) == before
    finally:
        server.stop()


def test_adding_a_peer_twice_is_refused_inline(app: Flask, web: Browser, network: Network) -> None:
    other = network.start("Other U")
    assert web.post(PAGE, {"url": other.url}).status_code == 303
    before = snapshot(app)

    resp = web.post(PAGE, {"url": other.url})

    assert resp.status_code == 422
    assert "is a peer already" in (field_error(text(resp), "url") or "")
    assert snapshot(app) == before


# ---------------------------------------------------------------- one peer


def test_approve_suspend_refresh_and_remove(app: Flask, web: Browser, network: Network) -> None:
    other = network.start("Other U")
    assert web.post(PAGE, {"url": other.url}).status_code == 303
    peer_id = peers(app)[0].public_id
    base = f"{PAGE}/{peer_id}"

    approved = web.post(f"{base}/approve")
    assert approved.status_code == 303 and approved.headers["Location"].endswith(f"#peer-{peer_id}")
    assert peers(app)[0].state == "approved"
    page = text(web.get(PAGE))
    assert "Other U is approved." in page
    assert f'action="{base}/approve"' not in page and f'action="{base}/suspend"' in page

    assert web.post(f"{base}/suspend").status_code == 303
    assert peers(app)[0].state == "suspended"

    assert web.post(f"{base}/refresh").status_code == 303
    assert "0 pinned, 0 unpinned" in text(web.get(PAGE))
    assert peers(app)[0].state == "suspended"

    confirm = web.get(f"{base}/remove")
    assert confirm.status_code == 200
    assert "Remove the peer “Other U”?" in text(confirm)
    assert peers(app)  # asking removes nothing
    assert web.post(f"{base}/remove").status_code == 303
    assert peers(app) == []
    with get_db(app).session() as sess:
        assert sess.scalars(select(PeerKey)).all() == []

    target = f"peer:{peer_id}"
    rows = audit_rows(app)
    assert [(action, t) for action, t, _ in rows] == [
        ("federation.peer_add", target),
        ("federation.peer_approve", target),
        ("federation.peer_suspend", target),
        ("federation.peer_refresh", target),
        ("federation.peer_remove", target),
    ]
    assert rows[1][2] == {"url": other.url, "state": "approved", "from": "pending"}
    assert rows[2][2] == {"url": other.url, "state": "suspended", "from": "approved"}
    assert rows[3][2] == {
        "url": other.url,
        "state": "suspended",
        "keys_added": [],
        "keys_removed": [],
    }


def test_a_failed_refresh_changes_nothing(app: Flask, web: Browser, network: Network) -> None:
    other = network.start("Other U")
    assert web.post(PAGE, {"url": other.url}).status_code == 303
    peer_id = peers(app)[0].public_id
    other.stop()
    before = snapshot(app)

    resp = web.post(f"{PAGE}/{peer_id}/refresh")

    assert resp.status_code == 303
    assert "could not be reached" in text(web.get(PAGE))
    assert snapshot(app) == before


def test_unknown_peers_are_404(app: Flask, web: Browser) -> None:
    for path in ("/nope/approve", "/nope/suspend", "/nope/refresh", "/nope/remove"):
        assert web.post(PAGE + path).status_code == 404, path
    assert web.get(PAGE + "/nope/remove").status_code == 404


# ---------------------------------------------------------------- JSON API audit


def test_the_admin_api_is_audited(app: Flask, users: Users, network: Network, client: Any) -> None:
    other = network.start("Other U")
    admin = users.headers(users.create(admin=True))
    url = "/api/v1/admin/peers"

    created = client.post(url, json={"url": other.url}, headers=admin)
    assert created.status_code == 201
    peer = f"{url}/{created.json['id']}"
    assert client.post(f"{peer}/approve", headers=admin).status_code == 200
    assert client.post(f"{peer}/suspend", headers=admin).status_code == 200
    assert client.post(f"{peer}/refresh", headers=admin).status_code == 200
    assert client.delete(peer, headers=admin).status_code == 204
    assert client.post(url, json={"url": "ftp://x"}, headers=admin).status_code == 422

    target = f"peer:{created.json['id']}"
    assert [(action, t) for action, t, _ in audit_rows(app)] == [
        ("federation.peer_add", target),
        ("federation.peer_approve", target),
        ("federation.peer_suspend", target),
        ("federation.peer_refresh", target),
        ("federation.peer_remove", target),
    ]


class BrokenAdminTab:
    @hookimpl
    def template_slot(self, slot: str, context: dict[str, Any]) -> Markup | None:
        if slot == "admin_nav":
            raise RuntimeError("broken tab")
        return None


def test_a_broken_admin_tab_names_its_plugin(app: Flask, web: Browser) -> None:
    host = app.extensions["trivium.plugins"]
    host.register(BrokenAdminTab(), "broken_tab")
    try:
        page = text(web.get("/admin/users"))
    finally:
        host.unregister("broken_tab")
    notice = "The plugin broken_tab failed to show its part of this page."
    assert f'<li class="plugin-failed" role="status">{notice}</li>' in page
    assert f'<li><a href="{PAGE}">Peers</a></li>' in page  # the other plugins' tabs still show
