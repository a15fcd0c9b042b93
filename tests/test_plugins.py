"""Loading plugins: entry points, enable/disable, misspelt hooks, isolation of failures."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint

from core import create_app
from core import hookimpl
from core.content import ContentType
from core.plugins import DuplicateContentType
from core.plugins import PluginHost
from core.plugins import PluginLoadError
from core.plugins import StartupError
from tests.conftest import base_config


def make_dist(root: Path, name: str, body: str, version: str = "1.2.3") -> None:
    """Write an installed-looking distribution with a ``trivium.plugins`` entry point."""
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(body))
    info = root / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[trivium.plugins]\n{name} = {name}\n")


PLUGIN_BODY = """
from core import hookimpl
from core.content import ContentType

class Flashcard(ContentType):
    name = "flashcard"
    label = "Flashcard"

@hookimpl
def register_content_types():
    return [Flashcard]
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path where tests install fake plugin distributions."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


def test_third_party_plugin_loads_from_entry_point(tmp_path: Path, site: Path) -> None:
    make_dist(site, "trivium_flashcards", PLUGIN_BODY)
    app = create_app(tmp_path, base_config(tmp_path))
    host: PluginHost = app.extensions["trivium.plugins"]
    assert "flashcard" in host.content_types
    info = {p.name: p for p in host.info()}
    assert info["trivium_flashcards"].version == "1.2.3"
    assert info["trivium_flashcards"].hooks == ["register_content_types"]
    assert info["trivium_flashcards"].builtin is False
    assert info["core.page"].builtin is True


def test_disabled_plugin_is_not_loaded(tmp_path: Path, site: Path) -> None:
    make_dist(site, "trivium_flashcards", PLUGIN_BODY)
    config = base_config(tmp_path)
    config["plugins"] = {"disabled": ["trivium_flashcards"]}
    app = create_app(tmp_path, config)
    host: PluginHost = app.extensions["trivium.plugins"]
    assert "flashcard" not in host.content_types
    assert "trivium_flashcards" not in {p.name for p in host.info()}


def test_enabled_allow_list_limits_plugins(tmp_path: Path, site: Path) -> None:
    make_dist(site, "trivium_flashcards", PLUGIN_BODY)
    config = base_config(tmp_path)
    config["plugins"] = {"enabled": ["something_else"]}
    app = create_app(tmp_path, config)
    assert "flashcard" not in app.extensions["trivium.plugins"].content_types


def test_plugin_that_fails_to_import_stops_startup_with_its_name(
    tmp_path: Path, site: Path
) -> None:
    make_dist(site, "trivium_broken", "raise RuntimeError('missing dependency foo')\n")
    with pytest.raises(PluginLoadError, match=r"trivium_broken.*missing dependency foo"):
        create_app(tmp_path, base_config(tmp_path))


def test_misspelt_hook_fails_loudly(tmp_path: Path) -> None:
    class Typo:
        @hookimpl
        def register_content_type(self) -> list[Any]:
            return []

    with pytest.raises(PluginLoadError, match="register_content_type"):
        create_app(tmp_path, base_config(tmp_path), extra_plugins={"typo": Typo()})


def test_duplicate_content_type_names_both_plugins(tmp_path: Path) -> None:
    class Page2(ContentType):
        name = "page"
        label = "Another page"

    class Dup:
        @hookimpl
        def register_content_types(self) -> list[type[ContentType]]:
            return [Page2]

    with pytest.raises(
        DuplicateContentType, match=r"'page' registered by both (?=.*'core.page')(?=.*'dup')"
    ):
        create_app(tmp_path, base_config(tmp_path), extra_plugins={"dup": Dup()})


def test_content_type_without_name_is_refused(tmp_path: Path) -> None:
    class Nameless(ContentType):
        label = "?"

    class Bad:
        @hookimpl
        def register_content_types(self) -> list[type[ContentType]]:
            return [Nameless]

    with pytest.raises(PluginLoadError, match=r"'bad'.*register_content_types"):
        create_app(tmp_path, base_config(tmp_path), extra_plugins={"bad": Bad()})


def test_failing_hook_is_logged_with_plugin_name_and_app_still_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = Blueprint("good_plugin", __name__)

    @good.get("/good")
    def hello() -> str:
        return "still here"

    class Good:
        @hookimpl
        def register_blueprints(self) -> list[Blueprint]:
            return [good]

    class Crashy:
        @hookimpl
        def register_blueprints(self) -> list[Blueprint]:
            raise RuntimeError("boom in blueprints")

        @hookimpl
        def startup(self) -> None:
            raise RuntimeError("boom at startup")

    with caplog.at_level(logging.ERROR, logger="core.plugins"):
        app = create_app(
            tmp_path, base_config(tmp_path), extra_plugins={"good": Good(), "crashy": Crashy()}
        )
    assert app.test_client().get("/good").get_data(as_text=True) == "still here"
    host: PluginHost = app.extensions["trivium.plugins"]
    failed = {(f.plugin, f.hook) for f in host.failures}
    assert failed == {("crashy", "register_blueprints"), ("crashy", "startup")}
    assert "plugin=crashy hook=register_blueprints" in caplog.text
    assert {p.name: p.failures for p in host.info()}["crashy"] == 2


def test_a_startup_error_stops_startup_naming_the_plugin(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    later: list[str] = []

    class Unconfigured(StartupError):
        """The test's own kind of start-up refusal."""

    class Refuses:
        @hookimpl(tryfirst=True)
        def startup(self) -> None:
            raise Unconfigured("no widget folder: run widgets init")

    class After:
        @hookimpl
        def startup(self) -> None:
            later.append("called")

    with (
        caplog.at_level(logging.ERROR, logger="core.plugins"),
        pytest.raises(Unconfigured) as refused,
    ):
        create_app(tmp_path, base_config(tmp_path), extra_plugins={"w": Refuses(), "a": After()})

    assert str(refused.value) == "plugin w: no widget folder: run widgets init"
    assert refused.value.plugin == "w"
    assert later == []  # no later startup implementation runs
    assert "plugin=w hook=startup" in caplog.text


def test_call_passes_only_the_arguments_an_implementation_asks_for(tmp_path: Path) -> None:
    seen: list[str] = []

    class Partial:
        @hookimpl
        def permission_allowed(self, action: str) -> bool | None:
            seen.append(action)
            return None

    app = create_app(tmp_path, base_config(tmp_path), extra_plugins={"partial": Partial()})
    host: PluginHost = app.extensions["trivium.plugins"]
    assert host.call("permission_allowed", user=None, action="course.view", course=None) == []
    assert seen == ["course.view"]


def test_firstresult_stops_at_first_answer_and_skips_failures(tmp_path: Path) -> None:
    order: list[str] = []

    class First:
        @hookimpl(tryfirst=True)
        def actor_from_request(self, request: Any) -> Any:
            order.append("first")
            raise RuntimeError("broken sso")

    class Second:
        @hookimpl
        def actor_from_request(self, request: Any) -> Any:
            order.append("second")
            return "someone"

    app = create_app(
        tmp_path, base_config(tmp_path), extra_plugins={"first": First(), "second": Second()}
    )
    host: PluginHost = app.extensions["trivium.plugins"]
    assert host.call("actor_from_request", firstresult=True, request=None) == ["someone"]
    assert order == ["first", "second"]


def test_call_sees_plugins_registered_and_removed_after_earlier_calls(tmp_path: Path) -> None:
    class Vote:
        def __init__(self, answer: bool) -> None:
            self.answer = answer

        @hookimpl
        def permission_allowed(self, action: str) -> bool | None:
            return self.answer

    app = create_app(tmp_path, base_config(tmp_path))
    host: PluginHost = app.extensions["trivium.plugins"]

    def votes() -> list[Any]:
        return host.call("permission_allowed", user=None, action="x", course=None)

    assert votes() == []
    host.register(Vote(True), "yes")
    assert votes() == [True]
    no = Vote(False)
    host.pm.register(no, name="no")  # straight on the pluggy manager
    assert sorted(votes()) == [False, True]
    host.pm.unregister(no)
    assert votes() == [True]
    host.unregister("yes")
    assert votes() == []
