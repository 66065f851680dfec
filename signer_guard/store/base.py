"""The store interface: HWM records, the signature cache and the fence, in one namespace.

Every method that changes state is one atomic, durable transaction. A store error or timeout
raises `StoreUnavailable`: the outcome is unknown and the guard must not sign (503).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from signer_guard.model import Fence, HWMKey, HWMRecord, SignIntent
from signer_guard.rule import Decision


class StoreError(Exception):
    """Base class of store failures."""


class StoreUnavailable(StoreError):
    """The store could not be reached or the write's outcome is unknown: do not sign (503)."""


class StoreCorrupt(StoreError):
    """The store's contents are damaged; the guard refuses to start."""


class GuardIdInUse(StoreError):
    """Another live process serves this namespace with the same guard id (invariant I7)."""


class NotHolder(StoreError):
    """A fence operation that requires holding the fence (release) was refused."""


class FenceConflict(StoreError):
    """A takeover's compare failed: something changed since it was read."""


@dataclass(frozen=True, slots=True)
class SetResult:
    old: HWMRecord | None
    new: HWMRecord | None
    changed: bool


@dataclass(frozen=True, slots=True)
class TakeoverResult:
    previous: Fence | None
    fence: Fence
    last_level: int  # the store's own max HWM level / old fence level it saw
    records_raised: int


class Store(abc.ABC):
    """One namespace (one SQLite file or one etcd prefix) = one chain."""

    kind: str = "abstract"  # "sqlite" | "etcd"
    #: whether guards publish their state here under a lease (`read_alive` can answer)
    keeps_liveness: bool = False

    @abc.abstractmethod
    async def open(self) -> None:
        """Open (creating the schema if needed); raise StoreCorrupt if the store is damaged."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def lock_guard_id(self, guard_id: str) -> None:
        """Make sure no other process serves this namespace as `guard_id` (I7): SQLite takes an
        exclusive flock on `<db>.<guard_id>.lock`, etcd keeps `P/alive/<guard_id>` under a lease.
        Raise GuardIdInUse otherwise. Held until `close`."""

    async def set_alive_state(self, state: str, epoch: int | None = None) -> None:  # noqa: B027
        """Publish this guard's state where other guards can see it (etcd's liveness key).
        A store without such a place (SQLite) ignores it."""

    async def read_alive(self, guard_id: str) -> dict[str, Any] | None:
        """The live state another guard published (etcd's liveness key); None when the store
        keeps none (SQLite) or the guard's lease has expired."""
        return None

    # -- fence --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def read_fence(self) -> Fence | None:
        """A linearizable read of the fence record."""

    @abc.abstractmethod
    async def claim_initial_fence(self, guard_id: str) -> Fence:
        """Create {epoch 1, holder guard_id, fence_level 0} if no fence exists; return the fence
        as it stands afterwards (which names another guard if it lost the race)."""

    @abc.abstractmethod
    async def takeover(
        self, guard_id: str, fence_level: int, keys: Iterable[HWMKey], expected: Fence | None
    ) -> TakeoverResult:
        """Failover's single atomic write: fence {epoch+1, guard_id, max(old, fence_level)}; every
        record below (fence_level, 0) raised to it with hash/signature null; missing records of
        `keys` created. `expected` is the fence the caller read; if it changed → FenceConflict."""

    @abc.abstractmethod
    async def release(self, guard_id: str) -> Fence:
        """holder := "", fence_level := max(fence_level, max HWM level). NotHolder if not me."""

    # -- the guarded path ---------------------------------------------------------------------
    @abc.abstractmethod
    async def advance(self, intent: SignIntent, guard_id: str, epoch: int | None) -> Decision:
        """Read fence and record, apply `rule.decide`, and on Advance write the record durably,
        all in one transaction."""

    @abc.abstractmethod
    async def store_signature(self, intent: SignIntent, signature: str, epoch: int) -> None:
        """Cache the signature if the record still equals (L, R, hash). Best effort."""

    # -- operator tools -----------------------------------------------------------------------
    @abc.abstractmethod
    async def list_records(self) -> list[HWMRecord]: ...

    @abc.abstractmethod
    async def get_record(self, key: HWMKey) -> HWMRecord | None: ...

    @abc.abstractmethod
    async def set_record(
        self, key: HWMKey, level: int, round_: int, *, allow_lower: bool = False
    ) -> SetResult:
        """Raise (or, with allow_lower, set) one record; hash and signature become null."""

    @abc.abstractmethod
    async def merge_records(self, records: Iterable[HWMRecord]) -> int:
        """Max-merge: replace a record only when the imported (level, round) is strictly higher.
        Returns the number of records changed."""
