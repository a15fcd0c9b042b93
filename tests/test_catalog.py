"""The catalog search index (core.catalog): ranking, facets, paging, visibility, sources."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import catalog
from core import courses
from core import hookimpl
from core import schema
from core.catalog import EntryData
from core.db import get_db
from core.models import CatalogEntry
from core.models import CatalogState
from core.models import Course
from core.models import User
from core.plugins import PluginHost
from tests.conftest import Users
from tests.test_migrations import database_url  # noqa: F401  (fixture)
from tests.test_migrations import make_app as make_migrations_app


@pytest.fixture
def sess(app: Flask) -> Iterator[Session]:
    """A session inside an app context, committed by the test."""
    with app.app_context(), get_db(app).sessions() as session:
        yield session


@pytest.fixture
def owner(users: Users, sess: Session) -> User:
    user = users.create("owner@example.org", creator=True)
    return sess.get_one(User, user.id)


def make_course(
    sess: Session,
    owner: User,
    title: str,
    *,
    publish: bool = True,
    visibility: str = "federated",
    **fields: Any,
) -> Course:
    course = courses.create_course(
        sess, owner, {"title": title, "visibility": visibility, **fields}
    )
    if publish:
        courses.change_status(sess, owner, course, "publish")
    sess.commit()
    return course


def titles(page: catalog.CatalogPage) -> list[str]:
    return [hit.title for hit in page.entries]


def peer_entry(external_id: str, title: str, **fields: Any) -> EntryData:
    url = f"https://peer.example/courses/{external_id}"
    return EntryData(external_id=external_id, title=title, url=url, **fields)


def test_ranking_puts_title_matches_first(sess: Session, owner: User) -> None:
    make_course(sess, owner, "Cooking basics", summary="An introduction to astronomy for cooks")
    make_course(sess, owner, "Astronomy for beginners", summary="Stars and planets")
    make_course(sess, owner, "Gardening", description="Nothing about the sky")
    page = catalog.search(sess, "astronomy")
    assert titles(page) == ["Astronomy for beginners", "Cooking basics"]


def test_every_word_must_match_the_last_as_a_prefix(sess: Session, owner: User) -> None:
    make_course(sess, owner, "Linear algebra", subject="Mathematics")
    make_course(sess, owner, "Linear regression in practice", subject="Statistics")
    assert titles(catalog.search(sess, "linear alg")) == ["Linear algebra"]
    assert titles(catalog.search(sess, "lin alg")) == []  # only the last word is unfinished
    assert sorted(titles(catalog.search(sess, "LINEAR"))) == [
        "Linear algebra",
        "Linear regression in practice",
    ]
    # Punctuation and FTS/tsquery operators are just separators, never syntax.
    assert titles(catalog.search(sess, 'algebra" (*) & !lin:* -')) == ["Linear algebra"]
    assert titles(catalog.search(sess, "nothing-matches-this")) == []


def test_facets_count_every_match_and_filters_narrow(sess: Session, owner: User) -> None:
    make_course(sess, owner, "Python one", language="en", subject="Computing", level="beginner")
    make_course(sess, owner, "Python two", language="en", subject="Computing", level="advanced")
    make_course(sess, owner, "Python drei", language="de", subject="Computing", level="beginner")
    catalog.apply_changes(
        sess,
        "peer-a",
        [peer_entry("p1", "Python at A", language="fr", institution="A Uni", subject="Computing")],
    )
    sess.commit()
    page = catalog.search(sess, "python", limit=2)
    assert len(page.entries) == 2
    assert page.facets["language"] == [("en", 2), ("de", 1), ("fr", 1)]
    assert page.facets["subject"] == [("Computing", 4)]
    assert page.facets["level"] == [("beginner", 2), ("advanced", 1)]
    assert page.facets["institution"] == [("Test U", 3), ("A Uni", 1)]

    narrowed = catalog.search(sess, "python", filters={"level": "Beginner", "language": "en"})
    assert titles(narrowed) == ["Python one"]
    assert narrowed.facets["level"] == [("beginner", 1)]
    by_institution = catalog.search(sess, None, filters={"institution": "A Uni"})
    assert titles(by_institution) == ["Python at A"]


def test_a_very_broad_search_reads_the_newest_matches_and_says_so(
    sess: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog.apply_changes(
        sess,
        "peer-a",
        [
            peer_entry(
                f"b{n}", "Broad broad topic" if n == 0 else f"Broad topic {n}", language="en"
            )
            for n in range(5)
        ],
    )
    sess.commit()
    full = catalog.search(sess, "broad")
    assert full.facets_exact and full.ranking_exact
    assert full.entries[0].external_id == "b0"  # the best match comes first
    monkeypatch.setattr(catalog, "MATCH_SCAN", 2)
    page = catalog.search(sess, "broad", limit=2)
    assert not page.facets_exact and not page.ranking_exact
    assert page.facets["language"] == [("en", 3)]  # the MATCH_SCAN + 1 newest matches
    seen = [hit.external_id for hit in page.entries]
    assert page.next_cursor is not None
    rest = catalog.search(sess, "broad", limit=2, cursor=page.next_cursor)
    assert rest.next_cursor is None
    seen += [hit.external_id for hit in rest.entries]
    # Ranked among the three newest; the oldest (and best) one is out of reach.
    assert sorted(seen) == ["b2", "b3", "b4"]

    # Narrower searches and browsing without words stay exact.
    assert catalog.search(sess, "topic 4").ranking_exact
    browse = catalog.search(sess, None, limit=10)
    assert browse.ranking_exact and browse.facets_exact
    monkeypatch.setattr(catalog, "FACET_SCAN", 3)
    browse = catalog.search(sess, None, limit=10)
    assert browse.ranking_exact and not browse.facets_exact
    assert browse.facets["language"] == [("en", 4)]  # the FACET_SCAN + 1 newest
    assert [hit.external_id for hit in browse.entries] == ["b4", "b3", "b2", "b1", "b0"]


def test_on_postgresql_a_search_reads_the_newest_buckets_of_ids_first(
    app: Flask, sess: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    if get_db(app).engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's index keys each word by its entry's id bucket")
    bucket = 1 << catalog.PG_BUCKET_BITS
    entries = [("old", "Broad old", "en"), ("rare", "Rarest word", "en")]
    entries += [(f"mid{n}", f"Broad middle {n}", "de") for n in range(3)]
    entries += [(f"new{n}", f"Broad newer {n}", "en") for n in range(3)]
    for external_id, title, language in entries:
        if external_id in ("mid0", "new0"):  # on to a later bucket
            first = 5 * bucket if external_id == "mid0" else 9 * bucket
            sess.execute(sa.text(f"SELECT setval('catalog_entries_id_seq', {first})"))
        catalog.apply_changes(sess, "peer-a", [peer_entry(external_id, title, language=language)])
    sess.commit()
    keys: list[str] = []

    def record(_conn: Any, _cursor: Any, _statement: str, parameters: Any, *_args: Any) -> None:
        if isinstance(parameters, dict) and "keys" in parameters:
            keys.append(parameters["keys"])

    def found(q: str, **filters: str) -> list[str]:
        page = catalog.search(sess, q, filters=filters, limit=20)
        return sorted(hit.external_id for hit in page.entries)

    engine = get_db(app).engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        monkeypatch.setattr(catalog, "MATCH_SCAN", 4)
        page = catalog.search(sess, "broad", limit=20)
        # The five newest matches, though three buckets lie between them.
        assert sorted(hit.external_id for hit in page.entries) == [
            "mid1",
            "mid2",
            "new0",
            "new1",
            "new2",
        ]
        assert page.facets["language"] == [("en", 3), ("de", 2)]
        assert not page.facets_exact and not page.ranking_exact
        assert keys and not any("'0|broad'" in k for k in keys)  # the oldest bucket unread
        assert not any("'7|broad'" in k for k in keys)  # nor the empty ones between
        assert found("broad", language="DE") == ["mid0", "mid1", "mid2"]
        assert found("broad", language="fr") == []
        assert found("broad ol") == ["old"]
        assert found("rarest") == ["rare"]  # read in every bucket
        assert found("nowhere") == []
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def test_facets_and_ranked_pages_are_cached_until_the_index_changes(
    sess: Session, owner: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted: list[list[str]] = []
    count_facets = catalog._facets

    def counting(session: Session, words: list[str], *args: Any) -> Any:
        counted.append(words)
        return count_facets(session, words, *args)

    monkeypatch.setattr(catalog, "_facets", counting)
    ranked: list[list[str]] = []
    rank_page = catalog._ranked_page

    def counting_pages(session: Session, words: list[str], *args: Any) -> Any:
        ranked.append(words)
        return rank_page(session, words, *args)

    monkeypatch.setattr(catalog, "_ranked_page", counting_pages)

    def languages(q: str | None = "python") -> list[tuple[str, int]]:
        return catalog.search(sess, q).facets["language"]

    catalog.apply_changes(sess, "peer-a", [peer_entry("p1", "Python one", language="en")])
    sess.commit()
    assert languages() == [("en", 1)]
    assert languages() == [("en", 1)]
    assert catalog.search(sess, "PYTHON", limit=1).facets["language"] == [("en", 1)]
    assert len(counted) == 1  # the same search, counted once
    assert len(ranked) == 2  # the same page once, and a page of another size
    assert languages(None) == [("en", 1)]
    assert len(counted) == 2  # another search, counted on its own

    # A peer's new entry, a local course, a removed source: counted afresh.
    catalog.apply_changes(sess, "peer-b", [peer_entry("p2", "Python two", language="de")])
    sess.commit()
    assert languages() == [("de", 1), ("en", 1)]
    assert sorted(titles(catalog.search(sess, "python"))) == ["Python one", "Python two"]
    make_course(sess, owner, "Python three", language="de")
    assert languages() == [("de", 2), ("en", 1)]
    assert catalog.delete_source(sess, "peer-b") == 1
    sess.commit()
    assert languages() == [("de", 1), ("en", 1)]
    catalog.apply_changes(sess, "peer-a", [], deletions=["p1"])
    sess.commit()
    assert languages() == [("de", 1)]

    # Counts seen inside a transaction that is rolled back never come back.
    catalog.apply_changes(sess, "peer-a", [peer_entry("p3", "Python four", language="fr")])
    assert languages() == [("de", 1), ("fr", 1)]
    sess.rollback()
    assert languages() == [("de", 1)]
    assert titles(catalog.search(sess, "python")) == ["Python three"]
    catalog.apply_changes(sess, "peer-a", [peer_entry("p3", "Python four", language="it")])
    sess.commit()
    assert languages() == [("de", 1), ("it", 1)]


def test_a_search_with_words_reads_its_matches_once(app: Flask, sess: Session, owner: User) -> None:
    for n in range(3):
        make_course(sess, owner, f"Botany {n}", language="en", level="beginner")
    make_course(sess, owner, "Botany advanced", language="de", level="advanced")
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    def full_text_matches() -> tuple[int, int]:
        """Scans (full-text matches reading the entries' rows), and all full-text matches."""
        scans = sum(
            (" MATCH " in s and "JOIN catalog_entries" in s) or "@@" in s for s in statements
        )
        found = sum(" MATCH " in s or "@@" in s for s in statements)
        statements.clear()
        return scans, found

    engine = get_db(app).engine
    sqlite = engine.dialect.name == "sqlite"
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        page = catalog.search(sess, "botany", limit=2)
        # The page and the facets both come from one scan of the index; on
        # SQLite, bm25 ranks its rows in a second match, after a count
        # of the entries the unfinished word is in.
        assert full_text_matches() == ((1, 3) if sqlite else (1, 1))
        assert len(page.entries) == 2 and page.next_cursor is not None
        assert page.facets["language"] == [("en", 3), ("de", 1)]
        assert page.facets["level"] == [("beginner", 3), ("advanced", 1)]
        assert page.facets_exact and page.ranking_exact
        assert catalog.search(sess, "botany", limit=2) == page  # all cached
        assert full_text_matches() == (0, 0)
        rest = catalog.search(sess, "botany", limit=2, cursor=page.next_cursor)
        # The next page; its facets and the count were cached.
        assert full_text_matches() == ((1, 2) if sqlite else (1, 1))
        assert rest.facets == page.facets and rest.next_cursor is None
        seen = {hit.title for hit in page.entries + rest.entries}
        assert seen == {"Botany 0", "Botany 1", "Botany 2", "Botany advanced"}
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def test_on_sqlite_a_word_many_entries_hold_narrows_but_does_not_rank(
    app: Flask, sess: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite = get_db(app).engine.dialect.name == "sqlite"
    # The same words, "linear" equally placed; "algebra" weighs more in the
    # older one's title than in the newer one's description.
    catalog.apply_changes(
        sess,
        "peer-a",
        [peer_entry("old", "Linear algebra", description="notes", language="en")],
    )
    sess.commit()
    catalog.apply_changes(
        sess,
        "peer-a",
        [peer_entry("new", "Linear notes", description="algebra", language="en")],
    )
    sess.commit()

    def found(q: str, **filters: str) -> tuple[list[str], bool]:
        page = catalog.search(sess, q, filters=filters)
        return [hit.external_id for hit in page.entries], page.ranking_exact

    # A rare unfinished word ranks like a complete one.
    assert found("linear alg") == (["old", "new"], True)
    assert found("alg") == (["old", "new"], True)

    monkeypatch.setattr(catalog, "RANKED_PREFIX_MATCHES", 1)
    if sqlite:
        # "alg" is in two entries, more than the bound: it only narrows; the
        # complete word ranks them (a tie here: the newest first) ...
        assert found("linear alg") == (["new", "old"], True)
        assert found("linear alg", language="en") == (["new", "old"], True)
        # ... and alone it lists them newest first, and says so.
        assert found("alg") == (["new", "old"], False)
        assert found("alg", language="EN") == (["new", "old"], False)
        assert found("algebra") == (["new", "old"], False)  # the last word may be unfinished
        assert found("zzz alg") == ([], True)
    else:
        # ts_rank_cd keeps no statistics over the index: every word ranks.
        assert found("linear alg") == (["old", "new"], True)
        assert found("alg") == (["old", "new"], True)
    # Complete words rank ...
    assert found("notes linear") == (["new", "old"], True)
    assert found("algebra lin") == (["old", "new"], True)
    monkeypatch.setattr(catalog, "RANKED_PREFIX_MATCHES", 2)
    monkeypatch.setattr(catalog, "RANKED_WORD_MATCHES", 1)
    # ... unless, on SQLite, too many entries hold them: "lin" ranks alone.
    assert found("algebra lin") == ((["new", "old"] if sqlite else ["old", "new"]), True)

    # Paging through newest-first matches reads each one once.
    monkeypatch.setattr(catalog, "RANKED_PREFIX_MATCHES", 1)
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        page = catalog.search(sess, "alg", cursor=cursor, limit=1)
        seen += [hit.external_id for hit in page.entries]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == (["new", "old"] if sqlite else ["old", "new"]) and cursor is None


def test_how_many_entries_hold_a_word(
    app: Flask, sess: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    if get_db(app).engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL ranks every word")
    catalog.apply_changes(
        sess,
        "peer-a",
        [peer_entry(f"e{n}", "Zebra" if n % 2 else "Horse") for n in range(6)],
    )
    sess.commit()
    assert catalog._holders(sess, "zebra", "") == 3
    assert catalog._holders(sess, "zeb", "*") == 3
    assert catalog._holders(sess, "zeb", "") == 0
    # Beyond the sample, estimated: the newest two of them are in the
    # newest three entries, so about two in three of all six.
    monkeypatch.setattr(catalog, "WORD_SAMPLE", 2)
    assert catalog._holders(sess, "zebra", "") == 4


def test_whether_an_unfinished_word_ranks_follows_the_index(
    app: Flask, sess: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    if get_db(app).engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL ranks every word")
    monkeypatch.setattr(catalog, "RANKED_PREFIX_MATCHES", 2)
    catalog.apply_changes(sess, "peer-a", [peer_entry("a", "Zoology"), peer_entry("b", "Zoos")])
    sess.commit()
    assert catalog.search(sess, "zoo").ranking_exact
    assert catalog.search(sess, "zoo").ranking_exact  # counted once, then cached
    # A third entry with the word: a new version of the index, counted afresh.
    catalog.apply_changes(sess, "peer-b", [peer_entry("c", "Zoonoses")])
    sess.commit()
    page = catalog.search(sess, "zoo")
    assert not page.ranking_exact
    assert [hit.external_id for hit in page.entries] == ["c", "b", "a"]


@pytest.mark.parametrize(
    ("q", "found"),
    [
        ('"', True),  # no words: every entry
        ('"""linear', True),
        ("linear*", True),
        ("*", True),
        ("***alg***", True),
        ("NEAR(linear algebra, 2)", False),  # "near" and "2" are words to find too
        ("linear NEAR algebra", False),
        ("title:linear", False),
        ("{title description}: linear", False),
        ("- linear", True),
        ("^linear", True),
        ("linear OR zzz", False),
        ("linear AND NOT algebra", False),
        ("linear + algebra", True),
        ("( linear", True),
        ("linear \x00 algebra", True),
        ("\u03bbinear", False),
        ("_ __ ___", False),
        ("linear " * 1500, True),  # 10 kB; the first twelve words count
        ("x" * 10_000, False),
        ('"' * 10_000, True),
        ("algebra" + "*" * 10_000, True),
    ],
)
def test_query_syntax_is_plain_text(client: Any, sess: Session, q: str, found: bool) -> None:
    catalog.apply_changes(sess, "peer-a", [peer_entry("la", "Linear algebra")])
    sess.commit()
    version = sess.scalar(select(CatalogState.version))
    page = catalog.search(sess, q)
    assert [hit.external_id for hit in page.entries] == (["la"] if found else [])
    assert client.get("/catalog", query_string={"q": q}).status_code == 200
    # Searching changed nothing.
    assert sess.scalar(select(CatalogState.version)) == version
    assert sess.scalar(select(sa.func.count()).select_from(CatalogEntry)) == 1


@pytest.mark.parametrize("q", ["course", None])
def test_filters_match_whole_values_whatever_their_characters(sess: Session, q: str | None) -> None:
    catalog.apply_changes(
        sess,
        "peer-a",
        [
            peer_entry("en", "Course en", language="en"),
            peer_entry("EN", "Course EN", language="EN"),
            peer_entry("en-gb", "Course en-GB", language="en-GB"),
            peer_entry("cs", "Course cs", subject="Computer science"),
            peer_entry("csh", "Course csh", subject="Computer science history"),
            peer_entry("quote", "Course quote", institution='The "Quoted" U'),
            peer_entry("slash", "Course slash", institution="Back\\slash's U"),
            peer_entry("marks", "Course marks", level="!!"),
            peer_entry("plain", "Course plain", level="Beginner"),
        ],
    )
    sess.commit()

    def found(**filters: str) -> list[str]:
        page = catalog.search(sess, q, filters=filters)
        return sorted(hit.external_id for hit in page.entries)

    assert found(language="en") == ["EN", "en"]
    assert found(language="EN-gb") == ["en-gb"]
    assert found(subject="computer science") == ["cs"]
    assert found(institution='the "quoted" u') == ["quote"]
    assert found(institution='"quoted"') == []
    assert found(institution="back\\slash's u") == ["slash"]
    assert found(institution="back\\\\slash's u") == []
    assert found(level="!!") == ["marks"]
    assert found(level="beginner", language="en") == []
    assert catalog.search(sess, q, filters={"level": "beginner"}).facets["level"] == [
        ("Beginner", 1)
    ]


@pytest.mark.parametrize(
    "filters",
    [{"colour": "red"}, {"subject": 3}, {"level": "x" * 201}],
)
def test_bad_filters_are_refused(sess: Session, filters: Any) -> None:
    with pytest.raises(catalog.CatalogFilterInvalid):
        catalog.search(sess, None, filters=filters)


def test_cursor_pages_through_every_match_once(sess: Session, owner: User) -> None:
    catalog.apply_changes(
        sess,
        "peer-a",
        [
            peer_entry(f"c{n}", f"Course {n} history", summary="history " * (n % 4))
            for n in range(23)
        ],
    )
    sess.commit()
    for q in ("history", None):
        seen: list[str] = []
        cursor = None
        pages = 0
        while pages < 10:
            page = catalog.search(sess, q, cursor=cursor, limit=5)
            seen += [hit.external_id for hit in page.entries]
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        assert sorted(seen) == sorted(f"c{n}" for n in range(23))
        assert len(seen) == 23 and pages == 5


def test_browsing_without_words_lists_newest_first(sess: Session, owner: User) -> None:
    make_course(sess, owner, "First")
    make_course(sess, owner, "Second")
    assert titles(catalog.search(sess, "  ")) == ["Second", "First"]


@pytest.mark.parametrize("cursor", ["%%%", "bm90IGpzb24", "eyJmIjoiMDAwMDAwMDAiLCJpIjoxfQ"])
def test_garbled_or_foreign_cursors_are_refused(sess: Session, owner: User, cursor: str) -> None:
    make_course(sess, owner, "Anything")
    with pytest.raises(catalog.CatalogCursorInvalid):
        catalog.search(sess, "anything", cursor=cursor)


def test_a_cursor_of_another_search_is_refused(sess: Session, owner: User) -> None:
    for n in range(3):
        make_course(sess, owner, f"Biology {n}")
    cursor = catalog.search(sess, "biology", limit=1).next_cursor
    assert cursor is not None
    with pytest.raises(catalog.CatalogCursorInvalid):
        catalog.search(sess, "chemistry", cursor=cursor)


def test_only_public_local_courses_are_visible(sess: Session, owner: User, users: Users) -> None:
    make_course(sess, owner, "Open federated geology", visibility="federated")
    make_course(sess, owner, "Open instance geology", visibility="instance")
    make_course(sess, owner, "Private geology", visibility="private")
    make_course(sess, owner, "Draft geology", publish=False)
    learner = sess.get_one(User, users.create("learner@example.org").id)
    for viewer in (None, learner, owner):
        assert sorted(titles(catalog.search(sess, "geology", viewer=viewer))) == [
            "Open federated geology",
            "Open instance geology",
        ]


def test_the_index_follows_course_changes(sess: Session, owner: User) -> None:
    course = make_course(sess, owner, "Volcanoes", visibility="federated")
    hit = catalog.search(sess, "volcanoes").entries[0]
    assert hit.course_id == course.public_id
    assert hit.url == f"/courses/{course.public_id}"
    assert hit.source == "" and hit.institution == "Test U"

    courses.update_course(sess, owner, course, {"title": "Glaciers"})
    sess.commit()
    assert titles(catalog.search(sess, "volcanoes")) == []
    assert titles(catalog.search(sess, "glaciers")) == ["Glaciers"]

    for change, visible in [
        ({"visibility": "private"}, False),
        ({"visibility": "instance"}, True),
    ]:
        courses.update_course(sess, owner, course, change)
        sess.commit()
        assert (titles(catalog.search(sess, "glaciers")) == ["Glaciers"]) is visible

    courses.change_status(sess, owner, course, "unpublish")
    sess.commit()
    assert titles(catalog.search(sess, "glaciers")) == []
    courses.change_status(sess, owner, course, "publish")
    courses.change_status(sess, owner, course, "archive")
    sess.commit()
    assert titles(catalog.search(sess, "glaciers")) == []
    row = sess.scalar(select(CatalogEntry).where(CatalogEntry.external_id == course.public_id))
    assert row is not None and row.deleted and row.title == ""


def test_local_change_sequence_and_feed_rows(sess: Session, owner: User) -> None:
    instance_only = make_course(sess, owner, "Instance only", visibility="instance")
    federated = make_course(sess, owner, "Federated")
    draft = make_course(sess, owner, "Never published", publish=False)
    assert [e.external_id for e in catalog.local_changes(sess, 0, 10)] == [federated.public_id]
    head = catalog.local_head(sess)
    assert head > 0

    # Nothing changes: no new sequence number.
    courses.update_course(sess, owner, federated, {"title": "Federated"})
    sess.commit()
    assert catalog.local_head(sess) == head

    courses.update_course(sess, owner, federated, {"visibility": "instance"})
    sess.commit()
    (tombstone,) = catalog.local_changes(sess, head, 10)
    assert tombstone.external_id == federated.public_id and not tombstone.federated
    assert catalog.local_head(sess) > head
    ids = {e.external_id for e in catalog.local_changes(sess, 0, 10)}
    assert instance_only.public_id not in ids and draft.public_id not in ids


def test_sources_never_touch_each_other_or_local_courses(sess: Session, owner: User) -> None:
    course = make_course(sess, owner, "Local astronomy")
    with pytest.raises(catalog.LocalSourceRefused):
        catalog.apply_changes(sess, "", [peer_entry(course.public_id, "Hijacked")])
    with pytest.raises(catalog.LocalSourceRefused):
        catalog.delete_source(sess, "")
    catalog.apply_changes(sess, "peer-a", [peer_entry(course.public_id, "A astronomy")])
    catalog.apply_changes(sess, "peer-b", [peer_entry(course.public_id, "B astronomy")])
    sess.commit()
    assert sorted(titles(catalog.search(sess, "astronomy"))) == [
        "A astronomy",
        "B astronomy",
        "Local astronomy",
    ]
    stored, removed = catalog.apply_changes(
        sess, "peer-a", [peer_entry("x", "A optics")], deletions=[course.public_id, "unknown"]
    )
    sess.commit()
    assert (stored, removed) == (1, 1)
    assert sorted(titles(catalog.search(sess, "astronomy"))) == ["B astronomy", "Local astronomy"]
    hit = catalog.search(sess, "optics").entries[0]
    assert hit.source == "peer-a" and hit.course_id is None
    assert hit.url == "https://peer.example/courses/x"

    # An upsert replaces the source's own row in place.
    catalog.apply_changes(sess, "peer-b", [peer_entry(course.public_id, "B telescopes")])
    sess.commit()
    assert titles(catalog.search(sess, "telescopes")) == ["B telescopes"]
    assert titles(catalog.search(sess, "astronomy")) == ["Local astronomy"]

    assert catalog.delete_source(sess, "peer-b") == 1
    sess.commit()
    assert titles(catalog.search(sess, "telescopes")) == []


def test_a_plugin_veto_hides_a_local_course(app: Flask, sess: Session, owner: User) -> None:
    hidden = make_course(sess, owner, "Secret chemistry")
    make_course(sess, owner, "Open chemistry")

    class Veto:
        @hookimpl
        def permission_allowed(
            self, user: User | None, action: str, course: Course | None
        ) -> bool | None:
            if action == "course.view" and course is not None and course.id == hidden.id:
                return False
            return None

    host: PluginHost = app.extensions["trivium.plugins"]
    host.register(Veto(), "veto")
    try:
        assert titles(catalog.search(sess, "chemistry")) == ["Open chemistry"]
    finally:
        host.unregister("veto")


def test_hook_catalog_entry_metadata(app: Flask, sess: Session, owner: User) -> None:
    class Extra:
        @hookimpl
        def catalog_entry_metadata(self, course: Course) -> dict[str, Any] | None:
            return {"timeRequired": "PT10H", "title": course.title}

    class Broken:
        @hookimpl
        def catalog_entry_metadata(self, course: Course) -> dict[str, Any] | None:
            raise RuntimeError("boom")

    host: PluginHost = app.extensions["trivium.plugins"]
    host.register(Extra(), "extra")
    host.register(Broken(), "broken")
    try:
        course = make_course(sess, owner, "Metadata course")
    finally:
        host.unregister("extra")
        host.unregister("broken")
    row = sess.scalar(select(CatalogEntry).where(CatalogEntry.external_id == course.public_id))
    assert row is not None and row.data == {"timeRequired": "PT10H", "title": "Metadata course"}


def test_hook_catalog_changed(app: Flask, sess: Session, owner: User) -> None:
    heard: list[list[str]] = []

    class Listener:
        @hookimpl
        def catalog_changed(self, session: Session, external_ids: list[str]) -> None:
            assert session is sess
            heard.append(external_ids)

    host: PluginHost = app.extensions["trivium.plugins"]
    host.register(Listener(), "listener")
    try:
        make_course(sess, owner, "Instance only", visibility="instance")
        assert heard == []
        course = make_course(sess, owner, "Shared")
        assert heard == [[course.public_id]]
        courses.update_course(sess, owner, course, {"visibility": "private"})
        sess.commit()
        assert heard == [[course.public_id], [course.public_id]]
    finally:
        host.unregister("listener")


def test_a_migrated_database_searches_like_a_created_one(tmp_path: Path, database_url: str) -> None:  # noqa: F811
    app = make_migrations_app(tmp_path, database_url)
    try:
        schema.upgrade(app)
        with app.app_context(), get_db(app).sessions() as session:
            user = User(email="m@example.org", display_name="M", can_create_courses=True)
            session.add(user)
            session.flush()
            make_course(session, user, "Migrated marine biology")
            catalog.apply_changes(session, "peer-a", [peer_entry("m1", "Marine engineering")])
            session.commit()
            assert sorted(titles(catalog.search(session, "marine"))) == [
                "Marine engineering",
                "Migrated marine biology",
            ]
            assert titles(catalog.search(session, "biol")) == ["Migrated marine biology"]
            assert titles(catalog.search(session, "marine", filters={"language": "fr"})) == []
        schema.downgrade(app, "core_0002")
        if get_db(app).engine.dialect.name == "sqlite":
            with get_db(app).engine.connect() as conn:
                # core_0002's full-text table, rebuilt from the rows.
                found = conn.scalar(
                    sa.text(
                        "SELECT count(*) FROM catalog_entries_fts "
                        "WHERE catalog_entries_fts MATCH 'marine'"
                    )
                )
                assert found == 2
        schema.downgrade(app, "core_0001")
        with get_db(app).engine.connect() as conn:
            assert "catalog_entries" not in sa.inspect(conn).get_table_names()
    finally:
        get_db(app).dispose()


def test_the_migration_indexes_existing_public_courses(tmp_path: Path, database_url: str) -> None:  # noqa: F811
    app = make_migrations_app(tmp_path, database_url)
    try:
        schema.upgrade(app, "core@core_0001")
        with get_db(app).engine.begin() as conn:
            for title, status, visibility in [
                ("Existing open rhetoric", "published", "federated"),
                ("Existing instance rhetoric", "published", "instance"),
                ("Existing private rhetoric", "published", "private"),
                ("Existing draft rhetoric", "draft", "federated"),
            ]:
                conn.execute(
                    sa.text(
                        "INSERT INTO courses (public_id, title, summary, description, language, "
                        "subject, level, status, visibility, enrolment_mode, created_at, "
                        "updated_at) VALUES (:p, :t, '', '', 'en', '', '', :s, :v, 'open', "
                        ":now, :now)"
                    ),
                    {
                        "p": title.split()[1] + "0" * 20,
                        "t": title,
                        "s": status,
                        "v": visibility,
                        "now": datetime.now(UTC),
                    },
                )
        schema.upgrade(app)
        with app.app_context(), get_db(app).sessions() as session:
            page = catalog.search(session, "rhetoric")
            assert sorted(titles(page)) == ["Existing instance rhetoric", "Existing open rhetoric"]
            assert {hit.institution for hit in page.entries} == {"Test U"}
            assert [e.title for e in catalog.local_changes(session, 0, 10)] == [
                "Existing open rhetoric"
            ]
    finally:
        get_db(app).dispose()


def test_later_pages_keep_the_first_pages_ranking_words(
    app: Flask, sess: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    if get_db(app).engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL ranks by every word")
    monkeypatch.setattr(catalog, "RANKED_PREFIX_MATCHES", 2)
    catalog.apply_changes(
        sess,
        "peer-a",
        [peer_entry("a", "Zoology"), peer_entry("b", "Zoos"), peer_entry("c", "Zoonoses")],
    )
    sess.commit()
    seen = []
    page = catalog.search(sess, "zoo", limit=1)  # three hold "zoo": it does not rank
    assert not page.ranking_exact and [h.external_id for h in page.entries] == ["c"]
    seen += [h.external_id for h in page.entries]
    # meanwhile the peer renames c: two hold "zoo" now, enough for it to rank
    catalog.apply_changes(sess, "peer-a", [peer_entry("c", "Horses")])
    sess.commit()
    while page.next_cursor:
        page = catalog.search(sess, "zoo", cursor=page.next_cursor, limit=1)
        seen += [h.external_id for h in page.entries]
    assert seen == ["c", "b", "a"]  # every match once, in the first page's order
    with pytest.raises(catalog.CatalogCursorInvalid):  # a forged choice of words
        bad = json.loads(base64.urlsafe_b64decode(_padded(first_cursor(sess))))
        bad["k"] = [5]
        catalog.search(sess, "zoo", cursor=_encoded(bad), limit=1)


def first_cursor(sess: Session) -> str:
    page = catalog.search(sess, "zoo", limit=1)
    assert page.next_cursor is not None
    return page.next_cursor


def _padded(cursor: str) -> str:
    return cursor + "=" * (-len(cursor) % 4)


def _encoded(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
