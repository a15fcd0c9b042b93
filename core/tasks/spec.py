"""How a plugin (or core) declares a background job: :class:`ActorSpec` and :func:`actor`.

A spec is plain data.  Nothing is bound to a broker when it is created: core
declares every spec as a dramatiq actor on the broker of each app it builds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from dramatiq import Message

#: dramatiq's rule for queue names.
QUEUE_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9._-]*")


class ActorSpecInvalid(ValueError):
    """An actor was declared with an unusable name, queue or limit."""


@dataclass(frozen=True)
class ActorSpec:
    """A background job: a function and how it is queued and retried.

    :ivar fn: the function run by the worker, inside an application context.
        Its arguments must be JSON-serialisable (pass ids, not objects).
    :ivar name: the actor name stored with each message; keep it stable
        (queued messages refer to it) and prefix it with your plugin's name.
    :ivar queue: the queue its messages go to.
    :ivar max_retries: retries after a failure; ``None`` uses the instance's
        ``jobs.max_retries``.
    :ivar time_limit_ms: the run is interrupted after this long; ``None`` uses
        the default (10 minutes).
    :ivar priority: lower runs first among messages a worker has fetched.
    :ivar throws: exceptions that fail the job at once, without retries:
        what no second run can mend (a mail server refusing the address).
    """

    fn: Callable[..., Any]
    name: str
    queue: str = "default"
    max_retries: int | None = None
    time_limit_ms: int | None = None
    priority: int = 0
    throws: tuple[type[Exception], ...] = ()

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip():
            raise ActorSpecInvalid(f"actor name {self.name!r} must be a non-empty word")
        if not QUEUE_NAME.fullmatch(self.queue):
            raise ActorSpecInvalid(
                f"actor {self.name!r}: queue {self.queue!r} must match {QUEUE_NAME.pattern}"
            )
        if self.max_retries is not None and self.max_retries < 0:
            raise ActorSpecInvalid(f"actor {self.name!r}: max_retries must be >= 0")
        if self.time_limit_ms is not None and self.time_limit_ms <= 0:
            raise ActorSpecInvalid(f"actor {self.name!r}: time_limit_ms must be > 0")

    def dramatiq_options(self) -> dict[str, Any]:
        """The per-actor options understood by the broker's middleware."""
        options: dict[str, Any] = {}
        if self.max_retries is not None:
            options["max_retries"] = self.max_retries
        if self.time_limit_ms is not None:
            options["time_limit"] = self.time_limit_ms
        if self.throws:
            options["throws"] = self.throws
        return options

    def send(self, *args: Any, **kwargs: Any) -> Message[Any]:
        """Enqueue a run on the current app's broker (see :func:`core.tasks.enqueue`)."""
        from core.tasks.runtime import enqueue_with_options

        return enqueue_with_options(self.name, args=args, kwargs=kwargs)

    def send_with_options(
        self,
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        delay_ms: int | None = None,
    ) -> Message[Any]:
        """Enqueue a run, optionally not before ``delay_ms`` milliseconds from now."""
        from core.tasks.runtime import enqueue_with_options

        return enqueue_with_options(self.name, args=args, kwargs=kwargs, delay_ms=delay_ms)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the job synchronously in the calling thread (tests, CLI)."""
        return self.fn(*args, **kwargs)


def actor(
    name: str,
    *,
    queue: str = "default",
    max_retries: int | None = None,
    time_limit_ms: int | None = None,
    priority: int = 0,
    throws: tuple[type[Exception], ...] = (),
) -> Callable[[Callable[..., Any]], ActorSpec]:
    """Turn a plain function into an :class:`ActorSpec`.

    ::

        @actor("quiz.regrade", queue="quiz", max_retries=3)
        def regrade(attempt_id: int) -> None:
            ...

        @hookimpl
        def register_actors():
            return [regrade]

    :raise ActorSpecInvalid: the name, queue or a limit is unusable.
    """

    def decorate(fn: Callable[..., Any]) -> ActorSpec:
        return ActorSpec(
            fn=fn,
            name=name,
            queue=queue,
            max_retries=max_retries,
            time_limit_ms=time_limit_ms,
            priority=priority,
            throws=throws,
        )

    return decorate
