"""Federation's part of ``trivium demo --peers N``: served demo instances become a network.

Core calls the ``demo_instances_started`` hook once its demo instances are
served (tests/test_demo.py covers that side); here two demo instances served
over loopback are joined through the same call, and a learner of one finds
the other's courses in its catalog.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from sqlalchemy import func
from sqlalchemy import select

from core import demo as core_demo
from core.db import get_db
from core.demo import DemoInstance
from core.models import CatalogEntry
from core.models import Course
from federation.demo import COURSES
from federation.demo import main
from federation.models import FederationPeer
from tests.conftest import BACKENDS
from tests.federation.conftest import Network
from tests.federation.instances import Instance
from tests.federation.instances import wait_for

PATIENT = {"read_timeout": 2.0, "request_deadline": 5.0}
"""Timeouts of these tests' instances: loopback, but a busy 2-core machine."""


def demo_instance(instance: Instance) -> DemoInstance:
    """``instance`` with core's demo data, as ``trivium demo --peers N`` hands it to plugins."""
    settings = instance.app.extensions["trivium.settings"]
    settings.instance.demo = True  # as the demo marks the instances it makes
    seeded = core_demo.seed(instance.app)
    name = settings.instance.name
    return DemoInstance(
        app=instance.app,
        path=instance.path,
        url=instance.url,
        name=name,
        created=False,
        seeded=seeded,
    )


def catalog_as_learner(instance: Instance) -> str:
    """The catalog page of ``instance`` as the demo learner Ada sees it, over HTTP."""
    with requests.Session() as browser:
        token = browser.get(instance.url + "/api/v1/auth/csrf", timeout=5).json()["csrf_token"]
        login = browser.post(
            instance.url + "/api/v1/auth/login",
            json={"email": core_demo.LEARNERS[0], "password": core_demo.DEMO_PASSWORD},
            headers={"X-CSRFToken": token},
            timeout=5,
        )
        assert login.status_code == 200, login.text
        page = browser.get(instance.url + "/catalog", timeout=5)
        assert page.status_code == 200
        return page.text


def lists(page: str, titles: list[str]) -> bool:
    """Whether the catalog page shows every title."""
    return all(title in page for title in titles)


def counts(instance: Instance) -> tuple[int, int, int]:
    """Courses, catalog entries of its own, and peers of ``instance``."""
    with get_db(instance.app).sessions() as sess:
        courses = sess.scalar(select(func.count()).select_from(Course))
        own = sess.scalar(
            select(func.count()).select_from(CatalogEntry).where(CatalogEntry.source == "")
        )
        peers = sess.scalar(select(func.count()).select_from(FederationPeer))
    return int(courses or 0), int(own or 0), int(peers or 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_learner_on_one_demo_instance_finds_the_others_courses(
    network: Network, backend: str
) -> None:
    north = network.start("Northern University", backend=backend, **PATIENT)
    south = network.start("Southern Institute", backend=backend, **PATIENT)
    instances = [demo_instance(north), demo_instance(south)]

    lines = core_demo.join(instances)

    assert lines[0].startswith("Federation: the instances are peers of each other")
    assert not [line for line in lines if "could not" in line or "failed" in line], lines
    for here, there in ((north, south), (south, north)):
        peer = here.peer(there)
        assert peer is not None and peer.state == "approved"
    north.start_worker()  # processes south's "catalog.changed", then pulls south's feed
    south.start_worker()
    for here, theirs in ((north, COURSES[1]), (south, COURSES[0])):
        titles = [course.title for course in theirs]
        wait_for(
            lambda: lists(catalog_as_learner(here), titles),  # noqa: B023 (called at once)
            what=f"{here.name}'s catalog listing the other instance's courses",
        )
    page = catalog_as_learner(north)
    assert "Marine Biology" in page and core_demo.COURSE_TITLE in page  # its own, too

    # A second run (the command started again on the same folders) adds nothing.
    before = [counts(north), counts(south)]
    assert before[0] == (1 + len(COURSES[0]), 1 + len(COURSES[0]), 1)
    core_demo.join([demo_instance(north), demo_instance(south)])
    assert [counts(north), counts(south)] == before


def test_python_m_federation_demo_is_trivium_demo_peers_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIVIUM_ACCOUNTS_HASH_PROFILE", "cheapest")
    monkeypatch.delenv("TRIVIUM_INSTANCE_PATH", raising=False)
    with pytest.raises(SystemExit) as done:
        main(["--path", str(tmp_path), "--bind", "127.0.0.1:18901", "--no-serve"])
    assert done.value.code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["east", "north", "south"]
    assert "127.0.0.1:18903" in (tmp_path / "east" / "instance.toml").read_text()
