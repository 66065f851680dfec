"""Opt-in test against a real TezSign gadget.

Enable with `SIGNER_GUARD_HW=tezsign` and name a **throwaway** key in
`SIGNER_GUARD_TEZSIGN_URI` (e.g. `tezsign://*/testkey`): the test signs attestations above the
key's current device high watermark, which advances it for good. The key must be unlocked
(`tezsign unlock testkey`), and IF0 must be free (stop `tezsign run`).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from drivers.base import DeviceHWMRefusal
from drivers.tezsign import TezSignBackend, list_devices
from signer_guard.keys import PublicKey, parse_signature

pytestmark = pytest.mark.skipif(
    os.environ.get("SIGNER_GUARD_HW") != "tezsign",
    reason="real TezSign hardware test: set SIGNER_GUARD_HW=tezsign",
)


def attestation(level: int) -> bytes:
    return bytes([0x13]) + bytes(36) + bytes([41]) + level.to_bytes(4, "big") + bytes(36)


async def test_real_gadget() -> None:
    uri = os.environ.get("SIGNER_GUARD_TEZSIGN_URI")
    assert uri, "set SIGNER_GUARD_TEZSIGN_URI=tezsign://SERIAL/KEY (a throwaway key)"
    devices = await asyncio.to_thread(list_devices)
    assert devices, "no TezSign gadget found"
    assert all(d["error"] is None for d in devices), devices
    backend = TezSignBackend(uri)
    try:
        await backend.start()
        await backend.ensure_ready()
        pk = PublicKey.from_b58(backend.public_key)
        assert pk.pkh == backend.pkh
        _, proof = parse_signature(await backend.prove_possession())
        assert pk.verify_possession(proof)
        marks = await backend.device_hwm()
        assert marks is not None, "the key must be unlocked"
        level = max(lvl for lvl, _ in marks.values()) + 1
        data = attestation(level)
        _, raw = parse_signature(await backend.sign(data))
        assert pk.verify(raw, data)
        with pytest.raises(DeviceHWMRefusal):
            await backend.sign(data)
        after = await backend.device_hwm()
        assert after is not None and after["attestation"] == (level, 0)
    finally:
        await backend.close()
