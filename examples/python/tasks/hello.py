"""The smallest task: a typed payload in, a typed output out, a log line on the way."""

from dataclasses import dataclass
from typing import Optional

from kiln_sdk import Context, logger, task


@dataclass
class Greet:
    name: str = "world"


@dataclass
class Greeting:
    message: str


@task(id="hello")
def hello(payload: Optional[Greet], ctx: Context) -> Greeting:
    """Greets someone by name."""
    name = payload.name if payload else "world"
    logger.info("greeting", name=name, attempt=ctx.attempt)
    return Greeting(message=f"Hello, {name}!")
