"""Named registries: one mapping name -> item per extension point, with errors that list what exists."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(LookupError):
    """A name that no one registered; the message lists the registered ones."""


class Registry(Generic[T]):
    """``name -> item`` for one kind of thing (architectures, data kinds, evaluators, ...).

    Args:
        what: what the items are, for messages (``"architecture"``).
        discover: called (once per missing name) before a lookup fails, e.g. to import plugins
            that register more names.
    """

    def __init__(self, what: str, discover: Callable[[], None] | None = None):
        self.what, self._discover = what, discover
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T, replace: bool = False) -> T:
        """Add ``name``; registering another item under a taken name needs ``replace=True``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.what} names are non-empty strings; got {name!r}")
        if name in self._items and self._items[name] is not item and not replace:
            raise ValueError(f"{self.what} {name!r} is already registered (pass replace=True)")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def __contains__(self, name: object) -> bool:
        if name in self._items:
            return True
        if self._discover is not None:
            self._discover()
        return name in self._items

    def get(self, name: str) -> T:
        """The item, or UnknownNameError listing the registered names."""
        if name not in self:
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownNameError(f"unknown {self.what} {name!r}; registered: {known}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
