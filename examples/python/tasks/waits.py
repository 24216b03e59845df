"""Waits: a wait longer than the host's threshold (5 s by default) checkpoints the run — it holds
no memory and no slot meanwhile — and the run continues from the wait when the time comes."""

import random
import time
from typing import Optional

from kiln_sdk import logger, task, wait


@task(id="nap")
def nap(payload: Optional[dict]) -> dict:
    """Reads the clock and a random number, waits, and returns what it read."""
    before = time.time()
    r = random.random()
    logger.info("before the wait", before=before, random=r)
    wait.for_(seconds=(payload or {}).get("seconds", 6))
    # On resume, everything above is replayed from the run's journal: `before` and `r` come back
    # the same, and the log line is not written twice.
    return {"before": before, "random": r, "after": time.time()}
