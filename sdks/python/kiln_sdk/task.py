"""Declaring tasks: the `@task(...)` decorator and `schedules.task`, with their `Retry`, `Queue`
and `Schedule` settings. Declaring registers the task in this component's registry, which the
component's `definitions()` and `run()` (`_runtime.py`) read; it never calls the host, because it
runs when the component is built.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar, Union, overload

from . import children
from ._duration import Duration, duration_ms
from .children import BatchResult, RunHandle, TaskRunResult, TriggerOptions

P = TypeVar("P")
O = TypeVar("O")


@dataclass(frozen=True)
class Retry:
    """A retry policy; fields left `None` take kiln's defaults (3 attempts, factor 2, 1–60 s,
    randomized)."""

    #: Most attempts in total, the first included (1: never retry).
    max_attempts: Optional[int] = None
    factor: Optional[float] = None
    min_timeout_ms: Optional[int] = None
    max_timeout_ms: Optional[int] = None
    randomize: Optional[bool] = None
    #: Retry once on this machine after running out of memory.
    out_of_memory_machine: Optional[str] = None


@dataclass(frozen=True)
class Queue:
    """A queue: a named one shared by every task naming it, or (without a name) the task's own."""

    name: Optional[str] = None
    concurrency_limit: Optional[int] = None


@dataclass(frozen=True)
class Schedule:
    """A cron, five fields (`"0 9 * * 1-5"`), read in an IANA time zone (default UTC)."""

    cron: str
    timezone: Optional[str] = None


@dataclass(frozen=True)
class ScheduledPayload:
    """The payload of a scheduled run (Trigger.dev's schedule payload; times are ISO strings)."""

    type: str
    timestamp: str
    timezone: str = "UTC"
    scheduleId: str = ""
    lastTimestamp: Optional[str] = None
    externalId: Optional[str] = None
    upcoming: Sequence[str] = ()


class Task(Generic[P, O]):
    """A declared task. Call it like the function (handy in tests), or trigger it from another
    task: `hello.trigger_and_wait({"name": "Ada"})`."""

    def __init__(
        self,
        fn: Callable[..., O],
        *,
        id: str,
        description: Optional[str],
        retry: Optional[Retry],
        queue: Optional[Queue],
        machine: Optional[str],
        max_duration: Optional[Duration],
        ttl: Optional[Duration],
        schedule: Optional[Schedule],
    ) -> None:
        self.fn = fn
        self.id = id
        self.description = description if description is not None else _first_line(fn.__doc__)
        self.retry = retry
        self.queue = queue
        self.machine = machine
        self.max_duration = max_duration
        self.ttl = ttl
        self.schedule = schedule
        params = list(inspect.signature(fn).parameters.values())
        if not params or len(params) > 2:
            raise TypeError(f"task {id!r}: the function takes (payload) or (payload, ctx)")
        self.takes_ctx = len(params) == 2
        try:
            hints = typing.get_type_hints(fn)
        except Exception:
            hints = {}
        self.payload_type = hints.get(params[0].name, Any)
        self.output_type = hints.get("return", Any)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", id)

    def __call__(self, *args: Any, **kwargs: Any) -> O:
        return self.fn(*args, **kwargs)

    def trigger(self, payload: P, options: Optional[TriggerOptions] = None, **kwargs: Any) -> RunHandle:
        return children.trigger(self.id, payload, options, **kwargs)

    def batch_trigger(self, items: Sequence[Any]) -> list[RunHandle]:
        return children.batch_trigger(self.id, items)

    def trigger_and_wait(self, payload: P, options: Optional[TriggerOptions] = None, **kwargs: Any) -> TaskRunResult[O]:
        return children.trigger_and_wait(self.id, payload, options, output_type=self.output_type, **kwargs)

    def batch_trigger_and_wait(self, items: Sequence[Any]) -> BatchResult[O]:
        return children.batch_trigger_and_wait(self.id, items, output_type=self.output_type)

    def definition(self) -> Any:
        """The WIT `task-definition` (inside a component only)."""
        from ._host import module

        t = module("kiln_task_types")
        r, q, s = self.retry, self.queue, self.schedule
        return t.TaskDefinition(
            id=self.id,
            description=self.description,
            queue=None if q is None else t.QueueDefinition(name=q.name or f"task/{self.id}", concurrency_limit=q.concurrency_limit),
            retry=None
            if r is None
            else t.RetryPolicy(
                max_attempts=r.max_attempts,
                factor=None if r.factor is None else float(r.factor),
                min_timeout_ms=r.min_timeout_ms,
                max_timeout_ms=r.max_timeout_ms,
                randomize=r.randomize,
                out_of_memory_machine=r.out_of_memory_machine,
            ),
            max_duration_ms=None if self.max_duration is None else duration_ms(self.max_duration, "max_duration"),
            ttl_ms=None if self.ttl is None else duration_ms(self.ttl, "ttl"),
            machine=self.machine,
            schedule=None if s is None else t.ScheduleDefinition(cron=s.cron, timezone=s.timezone),
        )


def _first_line(doc: Optional[str]) -> Optional[str]:
    if not doc:
        return None
    line = doc.strip().splitlines()[0].strip()
    return line or None


#: Every task declared in this component, in declaration order.
REGISTRY: dict[str, Task[Any, Any]] = {}


def _register(t: Task[Any, Any]) -> Task[Any, Any]:
    if t.id in REGISTRY:
        raise ValueError(f"task {t.id!r} is declared twice; task ids must be unique in a component")
    REGISTRY[t.id] = t
    return t


def _retry(value: Union[Retry, dict, None]) -> Optional[Retry]:
    return Retry(**value) if isinstance(value, dict) else value


def _queue(value: Union[Queue, dict, str, None]) -> Optional[Queue]:
    if isinstance(value, str):
        return Queue(name=value)
    return Queue(**value) if isinstance(value, dict) else value


def _schedule(value: Union[Schedule, str, None]) -> Optional[Schedule]:
    return Schedule(cron=value) if isinstance(value, str) else value


@overload
def task(fn: Callable[..., O], /) -> Task[Any, O]: ...
@overload
def task(
    *,
    id: Optional[str] = None,
    description: Optional[str] = None,
    retry: Union[Retry, dict, None] = None,
    queue: Union[Queue, dict, str, None] = None,
    machine: Optional[str] = None,
    max_duration: Optional[Duration] = None,
    ttl: Optional[Duration] = None,
    schedule: Union[Schedule, str, None] = None,
) -> Callable[[Callable[..., O]], Task[Any, O]]: ...
def task(
    fn: Optional[Callable[..., Any]] = None,
    /,
    *,
    id: Optional[str] = None,
    description: Optional[str] = None,
    retry: Union[Retry, dict, None] = None,
    queue: Union[Queue, dict, str, None] = None,
    machine: Optional[str] = None,
    max_duration: Optional[Duration] = None,
    ttl: Optional[Duration] = None,
    schedule: Union[Schedule, str, None] = None,
) -> Any:
    """Declares a task: `@task(id="hello", retry=Retry(max_attempts=3))` over a function of
    `(payload)` or `(payload, ctx)`. Without `id`, the function's name with `-` for `_`.
    `max_duration` is compute time per attempt (seconds, a `timedelta` or `"5m"`); `ttl`, how
    long a run may wait to start."""

    def declare(f: Callable[..., Any]) -> Task[Any, Any]:
        return _register(
            Task(
                f,
                id=id or f.__name__.replace("_", "-"),
                description=description,
                retry=_retry(retry),
                queue=_queue(queue),
                machine=machine,
                max_duration=max_duration,
                ttl=ttl,
                schedule=_schedule(schedule),
            )
        )

    return declare(fn) if fn is not None else declare


class _Schedules:
    """`schedules.task(id=..., cron="0 9 * * *")`: a task fired on a cron; its payload is a
    `ScheduledPayload` (or whatever the function's annotation asks for)."""

    def task(
        self,
        *,
        id: Optional[str] = None,
        cron: Union[Schedule, str, None] = None,
        description: Optional[str] = None,
        retry: Union[Retry, dict, None] = None,
        queue: Union[Queue, dict, str, None] = None,
        machine: Optional[str] = None,
        max_duration: Optional[Duration] = None,
        ttl: Optional[Duration] = None,
    ) -> Callable[[Callable[..., O]], Task[Any, O]]:
        def declare(f: Callable[..., O]) -> Task[Any, O]:
            t = task(
                id=id,
                description=description,
                retry=retry,
                queue=queue,
                machine=machine,
                max_duration=max_duration,
                ttl=ttl,
                schedule=cron,
            )(f)
            if t.payload_type is Any:
                t.payload_type = ScheduledPayload
            return t

        return declare


schedules = _Schedules()
