"""Test rig: a fake Tezos Baking app behind the fake HID module or the TCP APDU server."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from typing import Any

from drivers.ledger import LedgerBackend
from drivers.ledger.client import BakingAppClient
from drivers.ledger.hid_transport import HidTransport, enumerate_devices
from drivers.ledger.tcp_transport import TcpTransport
from tests.fakes.ledger_app import MAINNET, FakeBakingApp, FakeHidModule, FakeTcpServer
from tests.fakes.ledger_hid import HidEndpoint

H = 0x80000000
PATH = (44 | H, 1729 | H, H, H)
CURVE_NAMES = {0: "ed25519", 1: "secp256k1", 2: "p256", 3: "bip25519"}


def setup_apdu(
    curve: int = 0, level: int = 100, chain: bytes = MAINNET, test_level: int = 0
) -> bytes:
    path = bytes([len(PATH)]) + b"".join(struct.pack(">I", c) for c in PATH)
    data = chain + struct.pack(">II", level, test_level) + path
    return bytes([0x80, 0x0A, 0x00, curve, len(data)]) + data


def set_up(app: FakeBakingApp, curve: int = 0, level: int = 100, chain: bytes = MAINNET) -> None:
    """What `octez-client setup ledger to bake for …` does (the driver never sends SETUP)."""
    assert app.exchange(setup_apdu(curve, level, chain))[-2:] == b"\x90\x00"
    app.exchanges.clear()  # what the driver sends is recorded from here on
    app.prompts.clear()


@dataclass
class Rig:
    kind: str  # "hid" or "tcp"
    app: FakeBakingApp
    hid: FakeHidModule | None = None
    endpoint: HidEndpoint | None = None
    server: FakeTcpServer | None = None
    backends: list[LedgerBackend] = field(default_factory=list)

    def uri(self, key: str = "ed25519/0h/0h", device: str = "*") -> str:
        base = f"ledger://{device}/{key}"
        if self.server is not None:
            return f"{base}?tcp=127.0.0.1:{self.server.port}"
        return base

    def backend(self, key: str = "ed25519/0h/0h", **kwargs: Any) -> LedgerBackend:
        kwargs.setdefault("reconnect_interval", 0.05)
        backend = LedgerBackend(self.uri(key), hid_module=self.hid, **kwargs)
        self.backends.append(backend)
        return backend

    def client(self) -> BakingAppClient:
        if self.hid is not None:
            (info,) = enumerate_devices(self.hid)
            return BakingAppClient(HidTransport.open(self.hid, info))
        assert self.server is not None
        return BakingAppClient(TcpTransport.open("127.0.0.1", self.server.port))

    def unplug(self) -> None:
        if self.endpoint is not None:
            self.endpoint.unplug()
        if self.server is not None:
            self.server.available = False
            self.server.disconnect_all()

    def replug(self) -> None:
        if self.endpoint is not None:
            self.endpoint.plug()
        if self.server is not None:
            self.server.available = True

    async def close(self) -> None:
        for backend in self.backends:
            await backend.close()
        if self.server is not None:
            self.server.stop()


def make_rig(kind: str, app: FakeBakingApp | None = None) -> Rig:
    app = app or FakeBakingApp()
    if kind == "hid":
        hid = FakeHidModule()
        return Rig(kind, app, hid=hid, endpoint=hid.add(app))
    return Rig(kind, app, server=FakeTcpServer(app).start())


async def wait_ready(backend: LedgerBackend, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not backend.ready:
        if loop.time() > deadline:
            raise AssertionError(f"backend not ready after {timeout} s: {backend.not_ready_reason}")
        await asyncio.sleep(0.02)
