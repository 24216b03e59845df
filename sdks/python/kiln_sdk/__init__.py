"""kiln_sdk: write kiln tasks in Python.

Declare tasks with `@task(...)` (or `@schedules.task(...)`) in a module, build it with
`python -m kiln_sdk build app.py -o app.wasm`, and deploy the component to kiln::

    from kiln_sdk import task, logger, Context

    @task(id="hello")
    def hello(payload: dict, ctx: Context) -> dict:
        logger.info("greeting", name=payload.get("name"))
        return {"message": f"Hello, {payload.get('name', 'world')}!"}

This module only re-exports; each area lives in its own module. Host calls work only inside a
built component; importing the SDK works anywhere.
"""

from . import http, wait
from .children import (
    BatchItem,
    BatchResult,
    RunHandle,
    TaskRunResult,
    TriggerOptions,
    batch_trigger,
    batch_trigger_and_wait,
    batch_trigger_by_task,
    batch_trigger_by_task_and_wait,
    trigger,
    trigger_and_wait,
)
from .context import Context
from .errors import (
    AbortTaskRunError,
    MetadataError,
    SubtaskUnwrapError,
    TaskRunError,
    TokenError,
    TriggerError,
    WaitpointTimeoutError,
)
from .idempotency import idempotency_keys
from .logger import logger
from .metadata import metadata
from .task import Queue, Retry, Schedule, ScheduledPayload, Task, schedules, task

__version__ = "0.1.0"

__all__ = [
    "AbortTaskRunError",
    "BatchItem",
    "BatchResult",
    "Context",
    "MetadataError",
    "Queue",
    "Retry",
    "RunHandle",
    "Schedule",
    "ScheduledPayload",
    "SubtaskUnwrapError",
    "Task",
    "TaskRunError",
    "TaskRunResult",
    "TokenError",
    "TriggerError",
    "TriggerOptions",
    "WaitpointTimeoutError",
    "batch_trigger",
    "batch_trigger_and_wait",
    "batch_trigger_by_task",
    "batch_trigger_by_task_and_wait",
    "http",
    "idempotency_keys",
    "logger",
    "metadata",
    "schedules",
    "task",
    "trigger",
    "trigger_and_wait",
    "wait",
]
