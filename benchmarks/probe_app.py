"""Trivium's app plus two diagnostic routes, served exactly as ``trivium serve`` serves it.

``benchmarks/api.py --probe`` loads them with the "record progress" request
(the same method, headers and body) to show where that endpoint's cost
goes: ``PUT /probe/stack/<item>`` answers at once, through Trivium's
middleware and request hooks; ``PUT /probe/auth/<item>`` first
authenticates the bearer token as the progress route does.  Both answer a
JSON document the size of a progress report's.  The routes exist only in
this benchmark.

Usage: probe_app.py INSTANCE HOST:PORT WORKERS THREADS
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import create_app
from core import serve
from core.auth import require_user

#: The shape and size of a progress report's answer.
ANSWER: dict[str, Any] = {
    "item_id": "0" * 32,
    "status": "in_progress",
    "score": None,
    "data": {"scroll": 0.5},
    "updated_at": "2026-01-01T00:00:00.000000Z",
    "completed_at": None,
    "item_completed": False,
    "course_completed": False,
}


def main() -> None:
    instance, bind, workers, threads = sys.argv[1:5]
    app = create_app(instance)

    @app.put("/probe/stack/<item_id>")
    def stack(item_id: str) -> dict[str, Any]:
        return {**ANSWER, "item_id": item_id}

    @app.put("/probe/auth/<item_id>")
    def auth(item_id: str) -> dict[str, Any]:
        require_user(attach=False)
        return {**ANSWER, "item_id": item_id}

    serve.run(app, bind=bind, workers=int(workers), threads=int(threads))


if __name__ == "__main__":
    main()
