"""Meta-tests guarding the plugin contract, and tests of the startup/route hooks.

Every hook in ``core/hookspecs.py`` must have a ``test_hook_<name>`` somewhere
under ``tests/`` (next to the behaviour it drives) and a heading with its exact
signature in ``docs/plugins.md``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint
from flask import Flask

from core import create_app
from core import hookimpl
from core import hookspecs
from core.content import ContentType
from tests.conftest import base_config

TESTS = Path(__file__).parent
GUIDE = TESTS.parent / "docs" / "plugins.md"


def hook_specs() -> dict[str, Any]:
    """Every hookspec function by name."""
    return {
        name: fn
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "trivium_spec")
    }


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_hook_has_a_test(name: str) -> None:
    pattern = re.compile(rf"^def test_hook_{name}\(", re.M)
    found = [p.name for p in TESTS.rglob("test_*.py") if pattern.search(p.read_text())]
    assert found, f"write a test_hook_{name} under tests/"


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_hook_is_documented_with_its_signature(name: str) -> None:
    params = ", ".join(inspect.signature(hook_specs()[name]).parameters)
    heading = f"#### `{name}({params})`"
    assert heading in GUIDE.read_text(), f"docs/plugins.md lacks {heading}"


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_spec_is_a_complete_reference_entry(name: str) -> None:
    fn = hook_specs()[name]
    doc = inspect.getdoc(fn) or ""
    assert ":return:" in doc
    assert "versionadded" in doc
    for param in inspect.signature(fn).parameters:
        assert f":param {param}:" in doc, f"{name} does not document {param}"
    assert "return" in fn.__annotations__


def make_app(tmp_path: Path, **plugins: object) -> Flask:
    return create_app(tmp_path, base_config(tmp_path), extra_plugins=plugins)


def test_hook_startup(tmp_path: Path) -> None:
    seen: list[Flask] = []

    class P:
        @hookimpl
        def startup(self, app: Flask) -> None:
            assert "api" in app.blueprints
            seen.append(app)

    app = make_app(tmp_path, p=P())
    assert seen == [app]


def test_hook_register_content_types(tmp_path: Path) -> None:
    class Poll(ContentType):
        name = "poll"
        label = "Poll"

    class P:
        @hookimpl
        def register_content_types(self) -> list[type[ContentType]]:
            return [Poll]

    app = make_app(tmp_path, p=P())
    assert isinstance(app.extensions["trivium.plugins"].content_type("poll"), Poll)


def test_hook_register_blueprints(tmp_path: Path) -> None:
    bp = Blueprint("p_pages", __name__, url_prefix="/p")

    @bp.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    class P:
        @hookimpl
        def register_blueprints(self) -> list[Blueprint]:
            return [bp]

    app = make_app(tmp_path, p=P())
    assert app.test_client().get("/p/hello").json == {"hello": "world"}


def test_hook_actor_from_request(tmp_path: Path) -> None:
    from core.auth import current_user
    from core.models import User

    sso_user = User(email="sso@example.org", display_name="SSO", is_active=True)

    class Sso:
        @hookimpl
        def actor_from_request(self, request: Any) -> User | None:
            return sso_user if request.headers.get("X-Test-SSO") == "yes" else None

    app = make_app(tmp_path, sso=Sso())
    with app.test_request_context("/", headers={"X-Test-SSO": "yes"}):
        assert current_user() is sso_user
    with app.test_request_context("/"):
        assert current_user() is None
