"""The component's host imports (the bindings componentize-py generates as `wit_world`).

They exist only inside a built component; importing `kiln_sdk` anywhere else (a type checker, the
build command, your unit tests) must still work, so every module reaches the host through
`module()` when it is called, never at import time.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class NotInAComponentError(RuntimeError):
    """A host call made outside a kiln component (e.g. in plain CPython)."""


def module(name: str) -> ModuleType:
    """The bindings of one imported interface (`wit_world.imports.<name>`, e.g. `wait`), or
    `NotInAComponentError` outside a component."""
    try:
        return importlib.import_module(f"wit_world.imports.{name}")
    except ImportError as e:
        raise NotInAComponentError(
            "kiln host calls work only inside a kiln component: build it with "
            "`python -m kiln_sdk build app.py -o app.wasm` and deploy it"
        ) from e


def err_value(error: BaseException) -> Any:
    """The error value of a WIT `result` an import raised (`componentize_py_types.Err`)."""
    return getattr(error, "value", error)


def is_err(error: BaseException) -> bool:
    return type(error).__name__ == "Err" and hasattr(error, "value")
