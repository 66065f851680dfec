"""A guard served on a real loopback socket from the test's own process, for backends whose fake
lives in memory (the TezSign pyusb backend). Same Guard and app as `serve`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from drivers.base import Backend
from signer_guard.auth import Authorizer
from signer_guard.config import Config
from signer_guard.guard import Guard, KeySlot
from signer_guard.journal import Journal
from signer_guard.metrics import Metrics
from signer_guard.node import NodeHead
from signer_guard.policy import Policy
from signer_guard.server import make_app
from signer_guard.store.sqlite import SqliteStore


@asynccontextmanager
async def inprocess_guard(
    workdir: Path, backends: list[Backend], *, guard_id: str = "guard-a", **guard_kwargs: Any
) -> AsyncIterator[tuple[str, Guard]]:
    workdir.mkdir(parents=True, exist_ok=True)
    guard = Guard(
        guard_id=guard_id,
        store=SqliteStore(str(workdir / "store.sqlite")),
        slots=[KeySlot(b) for b in backends],
        policy=Policy.from_config(Config(guard_id=guard_id)),
        authorizer=Authorizer(()),
        journal=Journal(workdir / "journal.jsonl"),
        metrics=Metrics(),
        node=NodeHead(None),
        **guard_kwargs,
    )
    await guard.start()
    runner = web.AppRunner(make_app(guard), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/", guard
    finally:
        await runner.cleanup()
        await guard.close()
