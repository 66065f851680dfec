"""The liveness key `P/alive/<guard_id>` under a lease (fencing-and-failover.md §4.4).

It only tells other processes that this guard id is in use and in which state: a hint, never the
fence. The lease (TTL 10 s) is refreshed every 3 s by a background task, which also rewrites the
value when the state changed and a write failed, and re-creates the key if the lease was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from signer_guard.model import utc_now
from signer_guard.store.base import GuardIdInUse, StoreError
from signer_guard.store.etcd_client import (
    EtcdClient,
    cmp_absent,
    cmp_lease,
    op_put,
    op_range,
)
from signer_guard.store.etcd_layout import decode_alive, encode_alive

log = logging.getLogger(__name__)

ALIVE_TTL = 10
KEEPALIVE_INTERVAL = 3.0


class AliveKey:
    """Holds `P/alive/<guard_id>` for this process until `release`."""

    def __init__(
        self,
        client: EtcdClient,
        key: bytes,
        guard_id: str,
        *,
        ttl: int = ALIVE_TTL,
        interval: float = KEEPALIVE_INTERVAL,
    ) -> None:
        self._client = client
        self._key = key
        self.guard_id = guard_id
        self._ttl = ttl
        self._interval = interval
        self.lease = 0
        self.state = "standby"
        self.epoch: int | None = None
        self._since = utc_now()
        self._dirty = False
        self.lost = False  # the key is held under another lease (another process took it)
        self._task: asyncio.Task[None] | None = None
        self._holder_detail = ""

    def _value(self) -> bytes:
        return encode_alive(
            {
                "guard_id": self.guard_id,
                "state": self.state,
                "epoch": self.epoch,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "since": self._since,
            }
        )

    async def acquire(self) -> None:
        """Create the key under a new lease; GuardIdInUse if it exists under another lease."""
        await self._create()
        if self.lost:
            raise GuardIdInUse(
                f"guard id {self.guard_id!r} is in use: another live process holds its liveness "
                f"key{self._holder_detail}; stop it or choose another --guard-id"
            )
        self._task = asyncio.create_task(self._keepalive_loop(), name="etcd-alive-keepalive")

    async def _create(self) -> None:
        lease, _ = await self._client.lease_grant(self._ttl)
        try:
            result = await self._client.txn(
                [cmp_absent(self._key)],
                [op_put(self._key, self._value(), lease)],
                [op_range(self._key)],
            )
        except StoreError:
            with contextlib.suppress(StoreError):
                await self._client.lease_revoke(lease)
            raise
        if result.succeeded:
            self.lease, self.lost, self._dirty = lease, False, False
            return
        with contextlib.suppress(StoreError):
            await self._client.lease_revoke(lease)
        kvs = result.ranges[0] if result.ranges else []
        self.lost = True
        if kvs:
            try:
                other = decode_alive(kvs[0].value)
                self._holder_detail = f" (pid {other.get('pid')} on {other.get('host')})"
            except StoreError:
                self._holder_detail = ""

    async def set_state(self, state: str, epoch: int | None) -> None:
        """Record a new state; written now if possible, else by the next keepalive round."""
        if (state, epoch) == (self.state, self.epoch):
            return
        self.state, self.epoch, self._since = state, epoch, utc_now()
        self._dirty = True
        if self.lease:
            with contextlib.suppress(StoreError):
                await self._write()

    async def _write(self) -> None:
        result = await self._client.txn(
            [cmp_lease(self._key, self.lease)], [op_put(self._key, self._value(), self.lease)], []
        )
        if result.succeeded:
            self._dirty = False

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                ttl = await self._client.lease_keepalive(self.lease) if self.lease else 0
                if ttl <= 0:
                    log.warning("liveness lease of %s expired; re-creating the key", self.guard_id)
                    self.lease = 0
                    await self._create()
                    if self.lost:
                        log.warning(
                            "liveness key of %s is held by another process%s",
                            self.guard_id,
                            self._holder_detail,
                        )
                elif self._dirty:
                    await self._write()
            except StoreError as exc:
                log.debug("liveness keepalive of %s failed: %s", self.guard_id, exc)

    async def release(self) -> None:
        """Stop refreshing and revoke the lease (which deletes the key)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.lease:
            with contextlib.suppress(StoreError):
                await self._client.lease_revoke(self.lease)
            self.lease = 0
