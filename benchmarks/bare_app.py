"""The reference: a bare Flask JSON endpoint, served exactly like Trivium."""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/bare")
def bare() -> dict[str, object]:
    """A small JSON document, like a learner API response without any work."""
    return {"id": "0123456789abcdef", "title": "Bare", "items": [1, 2, 3]}
