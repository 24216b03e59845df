"""Example kiln tasks in Python."""

import random
import time

from kiln_sdk import Context, logger, task, wait


@task(id="hello")
def hello(payload: dict | None, ctx: Context) -> dict:
    """Greets someone by name."""
    name = (payload or {}).get("name", "world")
    logger.info("greeting", name=name, attempt=ctx.attempt)
    return {"message": f"Hello, {name}!"}


@task(id="nap")
def nap(payload: dict | None) -> dict:
    """Reads the clock and a random number, waits, and returns what it read."""
    before = time.time()
    r = random.random()
    wait.for_(seconds=(payload or {}).get("seconds", 6))
    return {"before": before, "random": r, "after": time.time()}
