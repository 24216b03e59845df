"""Environment variables: `os.environ` (set them with `kiln env set NAME VALUE`; a run sees the
values of when it started, on every attempt and replay)."""

import os

from kiln_sdk import task


@task(id="env-greeting")
def env_greeting(payload: object) -> dict:
    """Returns the environment variable GREETING."""
    return {"greeting": os.environ.get("GREETING"), "viaImport": os.getenv("GREETING")}
