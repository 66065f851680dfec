"""Opt-in test against a real Ledger (or Speculos) running the Tezos Baking app.

Enable with `SIGNER_GUARD_HW=ledger`. The device must be unlocked, the Tezos Baking app open and a
baking key authorized. `SIGNER_GUARD_LEDGER_URI` picks the key (default
`ledger://*/ed25519/0h/0h`; add `?tcp=HOST:PORT` for Speculos). The test is read-only unless
`SIGNER_GUARD_HW_SIGN=1`: then it signs one attestation on a made-up chain, which raises the
device's shared *test* slot only, and only when the device has a main chain id set (otherwise
every chain uses the main slot and the test refuses to sign).
"""

from __future__ import annotations

import os
import struct

import pytest

from drivers.ledger import LedgerBackend, list_devices
from drivers.ledger.uri import parse_uri
from signer_guard import keys

pytestmark = pytest.mark.skipif(
    os.environ.get("SIGNER_GUARD_HW") != "ledger",
    reason="real Ledger test: set SIGNER_GUARD_HW=ledger to run it",
)

URI = os.environ.get("SIGNER_GUARD_LEDGER_URI", "ledger://*/ed25519/0h/0h")
MADE_UP_CHAIN = bytes.fromhex("5167ee1d")


async def test_real_ledger() -> None:
    target = parse_uri(URI)
    reports = list_devices(tcp=target.tcp) if target.tcp else list_devices()
    assert reports, "no Ledger found"
    assert any("error" not in r and r.get("app") == "Tezos Baking" for r in reports), reports

    backend = LedgerBackend(URI)
    try:
        await backend.start()
        await backend.ensure_ready()
        assert backend.device is not None and backend.device.version.is_baking
        assert backend.pkh[:3] in ("tz1", "tz2", "tz3")
        hwm = await backend.all_hwm()
        device_hwm = await backend.device_hwm()
        assert device_hwm["block"] == (hwm.main_level, hwm.main_round)
        if os.environ.get("SIGNER_GUARD_HW_SIGN") != "1":
            return
        assert not hwm.chain_unset, "main chain id unset: refusing to sign on the main slot"
        level = hwm.test_level + 1
        message = (
            b"\x13" + MADE_UP_CHAIN + bytes(32) + b"\x15" + struct.pack(">HII", 0, level, 0)
        ) + bytes(32)
        signature = await backend.sign(message)
        _, raw = keys.parse_signature(signature)
        assert keys.PublicKey.from_b58(backend.public_key).verify(raw, message)
        assert (await backend.all_hwm()).test_level == level
    finally:
        await backend.close()
