"""The refs the planner has seen: name -> record count, where defined, which one is open."""

from __future__ import annotations

from ..errors import ChangesetError, Location


class RefRegistry:
    """Every ref seen so far: name -> record count, and where it was defined."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.defined_at: dict[str, str] = {}
        self.open: str | None = None  # the ref whose producer is being compiled

    def snapshot(self) -> RefRegistry:
        copy = RefRegistry()
        copy.count, copy.defined_at = dict(self.count), dict(self.defined_at)
        return copy

    def replay(self) -> RefRegistry:
        """A copy for compiling a changeset again: its checks passed the first time."""
        copy = self.snapshot()
        copy.replaying = True
        return copy

    replaying = False

    def define(self, name: str, where: str, loc: Location) -> None:
        if self.replaying:
            self.open = name
            return
        if name in self.defined_at:
            raise ChangesetError(
                f"ref {name!r} is already defined by {self.defined_at[name]}",
                location=loc,
                hint="give each add/upsert `ref:` a name of its own",
            )
        self.defined_at[name] = where
        self.count[name] = 0
        self.open = name

    def size(self, name: str, loc: Location) -> int:
        if name == self.open:
            raise ChangesetError(f"ref {name!r} is used by the operation that creates it", location=loc)
        if name not in self.count:
            raise ChangesetError(
                f"ref {name!r} is not created by any earlier operation",
                location=loc,
                hint="a ref must be named by an add or upsert (`ref: NAME`) before it is used, "
                "in this or an earlier changeset",
            )
        return self.count[name]
