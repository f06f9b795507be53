"""Objects described by a JSON-able config: equal configs are equal objects (schedules, spaces)."""

from __future__ import annotations

import json

__all__ = ["Configured"]


class Configured:
    """Equality, hashing and repr from ``config()`` (a dict with a ``kind`` and parameters).

    Two objects are equal when they belong to the same family (the class that derives from
    :class:`Configured` directly, e.g. ``Schedule`` or ``Space``) and their configs are equal.
    """

    def config(self) -> dict:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        family = next(c for c in type(self).__mro__ if Configured in c.__bases__)
        return isinstance(other, family) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(json.dumps(self.config(), sort_keys=True, default=str))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "kind")
        return f"{type(self).__name__}({args})"
