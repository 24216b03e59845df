"""Run metadata over `kiln:task/metadata`: the run's JSON object that the run API shows, and its
parent's and root's. `metadata.set("progress", 0.5)`, `metadata.parent.increment("done")`.

Each change is one host call, applied at once and made once (a replay does not repeat it); a
change the host refuses raises `MetadataError`. Every changing method returns the updater, to chain.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from ._host import err_value, is_err, module
from ._json import dumps
from .errors import MetadataError


class MetadataUpdater:
    """The metadata of one run: this one's, its parent's or its root's."""

    def __init__(self, target: str) -> None:
        self._target = target

    def _apply(self, op: str, value: Any) -> "MetadataUpdater":
        m = module("metadata")
        operation = getattr(m, f"Operation_{op}")(value)
        try:
            m.update(getattr(m.Target, self._target), [operation])
        except Exception as e:
            if is_err(e):
                raise MetadataError(str(err_value(e))) from None
            raise
        return self

    def current(self) -> dict[str, Any]:
        """The whole object, `{}` when there is none."""
        m = module("metadata")
        return json.loads(m.get(getattr(m.Target, self._target)))

    def get(self, key: str, default: Any = None) -> Any:
        """The value at a top-level key."""
        return self.current().get(key, default)

    def set(self, key: str, value: Any) -> "MetadataUpdater":
        """Sets a key (a top-level name or a `$.a.b` path)."""
        return self._apply("Set", (key, dumps(value)))

    def delete(self, key: str) -> "MetadataUpdater":
        return self._apply("Del", key)

    #: Trigger.dev's name for `delete`.
    def del_(self, key: str) -> "MetadataUpdater":
        return self.delete(key)

    def append(self, key: str, value: Any) -> "MetadataUpdater":
        """Appends to the list at `key` (made if missing)."""
        return self._apply("Append", (key, dumps(value)))

    def remove(self, key: str, value: Any) -> "MetadataUpdater":
        """Removes every element equal to `value` from the list at `key`."""
        return self._apply("Remove", (key, dumps(value)))

    def increment(self, key: str, value: float = 1) -> "MetadataUpdater":
        return self._apply("Increment", (key, float(value)))

    def decrement(self, key: str, value: float = 1) -> "MetadataUpdater":
        return self._apply("Increment", (key, -float(value)))

    def replace(self, metadata: Mapping[str, Any]) -> "MetadataUpdater":
        """Replaces the whole object."""
        return self._apply("Replace", dumps(dict(metadata)))


class Metadata(MetadataUpdater):
    """This run's metadata, with `parent` and `root`."""

    def __init__(self) -> None:
        super().__init__("CURRENT")
        #: The metadata of the run that triggered this one (this run's own without a parent).
        self.parent = MetadataUpdater("PARENT")
        #: The metadata of the first run of the tree (this run's own without a parent).
        self.root = MetadataUpdater("ROOT")


metadata = Metadata()

__all__ = ["metadata", "Metadata", "MetadataUpdater"]
