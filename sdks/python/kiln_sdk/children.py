"""Child runs over `kiln:task/tasks`: `trigger`, `batch_trigger`, `trigger_and_wait` and
`batch_trigger_and_wait`, by task id or on a `Task` (`hello.trigger_and_wait({...})`).

Triggering is made once: a replay of the parent gets the same runs. Children that are waited for
run on the parent's version and the parent checkpoints until all have ended. A child that fails
is a value (`result.ok` is false, `result.error` a `TaskRunError`), not a failure of the parent; a
trigger the host refuses raises `TriggerError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Mapping, Optional, Sequence, TypeVar, Union

from ._duration import Duration, delay_ms, duration_ms
from ._host import err_value, is_err, module
from ._json import convert, dumps
from .errors import SubtaskUnwrapError, TaskRunError, TriggerError

T = TypeVar("T")


@dataclass
class TriggerOptions:
    """Options of a child run."""

    #: A live run triggered with the same key is returned instead of a new one.
    idempotency_key: Optional[str] = None
    tags: Sequence[str] = ()
    #: Start no earlier than this: a duration (`"1h"`, seconds, `timedelta`) or a `datetime`.
    delay: Union[Duration, datetime, None] = None
    #: Expire if not started within this.
    ttl: Optional[Duration] = None
    #: Run on this queue instead of the task's.
    queue: Optional[str] = None
    #: The queue's limit applies to each key separately.
    concurrency_key: Optional[str] = None
    machine: Optional[str] = None
    max_attempts: Optional[int] = None
    #: Initial metadata of the child.
    metadata: Optional[Mapping[str, Any]] = None


@dataclass
class BatchItem:
    """One run of a batch: its payload and options (and its task, for `batch_trigger_by_task`)."""

    payload: Any = None
    options: TriggerOptions = field(default_factory=TriggerOptions)
    task_id: Optional[str] = None


@dataclass(frozen=True)
class RunHandle:
    """A triggered run."""

    id: str
    task_identifier: str
    #: The idempotency key matched an earlier run.
    is_cached: bool


@dataclass(frozen=True)
class TaskRunResult(Generic[T]):
    """How a child run ended: `ok` with `output`, or not `ok` with `error`."""

    ok: bool
    id: str
    task_identifier: str
    output: Optional[T] = None
    error: Optional[TaskRunError] = None

    def unwrap(self) -> T:
        """The output, or raises `SubtaskUnwrapError`."""
        if self.ok:
            return self.output  # type: ignore[return-value]
        assert self.error is not None
        raise SubtaskUnwrapError(self.task_identifier, self.id, self.error)


@dataclass(frozen=True)
class BatchResult(Generic[T]):
    """Child runs waited for together, in the items' order."""

    runs: list[TaskRunResult[T]]


def _task_id(task: Any) -> str:
    return task if isinstance(task, str) else task.id


def _options(options: Optional[TriggerOptions], kwargs: Mapping[str, Any]) -> TriggerOptions:
    if options is not None and kwargs:
        raise TypeError("pass trigger options either as `options=` or as keywords, not both")
    if options is not None:
        return options
    try:
        return TriggerOptions(**kwargs)
    except TypeError as e:
        raise TypeError(f"unknown trigger option: {e}") from None


def _wit_item(task_id: str, payload: Any, o: TriggerOptions) -> Any:
    tasks = module("tasks")
    return tasks.TriggerItem(
        task_id=task_id,
        payload=dumps(payload),
        options=tasks.TriggerOptions(
            idempotency_key=o.idempotency_key,
            tags=[o.tags] if isinstance(o.tags, str) else list(o.tags),
            delay_ms=None if o.delay is None else delay_ms(o.delay, "delay"),
            ttl_ms=None if o.ttl is None else duration_ms(o.ttl, "ttl"),
            queue=o.queue,
            concurrency_key=o.concurrency_key,
            machine=o.machine,
            max_attempts=o.max_attempts,
            metadata=None if o.metadata is None else dumps(dict(o.metadata)),
        ),
    )


def _items(task: Any, items: Sequence[Any]) -> list[tuple[str, Any, TriggerOptions]]:
    out = []
    for item in items:
        if isinstance(item, BatchItem):
            if item.task_id is None and task is None:
                raise TypeError("a BatchItem of batch_trigger_by_task needs its task_id")
            out.append((item.task_id or _task_id(task), item.payload, item.options))
        else:
            out.append((_task_id(task), item, TriggerOptions()))
    return out


def _trigger(items: list[tuple[str, Any, TriggerOptions]]) -> list[RunHandle]:
    try:
        runs = module("tasks").batch_trigger([_wit_item(*i) for i in items])
    except Exception as e:
        if is_err(e):
            raise TriggerError(str(err_value(e))) from None
        raise
    return [RunHandle(id=r.id, task_identifier=i[0], is_cached=r.is_cached) for r, i in zip(runs, items)]


def _trigger_and_wait(items: list[tuple[str, Any, TriggerOptions]], output_type: Any) -> list[TaskRunResult[Any]]:
    try:
        outcomes = module("tasks").batch_trigger_and_wait([_wit_item(*i) for i in items])
    except Exception as e:
        if is_err(e):
            raise TriggerError(str(err_value(e))) from None
        raise
    results: list[TaskRunResult[Any]] = []
    for outcome, (task_id, _, _) in zip(outcomes, items):
        o = outcome.outcome
        if type(o).__name__ == "ChildResult_Ok":
            results.append(TaskRunResult(ok=True, id=outcome.id, task_identifier=task_id, output=convert(json.loads(o.value), output_type)))
        else:
            error = TaskRunError(name=o.value.name, message=o.value.message, stack=o.value.stack)
            results.append(TaskRunResult(ok=False, id=outcome.id, task_identifier=task_id, error=error))
    return results


def trigger(task: Any, payload: Any = None, options: Optional[TriggerOptions] = None, **kwargs: Any) -> RunHandle:
    """Triggers one run of `task` (an id or a `Task`) without waiting; it runs on the latest version."""
    return _trigger([(_task_id(task), payload, _options(options, kwargs))])[0]


def batch_trigger(task: Any, items: Sequence[Any]) -> list[RunHandle]:
    """Triggers runs (at most 1000) of `task`; each item is a payload or a `BatchItem`."""
    return _trigger(_items(task, items))


def trigger_and_wait(
    task: Any, payload: Any = None, options: Optional[TriggerOptions] = None, *, output_type: Any = Any, **kwargs: Any
) -> TaskRunResult[Any]:
    """Triggers one run and waits for it: checkpoints the parent until the child has ended."""
    return _trigger_and_wait([(_task_id(task), payload, _options(options, kwargs))], output_type)[0]


def batch_trigger_and_wait(task: Any, items: Sequence[Any], *, output_type: Any = Any) -> BatchResult[Any]:
    """Triggers runs and waits until all have ended; results in the items' order."""
    return BatchResult(runs=_trigger_and_wait(_items(task, items), output_type))


def batch_trigger_by_task(items: Sequence[BatchItem]) -> list[RunHandle]:
    """Triggers runs of several tasks: each `BatchItem` names its `task_id`."""
    return _trigger(_items(None, items))


def batch_trigger_by_task_and_wait(items: Sequence[BatchItem], *, output_type: Any = Any) -> BatchResult[Any]:
    """Triggers runs of several tasks and waits for all of them."""
    return BatchResult(runs=_trigger_and_wait(_items(None, items), output_type))
