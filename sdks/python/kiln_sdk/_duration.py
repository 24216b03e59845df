"""Durations as tasks write them — a `timedelta`, a number of seconds, or a string like `"1h30m"`
— and dates, turned into the milliseconds the WIT takes. Pure: no host call.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Union

Duration = Union[timedelta, int, float, str]

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> int:
    """`"1h30m"`, `"45s"`, `"2d"`, `"1w"`, `"250ms"` → milliseconds."""
    s = text.strip()
    total, pos = 0.0, 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            break
        total += float(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f'"{text}" is not a duration: write it like "30s", "15m", "1h30m", "2d" or "1w"')
    return round(total)


def duration_ms(value: Duration, what: str) -> int:
    """Milliseconds of a `timedelta`, a number of seconds or a duration string."""
    if isinstance(value, timedelta):
        ms = value.total_seconds() * 1000
    elif isinstance(value, bool):
        raise TypeError(f"{what} must be a duration, not a bool")
    elif isinstance(value, (int, float)):
        ms = value * 1000
    elif isinstance(value, str):
        return parse_duration(value)
    else:
        raise TypeError(f"{what} must be a timedelta, a number of seconds or a string like \"1h\"")
    if ms < 0:
        raise ValueError(f"{what} must not be negative")
    return round(ms)


def epoch_ms(at: datetime) -> int:
    """Milliseconds since the Unix epoch of a datetime (naive ones are taken as UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return max(0, round(at.timestamp() * 1000))


def delay_ms(value: Union[Duration, datetime], what: str) -> int:
    """Milliseconds from now until a datetime, or of a duration. The clock is read only for a
    datetime: each reading is a journal entry of the run."""
    if isinstance(value, datetime):
        return max(0, epoch_ms(value) - round(time.time() * 1000))
    return duration_ms(value, what)
