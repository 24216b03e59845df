"""Waiting inside a run over `kiln:task/wait`: `for_` / `until`, and wait tokens
(`create_token`, `for_token`) that something outside the run completes.

A short wait (up to the host's threshold, 5 s by default) sleeps in place; a longer one
**checkpoints** the run: the call does not return in this execution, and when the time comes the
task runs again from the start with every host call it already made answered from its journal —
clock readings, randomness, waits — so it continues from the wait. Reach waits the same way on
every replay.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Optional, Sequence, TypeVar, Union

from ._duration import Duration, delay_ms, duration_ms, epoch_ms
from ._host import err_value, is_err, module
from ._json import convert
from .errors import TokenError, WaitpointTimeoutError

T = TypeVar("T")


def for_(
    duration: Optional[Duration] = None,
    *,
    seconds: float = 0,
    minutes: float = 0,
    hours: float = 0,
    days: float = 0,
    weeks: float = 0,
) -> None:
    """Waits for `duration` (a `timedelta`, seconds, or `"5m"`) or the sum of the keywords."""
    ms = 0 if duration is None else duration_ms(duration, "duration")
    ms += round((seconds + 60 * minutes + 3600 * hours + 86_400 * days + 604_800 * weeks) * 1000)
    if ms < 0:
        raise ValueError("wait.for_: the duration must not be negative")
    module("wait").for_duration(ms)


#: `wait.for_duration(timedelta(hours=1))`, the same as `wait.for_`.
for_duration = for_


def until(at: datetime, *, raise_if_in_the_past: bool = False) -> None:
    """Waits until `at` (naive datetimes are UTC); returns at once if it has passed."""
    ms = epoch_ms(at)
    if raise_if_in_the_past and ms < time.time() * 1000:
        raise ValueError(f"wait.until: {at.isoformat()} is in the past")
    module("wait").until(ms)


@dataclass(frozen=True)
class WaitToken:
    """A wait token: complete it with `POST /api/v1/waitpoints/tokens/{id}/complete` or by POSTing
    JSON to `url` (no key needed)."""

    id: str
    url: str
    #: The idempotency key matched an earlier token.
    is_cached: bool


@dataclass(frozen=True)
class TokenResult(Generic[T]):
    """How waiting for a token ended: `ok` with `output`, or not `ok` with `error`."""

    ok: bool
    output: Optional[T] = None
    error: Optional[Exception] = None

    def unwrap(self) -> T:
        """The token's data, or raises its error (`WaitpointTimeoutError`)."""
        if self.ok:
            return self.output  # type: ignore[return-value]
        assert self.error is not None
        raise self.error


def _token_error(e: BaseException) -> Exception:
    value = err_value(e)
    message = getattr(value, "value", str(value))
    if type(value).__name__ == "TokenError_TimedOut":
        return WaitpointTimeoutError(message)
    return TokenError(message)


def create_token(
    *,
    timeout: Union[Duration, datetime, None] = None,
    idempotency_key: Optional[str] = None,
    idempotency_key_ttl: Optional[Duration] = None,
    tags: Union[str, Sequence[str], None] = None,
) -> WaitToken:
    """Makes a wait token (made once: a replay gets the same one). `timeout`: a duration
    (`"1h"`, seconds, a `timedelta`) or a `datetime`; default never."""
    wait = module("wait")
    options = wait.TokenOptions(
        timeout_ms=None if timeout is None else delay_ms(timeout, "timeout"),
        idempotency_key=idempotency_key,
        idempotency_key_ttl_ms=None
        if idempotency_key_ttl is None
        else duration_ms(idempotency_key_ttl, "idempotency_key_ttl"),
        tags=[tags] if isinstance(tags, str) else list(tags or []),
    )
    try:
        token = wait.create_token(options)
    except Exception as e:
        if is_err(e):
            raise _token_error(e) from None
        raise
    return WaitToken(id=token.id, url=token.url, is_cached=token.is_cached)


def for_token(token: Union[str, WaitToken], output_type: Any = Any) -> TokenResult[Any]:
    """Waits until the token is completed (`ok`, its data as `output_type`) or times out (not
    `ok`, `error` a `WaitpointTimeoutError`). Checkpoints the run unless it is already done;
    an unknown token raises `TokenError`."""
    token_id = token if isinstance(token, str) else token.id
    try:
        data = module("wait").for_token(token_id)
    except Exception as e:
        if is_err(e):
            error = _token_error(e)
            if isinstance(error, WaitpointTimeoutError):
                return TokenResult(ok=False, error=error)
            raise error from None
        raise
    return TokenResult(ok=True, output=convert(json.loads(data), output_type))


__all__ = ["for_", "for_duration", "until", "create_token", "for_token", "WaitToken", "TokenResult"]
