"""LedgerBackend against the fake app over HID and TCP: vectors, signatures, status words,
unplug / timeout / reconnect, and what the backend never sends."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
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
from drivers.ledger import LedgerBackend, apdu
from signer_guard import b58, keys
from tests.fakes.ledger_app import FakeBakingApp, FakeHidModule
from tests.fakes.ledger_keys import bip39_seed
from tests.fakes.ledger_record import attestation, block
from tests.fakes.ledger_rig import CURVE_NAMES, PATH, Rig, make_rig, set_up, wait_ready

VECTORS = Path(__file__).resolve().parents[1] / "fixtures" / "vectors" / "keys.json"
NEVER_SENT = {apdu.Ins.SETUP, apdu.Ins.RESET, apdu.Ins.AUTHORIZE_BAKING, apdu.Ins.DEAUTHORIZE}


def zebra_vector() -> dict[str, Any]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text())
    (vector,) = [v for v in vectors if v["name"] == "ledger_zebra_ed25519_attestation_l101"]
    return vector


@pytest.fixture(params=["hid", "tcp"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    rig = make_rig(request.param)
    try:
        yield rig
    finally:
        await rig.close()


def sent_ins(app: FakeBakingApp) -> set[int]:
    return {request[1] for request, _ in app.exchanges}


# --- signing ---------------------------------------------------------------------------------


async def test_zebra_vector_is_reproduced_byte_for_byte(rig: Rig) -> None:
    vector = zebra_vector()
    set_up(rig.app)
    backend = rig.backend()
    await backend.start()
    assert backend.backend_type == "ledger"
    assert (backend.public_key, backend.pkh) == (vector["public_key"], vector["pkh"])
    signature = await backend.sign(bytes.fromhex(vector["message_hex"]))
    assert signature == vector["signature"]
    assert b58.decode("edsig", signature).hex() == vector["signature_hex"]
    assert not sent_ins(rig.app) & NEVER_SENT
    if rig.hid is not None:
        assert threading.main_thread().name not in rig.hid.io_threads
        assert rig.endpoint is not None and rig.endpoint.framing_errors == []


@pytest.mark.parametrize("curve", [1, 2])
async def test_ecdsa_signatures_verify_and_are_low_s(rig: Rig, curve: int) -> None:
    set_up(rig.app, curve=curve)
    backend = rig.backend(f"{CURVE_NAMES[curve]}/0h/0h")
    await backend.start()
    expected = rig.app.secret_key(curve, PATH).public_key
    assert backend.public_key == expected.b58
    key_curve: keys.Curve = "secp256k1" if curve == 1 else "p256"
    order = apdu.SECP256K1_N if curve == 1 else apdu.P256_N
    for level in range(101, 107):
        message = attestation(level, 0)
        signature = await backend.sign(message)
        assert signature.startswith("spsig1" if curve == 1 else "p2sig")
        sig_curve, raw = keys.parse_signature(signature)
        assert sig_curve == key_curve
        assert int.from_bytes(raw[32:], "big") <= order // 2
        assert expected.verify(raw, message)
    # the fake sent high-S DER with the parity bit set at least once: normalisation was needed
    answers = [resp for req, resp in rig.app.exchanges if req[1] == 0x0F and req[2] == 0x81]
    ders = [a[32:-2] for a in answers]
    assert any(d[0] == 0x31 for d in ders)
    assert any(apdu.parse_der_signature(b"\x30" + d[1:])[1] > order // 2 for d in ders)


async def test_bip25519_key_signs_and_verifies(rig: Rig) -> None:
    set_up(rig.app, curve=3)
    backend = rig.backend("bip25519/0h/0h")
    await backend.start()
    assert backend.pkh.startswith("tz1")
    message = block(101, 0)
    _, raw = keys.parse_signature(await backend.sign(message))
    assert keys.PublicKey.from_b58(backend.public_key).verify(raw, message)


async def test_falls_back_to_sign_when_sign_with_hash_is_unknown(rig: Rig) -> None:
    rig.app.supports_sign_with_hash = False
    set_up(rig.app)
    backend = rig.backend()
    await backend.start()
    vector = zebra_vector()
    assert await backend.sign(bytes.fromhex(vector["message_hex"])) == vector["signature"]
    second = attestation(101, 1)
    await backend.sign(second)
    assert rig.app.exchanges[-1][0] == apdu.sign_message(second, with_hash=False)


async def test_request_longer_than_235_bytes_is_refused_before_the_device(rig: Rig) -> None:
    set_up(rig.app)
    backend = rig.backend()
    await backend.start()
    before = len(rig.app.exchanges)
    with pytest.raises(BackendError, match=r"^ledger: request longer than 235 bytes$") as info:
        await backend.sign(b"\x11" + bytes(235))
    assert info.value.status == 502
    assert len(rig.app.exchanges) == before


async def test_prove_possession_is_not_supported(rig: Rig) -> None:
    backend = rig.backend()
    with pytest.raises(NotSupported, match=r"^Request to prove possession is not allowed\.$"):
        await backend.prove_possession()


async def test_device_hwm_and_reset_for_failover(rig: Rig) -> None:
    set_up(rig.app, level=100)
    backend = rig.backend()
    await backend.start()
    await backend.sign(attestation(101, 3))
    assert await backend.device_hwm() == {
        "block": (101, 3),
        "preattestation": (101, 3),
        "attestation": (101, 3),
    }
    await backend.reset_hwm(111)
    hwm = await backend.all_hwm()
    assert (hwm.main_level, hwm.main_round, hwm.test_level, hwm.test_round) == (111, 0, 111, 0)
    assert rig.app.prompts[-1] == "reset 111"
    assert rig.app.exchanges[-2][0].hex() == "80060000040000006f"


async def test_rejected_reset_names_the_rejection(rig: Rig) -> None:
    set_up(rig.app)
    rig.app.prompt_policy = lambda what: not what.startswith("reset")
    backend = rig.backend()
    await backend.start()
    with pytest.raises(BackendError, match=r"rejected on the device \(0x6985\)") as info:
        await backend.reset_hwm(200)
    assert info.value.status == 502
    await backend.ensure_ready()  # a rejection does not make the device unusable
    assert rig.app.main.level == 100


async def test_reset_waits_for_the_button(rig: Rig) -> None:
    set_up(rig.app)
    rig.app.button_delay = 0.3
    backend = rig.backend(prompt_timeout=0.1)
    await backend.start()
    with pytest.raises(UnknownOutcome, match="RESET not confirmed in time"):
        await backend.reset_hwm(200)
    await wait_ready(backend)
    backend2 = rig.backend(prompt_timeout=2.0)
    await backend2.start()
    await backend2.reset_hwm(210)
    assert (await backend2.all_hwm()).main_level == 210


# --- start-up checks -------------------------------------------------------------------------


def _nothing(app: FakeBakingApp) -> None:
    pass


def _other_key(app: FakeBakingApp) -> None:
    set_up(app, curve=1)


def _wallet_app(app: FakeBakingApp) -> None:
    app.version = (0, 3, 0, 0)


def _legacy_app(app: FakeBakingApp) -> None:
    set_up(app)
    app.legacy_hwm = True


def _locked(app: FakeBakingApp) -> None:
    set_up(app)
    app.locked = True


def _dashboard(app: FakeBakingApp) -> None:
    set_up(app)
    app.app_open = False


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (_nothing, "no baking key authorized on the device"),
        (_other_key, "authorized baking key is secp256k1 m/44'/1729'/0'/0', not ed25519"),
        (_wallet_app, "not Tezos Baking; open the Tezos Baking app"),
        (_legacy_app, "too old"),
        (_locked, r"device locked; unlock it with the PIN .*\(0x5515\)"),
        (_dashboard, r"Tezos Baking app not open; open it .*\(0x6E01\)"),
    ],
)
async def test_start_up_checks(
    rig: Rig, prepare: Callable[[FakeBakingApp], None], message: str
) -> None:
    prepare(rig.app)
    backend = rig.backend()
    with pytest.raises(BackendError, match=message) as info:
        await backend.start()
    assert info.value.status == 502
    with pytest.raises(BackendUnavailable):
        await backend.ensure_ready()


async def test_start_without_device() -> None:
    backend = LedgerBackend("ledger://*/ed25519/0h/0h", hid_module=FakeHidModule())
    try:
        with pytest.raises(BackendUnavailable, match="no Ledger device found"):
            await backend.start()
    finally:
        await backend.close()


async def test_device_id_selects_among_devices() -> None:
    hid = FakeHidModule()
    first, second = FakeBakingApp(), FakeBakingApp(seed=bip39_seed("abandon " * 11 + "about"))
    set_up(first)
    set_up(second)
    hid.add(first, path=b"a")
    hid.add(second, path=b"b")
    wanted = second.secret_key(0, apdu.TEZOS_ROOT).pkh
    backend = LedgerBackend(f"ledger://{wanted}/ed25519/0h/0h", hid_module=hid)
    missing = LedgerBackend(
        "ledger://tz1dyX3B1CFYa2DfdFLyPtiJCfQRUgPVME6E/ed25519/0h/0h", hid_module=hid
    )
    try:
        await backend.start()
        assert backend.pkh == second.secret_key(0, PATH).pkh
        with pytest.raises(BackendError, match="no device with id tz1dyX3B1"):
            await missing.start()
    finally:
        await backend.close()
        await missing.close()


async def test_hid_module_hook_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from drivers.ledger import backend as backend_module

    hid = FakeHidModule()
    app = FakeBakingApp()
    set_up(app)
    hid.add(app)
    monkeypatch.setattr(backend_module, "HID_MODULE", hid)
    backend = LedgerBackend("ledger://*/ed25519/0h/0h")
    try:
        await backend.start()
        assert backend.pkh == zebra_vector()["pkh"]
    finally:
        await backend.close()


# --- status words ----------------------------------------------------------------------------


class InjectSW:
    """Wraps the app: the SIGN message APDU answers `sw` instead."""

    def __init__(self, app: FakeBakingApp, sw: int) -> None:
        self.app, self.sw = app, sw

    def handle(self, request: bytes) -> tuple[bytes, float]:
        if request[1] in (0x04, 0x0F) and request[2] == 0x81:
            return self.sw.to_bytes(2, "big"), 0.0
        return self.app.handle(request)


@pytest.mark.parametrize(
    ("sw", "error", "message", "device_state"),
    [
        (0x6A80, DeviceHWMRefusal, "device high watermark refusal: Ledger 0x6A80", False),
        (0x6985, BackendError, "ledger: rejected on the device (0x6985)", False),
        (0x6982, BackendError, "ledger: key not authorized for baking or device locked", True),
        (0x5515, BackendError, "ledger: device locked; unlock it with the PIN", True),
        (0x6E00, BackendError, "ledger: Tezos Baking app not open; open it", True),
        (0x6E01, BackendError, "ledger: Tezos Baking app not open; open it", True),
        (0x6D00, BackendError, "ledger: instruction not supported by this app", False),
        (0x9405, BackendError, "ledger: the app could not parse the request", False),
        (0x917E, BackendError, "ledger: request too long or no key selected", False),
        (0x9200, BackendError, "ledger: device memory error (0x9200)", False),
    ],
)
async def test_status_word_to_error(
    sw: int, error: type[BackendError], message: str, device_state: bool
) -> None:
    app = FakeBakingApp()
    set_up(app)
    hid = FakeHidModule()
    hid.add(InjectSW(app, sw))
    backend = LedgerBackend("ledger://*/ed25519/0h/0h", hid_module=hid, reconnect_interval=60)
    try:
        await backend.start()
        with pytest.raises(BackendError) as info:
            await backend.sign(attestation(101, 0))
        assert type(info.value) is error
        assert str(info.value).startswith(message)
        assert f"0x{sw:04X}" in str(info.value)
        assert info.value.status == (409 if sw == 0x6A80 else 502)
        if device_state:
            with pytest.raises(BackendUnavailable, match=message.split(";")[0]):
                await backend.ensure_ready()
        else:
            await backend.ensure_ready()
    finally:
        await backend.close()


async def test_locked_device_then_unlocked(rig: Rig) -> None:
    set_up(rig.app)
    backend = rig.backend()
    await backend.start()
    rig.app.locked = True
    with pytest.raises(BackendError, match=r"device locked.*\(0x5515\)"):
        await backend.sign(attestation(101, 0))
    with pytest.raises(BackendUnavailable, match="device locked"):
        await backend.ensure_ready()
    rig.app.locked = False
    await wait_ready(backend)
    await backend.sign(attestation(101, 0))


async def test_app_closed_then_reopened(rig: Rig) -> None:
    set_up(rig.app)
    backend = rig.backend()
    await backend.start()
    rig.app.quit_app()
    with pytest.raises(BackendError, match="Tezos Baking app not open"):
        await backend.sign(attestation(101, 0))
    with pytest.raises(BackendUnavailable, match="app not open"):
        await backend.ensure_ready()
    rig.app.app_open = True
    await wait_ready(backend)
    await backend.sign(attestation(101, 0))


async def test_key_deauthorized_after_start(rig: Rig) -> None:
    set_up(rig.app)
    backend = rig.backend()
    await backend.start()
    rig.app.exchange(apdu.deauthorize())
    with pytest.raises(BackendError, match=r"key not authorized for baking.*\(0x6982\)"):
        await backend.sign(attestation(101, 0))
    await asyncio.sleep(0.2)
    with pytest.raises(BackendUnavailable, match="no baking key authorized"):
        await backend.ensure_ready()


# --- unplug, timeouts, reconnection ------------------------------------------------------------


async def test_unplug_mid_request_then_reconnect(rig: Rig) -> None:
    set_up(rig.app)
    backend = rig.backend()
    await backend.start()
    rig.app.sign_delay = 0.5
    loop = asyncio.get_running_loop()
    loop.call_later(0.15, rig.unplug)
    with pytest.raises(BackendError) as info:
        await backend.sign(attestation(101, 0))
    assert info.value.status == 502
    assert "may have been signed" in str(info.value)
    with pytest.raises(BackendUnavailable, match="reconnecting to the Ledger"):
        await backend.ensure_ready()
    await asyncio.sleep(0.2)
    with pytest.raises(BackendUnavailable):  # still unplugged: still 503
        await backend.sign(attestation(102, 0))
    rig.app.sign_delay = 0.0
    rig.replug()
    await wait_ready(backend)
    signature = await backend.sign(attestation(103, 0))
    assert keys.PublicKey.from_b58(backend.public_key).verify(
        keys.parse_signature(signature)[1], attestation(103, 0)
    )
    assert not sent_ins(rig.app) & NEVER_SENT


async def test_timeout_is_an_unknown_outcome(rig: Rig) -> None:
    set_up(rig.app)
    backend = rig.backend(sign_timeout=0.2)
    await backend.start()
    rig.app.sign_delay = 1.0
    with pytest.raises(UnknownOutcome, match="may have been signed"):
        await backend.sign(attestation(101, 0))
    with pytest.raises(BackendUnavailable):
        await backend.ensure_ready()
    rig.app.sign_delay = 0.0
    await wait_ready(backend)
    # the app did sign (101, 0): the guard never re-sends it; the next level works
    with pytest.raises(DeviceHWMRefusal):
        await backend.sign(attestation(101, 0))
    await backend.sign(attestation(102, 0))


async def test_other_key_after_reconnect_disables_the_backend(rig: Rig) -> None:
    set_up(rig.app)
    backend = rig.backend()
    await backend.start()
    rig.unplug()
    with pytest.raises(BackendError):
        await backend.sign(attestation(101, 0))
    rig.app.seed = bip39_seed("abandon " * 11 + "about")
    rig.replug()
    await asyncio.sleep(0.3)
    with pytest.raises(BackendUnavailable, match="another device or seed"):
        await backend.ensure_ready()
    assert backend.pkh == zebra_vector()["pkh"]


async def test_close_stops_reconnecting(rig: Rig) -> None:
    set_up(rig.app)
    backend = rig.backend()
    await backend.start()
    await backend.close()
    with pytest.raises(BackendUnavailable):
        await backend.ensure_ready()


async def test_6a80_on_the_path_apdu_is_not_a_hwm_refusal() -> None:
    app = FakeBakingApp()
    set_up(app)

    class RefusePath:
        def handle(self, request: bytes) -> tuple[bytes, float]:
            if request[1] == 0x0F and request[2] == 0x00:
                return b"\x6a\x80", 0.0
            return app.handle(request)

    hid = FakeHidModule()
    hid.add(RefusePath())
    backend = LedgerBackend("ledger://*/ed25519/0h/0h", hid_module=hid)
    try:
        await backend.start()
        with pytest.raises(BackendError) as info:
            await backend.sign(attestation(101, 0))
        assert type(info.value) is BackendError
        assert str(info.value) == (
            "ledger: refused: device high watermark, or an invalid level, path or message (0x6A80)"
        )
    finally:
        await backend.close()


def test_bad_uri_is_a_value_error_naming_the_problem() -> None:
    with pytest.raises(ValueError, match="animal ids"):
        LedgerBackend("ledger://happy-dog-red-cat/ed25519/0h/0h")
