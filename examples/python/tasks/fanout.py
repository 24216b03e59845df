"""Fan-out: trigger one child run per item and wait for all of them. The parent checkpoints while
the children run (no memory, no slot), and the results come back in the items' order."""

from dataclasses import dataclass

from kiln_sdk import metadata, task


@dataclass
class Number:
    n: int


@task(id="square")
def square(payload: Number) -> int:
    """Squares a number and counts itself in its parent's metadata."""
    metadata.parent.increment("squared")
    return payload.n * payload.n


@dataclass
class Numbers:
    numbers: list[int]


@task(id="fan-out")
def fan_out(payload: Numbers) -> dict:
    """Squares each number in a child run and sums the squares."""
    metadata.set("status", "fanning out")
    batch = square.batch_trigger_and_wait([{"n": n} for n in payload.numbers])
    squares = [r.output if r.ok else None for r in batch.runs]
    metadata.set("status", "done")
    return {
        "sum": sum(s for s in squares if s is not None),
        "squares": squares,
        "children": [r.id for r in batch.runs],
        "metadata": metadata.current(),
    }
