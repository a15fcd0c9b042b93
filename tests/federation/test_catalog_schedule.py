"""Catalog sync scheduling under failure and concurrency, against the fake peer H.

One run of a peer at a time (a lease taken by a conditional UPDATE); a peer
suspended or removed during a run keeps none of its entries; a failing peer
waits out its backoff whatever it announces; notifications coalesce into one
pending pull; values the index cannot hold are refused like any bad page; the
scheduler's chain of ticks survives concurrent and failing ticks; a change to
many federated courses in one transaction is announced once.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from core import courses
from core import tasks
from core.db import get_db
from core.db import utcnow
from core.models import CatalogEntry
from core.models import Job
from core.models import User
from core.tasks import JobsOptions
from core.tasks import PendingJob
from core.tasks import enqueue_with_options
from federation import sync as sync_module
from federation.inbox import process_inbox
from federation.keys import load_keys
from federation.models import FederationPeer
from federation.models import InboxActivity
from federation.peers import remove_peer
from federation.peers import suspend_peer
from federation.sync import ANNOUNCE
from federation.sync import MAX_SEQ
from federation.sync import SYNC
from federation.sync import TICK
from federation.sync import SyncResult
from federation.sync import catalog_sync
from federation.sync import catalog_tick
from federation.sync import continues_chain
from federation.wellknown import CATALOG_PATH
from tests.conftest import PG_URL
from tests.federation.conftest import Network
from tests.federation.instances import Instance
from tests.federation.instances import documents_for
from tests.federation.instances import json_reply
from tests.federation.instances import wait_for
from tests.federation.test_catalog_sync import PATIENT
from tests.federation.test_catalog_sync import Handler
from tests.federation.test_catalog_sync import Scene
from tests.federation.test_catalog_sync import _peer_with_url
from tests.federation.test_catalog_sync import h_course
from tests.federation.test_catalog_sync import h_page
from tests.federation.test_catalog_sync import instance_peer
from tests.federation.test_catalog_sync import signed_feed
from tests.federation.test_catalog_sync import sync

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not PG_URL, reason="TRIVIUM_TEST_DATABASE_URL not set"),
        ],
    ),
]


def h_scene(network: Network, key_sets: list[Path], backend: str = "sqlite") -> Scene:
    """B (on ``backend``) with the fake peer H approved; H serves valid documents."""
    b = network.start("Uni B", backend=backend, catalog_page_size=3, **PATIENT)
    hostile = network.hostile_peer()
    document, jwks = documents_for(hostile.url, load_keys(key_sets[2]))
    hostile.routes["/.well-known/trivium"] = json_reply(document)
    hostile.routes["/.well-known/jwks.json"] = json_reply(jwks)
    _peer_with_url(b, hostile)
    return Scene(b, b, hostile, key_sets[2])


def peer_pk(instance: Instance, url: str) -> int:
    peer = instance_peer(instance, url)
    assert peer is not None
    return peer.id


def set_peer(instance: Instance, url: str, **values: Any) -> None:
    with get_db(instance.app).engine.begin() as conn:
        conn.execute(update(FederationPeer).where(FederationPeer.base_url == url).values(**values))


def feed_hits(scene: Scene) -> list[str]:
    return [hit for hit in scene.hostile.hits if hit.startswith(CATALOG_PATH)]


def jobs_of(instance: Instance, actor: str, state: str | None = None) -> list[Job]:
    with get_db(instance.app).sessions() as sess:
        stmt = select(Job).where(Job.actor == actor).order_by(Job.id)
        if state is not None:
            stmt = stmt.where(Job.state == state)
        rows = list(sess.scalars(stmt))
        sess.expunge_all()
        return rows


def sync_jobs(instance: Instance, pk: int) -> list[Job]:
    """Queued sync jobs of the peer ``pk``."""
    return [
        job for job in jobs_of(instance, SYNC, "queued") if json.loads(job.message)["args"] == [pk]
    ]


def h_entries(instance: Instance, url: str) -> list[str]:
    peer = instance_peer(instance, url)
    source = peer.public_id if peer is not None else None
    with get_db(instance.app).sessions() as sess:
        rows = sess.scalars(select(CatalogEntry.external_id).where(CatalogEntry.source == source))
        return sorted(rows)


def one_course_feed(scene: Scene, *items: dict[str, Any]) -> Callable[[Handler], None]:
    chosen = list(items) or [h_course(scene, 1)]
    return signed_feed(scene, lambda after: h_page(scene, after, chosen))


# ---------------------------------------------------------------- backoff (H2)


def test_a_peer_down_at_approval_waits_out_its_backoff(
    network: Network, key_sets: list[Path]
) -> None:
    scene = h_scene(network, key_sets)
    b, hostile = scene.b, scene.hostile
    pk = peer_pk(b, hostile.url)
    approved = instance_peer(b, hostile.url)
    assert approved is not None and approved.catalog_pull_due_at is not None
    hostile.routes[CATALOG_PATH] = json_reply({"detail": "down"}, status=503)

    with b.app.app_context():
        catalog_sync(pk)
    failed = instance_peer(b, hostile.url)
    assert failed is not None
    assert failed.catalog_failures == 1 and failed.catalog_pull_due_at is None
    assert len(feed_hits(scene)) == 1

    # The next ticks and a stray sync job leave H alone until its backoff ran out.
    with b.app.app_context():
        catalog_tick()
        catalog_tick()
        catalog_sync(pk)
    assert sync_jobs(b, pk) == []
    assert len(feed_hits(scene)) == 1

    # Once it ran out, the tick queues the pull again.
    set_peer(b, hostile.url, catalog_next_sync_at=utcnow())
    with b.app.app_context():
        catalog_tick()
    assert len(sync_jobs(b, pk)) == 1

    # A notification arriving while a pull fails is dropped with it: the
    # backoff alone decides when H is asked next.
    down = json_reply({"detail": "down"}, status=503)

    def notified_then_down(handler: Handler) -> None:
        with b.app.app_context():
            process_inbox(store_activity(b, pk))
        down(handler)

    hostile.routes[CATALOG_PATH] = notified_then_down
    with b.app.app_context():
        catalog_sync(pk)
    again = instance_peer(b, hostile.url)
    assert again is not None and again.catalog_failures == 2
    assert again.catalog_pull_due_at is None


def store_activity(instance: Instance, pk: int) -> int:
    with get_db(instance.app).sessions() as sess:
        row = InboxActivity(
            peer_id=pk,
            activity_id=f"urn:uuid:{uuid.uuid4()}",
            type="catalog.changed",
            activity={"type": "catalog.changed"},
            keyid="test",
            nonce=uuid.uuid4().hex,
            signed_at=utcnow(),
        )
        sess.add(row)
        sess.commit()
        return row.id


def test_repeated_catalog_changed_queue_one_pull(network: Network, key_sets: list[Path]) -> None:
    scene = h_scene(network, key_sets)
    b, hostile = scene.b, scene.hostile
    pk = peer_pk(b, hostile.url)
    hostile.routes[CATALOG_PATH] = one_course_feed(scene)
    assert sync(b, hostile.url).status == "synced"
    assert sync_jobs(b, pk) == []

    rows = [store_activity(b, pk) for _ in range(5)]
    with b.app.app_context():
        for row in rows:
            process_inbox(row)
    assert [a.state for a in b.inbox()] == ["processed"] * 5
    assert len(sync_jobs(b, pk)) == 1

    # The pull runs once; the duplicate job (or a later one) finds nothing due.
    hits = len(feed_hits(scene))
    with b.app.app_context():
        catalog_sync(pk)
        catalog_sync(pk)
    assert len(feed_hits(scene)) == hits + 1

    # A peer backing off: its notifications queue one pull, which waits for the backoff.
    set_peer(b, hostile.url, catalog_failures=2, catalog_next_sync_at=utcnow().replace(year=2999))
    before = len(sync_jobs(b, pk))
    rows = [store_activity(b, pk) for _ in range(3)]
    with b.app.app_context():
        for row in rows:
            process_inbox(row)
        catalog_sync(pk)
    assert len(sync_jobs(b, pk)) == before + 1
    assert len(feed_hits(scene)) == hits + 1


# ---------------------------------------------------------------- one run at a time (M1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_run_of_a_peer_is_skipped_while_one_runs(
    network: Network, key_sets: list[Path], backend: str
) -> None:
    scene = h_scene(network, key_sets, backend)
    b, hostile = scene.b, scene.hostile
    pk = peer_pk(b, hostile.url)
    page = one_course_feed(scene)
    during: list[SyncResult] = []

    def reply(handler: Handler) -> None:
        if not during:
            # Other runs while the first one waits for this page: the operator's
            # "sync now", and the job the inbox or the tick queued.
            during.append(sync(b, hostile.url))
            with b.app.app_context():
                catalog_sync(pk)
        page(handler)

    hostile.routes[CATALOG_PATH] = reply
    first = sync(b, hostile.url)

    assert during[0].status == "skipped"
    assert first.status == "synced" and first.stored == 1
    assert len(feed_hits(scene)) == 1
    assert h_entries(b, hostile.url) == [f"{hostile.url}/courses/h1"]
    peer = instance_peer(b, hostile.url)
    assert peer is not None and peer.catalog_lease_until is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("action", ["suspend", "remove"])
def test_a_peer_suspended_or_removed_mid_run_keeps_no_entries(
    network: Network,
    key_sets: list[Path],
    backend: str,
    action: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scene = h_scene(network, key_sets, backend)
    b, hostile = scene.b, scene.hostile
    hostile.routes[CATALOG_PATH] = one_course_feed(scene)
    public_id = instance_peer(b, hostile.url).public_id  # type: ignore[union-attr]
    real_parse = sync_module.parse_page

    def parse_then_act(*args: Any, **kwargs: Any) -> Any:
        # The operator acts after the page arrived and before it is stored.
        parsed = real_parse(*args, **kwargs)
        with b.app.app_context(), get_db(b.app).sessions() as sess:
            peer = sess.scalar(select(FederationPeer).where(FederationPeer.base_url == hostile.url))
            assert peer is not None
            if action == "suspend":
                suspend_peer(peer)
            else:
                remove_peer(sess, peer)
            sess.commit()
        return parsed

    monkeypatch.setattr(sync_module, "parse_page", parse_then_act)
    result = sync(b, hostile.url)

    assert result.status == "stopped" and result.stored == 0
    with get_db(b.app).sessions() as sess:
        left = sess.scalars(select(CatalogEntry).where(CatalogEntry.source == public_id)).all()
    assert left == []
    peer = instance_peer(b, hostile.url)
    if action == "suspend":
        assert peer is not None and peer.state == "suspended"
        assert (peer.catalog_cursor, peer.catalog_etag) == ("0", None)
        assert peer.catalog_failures == 0
    else:
        assert peer is None


# ---------------------------------------------------------------- values the index cannot hold (M2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_seq_beyond_32_bits_is_refused_as_a_bad_page(
    network: Network, key_sets: list[Path], backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    scene = h_scene(network, key_sets, backend)
    b, hostile = scene.b, scene.hostile
    hostile.routes[CATALOG_PATH] = one_course_feed(
        scene, h_course(scene, 1), {**h_course(scene, 2), "seq": MAX_SEQ}
    )
    with caplog.at_level(logging.WARNING, logger="federation.sync"):
        result = sync(b, hostile.url)

    assert result.status == "failed" and result.error is not None
    assert "feed-malformed" in result.error and "seq" in result.error
    assert h_entries(b, hostile.url) == []
    peer = instance_peer(b, hostile.url)
    assert peer is not None and peer.catalog_failures == 1 and peer.catalog_cursor == "0"
    logged = [r.getMessage() for r in caplog.records if "status=refused" in r.getMessage()]
    assert logged and f"peer={hostile.url}" in logged[-1]

    # The largest value that fits is stored.
    hostile.routes[CATALOG_PATH] = one_course_feed(
        scene, {**h_course(scene, 2), "seq": MAX_SEQ - 1}
    )
    assert sync(b, hostile.url).status == "synced"
    assert h_entries(b, hostile.url) == [f"{hostile.url}/courses/h2"]


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="TRIVIUM_TEST_DATABASE_URL not set")
def test_a_database_error_while_storing_a_page_is_a_refusal(
    network: Network,
    key_sets: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # With the feed's own check loosened, PostgreSQL itself refuses the value
    # (catalog_entries.seq is a 32-bit integer): the run must treat it as a
    # refused page, not crash.
    class LooseItem(sync_module._Item):
        seq: int = Field(ge=0)

    monkeypatch.setattr(sync_module, "_Item", LooseItem)
    scene = h_scene(network, key_sets, "postgresql")
    b, hostile = scene.b, scene.hostile
    hostile.routes[CATALOG_PATH] = one_course_feed(
        scene, h_course(scene, 1), {**h_course(scene, 2), "seq": 2**40}
    )
    with caplog.at_level(logging.WARNING, logger="federation.sync"):
        result = sync(b, hostile.url)

    assert result.status == "failed" and result.error is not None
    assert result.error.startswith("entries-not-stored")
    assert h_entries(b, hostile.url) == []
    peer = instance_peer(b, hostile.url)
    assert peer is not None and peer.catalog_failures == 1 and peer.catalog_cursor == "0"
    assert peer.catalog_next_sync_at is not None and peer.catalog_lease_until is None
    logged = [r.getMessage() for r in caplog.records if "status=refused" in r.getMessage()]
    assert logged and f"peer={hostile.url}" in logged[-1] and "entries-not-stored" in logged[-1]


# ---------------------------------------------------------------- the tick chain (M3)


@pytest.mark.parametrize(
    ("ticks", "me", "continues"),
    [
        ([], "a", True),
        ([("a", 1, "running")], "a", True),
        ([("a", 1, "running"), ("b", 2, "running")], "a", True),
        ([("a", 1, "running"), ("b", 2, "running")], "b", False),
        ([("a", 1, "running"), ("b", 2, "queued")], "a", False),
        ([("a", 5, "running"), ("b", 2, "queued")], "a", False),
        ([("b", 2, "queued")], None, False),
        ([("b", 2, "running")], None, False),
    ],
)
def test_continues_chain(
    ticks: list[tuple[str, int, str]], me: str | None, continues: bool
) -> None:
    pending = [PendingJob(id=i, message_id=m, state=s) for m, i, s in ticks]
    assert continues_chain(pending, me) is continues


@pytest.mark.parametrize("order", ["older_first", "newer_first"])
def test_ticks_running_at_once_leave_exactly_one_successor(
    network: Network, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    b = network.start("Uni B", **PATIENT)
    with b.app.app_context():
        older = enqueue_with_options(TICK).message_id
        newer = enqueue_with_options(TICK).message_id
    with get_db(b.app).engine.begin() as conn:
        conn.execute(update(Job).where(Job.actor == TICK).values(state="running"))
    for me in (older, newer) if order == "older_first" else (newer, older):
        monkeypatch.setattr(sync_module, "current_job_id", lambda me=me: me)
        with b.app.app_context():
            catalog_tick()
    (successor,) = jobs_of(b, TICK, "queued")
    assert successor.message_id not in (older, newer)


def test_two_ticks_queued_at_once_run_into_one_chain(network: Network) -> None:
    b = network.start("Uni B", **PATIENT)
    with b.app.app_context():
        first = enqueue_with_options(TICK).message_id
        second = enqueue_with_options(TICK).message_id
    tasks.init_app(b.app, JobsOptions(poll_interval=0.05, worker_timeout_ms=100))
    tasks.get_jobs(b.app).start_worker(queues=["federation"], threads=2)
    wait_for(
        lambda: {j.message_id for j in jobs_of(b, TICK, "done")} >= {first, second},
        what="both ticks done",
    )
    tasks.get_jobs(b.app).stop_worker()
    (successor,) = jobs_of(b, TICK, "queued")
    assert successor.message_id not in (first, second)


def test_a_tick_that_fails_once_is_retried(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = network.start("Uni B", **PATIENT)
    real = sync_module.pending_jobs
    calls: list[str] = []

    def flaky(actor_name: str, args: Any = None) -> list[PendingJob]:
        calls.append(actor_name)
        if len(calls) == 1:
            raise OperationalError("SELECT", {}, Exception("database is locked"))
        return real(actor_name, args)

    monkeypatch.setattr(sync_module, "pending_jobs", flaky)
    with b.app.app_context():
        tick = enqueue_with_options(TICK).message_id
    tasks.init_app(
        b.app,
        JobsOptions(
            poll_interval=0.05, worker_timeout_ms=100, min_backoff_ms=50, max_backoff_ms=100
        ),
    )
    tasks.get_jobs(b.app).start_worker(queues=["federation"], threads=1)
    done = wait_for(
        lambda: [
            j for j in jobs_of(b, TICK) if j.message_id == tick and j.state in ("done", "failed")
        ],
        what="the tick finishing",
    )
    tasks.get_jobs(b.app).stop_worker()
    assert (done[0].state, done[0].attempts) == ("done", 2)
    (successor,) = jobs_of(b, TICK, "queued")
    assert successor.message_id != tick


# ---------------------------------------------------------------- announcements (L1)


def test_one_transaction_changing_many_federated_courses_is_announced_once(
    network: Network,
) -> None:
    a = network.start("Uni A", **PATIENT)

    def publish(titles: list[str]) -> None:
        with a.app.app_context(), get_db(a.app).sessions() as sess:
            owner = sess.scalar(select(User).where(User.email == "owner@example.org"))
            if owner is None:
                owner = User(
                    email="owner@example.org", display_name="Owner", can_create_courses=True
                )
                sess.add(owner)
                sess.flush()
            for title in titles:
                course = courses.create_course(
                    sess, owner, {"title": title, "visibility": "federated"}
                )
                courses.change_status(sess, owner, course, "publish")
            sess.commit()

    publish([f"Bulk course {n}" for n in range(5)])
    assert len(jobs_of(a, ANNOUNCE)) == 1
    publish(["Another course", "And one more"])
    assert len(jobs_of(a, ANNOUNCE)) == 2
