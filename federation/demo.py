"""Federation's part of ``trivium demo --peers N``: the demo instances become a network.

Core prepares and serves the demo instances, then calls the
``demo_instances_started`` hook (federation/plugin.py), which runs
:func:`join_network`: every instance adds every other as a peer and approves
it, each gets federated courses of its own, then each pulls its peers'
catalogs and tells them that its own changed, so within seconds a learner on
any of them finds every instance's courses in its catalog.  Running it again
adds nothing twice.

``python -m federation.demo [OPTIONS]`` is short for ``trivium demo --peers 3
[OPTIONS]``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from flask import Flask
from sqlalchemy import select

from core import catalog
from core import courses
from core import demo as core_demo
from core.db import get_db
from core.demo import DemoInstance
from core.models import Course
from core.models import User
from federation.client import PeerRequestError
from federation.inbox import deliver
from federation.inbox import new_activity
from federation.models import FederationPeer
from federation.peers import PeerError
from federation.peers import add_peer
from federation.peers import approve_peer
from federation.signed import peer_client

__all__ = ["COURSES", "DemoCourse", "join_network"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoCourse:
    """A federated course of a demo instance."""

    title: str
    summary: str
    subject: str
    language: str
    level: str


#: The federated courses of the demo instances, by position: the n-th instance
#: gets the n-th set (core names them Northern University, Southern Institute
#: of Technology, Eastern College of Arts).
COURSES: tuple[tuple[DemoCourse, ...], ...] = (
    (
        DemoCourse(
            "Marine Biology",
            "Life in the oceans, from plankton to whales.",
            "Biology",
            "en",
            "beginner",
        ),
        DemoCourse(
            "Introduction to Statistics",
            "Data, uncertainty and inference.",
            "Mathematics",
            "en",
            "beginner",
        ),
    ),
    (
        DemoCourse(
            "Applied Cryptography",
            "Signatures, key exchange and protocols in practice.",
            "Computing",
            "en",
            "advanced",
        ),
        DemoCourse(
            "Robotik für Einsteiger",
            "Sensoren, Motoren und Regelung.",
            "Engineering",
            "de",
            "beginner",
        ),
    ),
    (
        DemoCourse("Medieval History", "Europe from 500 to 1500.", "History", "en", "intermediate"),
        DemoCourse(
            "Histoire de l'art moderne",
            "De l'impressionnisme au cubisme.",
            "Art",
            "fr",
            "intermediate",
        ),
    ),
)


def join_network(instances: Sequence[DemoInstance]) -> list[str]:
    """Peer the served demo instances both ways, give them courses, let them pull.

    :return: lines for the user.
    :raise federation.peers.PeerError: an instance refused to be added as a peer.
    :raise federation.client.PeerRequestError: an instance did not answer.
    """
    urls = [instance.url for instance in instances]
    others = [[url for url in urls if url != instance.url] for instance in instances]
    # Everyone approves everyone before anyone pulls: a peer that does not
    # know the puller yet would refuse its signed request (and it would back off).
    for instance, theirs in zip(instances, others, strict=True):
        peer_with(instance.app, instance.url, theirs)
    lines = [
        "Federation: the instances are peers of each other (approved both ways); "
        "within seconds each catalog lists the others' federated courses:"
    ]
    for n, instance in enumerate(instances):
        own = COURSES[n % len(COURSES)]
        add_courses(instance.app, own)
        lines.append(f"  {instance.name}: {', '.join(course.title for course in own)}")
    for instance, theirs in zip(instances, others, strict=True):
        lines += announce(instance.app, instance.url, theirs)
    return lines


def add_courses(app: Flask, wanted: Sequence[DemoCourse]) -> int:
    """Create and publish the federated courses the instance lacks (by title).

    They belong to the demo instructor; an instance without one gets none.

    :return: how many were added.
    """
    added = 0
    with app.app_context(), get_db(app).session() as sess:
        instructor = sess.scalar(select(User).where(User.email == core_demo.INSTRUCTOR))
        if instructor is None:
            log.warning("demo=courses status=skipped reason=no_instructor")
            return 0
        for course in wanted:
            if sess.scalar(select(Course.id).where(Course.title == course.title)) is not None:
                continue
            created = courses.create_course(
                sess,
                instructor,
                {
                    "title": course.title,
                    "summary": course.summary,
                    "subject": course.subject,
                    "language": course.language,
                    "level": course.level,
                    "visibility": "federated",
                },
            )
            courses.change_status(sess, instructor, created, "publish")
            added += 1
        # Entries of folders prepared by earlier versions, and of a renamed instance.
        catalog.reindex_local(sess)
    return added


def peer_with(app: Flask, own: str, others: Sequence[str]) -> None:
    """Add each of ``others`` as a peer of the instance (unless known) and approve it.

    ``http://`` peers are accepted here whatever ``allow_http_peers`` says:
    the demo instances are served over plain HTTP, and it is the operator's
    own command that joins them.
    """
    with app.app_context(), get_db(app).session() as sess, peer_client(sess) as client:
        for other in others:
            peer = sess.scalar(select(FederationPeer).where(FederationPeer.base_url == other))
            if peer is None:
                peer = add_peer(sess, client, other, own_id=own, allow_http=True)
            approve_peer(peer)


def announce(app: Flask, own: str, others: Sequence[str]) -> list[str]:
    """Tell the approved peers among ``others`` that the instance's catalog changed.

    :return: a line for each peer that could not be told.
    """
    lines = []
    with app.app_context(), get_db(app).session() as sess:
        query = select(FederationPeer).where(FederationPeer.base_url.in_(others))
        for peer in sess.scalars(query).all():
            try:
                deliver(sess, peer, new_activity(own, "catalog.changed"))
            except (PeerRequestError, PeerError) as exc:
                log.warning("demo=announce peer=%s error=%s", peer.base_url, exc)
                lines.append(f"  {own} could not notify {peer.base_url}: {exc}")
    return lines


def main(args: Sequence[str] | None = None) -> None:
    """``python -m federation.demo [OPTIONS]``: ``trivium demo --peers 3 [OPTIONS]``."""
    from core.cli import cli

    rest = list(sys.argv[1:] if args is None else args)
    cli(["demo", "--peers", "3", *rest], prog_name="python -m federation.demo")


if __name__ == "__main__":
    main()
