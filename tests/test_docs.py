"""The plugin guide's example is real, working code."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from core import create_app
from core.content import ItemConfigInvalid
from tests.conftest import base_config

GUIDE = Path(__file__).parent.parent / "docs" / "plugins.md"


def example(name: str) -> str:
    """The python block that follows ``<!-- example: name -->`` in the guide."""
    text = GUIDE.read_text()
    match = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"no example {name!r} in {GUIDE}"
    return match.group(1)


def load_example(name: str) -> types.ModuleType:
    """Execute a guide example as a module."""
    module = types.ModuleType(f"example_{name.replace('-', '_')}")
    sys.modules[module.__name__] = module
    exec(compile(example(name), str(GUIDE), "exec"), module.__dict__)  # noqa: S102
    return module


def test_link_plugin_example_registers_a_working_content_type(tmp_path: Path) -> None:
    plugin = load_example("link-plugin")
    app = create_app(tmp_path, base_config(tmp_path), extra_plugins={"links": plugin})
    link = app.extensions["trivium.plugins"].content_type("link")
    assert link.label == "External link"
    assert link.validate_config({"url": "https://example.org/reading"}) == {
        "url": "https://example.org/reading",
        "open_in_new_tab": True,
    }
    with pytest.raises(ItemConfigInvalid) as err:
        link.validate_config({"url": "not a url", "colour": "red"})
    assert {e["loc"] for e in err.value.errors} == {"url", "colour"}
