"""Recorded Ledger sessions (APDU hex in and out) in fixtures/ledger/, and a replaying app.

`python -m tests.fakes.ledger_record` (re)writes the fixtures from the fake app driven by the real
driver. `ReplayApp` answers a recorded session and fails on any APDU that differs from it, so the
driver can be tested byte for byte against the recordings.
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from drivers.base import BackendError
from drivers.ledger import LedgerBackend
from tests.fakes.ledger_app import MAINNET, FakeBakingApp, FakeHidModule

FIXTURES: Final = Path(__file__).resolve().parents[2] / "fixtures" / "ledger"


def attestation(level: int, round_: int, *, magic: int = 0x13, chain: bytes = MAINNET) -> bytes:
    tag = 21 if magic == 0x13 else 20
    return (
        bytes([magic])
        + chain
        + bytes(32)
        + bytes([tag])
        + struct.pack(">HII", 0, level, round_)
        + bytes(32)
    )


def block(level: int, round_: int, *, chain: bytes = MAINNET) -> bytes:
    """A 198-byte Tenderbake block request (F = 33, no seed nonce hash)."""
    fitness = (
        b"\x00\x00\x00\x01\x02"
        + struct.pack(">II", 4, level)
        + b"\x00\x00\x00\x00"
        + struct.pack(">Ii", 4, -1)
        + struct.pack(">II", 4, round_)
    )
    shell = (
        b"\x11"
        + chain
        + struct.pack(">I", level)
        + b"\x13"
        + bytes(32)
        + struct.pack(">q", 1_700_000_000)
        + b"\x04"
        + bytes(32)
        + struct.pack(">I", len(fitness))
        + fitness
    )
    return shell + bytes(32) + bytes(32) + struct.pack(">I", 0) + bytes(8) + b"\x00" + b"\x00"


@dataclass
class ReplayApp:
    """Answers recorded exchanges in order; records any mismatch in `errors`."""

    exchanges: list[tuple[bytes, bytes]]
    errors: list[str] = field(default_factory=list)
    position: int = 0

    def handle(self, apdu: bytes) -> tuple[bytes, float]:
        if self.position >= len(self.exchanges):
            self.errors.append(f"unexpected extra APDU {apdu.hex()}")
            return b"\x6d\x00", 0.0
        expected, response = self.exchanges[self.position]
        self.position += 1
        if apdu != expected:
            self.errors.append(
                f"APDU {self.position}: sent {apdu.hex()}, recorded {expected.hex()}"
            )
        return response, 0.0


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def exchanges_of(fixture: dict[str, Any], part: str = "exchanges") -> list[tuple[bytes, bytes]]:
    return [(bytes.fromhex(e["apdu"]), bytes.fromhex(e["response"])) for e in fixture[part]]


# name → (curve, URI path, setup level, requests signed in order)
SESSIONS: Final[dict[str, tuple[int, str, int, list[bytes]]]] = {
    "zebra_ed25519_session": (
        0,
        "ed25519/0h/0h",
        100,
        [attestation(101, 0), attestation(101, 0), attestation(101, 1)],
    ),
    "zebra_secp256k1_session": (
        1,
        "secp256k1/0h/0h",
        200,
        [block(201, 0), attestation(201, 0, magic=0x12), attestation(201, 0), block(201, 0)],
    ),
}


async def record_session(name: str) -> dict[str, Any]:
    curve, uri_path, level, requests = SESSIONS[name]
    app = FakeBakingApp()
    path_bytes = bytes([4]) + struct.pack(">IIII", 0x8000002C, 0x800006C1, 0x80000000, 0x80000000)
    setup = bytes([0x80, 0x0A, 0x00, curve, 12 + len(path_bytes)])
    setup += MAINNET + struct.pack(">II", level, 0) + path_bytes
    app.exchange(setup)
    setup_exchanges = list(app.exchanges)
    app.exchanges.clear()
    hid = FakeHidModule()
    hid.add(app)
    backend = LedgerBackend(f"ledger://*/{uri_path}", hid_module=hid)
    results: list[dict[str, str | int]] = []
    try:
        await backend.start()
        for request in requests:
            try:
                results.append({"request": request.hex(), "signature": await backend.sign(request)})
            except BackendError as exc:
                results.append({"request": request.hex(), "error": str(exc), "status": exc.status})
        hwm = await backend.device_hwm()
    finally:
        await backend.close()
    return {
        "description": f"{name}: SETUP by octez-client, then the driver's start-up, signatures "
        "and device_hwm, recorded from tests/fakes/ledger_app.py (seed 'zebra'x24, SLIP-10)",
        "uri": f"ledger://*/{uri_path}",
        "pkh": backend.pkh,
        "public_key": backend.public_key,
        "setup": [{"apdu": a.hex(), "response": r.hex()} for a, r in setup_exchanges],
        "exchanges": [{"apdu": a.hex(), "response": r.hex()} for a, r in app.exchanges],
        "results": results,
        "device_hwm": {kind: list(mark) for kind, mark in hwm.items()},
    }


def main() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name in SESSIONS:
        data = asyncio.run(record_session(name))
        (FIXTURES / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {FIXTURES / name}.json")


if __name__ == "__main__":
    main()
