"""`Context`: what a task knows about its run — a typed copy of the host's `run-context`.
Building it makes no host call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional


@dataclass(frozen=True)
class Context:
    """The run a task is executing."""

    run_id: str
    task_id: str
    #: 1 for the first attempt, 2 for the first retry, …
    attempt: int
    #: The deployed version the run is locked to, e.g. `20261130.1`.
    version: str
    #: Environment slug, e.g. `dev`.
    environment: str
    tags: list[str] = field(default_factory=list)
    idempotency_key: Optional[str] = None
    queue: str = ""
    machine: str = ""
    parent_run_id: Optional[str] = None
    root_run_id: Optional[str] = None
    created_at_ms: int = 0

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created_at_ms / 1000, tz=timezone.utc)

    @staticmethod
    def from_host(raw: Any) -> "Context":
        return Context(
            run_id=raw.run_id,
            task_id=raw.task_id,
            attempt=raw.attempt,
            version=raw.version,
            environment=raw.environment,
            tags=list(raw.tags),
            idempotency_key=raw.idempotency_key,
            queue=raw.queue,
            machine=raw.machine,
            parent_run_id=raw.parent_run_id,
            root_run_id=raw.root_run_id,
            created_at_ms=raw.created_at_ms,
        )


_current: Optional[Context] = None


def current() -> Optional[Context]:
    """The context of the attempt being run; None outside one (at build time)."""
    return _current


def _set_current(ctx: Optional[Context]) -> None:
    global _current
    _current = ctx
