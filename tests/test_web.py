"""The home page and the health check."""

from __future__ import annotations

from unittest import mock

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.exc import OperationalError

from core.db import get_db
from core.models import Course


def test_home_page_names_the_instance_and_counts_listed_courses(
    app: Flask, client: FlaskClient
) -> None:
    with get_db(app).session() as sess:
        sess.add_all(
            [
                Course(title="Open", status="published", visibility="instance"),
                Course(title="Shared", status="published", visibility="federated"),
                Course(title="Draft", status="draft"),
                Course(title="Hidden", status="published", visibility="private"),
            ]
        )
    resp = client.get("/")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert "<h1>Test U</h1>" in page
    assert "2 published courses" in page
    assert 'href="/api/v1/openapi.json"' in page


def test_unknown_page_is_a_plain_404_for_browsers(client: FlaskClient) -> None:
    resp = client.get("/no/such/page", headers={"Accept": "text/html"})
    assert resp.status_code == 404
    assert resp.mimetype == "text/html"
    assert "Traceback" not in resp.get_data(as_text=True)


def test_healthz_reports_ok(client: FlaskClient) -> None:
    resp = client.get("/healthz")
    assert (resp.status_code, resp.json) == (200, {"status": "ok", "database": "ok"})


def test_healthz_reports_an_unreachable_database(client: FlaskClient) -> None:
    with mock.patch(
        "sqlalchemy.orm.Session.execute",
        side_effect=OperationalError("SELECT 1", {}, Exception("connection refused")),
    ):
        resp = client.get("/healthz")
    assert resp.status_code == 503
    assert resp.json == {"status": "unavailable", "database": "unreachable"}
    assert "connection refused" not in resp.get_data(as_text=True)
