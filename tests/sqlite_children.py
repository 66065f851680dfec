"""Child-process bodies for tests/test_sqlite_store.py (kept light: spawned children import it).

Each body opens its own SqliteStore on the shared file, as a second guard process would.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import resource
import signal
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from signer_guard.model import HWMKey, SignIntent
from signer_guard.store.base import StoreError
from signer_guard.store.sqlite import SqliteStore

CHAIN = "NetXdQprcVkpaWU"
PKH = "tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv"
KEY = HWMKey(CHAIN, PKH, "attestation")


def payload_hash(payload: str) -> bytes:
    return hashlib.blake2b(payload.encode(), digest_size=32).digest()


def intent(level: int, payload: str, round_: int = 0) -> SignIntent:
    return SignIntent(KEY, level, round_, payload_hash(payload))


def drop_root_file_privileges() -> None:
    """As root, drop every capability so that file modes apply to this process (Linux)."""
    if os.geteuid() != 0:
        return

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    libc = ctypes.CDLL(None, use_errno=True)
    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def advance_child(
    path: str, guard_id: str, epoch: int, level: int, payload: str, barrier: Barrier,
    results: Queue[str],
) -> None:  # fmt: skip
    async def main() -> None:
        store = SqliteStore(path)
        await store.open()
        try:
            barrier.wait(timeout=60)
            decision = await store.advance(intent(level, payload), guard_id, epoch)
            results.put(type(decision).__name__)
        finally:
            await store.close()

    asyncio.run(main())


def claim_child(path: str, guard_id: str, barrier: Barrier, results: Queue[str]) -> None:
    async def main() -> None:
        store = SqliteStore(path)
        await store.open()
        try:
            barrier.wait(timeout=60)
            fence = await store.claim_initial_fence(guard_id)
            results.put(f"{guard_id} {fence.holder} {fence.epoch}")
        finally:
            await store.close()

    asyncio.run(main())


def lock_child(path: str, guard_id: str, results: Queue[str]) -> None:
    async def main() -> None:
        store = SqliteStore(path)
        try:
            await store.lock_guard_id(guard_id)
            results.put("locked")
        except StoreError as exc:
            results.put(f"{type(exc).__name__}: {exc}")
        finally:
            await store.close()

    asyncio.run(main())


def sigkill_child(path: str, guard_id: str, level: int, conn: Connection) -> None:
    """Advance, report it over a pipe, and SIGKILL itself right after `advance` returned."""

    async def main() -> None:
        store = SqliteStore(path)
        await store.open()
        fence = await store.claim_initial_fence(guard_id)
        decision = await store.advance(intent(level, "killed"), guard_id, fence.epoch)
        conn.send(type(decision).__name__)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())


def failing_advance_child(
    path: str, guard_id: str, epoch: int, level: int, mode: str, results: Queue[str]
) -> None:
    """Advance on a store made unwritable: `readonly` (file modes) or `full` (RLIMIT_FSIZE)."""

    async def main() -> None:
        store = SqliteStore(path)
        try:
            await store.open()
        except StoreError as exc:
            results.put(f"open {type(exc).__name__}: {exc}")
            return
        try:
            if mode == "full":
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
            decision = await store.advance(intent(level, "blocked"), guard_id, epoch)
            results.put(f"advance {type(decision).__name__}")
        except StoreError as exc:
            results.put(f"advance {type(exc).__name__}: {exc}")
        finally:
            await store.close()

    if mode == "readonly":
        drop_root_file_privileges()
    asyncio.run(main())
