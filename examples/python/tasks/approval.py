"""A wait token: the run checkpoints until something outside it completes the token — an API
call (`kiln tokens complete <id> '{"approved":true}'`) or a POST to the token's URL — or it times
out."""

from dataclasses import dataclass
from typing import Optional

from kiln_sdk import logger, task, wait


@dataclass
class Approval:
    approved: bool
    by: Optional[str] = None


@task(id="approval")
def approval(payload: Optional[dict]) -> dict:
    """Waits for someone to approve, or for the token to time out."""
    payload = payload or {}
    token = wait.create_token(timeout=payload.get("timeout", "1h"), idempotency_key=payload.get("key"), tags=["approval"])
    logger.info("waiting for approval", token=token.id, url=token.url)
    result = wait.for_token(token, Approval)
    if not result.ok:
        return {"token": token.id, "timedOut": True, "error": type(result.error).__name__}
    return {"token": token.id, "approved": result.output.approved, "by": result.output.by}
