"""How a run can end, and what a task can tell the host on the way: retried errors, aborts,
child runs with typed results, metadata, and a schedule."""

from kiln_sdk import (
    AbortTaskRunError,
    Context,
    Retry,
    ScheduledPayload,
    SubtaskUnwrapError,
    idempotency_keys,
    logger,
    metadata,
    schedules,
    task,
    trigger_and_wait,
)


@task(id="flaky", retry=Retry(max_attempts=3, min_timeout_ms=100, max_timeout_ms=1000, factor=2, randomize=False))
def flaky(payload: object, ctx: Context) -> dict:
    """Fails on the first attempt and succeeds on the next."""
    if ctx.attempt == 1:
        raise RuntimeError(f"attempt {ctx.attempt} failed on purpose")
    return {"attempt": ctx.attempt}


class PaymentDeclined(Exception):
    pass


@task(id="always-fails", retry=Retry(max_attempts=2, min_timeout_ms=100, randomize=False))
def always_fails(payload: object) -> None:
    """Raises its own exception class on every attempt."""
    raise PaymentDeclined("card declined on purpose")


@task(id="abort", retry=Retry(max_attempts=3, min_timeout_ms=100))
def abort(payload: object) -> None:
    """Aborts, so it is never retried."""
    raise AbortTaskRunError("aborted on purpose")


@task(id="progress")
def progress(payload: object) -> dict:
    """Changes its own metadata, its parent's and its root's."""
    metadata.set("status", "started").increment("steps").increment("steps", 2).decrement("steps")
    metadata.append("log", "a").append("log", "b").remove("log", "a")
    metadata.set("temp", True).delete("temp")
    metadata.parent.increment("childrenDone")
    metadata.root.set("touchedByChild", True)
    return {"steps": metadata.get("steps"), "all": metadata.current()}


@task(id="parent")
def parent(payload: dict) -> dict:
    """Triggers children and waits for them: one that succeeds, one that fails."""
    greeting = trigger_and_wait("hello", {"name": payload["name"]})
    failed = always_fails.trigger_and_wait(None, max_attempts=1)
    child = progress.trigger_and_wait(None)
    unwrap_error = None
    key = None
    try:
        # A key scoped to this run: a retry of the parent would find this child again.
        key = idempotency_keys.create("unwrap")
        always_fails.trigger_and_wait(None, max_attempts=1, idempotency_key=key).unwrap()
    except SubtaskUnwrapError as e:
        unwrap_error = f"{type(e).__name__}: {e}"
    logger.info("children ended", greeting=greeting.ok, failed=failed.ok)
    return {
        "greeting": greeting.output["message"] if greeting.ok else None,
        "failed": None if failed.ok else {"name": failed.error.name, "message": failed.error.message},
        "childSteps": child.output["steps"] if child.ok else None,
        "unwrapError": unwrap_error,
        "unwrapKey": key,
        "metadata": metadata.current(),
    }


@schedules.task(id="nightly", cron="0 3 * * *")
def nightly(payload: ScheduledPayload) -> dict:
    """Runs at 03:00 UTC every day."""
    return {"type": payload.type, "at": payload.timestamp}
