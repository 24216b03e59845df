"""JSON in and out of tasks: payloads into the handler's annotated type (a dataclass, a list or
dict of them, `Optional[...]`, or plain JSON values), outputs out of dataclasses, dates and enums.
Pure: no host call. A value that does not fit raises `ValueError`/`TypeError`, which the runtime
turns into `TaskPayloadParsedError` (payloads) or `TaskOutputError` (outputs).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from datetime import date, datetime
from typing import Any, Union


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """JSON text of a task's output or a payload (dataclasses, dates and enums included)."""
    return json.dumps(value, default=_default, separators=(",", ":"), allow_nan=False)


def convert(value: Any, tp: Any) -> Any:
    """`value` (parsed JSON) as the type `tp`; plain JSON when `tp` says nothing more."""
    if tp is Any or tp is None or tp is typing.Any or tp is object:
        return value
    if isinstance(tp, str):  # an unresolved forward reference: leave the value as it is
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return convert(value, arm)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise ValueError("; ".join(errors) or f"{value!r} fits none of {tp}")
    if origin in (list, typing.List):
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        return [convert(v, args[0]) for v in value] if args else value
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        return {k: convert(v, args[1]) for k, v in value.items()} if len(args) == 2 else value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {tp.__name__}, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        fields = {f.name for f in dataclasses.fields(tp) if f.init}
        # Keys the dataclass does not declare are ignored, as serde does in the Rust SDK: a
        # payload may carry more than a task reads (the host's schedule payload may grow).
        kwargs = {k: convert(v, hints.get(k, Any)) for k, v in value.items() if k in fields}
        try:
            return tp(**kwargs)
        except TypeError as e:
            raise ValueError(f"{tp.__name__}: {e}") from e  # a required field is missing
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(tp, type) and tp in (str, int, float, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise TypeError(f"expected {tp.__name__}, got {type(value).__name__}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    return value
