"""`logger`: structured log lines stored with the run (`kiln runs logs`), through `kiln:task/log`.
Lines written before a checkpoint are not written again on replay (the host drops them).
`print()` goes to the run's log as well. A log call never raises for its attributes: a value
that is not JSON is written as its `repr`.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional


def _attributes(attributes: Optional[Mapping[str, Any]]) -> Optional[str]:
    if not attributes:
        return None
    from ._json import _default

    def fallback(value: Any) -> Any:
        try:
            return _default(value)
        except TypeError:
            if isinstance(value, BaseException):
                return {"name": type(value).__name__, "message": str(value)}
            return repr(value)

    return json.dumps(dict(attributes), default=fallback)


def _write(level: str, message: str, attributes: Optional[Mapping[str, Any]], extra: Mapping[str, Any]) -> None:
    from ._host import module

    log = module("log")
    merged = {**(attributes or {}), **extra}
    log.log(getattr(log.Level, level), str(message), _attributes(merged))


class Logger:
    """`logger.info("charged", {"amount": 42})` or `logger.info("charged", amount=42)`."""

    def trace(self, message: str, attributes: Optional[Mapping[str, Any]] = None, **extra: Any) -> None:
        _write("TRACE", message, attributes, extra)

    def debug(self, message: str, attributes: Optional[Mapping[str, Any]] = None, **extra: Any) -> None:
        _write("DEBUG", message, attributes, extra)

    def info(self, message: str, attributes: Optional[Mapping[str, Any]] = None, **extra: Any) -> None:
        _write("INFO", message, attributes, extra)

    #: Same as `info`.
    log = info

    def warn(self, message: str, attributes: Optional[Mapping[str, Any]] = None, **extra: Any) -> None:
        _write("WARN", message, attributes, extra)

    warning = warn

    def error(self, message: str, attributes: Optional[Mapping[str, Any]] = None, **extra: Any) -> None:
        _write("ERROR", message, attributes, extra)


logger = Logger()
