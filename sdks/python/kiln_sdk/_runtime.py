"""The component's exports, `definitions()` and `run()` of the `kiln:task/task` world, over the
tasks the user's module declared. `python -m kiln_sdk build` makes the component's entry import
the user's module and this class. `run` turns every outcome into the WIT's result: the output as
JSON, or `Err(task-error)`, never anything else.
"""

from __future__ import annotations

import json
from typing import Any

# Only the component imports this module, and it does so when the component is built: importing
# the bindings here puts them in the build's snapshot instead of loading them on every run.
import wit_world.imports.kiln_task_types  # type: ignore[import-not-found]  # noqa: F401
import wit_world.imports.log  # type: ignore[import-not-found]  # noqa: F401
import wit_world.imports.metadata  # type: ignore[import-not-found]  # noqa: F401
import wit_world.imports.outgoing_handler  # type: ignore[import-not-found]  # noqa: F401
import wit_world.imports.tasks  # type: ignore[import-not-found]  # noqa: F401
import wit_world.imports.wait  # type: ignore[import-not-found]  # noqa: F401
import wit_world.imports.wasi_http_types  # type: ignore[import-not-found]  # noqa: F401
from componentize_py_types import Err  # type: ignore[import-not-found]

from . import http  # noqa: F401  (also in the snapshot)
from ._json import convert, dumps
from .context import Context, _set_current
from .errors import _NamedError, task_error
from .task import REGISTRY


def _attempt(task_id: str, payload_json: str, raw_ctx: Any) -> str:
    t = REGISTRY.get(task_id)
    if t is None:
        raise _NamedError("TaskNotFound", f"this component has no task {task_id!r}", abort=True)
    try:
        payload = convert(json.loads(payload_json), t.payload_type)
    except (TypeError, ValueError) as e:
        raise _NamedError("TaskPayloadParsedError", str(e), abort=True) from e
    ctx = Context.from_host(raw_ctx)
    _set_current(ctx)
    output = t.fn(payload, ctx) if t.takes_ctx else t.fn(payload)
    try:
        return dumps(output)
    except (TypeError, ValueError) as e:
        raise _NamedError("TaskOutputError", f"the output cannot be serialized: {e}", abort=False) from e


class WitWorld:
    """What componentize-py exports: the world's two functions."""

    def definitions(self) -> list[Any]:
        return [t.definition() for t in REGISTRY.values()]

    def run(self, task_id: str, payload: str, ctx: Any) -> str:
        try:
            return _attempt(task_id, payload, ctx)
        except Exception as e:
            raise Err(task_error(e)) from None
