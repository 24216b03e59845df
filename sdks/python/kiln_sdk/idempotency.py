"""`idempotency_keys.create`: keys for child triggers and wait tokens, hashed as Trigger.dev
hashes them (SHA-256 of the parts and the scope joined with `-`). Scoped to the run by default,
so a replay or a retry of the parent finds the same child instead of making another; `"attempt"`
scopes a key to one attempt, `"global"` to nothing. Pure: no host call.
"""

from __future__ import annotations

import hashlib
from typing import Literal, Sequence, Union

from . import context


class _IdempotencyKeys:
    def create(self, key: Union[str, Sequence[str]], scope: Literal["run", "attempt", "global"] = "run") -> str:
        parts = [key] if isinstance(key, str) else list(key)
        ctx = context.current()
        if ctx is not None and scope == "run":
            parts.append(ctx.run_id)
        elif ctx is not None and scope == "attempt":
            parts.append(f"{ctx.run_id}:{ctx.attempt}")
        return hashlib.sha256("-".join(parts).encode()).hexdigest()


idempotency_keys = _IdempotencyKeys()
