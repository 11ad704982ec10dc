"""Where the adapters' desired state is kept: the `DesiredStateStore` protocol and its file implementation.

Every write is a compare-and-set on a revision counter: `save(state, expected)` writes only if the stored state
is still at revision `expected` and returns the new revision, else raises StateConflict (another gateway wrote
first; reload and apply the change again). Operations on one adapter hold `lock(adapter)`, which spans gateway
processes where the store is shared. The file (one gateway process, the default) is its own only writer: its lock
is a no-op and `changes()` never yields. adapters.state_redis keeps the state in Redis for several replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from adapters.state import DesiredState, StateError, StateFile


class StateConflict(StateError):
    """The stored state moved past the revision a change was based on: reload it and apply the change again."""


class StateBusy(StateError):
    """Another gateway held the adapter's lock for longer than this one would wait."""


class DesiredStateStore(Protocol):
    """The desired state shared by every gateway process that uses this store."""

    shared: bool  # several gateway processes may use it at once
    propagation: float  # seconds within which `changes()` reports another process's write

    async def load(self) -> tuple[DesiredState, int]:
        """The state and its revision (0 when nothing was ever written)."""
        ...

    async def save(self, state: DesiredState, expected: int) -> int:
        """Write `state` if the stored revision is `expected`; the new revision. StateConflict, StateError."""
        ...

    def lock(self, adapter: str) -> AbstractAsyncContextManager[None]:
        """Held around every change of one adapter, across processes where the store is shared."""
        ...

    def changes(self, since: int) -> AsyncIterator[int]:
        """Each new revision written after `since`, by anyone, within `propagation` seconds."""
        ...

    async def aclose(self) -> None: ...


@asynccontextmanager
async def _no_lock() -> AsyncIterator[None]:
    yield


class FileStateStore:
    """The JSON file of adapters.state.StateFile, for one gateway process (its only writer)."""

    shared = False
    propagation = 0.0

    def __init__(self, file: StateFile) -> None:
        self.file = file
        self.revision = 0

    async def load(self) -> tuple[DesiredState, int]:
        return self.file.load(), self.revision

    async def save(self, state: DesiredState, expected: int) -> int:
        if expected != self.revision:
            raise StateConflict(f"state at revision {self.revision}, change based on {expected}")
        # Written in the event loop as before: a small file, and the change it records must not interleave.
        self.file.save(state)
        self.revision += 1
        return self.revision

    def lock(self, adapter: str) -> AbstractAsyncContextManager[None]:
        return _no_lock()

    async def changes(self, since: int) -> AsyncIterator[int]:
        await asyncio.Event().wait()  # one writer: nobody else changes the file
        yield since  # pragma: no cover - never reached

    async def aclose(self) -> None:
        return None
