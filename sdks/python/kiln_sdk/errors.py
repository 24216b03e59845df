"""The errors a task raises and meets, and how anything raised by a task becomes the WIT's
`task-error`: `AbortTaskRunError` is an abort (never retried), everything else an ordinary error
(retried by the task's policy), with its type name, message and traceback.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Optional


class AbortTaskRunError(Exception):
    """Raise it to fail the run without retrying it: the same input would fail again."""


class WaitpointTimeoutError(Exception):
    """`wait.for_token`: the token's timeout passed before it was completed."""


class TriggerError(Exception):
    """The host refused to trigger child runs (an unknown task, a bad option)."""


class MetadataError(Exception):
    """The host refused a metadata change (too large, a bad key, incrementing a non-number)."""


class TokenError(Exception):
    """A wait token could not be made or waited for (bad options, an unknown id)."""


@dataclass
class TaskRunError(Exception):
    """How a child run failed: its error's name, message and stack."""

    name: str
    message: str
    stack: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


class SubtaskUnwrapError(Exception):
    """`unwrap()` of a child run that failed; `cause` is the child's `TaskRunError`."""

    def __init__(self, task_id: str, run_id: str, cause: TaskRunError) -> None:
        super().__init__(f"Error in {task_id}: {cause.message}")
        self.task_id = task_id
        self.run_id = run_id
        self.cause = cause


class _NamedError(Exception):
    """An error kiln reports with a fixed name (`TaskPayloadParsedError`, `TaskNotFound`, …)."""

    def __init__(self, name: str, message: str, abort: bool) -> None:
        super().__init__(message)
        self.name = name
        self.abort = abort


def task_error(error: BaseException):  # -> kiln_task_types.TaskError
    """The WIT `task-error` of an exception raised by a task."""
    from ._host import module

    types = module("kiln_task_types")
    if isinstance(error, _NamedError):
        name, message, abort = error.name, str(error), error.abort
    else:
        name = type(error).__name__
        message = str(error)
        abort = isinstance(error, AbortTaskRunError)
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    info = types.ErrorInfo(name=name, message=message, stack=stack or None)
    return types.TaskError_Abort(info) if abort else types.TaskError_Error(info)
