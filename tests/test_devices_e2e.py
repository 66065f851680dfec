"""End to end over HTTP with each fake device: the guard signs, refuses, and survives unplugs.

Ledger: the guard is a real `serve` process talking to the fake Baking app over the TCP APDU
transport (the emulator seam). TezSign: the guard runs in this process on a real socket, with the
pyusb backend that emulates the gadget.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from drivers.tezsign import TezSignBackend
from signer_guard import keys
from signer_guard.forge import forge_block, forge_consensus
from tests.fakes.ledger_app import FakeBakingApp
from tests.fakes.ledger_rig import PATH, make_rig, set_up
from tests.fakes.tezsign_gadget import FakeGadget, FakeUsb
from tests.guard_proc import GuardProcess
from tests.http_client import get_json, sign
from tests.inprocess_guard import inprocess_guard

MAINNET = "NetXdQprcVkpaWU"
BLS = keys.SecretKey.from_b58("BLsk2jjZe6wQH9TwtBzJwL7xLePfEgUxsV6BfwDP8dGfsosgnekSgC")
FAST = {
    "read_timeout_ms": 20,
    "watchdog_interval": 0.05,
    "reconnect_interval": 0.05,
    "status_interval": 0.2,
}


def att(level: int, round_: int = 0, tag: int = 21, payload: int = 0) -> bytes:
    return forge_consensus(
        "attestation", tag, MAINNET, level, round_, payload_hash=payload.to_bytes(32, "big")
    )


def msg(body: object) -> str:
    assert isinstance(body, list)
    return str(body[0]["msg"])


async def eventually(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert callable(check)
        if await check():
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------- Ledger over TCP ----------------


async def test_ledger_signs_refuses_and_survives_unplug(tmp_path: Path) -> None:
    app = FakeBakingApp()
    set_up(app, curve=0, level=0)
    rig = make_rig("tcp", app)
    expected = app.secret_key(0, PATH)
    try:
        async with GuardProcess(tmp_path, keys=[rig.uri()]) as g:
            pkh = expected.public_key.pkh
            assert (await get_json(g.url + f"keys/{pkh}")) == (
                200,
                {"public_key": expected.public_key.b58},
            )
            data = att(200)
            status, body = await sign(g.url, pkh, data)
            assert status == 200
            _, raw = keys.parse_signature(body["signature"])
            assert expected.public_key.verify(raw, data)
            assert (await sign(g.url, pkh, data)) == (200, body)  # cached, device not asked
            status, body = await sign(g.url, pkh, att(200, payload=1))
            assert status == 409 and "already signed with different data" in msg(body)
            # the guard allows a block at the (level, round) of an attestation; the app does not
            status, body = await sign(g.url, pkh, forge_block(MAINNET, 200, 0))
            assert status == 409 and msg(body).startswith("device high watermark refusal")
            # unplugged in the middle of a signature: that request fails, then 503, then back
            app.sign_delay = 1.5
            pending = asyncio.create_task(sign(g.url, pkh, att(300)))
            await asyncio.sleep(0.5)
            rig.unplug()
            status, body = await pending
            assert status == 502, body
            app.sign_delay = 0.0
            status, body = await sign(g.url, pkh, att(301))
            assert status in (502, 503), body
            rig.replug()

            async def signs_again() -> bool:
                s, _ = await sign(g.url, pkh, att(400))
                return s == 200

            await eventually(signs_again)
    finally:
        await rig.close()


async def test_ledger_device_ahead_of_store_disables_key(tmp_path: Path) -> None:
    app = FakeBakingApp()
    set_up(app, curve=0, level=5000)
    rig = make_rig("tcp", app)
    pkh = app.secret_key(0, PATH).public_key.pkh
    try:
        async with GuardProcess(tmp_path / "a", keys=[rig.uri()]) as g:
            status, body = await get_json(g.url + "status")
            key = body["keys"][0]
            assert key["ready"] is False and "ahead" in key["disabled"]
            assert any("device_hwm_ahead" in w for w in body["warnings"])
            status, body = await sign(g.url, pkh, att(6000))
            assert status == 503 and "disabled" in msg(body)
        async with GuardProcess(
            tmp_path / "b", keys=[rig.uri()], allowed_chains=[MAINNET], accept_device_hwm=True
        ) as g:
            status, body = await sign(g.url, pkh, att(5000))
            assert status == 409  # the store was raised to the device's mark
            assert (await sign(g.url, pkh, att(5001)))[0] == 200
    finally:
        await rig.close()


# ---------------------------------------------------------------- TezSign over (fake) USB --------


@pytest.fixture
def gadget() -> FakeGadget:
    return FakeGadget(
        {"consensus": BLS, "companion": keys.SecretKey.generate("bls12_381")}, serial="TZSG0001"
    )


async def test_tezsign_signs_refuses_and_survives_unplug(
    tmp_path: Path, gadget: FakeGadget
) -> None:
    usb = FakeUsb(gadget)
    backends = [
        TezSignBackend(f"tezsign://*/{k}", usb_backend=usb, connection_options=dict(FAST))
        for k in ("consensus", "companion")
    ]
    companion = gadget.keys["companion"].tz4
    async with inprocess_guard(tmp_path, list(backends)) as (url, _guard):
        data = att(100, tag=41)
        status, body = await sign(url, BLS.pkh, data, version="3")
        assert status == 200
        _, raw = keys.parse_signature(body["signature"])
        assert BLS.public_key.verify(raw, data, version=3)
        # the companion key signs the same bytes
        assert (await sign(url, companion, data, version="3"))[0] == 200
        assert (await sign(url, BLS.pkh, data, version="3")) == (200, body)
        status, body = await sign(url, BLS.pkh, att(100, tag=41, payload=5), version="3")
        assert status == 409 and "already signed with different data" in msg(body)
        status, body = await sign(url, BLS.pkh, att(101, tag=21))
        assert status == 403  # a tz4 key signs only tags 40/41
        status, body = await get_json(url + "status")
        key = next(k for k in body["keys"] if k["pkh"] == BLS.pkh)
        assert key["backend"] == "tezsign" and key["hwm"]["attestation"] == [100, 0]
        # unplugged mid-request
        gadget.delays["sign"] = 1.0
        pending = asyncio.create_task(sign(url, BLS.pkh, att(200, tag=41), version="3"))
        await asyncio.sleep(0.3)
        gadget.unplug()
        status, body = await pending
        assert status == 502, body
        gadget.delays.clear()
        status, body = await sign(url, BLS.pkh, att(201, tag=41), version="3")
        assert status in (502, 503), body
        gadget.replug(reboot=False)

        async def signs_again() -> bool:
            s, _ = await sign(url, BLS.pkh, att(300, tag=41), version="3")
            return s == 200

        await eventually(signs_again)
