"""TezSignBackend against the fake gadget: signing, error mapping, device HWM, PoP, unplug and
reconnect, one request per interface, and no blocking USB I/O on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.base import (
    BackendError,
    BackendUnavailable,
    DeviceHWMRefusal,
    NotSupported,
    UnknownOutcome,
)
from drivers.tezsign import TezSignBackend, list_devices, load_passphrase, set_default_usb_backend
from signer_guard.keys import PublicKey, SecretKey, parse_signature
from tests.fakes.tezsign_gadget import FakeGadget, FakeUsb
from tests.test_tezsign_transport import PASSPHRASE, SECRET, TZ4, attestation

POP = (
    "BLsig9cW2ffM82s8cZWNDQTmecxHPHmJcTUh5DF2dVP7GV7oUmmptd4JpxBvSyE1VDeLtGyV68KaTuaEM1qiSUELMqk"
    "dwCLJFDQYGL6ZZLZDEUAfyu3Vu3ivs66jhV8ANwt3tKg6qABoqx"
)
FAST = {
    "read_timeout_ms": 20,
    "watchdog_interval": 0.05,
    "reconnect_interval": 0.05,
    "status_interval": 0.2,
}
Factory = Callable[..., Awaitable[TezSignBackend]]


@pytest.fixture
def gadget() -> FakeGadget:
    return FakeGadget(
        {"consensus": SecretKey.from_b58(SECRET), "companion": SecretKey.generate("bls12_381")},
        serial="TZSG0001",
        passphrase=PASSPHRASE,
    )


@pytest.fixture
def usb(gadget: FakeGadget) -> FakeUsb:
    return FakeUsb(gadget)


@pytest.fixture
async def make(usb: FakeUsb) -> AsyncIterator[Factory]:
    made: list[TezSignBackend] = []

    async def factory(
        uri: str = "tezsign://*/consensus", start: bool = True, **kw: Any
    ) -> TezSignBackend:
        kw.setdefault("usb_backend", usb)
        backend = TezSignBackend(uri, connection_options=dict(FAST), **kw)
        made.append(backend)
        if start:
            await backend.start()
        return backend

    yield factory
    for backend in made:
        await backend.close()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def ready_again(backend: TezSignBackend, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await backend.ensure_ready()
            return
        except BackendUnavailable:
            assert time.monotonic() < deadline, "backend did not reconnect"
            await asyncio.sleep(0.02)


def verify(b58sig: str, data: bytes, pk: str) -> bool:
    curve, raw = parse_signature(b58sig)
    assert curve in (None, "bls12_381")
    return PublicKey.from_b58(pk).verify(raw, data)


# ---- start, sign, errors ----------------------------------------------------------------------


async def test_start_and_sign(make: Factory) -> None:
    backend = await make()
    assert backend.backend_type == "tezsign"
    assert backend.pkh == TZ4
    assert backend.public_key == SecretKey.from_b58(SECRET).public_key.b58
    await backend.ensure_ready()
    for version in (None, 2, 3):
        level = 100 + (version or 0)
        sig = await backend.sign(attestation(level), version=version)
        assert sig.startswith("BLsig") and verify(sig, attestation(level), backend.public_key)


async def test_key_by_tz4_and_serial(make: Factory) -> None:
    backend = await make(f"tezsign://TZSG0001/{TZ4}")
    assert backend.key_id == "consensus"
    with pytest.raises(BackendUnavailable, match="NOPE"):
        await make("tezsign://NOPE/consensus")


async def test_unknown_key_names_the_keys_present(make: Factory) -> None:
    with pytest.raises(BackendError, match="companion") as info:
        await make("tezsign://*/missing")
    assert info.value.status == 502


async def test_device_hwm_refusal_is_409(make: Factory) -> None:
    backend = await make()
    await backend.sign(attestation(200))
    with pytest.raises(DeviceHWMRefusal, match="tezsign stale level/round") as info:
        await backend.sign(attestation(200))
    assert info.value.status == 409


async def test_locked_key_tells_how_to_unlock(make: Factory, gadget: FakeGadget) -> None:
    backend = await make()
    gadget.keys["consensus"].state = "locked"
    with pytest.raises(BackendError, match="tezsign unlock consensus") as info:
        await backend.sign(attestation(5))
    assert info.value.status == 502 and "key locked" in str(info.value)
    with pytest.raises(BackendError, match=r"locked.*tezsign unlock consensus") as ready:
        await backend.ensure_ready()
    assert not isinstance(ready.value, BackendUnavailable)
    gadget.keys["consensus"].state = "unloaded"
    with pytest.raises(BackendError, match=r"key not loaded \(unlock needed\)"):
        await backend.sign(attestation(6))


async def test_bad_payload_and_versions(make: Factory) -> None:
    backend = await make()
    with pytest.raises(BackendError, match="bad sign payload") as info:
        await backend.sign(b"\x03\x01\x02")
    assert info.value.status == 502
    for version in (0, 1):
        with pytest.raises(NotSupported, match="proof-of-possession"):
            await backend.sign(attestation(7), version=version)


async def test_sign_timeout_is_unknown_outcome(
    make: Factory, gadget: FakeGadget, caplog: pytest.LogCaptureFixture
) -> None:
    backend = await make(sign_timeout=0.2)
    gadget.delays["sign_after_hwm"] = 1.0
    with pytest.raises(UnknownOutcome, match="unknown outcome") as info:
        await backend.sign(attestation(8))
    assert info.value.status == 502
    assert "unknown outcome" in caplog.text
    # The gadget did advance its mark: the same request is now stale there.
    gadget.delays.clear()
    await asyncio.sleep(1.0)
    with pytest.raises(DeviceHWMRefusal):
        await backend.sign(attestation(8))


# ---- PoP and device HWM -----------------------------------------------------------------------


async def test_prove_possession(make: Factory) -> None:
    backend = await make()
    assert await backend.prove_possession() == POP
    assert await backend.prove_possession(backend.public_key) == POP
    other = SecretKey.generate("bls12_381").public_key.b58
    with pytest.raises(NotSupported) as info:
        await backend.prove_possession(other)
    assert info.value.status == 403


async def test_device_hwm_and_raise(make: Factory, gadget: FakeGadget) -> None:
    backend = await make()
    await backend.sign(attestation(300, 2))
    assert await backend.device_hwm() == {
        "block": (0, 0),
        "preattestation": (0, 0),
        "attestation": (300, 2),
    }
    with pytest.raises(BackendError, match=r"refused to raise.*level must be greater"):
        await backend.raise_device_hwm(250)  # above block/preattestation, not attestation
    await backend.raise_device_hwm(400)
    assert await backend.device_hwm() == {
        k: (400, 0) for k in ("block", "preattestation", "attestation")
    }
    await backend.raise_device_hwm(399)  # raise-only: nothing to do
    assert gadget.keys["consensus"].marks["block"] == (400, 0)
    assert gadget.claims.get(1) is None  # IF1 released at once
    gadget.keys["consensus"].state = "locked"
    assert await backend.device_hwm() is None
    with pytest.raises(BackendError, match="locked"):
        await backend.raise_device_hwm(500)


# ---- connection life --------------------------------------------------------------------------


async def test_unplug_mid_request_then_reconnect(
    make: Factory, gadget: FakeGadget, tmp_path: Path
) -> None:
    backend = await make()
    await backend.sign(attestation(10))
    gadget.delays["sign_after_hwm"] = 1.0
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, gadget.unplug)
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        await backend.sign(attestation(11))
    assert info.value.status == 502
    assert time.monotonic() - started < 0.9  # failed at once, not after the timeout
    with pytest.raises(BackendUnavailable, match="disconnected") as unavailable:
        await backend.ensure_ready()
    assert unavailable.value.status == 503
    await asyncio.sleep(0.2)  # the watchdog keeps trying while the gadget is away
    with pytest.raises(BackendUnavailable):
        await backend.ensure_ready()
    gadget.delays.clear()
    gadget.replug(reboot=True)
    # After the reboot the key is not loaded: ready again at USB level, but it needs an unlock.
    deadline = time.monotonic() + 5
    while True:
        try:
            await backend.ensure_ready()
        except BackendUnavailable:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
            continue
        except BackendError as exc:
            assert "tezsign unlock consensus" in str(exc)
            break
        raise AssertionError("a rebooted gadget must report the key as locked")
    secret_file = tmp_path / "passphrase"
    secret_file.write_bytes(PASSPHRASE + b"\n")
    await backend.unlock(load_passphrase(secret_file))
    await backend.ensure_ready()
    with pytest.raises(DeviceHWMRefusal):  # the gadget advanced its mark before the unplug
        await backend.sign(attestation(11))
    sig = await backend.sign(attestation(12))
    assert verify(sig, attestation(12), backend.public_key)


async def test_unlock_with_wrong_passphrase(make: Factory, gadget: FakeGadget) -> None:
    backend = await make()
    gadget.keys["consensus"].state = "unloaded"
    with pytest.raises(BackendError, match="bad passphrase"):
        await backend.unlock(b"nope")


async def test_gadget_absent_at_start_then_plugged(make: Factory, gadget: FakeGadget) -> None:
    gadget.unplug()
    backend = await make(start=False)
    with pytest.raises(BackendUnavailable, match="no TezSign gadget"):
        await backend.start()
    gadget.replug(reboot=False)
    deadline = time.monotonic() + 5
    while True:
        try:
            await backend.start()
            break
        except BackendUnavailable:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    await backend.ensure_ready()


async def test_sign_interface_busy(make: Factory, gadget: FakeGadget) -> None:
    gadget.hold_interface(0)
    with pytest.raises(BackendUnavailable, match="busy"):
        await make()


async def test_watchdog_notices_signer_down(make: Factory, gadget: FakeGadget) -> None:
    backend = await make()
    gadget.ready = False
    with pytest.raises(BackendUnavailable):
        await until(lambda: not backend._connection().connected)
        await backend.ensure_ready()
    gadget.ready = True
    await ready_again(backend)
    assert await backend.sign(attestation(20))


async def test_key_replaced_on_gadget_disables_backend(make: Factory, gadget: FakeGadget) -> None:
    backend = await make()
    gadget.keys["consensus"].secret = SecretKey.generate("bls12_381")
    # The watchdog's periodic Status (every 0.2 s here) reveals the new tz4.
    deadline = time.monotonic() + 5
    with pytest.raises(BackendError, match="backend disabled"):
        while time.monotonic() < deadline:
            await backend.ensure_ready()
            await asyncio.sleep(0.02)
    with pytest.raises(BackendError, match="backend disabled"):
        await backend.sign(attestation(1))


# ---- threads and the event loop ---------------------------------------------------------------


async def test_loop_keeps_ticking_during_slow_sign(make: Factory, gadget: FakeGadget) -> None:
    backend = await make()
    gadget.delays["sign"] = 0.4
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await backend.sign(attestation(30))
    finally:
        task.cancel()
    assert ticks >= 15


async def test_no_usb_call_on_the_event_loop_thread(make: Factory, usb: FakeUsb) -> None:
    loop_thread = threading.current_thread()
    on_loop: list[str] = []
    usb.on_call = lambda name: (
        on_loop.append(name) if threading.current_thread() is loop_thread else None
    )
    backend = await make()
    await backend.ensure_ready()
    await backend.sign(attestation(40))
    await backend.device_hwm()
    await backend.raise_device_hwm(50)
    await backend.prove_possession()
    assert on_loop == []


async def test_one_request_at_a_time_per_interface(make: Factory, gadget: FakeGadget) -> None:
    consensus = await make("tezsign://*/consensus")
    companion = await make("tezsign://TZSG0001/companion")
    assert consensus._connection() is companion._connection()  # one handle holds IF0
    gadget.delays["sign"] = 0.1
    sigs = await asyncio.gather(
        consensus.sign(attestation(60)),
        companion.sign(attestation(60)),
        consensus.sign(attestation(61)),
    )
    assert verify(sigs[1], attestation(60), companion.public_key)
    assert gadget.max_active[0] == 1


# ---- discovery and the module-level hook ------------------------------------------------------


async def test_list_devices_while_the_guard_holds_if0(make: Factory, usb: FakeUsb) -> None:
    backend = await make()
    await backend.sign(attestation(70))
    (info,) = await asyncio.to_thread(list_devices, usb, read_timeout_ms=20)
    assert info["serial"] == "TZSG0001" and info["version"] == "v0.0.0-fake"
    keys = {k["key_id"]: k for k in info["keys"]}
    assert keys["consensus"]["tz4"] == TZ4
    assert keys["consensus"]["lock_state"] == "unlocked"
    assert keys["consensus"]["device_hwm"]["attestation"] == {"level": 70, "round": 0}
    assert info["error"] is None


async def test_list_devices_reports_locked_keys_and_busy(gadget: FakeGadget, usb: FakeUsb) -> None:
    gadget.keys["companion"].state = "locked"
    (info,) = await asyncio.to_thread(list_devices, usb, read_timeout_ms=20)
    keys = {k["key_id"]: k for k in info["keys"]}
    assert keys["companion"]["lock_state"] == "locked" and keys["companion"]["device_hwm"] is None
    gadget.hold_interface(0)
    gadget.hold_interface(1)
    (busy,) = await asyncio.to_thread(list_devices, usb, read_timeout_ms=20)
    assert "busy" in busy["error"] and busy["keys"] == []


async def test_default_usb_backend_hook(usb: FakeUsb) -> None:
    set_default_usb_backend(usb)
    backend = TezSignBackend("tezsign://*/consensus", connection_options=dict(FAST))
    try:
        await backend.start()
        assert backend.pkh == TZ4
    finally:
        set_default_usb_backend(None)
        await backend.close()
