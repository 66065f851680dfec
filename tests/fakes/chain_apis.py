"""Fake read-only chain APIs for failover tests: an Octez node's head header and a TzKT indexer.

Both run in-process on 127.0.0.1 (a free port) and record the queries they were asked::

    async with FakeNode(level=250) as node, FakeTzkt() as tzkt:
        tzkt.levels[("attestations", pkh)] = 340
        ... failover --node {node.url} --tzkt {tzkt.url}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from aiohttp import web

MAINNET = "NetXdQprcVkpaWU"


class _App:
    """An aiohttp app on a free loopback port."""

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        self.routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


@dataclass
class FakeNode(_App):
    """`GET /chains/main/blocks/head/header` → the shell header fields failover reads."""

    level: int = 0
    chain_id: str = MAINNET
    status: int = 200
    asked: int = 0

    def __post_init__(self) -> None:
        _App.__init__(self)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/chains/main/blocks/head/header", self._header)

    async def _header(self, request: web.Request) -> web.Response:
        self.asked += 1
        if self.status != 200:
            return web.Response(status=self.status)
        return web.json_response(
            {
                "protocol": "PsQuebecnLByd3JwTiGadoG4nGWi3HYiLXUjkibeFV8dCFeVMUg",
                "chain_id": self.chain_id,
                "hash": "BLockGenesisGenesisGenesisGenesisGenesisCCCCCeZiLHU",
                "level": self.level,
                "proto": 1,
                "predecessor": "BLockGenesisGenesisGenesisGenesisGenesisCCCCCeZiLHU",
                "timestamp": "2025-01-01T00:00:00Z",
                "validation_pass": 4,
            }
        )


@dataclass
class FakeTzkt(_App):
    """TzKT's list endpoints as failover queries them: filter by account, `sort.desc=level`,
    `limit=1`, `select=level` → a JSON array of levels (empty when the account has none)."""

    #: (endpoint, pkh) → the last level; endpoint is attestations, preattestations or blocks.
    levels: dict[tuple[str, str], int] = field(default_factory=dict)
    queries: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        _App.__init__(self)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/operations/attestations", self._list("attestations", "delegate"))
        app.router.add_get(
            "/v1/operations/preattestations", self._list("preattestations", "delegate")
        )
        app.router.add_get("/v1/blocks", self._list("blocks", "producer"))

    def _list(self, name: str, account: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            query = dict(request.query)
            self.queries.append((name, query))
            if query.get("sort.desc") != "level" or query.get("select") != "level":
                return web.json_response({"code": 400, "errors": "unsupported query"}, status=400)
            level = self.levels.get((name, query.get(account, "")))
            return web.json_response([] if level is None else [level])

        return handler
