"""Parse JSON from a peer: an object, strict, and safe on hostile input.

Peers are not trusted to send well-formed JSON.  Python's parser accepts
``NaN`` and ``Infinity``, and deeply nested arrays make it raise
``RecursionError`` (not ``ValueError``); both are refused here as malformed.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["JsonInvalid", "load_object"]


class JsonInvalid(ValueError):
    """The bytes are not UTF-8 JSON whose top-level value is an object."""


def _no_constants(name: str) -> Any:
    raise JsonInvalid(f"{name} is not JSON")


def load_object(data: bytes) -> dict[str, Any]:
    """Parse ``data`` as a JSON object.

    :raise JsonInvalid: not UTF-8, not JSON, too deeply nested, or not an object.
    """
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except JsonInvalid:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise JsonInvalid(f"not JSON: {exc}") from None
    except RecursionError:
        raise JsonInvalid("JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise JsonInvalid(f"expected a JSON object, got {type(value).__name__}")
    return value
