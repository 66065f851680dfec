"""The node's head level, polled in the background (watermark-rules.md §2), off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp

log = logging.getLogger(__name__)

FRESH_SECONDS = 120.0


async def fetch_head(
    session: aiohttp.ClientSession, node: str, timeout: float = 2.0
) -> tuple[int, str | None]:
    """GET NODE/chains/main/blocks/head/header → (level, chain_id)."""
    url = node.rstrip("/") + "/chains/main/blocks/head/header"
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        if resp.status != 200:
            raise ValueError(f"node answered {resp.status} for {url}")
        body = await resp.json(content_type=None)
    level = body.get("level") if isinstance(body, dict) else None
    if not isinstance(level, int) or isinstance(level, bool) or level < 0:
        raise ValueError(f"node head header from {url} has no valid level")
    chain = body.get("chain_id")
    return level, chain if isinstance(chain, str) else None


class NodeHead:
    """Keeps the last head level seen and when; `fresh_level` is None when unknown or stale."""

    def __init__(self, node: str | None, interval: float = 5.0) -> None:
        self.node = node
        self.interval = interval
        self.level: int | None = None
        self.chain_id: str | None = None
        self.fetched_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def fresh_level(self) -> int | None:
        if self.fetched_at is None or time.monotonic() - self.fetched_at > FRESH_SECONDS:
            return None
        return self.level

    @property
    def warning(self) -> str | None:
        if self.node and self.fresh_level is None:
            return "node_head_stale: no successful head fetch in 120 s; level bound disabled"
        return None

    async def refresh(self) -> None:
        assert self._session is not None and self.node is not None
        try:
            self.level, self.chain_id = await fetch_head(self._session, self.node)
            self.fetched_at = time.monotonic()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("node head fetch from %s failed: %s", self.node, exc)

    async def start(self) -> None:
        if not self.node:
            return
        self._session = aiohttp.ClientSession()
        await self.refresh()
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
