"""Catalog feed and sync between real instances on loopback, and against a hostile peer.

A and B are instances approved both ways; H is a fake peer that B approved,
serving valid documents and a catalog feed spoiled in one way per test.  A
refused page stores nothing, is logged with the peer's id, and leaves B's
sync of A working.
"""

from __future__ import annotations

import http.server
import json
import logging
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import delete
from sqlalchemy import select

from core import catalog
from core import courses
from core.db import get_db
from core.models import CatalogEntry
from core.models import Course
from core.models import Job
from core.models import User
from federation.config import federation_settings
from federation.feed import course_document
from federation.keys import key_url
from federation.keys import load_keys
from federation.models import FederationPeer
from federation.signatures import HttpRequest
from federation.signatures import HttpResponse
from federation.signatures import sign_response
from federation.signed import peer_client
from federation.sync import SYNC
from federation.sync import SyncResult
from federation.sync import catalog_sync
from federation.sync import catalog_tick
from federation.sync import sync_peer
from federation.wellknown import CATALOG_PATH
from tests.federation.conftest import Network
from tests.federation.instances import HostilePeer
from tests.federation.instances import Instance
from tests.federation.instances import documents_for
from tests.federation.instances import json_reply
from tests.federation.instances import wait_for

Handler = http.server.BaseHTTPRequestHandler
PATIENT = {"read_timeout": 2.0, "request_deadline": 5.0}
"""Timeouts of these tests' instances: loopback, but a busy 2-core machine."""


@dataclass
class Scene:
    """A and B approved both ways; H approved by B; key material of H to sign with."""

    a: Instance
    b: Instance
    hostile: HostilePeer
    h_keys: Path


@pytest.fixture(scope="module")
def module_scene(tmp_path_factory: pytest.TempPathFactory, key_sets: list[Path]) -> Iterator[Scene]:
    net = Network(tmp_path_factory.mktemp("catalog"), key_sets)
    try:
        a = net.start("Uni A", **PATIENT)
        b = net.start("Uni B", catalog_page_size=3, catalog_max_entry_bytes=4096, **PATIENT)
        a.peer_with(b)
        b.peer_with(a)
        hostile = net.hostile_peer()
        document, jwks = documents_for(hostile.url, load_keys(key_sets[2]))
        hostile.routes["/.well-known/trivium"] = json_reply(document)
        hostile.routes["/.well-known/jwks.json"] = json_reply(jwks)
        _peer_with_url(b, hostile)
        yield Scene(a, b, hostile, key_sets[2])
    finally:
        net.stop()


def _peer_with_url(instance: Instance, hostile: HostilePeer) -> None:
    added = instance.cli("peers", "add", hostile.url)
    assert added.exit_code == 0, added.output
    approved = instance.cli("peers", "approve", hostile.url)
    assert approved.exit_code == 0, approved.output
    # the approval queued the peer's first pull; these tests run pulls themselves
    assert drop_queued_syncs(instance, hostile.url) == 1


def drop_queued_syncs(instance: Instance, url: str) -> int:
    """Remove the waiting sync jobs of the peer at ``url``; how many there were.

    The instances of these tests run no job worker: queued jobs only wait.
    """
    with get_db(instance.app).sessions() as sess, sess.begin():
        pk = sess.scalar(select(FederationPeer.id).where(FederationPeer.base_url == url))
        queued = sess.scalars(select(Job).where(Job.actor == SYNC, Job.state == "queued"))
        mine = [job.id for job in queued if json.loads(job.message)["args"] == [pk]]
        sess.execute(delete(Job).where(Job.id.in_(mine)))
        return len(mine)


@pytest.fixture
def scene(module_scene: Scene) -> Scene:
    module_scene.hostile.routes.pop(CATALOG_PATH, None)
    module_scene.hostile.hits.clear()
    return module_scene


# ---------------------------------------------------------------- helpers


def add_course(instance: Instance, title: str, visibility: str = "federated", **fields: Any) -> str:
    """Create and publish a course on ``instance``; its public id."""
    with instance.app.app_context(), get_db(instance.app).sessions() as sess:
        owner = sess.scalar(select(User).where(User.email == "owner@example.org"))
        if owner is None:
            owner = User(email="owner@example.org", display_name="Owner", can_create_courses=True)
            sess.add(owner)
            sess.flush()
        course = courses.create_course(
            sess, owner, {"title": title, "visibility": visibility, **fields}
        )
        courses.change_status(sess, owner, course, "publish")
        sess.commit()
        return course.public_id


def change_course(instance: Instance, public_id: str, **changes: Any) -> None:
    with instance.app.app_context(), get_db(instance.app).sessions() as sess:
        course = sess.scalar(select(Course).where(Course.public_id == public_id))
        assert course is not None
        owner = sess.scalar(select(User).where(User.email == "owner@example.org"))
        assert owner is not None
        transition = changes.pop("transition", None)
        if changes:
            courses.update_course(sess, owner, course, changes)
        if transition:
            courses.change_status(sess, owner, course, transition)
        sess.commit()


def sync(instance: Instance, other_url: str) -> SyncResult:
    """Run one sync of ``other_url`` on ``instance``, as its job does."""
    with instance.app.app_context(), get_db(instance.app).sessions() as sess:
        peer = sess.scalar(select(FederationPeer).where(FederationPeer.base_url == other_url))
        assert peer is not None
        policy = federation_settings(instance.app.extensions["trivium.settings"])
        with peer_client(sess) as client:
            return sync_peer(sess, client, peer, policy)


def search(instance: Instance, q: str | None) -> catalog.CatalogPage:
    with instance.app.app_context(), get_db(instance.app).sessions() as sess:
        return catalog.search(sess, q, limit=50)


def entries(instance: Instance) -> list[tuple[Any, ...]]:
    """Every catalog row of every source on ``instance``."""
    with get_db(instance.app).engine.connect() as conn:
        rows = conn.execute(CatalogEntry.__table__.select()).all()
    return sorted((tuple(r) for r in rows), key=repr)


def instance_peer(instance: Instance, url: str) -> FederationPeer | None:
    with get_db(instance.app).sessions() as sess:
        peer = sess.scalar(select(FederationPeer).where(FederationPeer.base_url == url))
        if peer is not None:
            sess.expunge(peer)
        return peer


def feed_get(instance: Instance, target: Instance, query: str = "", **headers: str) -> Any:
    """A signed GET of ``target``'s feed by ``instance``."""
    with (
        instance.app.app_context(),
        get_db(instance.app).sessions() as sess,
        peer_client(sess) as client,
    ):
        return client.signed_request(
            "GET", target.url + CATALOG_PATH + query, peer=target.url, extra_headers=headers
        )


# ---------------------------------------------------------------- the feed


def test_the_feed_pages_federated_courses_with_tombstones_and_an_etag(scene: Scene) -> None:
    a, b = scene.a, scene.b
    first = add_course(a, "Feed federated one", summary="Tides", language="en", level="intro")
    add_course(a, "Feed instance only", visibility="instance")
    second = add_course(a, "Feed federated two", subject="Oceanography")
    with a.app.app_context(), get_db(a.app).sessions() as sess:
        start = catalog.local_head(sess)

    response = feed_get(b, a, "?after=0&limit=500")
    page = json.loads(response.body)
    ids = [item["id"] for item in page["items"]]
    assert a.url + f"/courses/{first}" in ids and a.url + f"/courses/{second}" in ids
    assert not any("instance only" in json.dumps(i).lower() for i in page["items"])
    course = next(i["course"] for i in page["items"] if i["id"].endswith(first))
    assert course["@type"] == "Course" and course["name"] == "Feed federated one"
    assert course["abstract"] == "Tides" and course["inLanguage"] == "en"
    assert course["educationalLevel"] == "intro"
    assert course["provider"] == {"@type": "EducationalOrganization", "name": "Uni A", "url": a.url}
    assert course["url"] == a.url + f"/courses/{first}"
    assert course["hasCourseInstance"][0]["@type"] == "CourseInstance"
    assert page["more"] is False and int(page["next"]) == start
    etag = dict(response.headers)["ETag"]

    # Unchanged and read to the end: 304 with the ETag.
    unchanged = feed_get(b, a, f"?after={start}", **{"If-None-Match": etag})
    assert unchanged.status == 304 and unchanged.body == b""
    # The same ETag mid-feed still gets the page.
    assert feed_get(b, a, "?after=0", **{"If-None-Match": etag}).status == 200

    # Paging: one item a page, cursor strictly increasing.
    one = json.loads(feed_get(b, a, "?after=0&limit=1").body)
    assert len(one["items"]) == 1 and one["more"] is True
    assert int(one["next"]) == one["items"][0]["seq"]

    # Unpublished: a tombstone after the cursor, and the ETag changed.
    change_course(a, first, transition="unpublish")
    after = feed_get(b, a, f"?after={start}", **{"If-None-Match": etag})
    assert after.status == 200 and dict(after.headers)["ETag"] != etag
    (tombstone,) = json.loads(after.body)["items"]
    assert tombstone == {
        "seq": tombstone["seq"],
        "id": a.url + f"/courses/{first}",
        "deleted": True,
    }


@pytest.mark.parametrize(
    "query",
    ["?after=-1", "?after=abc", "?limit=0", "?after=99999999999999999999", "?limit=1.5"],
)
def test_a_bad_cursor_or_limit_is_a_400(scene: Scene, query: str) -> None:
    with pytest.raises(Exception) as refused:
        feed_get(scene.b, scene.a, query)
    assert getattr(refused.value, "status", None) == 400
    problem = getattr(refused.value, "problem", None) or {}
    assert problem.get("type", "").endswith("catalog-cursor-invalid")


def test_unsigned_and_unknown_requests_get_nothing(scene: Scene, network: Network) -> None:
    plain = requests.get(scene.a.url + CATALOG_PATH, timeout=5)
    assert plain.status_code in (400, 401)
    assert plain.headers["Content-Type"].startswith("application/problem+json")
    assert "items" not in plain.text

    # C knows A, but A never approved C.
    c = network.start("Uni C", **PATIENT)
    added = c.cli("peers", "add", scene.a.url)
    assert added.exit_code == 0, added.output
    assert c.cli("peers", "approve", scene.a.url).exit_code == 0
    with pytest.raises(Exception) as refused:
        feed_get(c, scene.a)
    assert getattr(refused.value, "status", None) in (401, 403)
    assert "items" not in json.dumps(getattr(refused.value, "problem", None) or {})


def test_course_document_caps_an_entry_and_keeps_core_terms(scene: Scene) -> None:
    row = CatalogEntry(
        external_id="x" * 32,
        title="T",
        summary="",
        description="é" * 40_000,
        url="/courses/x",
        image="",
        language="en",
        level="",
        subject="",
        data={"name": "not mine", "timeRequired": "PT1H", "big": "y" * 20_000},
    )
    row.updated_at = datetime.now(UTC)
    document = course_document(row, "https://a.example", "Uni A")
    assert document["name"] == "T" and "big" not in document
    assert len(json.dumps(document, ensure_ascii=False).encode()) <= 16 * 1024
    assert document["description"].startswith("é")


# ---------------------------------------------------------------- sync


def test_sync_indexes_the_peer_and_search_links_to_the_host(scene: Scene) -> None:
    a, b = scene.a, scene.b
    public_id = add_course(a, "Synced seismology", subject="Geology", language="de")
    add_course(a, "Unshared seismology", visibility="instance")
    for n in range(4):  # more than B's page size of 3
        add_course(a, f"Filler course {n}")

    result = sync(b, a.url)
    assert result.status == "synced" and result.pages >= 2

    page = search(b, "seismology")
    (hit,) = page.entries
    peer = instance_peer(b, a.url)
    assert peer is not None
    assert hit.title == "Synced seismology" and hit.institution == "Uni A"
    assert hit.url == f"{a.url}/courses/{public_id}" and hit.course_id is None
    assert hit.source == peer.public_id and hit.subject == "Geology"
    assert page.facets["institution"] == [("Uni A", 1)]
    assert peer.catalog_failures == 0 and peer.catalog_etag

    # Unchanged: one request, answered 304, nothing written.
    before = entries(b)
    again = sync(b, a.url)
    assert (again.status, again.pages) == ("not_modified", 1)
    assert entries(b) == before

    # A tombstone removes it; a change of title replaces it.
    change_course(a, public_id, transition="unpublish")
    assert sync(b, a.url).status == "synced"
    assert search(b, "seismology").entries == []
    change_course(a, public_id, transition="publish", title="Synced volcanology")
    sync(b, a.url)
    assert [h.title for h in search(b, "volcanology").entries] == ["Synced volcanology"]


def test_a_run_stops_at_max_pages_and_the_next_run_continues(
    network: Network, key_sets: list[Path]
) -> None:
    a = network.start("Uni A", **PATIENT)
    b = network.start("Uni B", catalog_page_size=2, catalog_max_pages=2, **PATIENT)
    a.peer_with(b)
    b.peer_with(a)
    for n in range(7):
        add_course(a, f"Paged geography {n}")
    first = sync(b, a.url)
    assert (first.status, first.pages, first.stored) == ("partial", 2, 4)
    second = sync(b, a.url)
    assert second.status == "synced" and second.stored == 3
    assert len(search(b, "geography").entries) == 7


def test_catalog_changed_makes_the_peer_pull_at_once(network: Network) -> None:
    a = network.start("Uni A", **PATIENT)
    b = network.start("Uni B", **PATIENT)
    a.peer_with(b)
    b.peer_with(a)
    sync(b, a.url)  # first pull (nothing yet) so the next one is not due by schedule
    a.start_worker()
    b.start_worker()
    add_course(a, "Announced astrophysics")
    wait_for(lambda: search(b, "astrophysics").entries, what="B indexing A's new course")
    activity = b.inbox()[-1]
    assert activity.type == "catalog.changed" and activity.state == "processed"


def test_hook_catalog_changed_announces_to_approved_peers(network: Network) -> None:
    a = network.start("Uni A", **PATIENT)
    b = network.start("Uni B", **PATIENT)
    a.peer_with(b)
    b.peer_with(a)
    b.start_worker()
    a.start_worker()
    add_course(a, "Instance only", visibility="instance")
    time.sleep(0.5)
    assert b.inbox() == []
    add_course(a, "Federated")
    wait_for(lambda: b.inbox(), what="B receiving catalog.changed")


def test_the_tick_enqueues_due_peers_and_itself_once(scene: Scene) -> None:
    b = scene.b
    with b.app.app_context():
        with get_db(b.app).sessions() as sess:
            for peer in sess.scalars(select(FederationPeer)):
                peer.catalog_next_sync_at = None
            sess.commit()
        before = b.tables()["jobs"]
        catalog_tick()
        catalog_tick()
    jobs = [row for row in b.tables()["jobs"] if row not in before]
    # Two due peers (A and H), one pull queued for each: A's still waits
    # from its approval (no job worker runs here), so the ticks queue H's
    # alone, once (the second tick finds it queued already) ...
    assert [row[3] for row in jobs].count("federation.catalog_sync") == 1
    waiting = [
        json.loads(row[4])["args"]
        for row in b.tables()["jobs"]
        if row[3] == "federation.catalog_sync" and row[5] == "queued"
    ]
    peers = {instance_peer(b, url).id for url in (scene.a.url, scene.hostile.url)}  # type: ignore[union-attr]
    assert sorted(args[0] for args in waiting) == sorted(peers)
    # ... and exactly one tick queued for later (the CLI that approved the
    # peers may have started the chain already).
    queued_ticks = [
        row
        for row in b.tables()["jobs"]
        if row[3] == "federation.catalog_tick" and row[5] == "queued"
    ]
    assert len(queued_ticks) == 1

    # A duplicate sync job for a peer that is not due sends no request and
    # changes nothing.
    scene.hostile.routes[CATALOG_PATH] = signed_feed(scene, lambda after: h_page(scene, after, []))
    assert sync(b, scene.hostile.url).status == "synced"
    peer = instance_peer(b, scene.hostile.url)
    assert peer is not None
    scene.hostile.hits.clear()
    with b.app.app_context():
        catalog_sync(peer.id)
    assert [hit for hit in scene.hostile.hits if CATALOG_PATH in hit] == []
    after = instance_peer(b, scene.hostile.url)
    assert after is not None and after.catalog_synced_at == peer.catalog_synced_at


# ---------------------------------------------------------------- hostile peer


def signed_feed(
    scene: Scene,
    make_body: Callable[[str], bytes],
    *,
    status: int = 200,
    key_from: Path | None = None,
    sign: bool = True,
) -> Callable[[Handler], None]:
    """H's feed endpoint: answers ``make_body(after)``, signed for the request by H's key."""
    keys = load_keys(key_from or scene.h_keys)
    kid = key_url(scene.hostile.url, keys.active("Ed25519").id)

    def reply(handler: Handler) -> None:
        request = HttpRequest.build(
            handler.command, scene.hostile.url + handler.path, tuple(handler.headers.items())
        )
        after = handler.path.split("after=", 1)[1].split("&", 1)[0]
        body = make_body(after)
        headers = {"Content-Type": "application/json"}
        if sign:
            signed = sign_response(
                HttpResponse.build(status, request, headers, body),
                key=keys.signing_key(),
                keyid=kid,
                created=int(time.time()),
            )
            headers = dict(signed.headers)
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return reply


def h_course(scene: Scene, n: int, **changes: Any) -> dict[str, Any]:
    url = f"{scene.hostile.url}/courses/h{n}"
    course = {"@type": "Course", "name": f"Hostile herpetology {n}", "url": url, **changes}
    return {"seq": n, "id": url, "course": course}


def h_page(scene: Scene, after: str, items: list[dict[str, Any]], **changes: Any) -> bytes:
    page = {
        "type": "CatalogPage",
        "instance": scene.hostile.url,
        "after": after,
        "next": str(max([int(after)] + [i.get("seq", 0) for i in items])),
        "more": False,
        "items": items,
        **changes,
    }
    return json.dumps(page).encode()


def test_a_well_behaved_fake_peer_is_indexed(scene: Scene) -> None:
    scene.hostile.routes[CATALOG_PATH] = signed_feed(
        scene, lambda after: h_page(scene, after, [h_course(scene, 1)])
    )
    assert sync(scene.b, scene.hostile.url).status == "synced"
    (hit,) = search(scene.b, "herpetology").entries
    assert hit.url == f"{scene.hostile.url}/courses/h1" and hit.institution == "Fake U"
    # Reset H's cursor and entries for the hostile cases.
    with get_db(scene.b.app).sessions() as sess:
        peer = sess.scalar(
            select(FederationPeer).where(FederationPeer.base_url == scene.hostile.url)
        )
        assert peer is not None
        catalog.delete_source(sess, peer.public_id)
        peer.catalog_cursor, peer.catalog_etag = "0", None
        sess.commit()


def _cases() -> dict[str, tuple[Callable[[Scene], Callable[[Handler], None]], str]]:
    def body(make: Callable[[Scene, str], bytes]) -> Callable[[Scene], Callable[[Handler], None]]:
        return lambda s: signed_feed(s, lambda after: make(s, after))

    return {
        "malformed-json": (
            body(lambda s, a: b'{"type": "CatalogPage", "items": ['),
            "feed-malformed",
        ),
        "not-a-page": (
            body(lambda s, a: json.dumps({"type": "Person"}).encode()),
            "feed-malformed",
        ),
        "item-not-a-course": (
            body(lambda s, a: h_page(s, a, [{"seq": 1, "id": s.hostile.url + "/courses/x"}])),
            "feed-malformed",
        ),
        "course-without-name": (
            body(lambda s, a: h_page(s, a, [h_course(s, 1, name="")])),
            "feed-malformed",
        ),
        "too-many-items": (
            body(lambda s, a: h_page(s, a, [h_course(s, n) for n in range(1, 5)])),
            "feed-too-large",
        ),
        "oversized-entry": (
            body(lambda s, a: h_page(s, a, [h_course(s, 1, description="x" * 8000)])),
            "feed-too-large",
        ),
        "foreign-id": (
            body(
                lambda s, a: h_page(
                    s, a, [h_course(s, 1), {**h_course(s, 2), "id": s.a.url + "/courses/stolen"}]
                )
            ),
            "foreign-entry",
        ),
        "foreign-url": (
            body(lambda s, a: h_page(s, a, [h_course(s, 1, url=s.a.url + "/courses/x")])),
            "foreign-entry",
        ),
        "another-instance": (
            body(lambda s, a: h_page(s, a, [h_course(s, 1)], instance=s.a.url)),
            "foreign-entry",
        ),
        "cursor-backwards": (
            body(lambda s, a: h_page(s, a, [], next="0", more=True)),
            "feed-malformed",
        ),
        "oversized-page": (
            body(lambda s, a: b" " * (2 * 1024 * 1024)),
            "ResponseTooLarge",
        ),
        "unsigned": (
            lambda s: signed_feed(s, lambda after: h_page(s, after, [h_course(s, 1)]), sign=False),
            "ResponseSignatureInvalid",
        ),
        "forged-signature": (
            lambda s: signed_feed(
                s, lambda after: h_page(s, after, [h_course(s, 1)]), key_from=s.a.path
            ),
            "ResponseSignatureInvalid",
        ),
        "server-error": (
            lambda s: json_reply({"detail": "boom"}, status=500),
            "PeerRefused",
        ),
        "hanging": (lambda s: s.hostile.hang(), "PeerTimeout"),
    }


CASES = _cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_feed_is_refused_and_nothing_is_stored(
    scene: Scene, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    make_reply, reason = CASES[case]
    a, b, hostile = scene.a, scene.b, scene.hostile
    add_course(a, f"Bystander {case.replace('-', ' ')}")
    hostile.routes[CATALOG_PATH] = make_reply(scene)
    before = entries(b)
    peer_before = instance_peer(b, hostile.url)
    assert peer_before is not None

    with caplog.at_level(logging.WARNING, logger="federation.sync"):
        result = sync(b, hostile.url)

    assert result.status == "failed" and result.stored == 0
    assert entries(b) == before
    peer = instance_peer(b, hostile.url)
    assert peer is not None
    assert peer.catalog_cursor == peer_before.catalog_cursor
    assert peer.catalog_failures == peer_before.catalog_failures + 1
    assert peer.catalog_error is not None and reason in peer.catalog_error
    assert peer.catalog_next_sync_at is not None
    logged = [r.getMessage() for r in caplog.records if "status=refused" in r.getMessage()]
    assert logged and f"peer={hostile.url}" in logged[-1] and reason in logged[-1]
    assert search(b, "herpetology").entries == []

    # The other peer's sync is unaffected.
    assert sync(b, a.url).status in ("synced", "not_modified")
    assert search(b, f"bystander {case.split('-')[0]}").entries
