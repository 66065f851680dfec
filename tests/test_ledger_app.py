"""Every Tezos Baking app APDU against the fake app over HID and TCP; the app's HWM truth table
through the driver; recorded fixtures replayed byte for byte; device discovery."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from drivers.base import BackendError, DeviceHWMRefusal
from drivers.ledger import apdu
from drivers.ledger.apdu import Curve, StatusWordError
from drivers.ledger.discover import format_device, list_devices
from signer_guard import keys
from tests.fakes.ledger_app import MAINNET, FakeBakingApp, FakeHidModule
from tests.fakes.ledger_record import (
    ReplayApp,
    attestation,
    block,
    exchanges_of,
    load,
    record_session,
)
from tests.fakes.ledger_rig import PATH, Rig, make_rig, set_up

OTHER_CHAIN = bytes.fromhex("01020304")


@pytest.fixture(params=["hid", "tcp"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    rig = make_rig(request.param)
    try:
        yield rig
    finally:
        await rig.close()


# --- every APDU through the client -----------------------------------------------------------


async def test_every_apdu_over_the_transport(rig: Rig) -> None:
    app = rig.app
    client = rig.client()
    try:
        version = client.version()
        assert (version.is_baking, version.major, version.minor, version.patch) == (True, 2, 5, 1)
        assert client.git() == "fake0000"
        root = app.secret_key(0, apdu.TEZOS_ROOT)
        assert client.device_id() == root.pkh
        key = app.secret_key(0, PATH)
        assert client.get_public_key(Curve.ED25519, PATH) == key.public_key
        assert client.prompt_public_key(Curve.ED25519, PATH) == key.public_key
        assert client.query_auth_key_with_curve().authorized is False
        assert client.exchange(apdu.query_auth_key()) == b"\x00"

        p256 = app.secret_key(2, PATH)
        assert client.authorize_baking(Curve.P256, PATH) == p256.public_key
        auth = client.query_auth_key_with_curve()
        assert (auth.curve, auth.path) == (Curve.P256, PATH)
        assert client.exchange(apdu.query_auth_key()) == apdu.encode_path(PATH)

        assert client.setup(Curve.ED25519, PATH, MAINNET, 100, 7) == key.public_key
        hwm = client.query_all_hwm()
        assert (hwm.main_level, hwm.main_round, hwm.test_level, hwm.test_round) == (100, 0, 7, 0)
        assert hwm.main_chain_id == MAINNET

        message = attestation(101, 2)
        signature = client.sign(Curve.ED25519, PATH, message)
        assert key.public_key.verify(signature, message)
        assert client.query_main_hwm() == (101, 2)

        client.reset(110)
        hwm = client.query_all_hwm()
        assert (hwm.main_level, hwm.main_round, hwm.test_level, hwm.test_round) == (110, 0, 110, 0)

        client.deauthorize()
        assert client.query_auth_key_with_curve().authorized is False
        with pytest.raises(StatusWordError) as info:
            client.sign(Curve.ED25519, PATH, attestation(111, 0))
        assert info.value.sw == 0x6982
    finally:
        client.close()
    assert app.prompts == ["public key", "authorize baking", "setup", "reset 110"]
    if rig.hid is not None:
        assert rig.endpoint is not None and rig.endpoint.framing_errors == []


async def test_worked_example_apdus_and_answers(rig: Rig) -> None:
    """ledger.md §14, byte for byte, over the transport."""
    client = rig.client()
    try:
        setup = bytes.fromhex(
            "800a00001d7a06a7700000006400000000048000002c800006c18000000080000000"
        )
        pk = client.exchange(setup)
        assert pk[:2] == bytes.fromhex("2102") and len(pk) == 34
        assert client.exchange(bytes.fromhex("800b000000")).hex() == (
            "000000640000000000000000000000007a06a770"
        )
        assert client.exchange(bytes.fromhex("8004000011048000002c800006c18000000080000000")) == b""
        message = attestation(101, 0)
        assert client.exchange(bytes.fromhex("8004810050") + message).hex() == (
            "1c485f709b2d75c6b25778a7bc4f0d317d9d18b6245bdc65e1603f714fbad9a69bdb9987fe27c4178bf"
            "dcac08565bee182a5e58dafb63b6b7b29ace37fc14405"
        )
        assert client.exchange(apdu.reset(110)) == b""
    finally:
        client.close()


@pytest.mark.parametrize(
    ("request_hex", "sw"),
    [
        ("8100000000", 0x6E00),  # CLA
        ("8000010000", 0x6B00),  # P1 of VERSION
        ("800b000001", 0x6C00),  # Lc ≠ data length
        ("8005000000", 0x6D00),  # SIGN_UNSAFE is not dispatched
        ("8004810003110203", 0x917E),  # data without a selected path
    ],
)
def test_app_checks(request_hex: str, sw: int) -> None:
    response = FakeBakingApp().exchange(bytes.fromhex(request_hex))
    assert int.from_bytes(response[-2:], "big") == sw


def test_single_data_packet_rule() -> None:
    app = FakeBakingApp()
    set_up(app)
    select = apdu.sign_path(Curve.ED25519, PATH)
    assert app.exchange(select) == b"\x90\x00"
    assert app.exchange(bytes([0x80, 0x0F, 0x01, 0x00, 3]) + b"\x13\x00\x00") == b"\x90\x00"
    assert app.exchange(bytes([0x80, 0x0F, 0x81, 0x00, 3]) + b"\x13\x00\x00") == b"\x94\x05"


# --- the app's own HWM through the driver ----------------------------------------------------

ATT, PRE, BLK = "att", "pre", "block"


def _request(kind: str, level: int = 101, round_: int = 0, chain: bytes = MAINNET) -> bytes:
    if kind == BLK:
        return block(level, round_, chain=chain)
    return attestation(level, round_, magic=0x13 if kind == ATT else 0x12, chain=chain)


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        # watermark-rules.md §5.1, Ledger truth table: same (level, round)
        ((PRE, PRE), (True, False)),
        ((PRE, BLK), (True, False)),
        ((PRE, ATT), (True, True)),
        ((ATT, PRE), (True, False)),
        ((ATT, ATT), (True, False)),
        ((ATT, BLK), (True, False)),
        ((BLK, PRE), (True, True)),
        ((BLK, ATT), (True, True)),
        ((BLK, BLK), (True, False)),
        ((BLK, PRE, ATT), (True, True, True)),
        ((PRE, ATT, BLK), (True, True, False)),
    ],
)
async def test_ledger_truth_table(sequence: tuple[str, ...], expected: tuple[bool, ...]) -> None:
    rig = make_rig("hid")
    set_up(rig.app)
    try:
        backend = rig.backend()
        await backend.start()
        outcome = []
        for kind in sequence:
            try:
                await backend.sign(_request(kind))
                outcome.append(True)
            except DeviceHWMRefusal as exc:
                assert str(exc) == "device high watermark refusal: Ledger 0x6A80"
                assert exc.status == 409
                outcome.append(False)
        assert tuple(outcome) == expected
    finally:
        await rig.close()


async def test_one_mark_for_all_kinds_and_the_worked_example_continuation(rig: Rig) -> None:
    set_up(rig.app)
    backend = rig.backend()
    await backend.start()
    await backend.sign(_request(ATT, 101, 0))
    for refused in (_request(ATT, 101, 0), _request(PRE, 101, 0), _request(BLK, 101, 0)):
        with pytest.raises(DeviceHWMRefusal):
            await backend.sign(refused)
    await backend.sign(_request(ATT, 101, 1))
    with pytest.raises(DeviceHWMRefusal):
        await backend.sign(_request(ATT, 100, 5))
    # after anything at (101, 1), every kind at (101, 0) is refused
    with pytest.raises(DeviceHWMRefusal):
        await backend.sign(_request(BLK, 101, 0))
    assert await backend.device_hwm() == {
        "block": (101, 1),
        "preattestation": (101, 1),
        "attestation": (101, 1),
    }


async def test_non_main_chains_share_the_test_slot() -> None:
    rig = make_rig("hid")
    set_up(rig.app, level=100)
    try:
        backend = rig.backend()
        await backend.start()
        await backend.sign(_request(ATT, 500, 0, chain=OTHER_CHAIN))
        await backend.sign(_request(ATT, 101, 0))  # main slot untouched
        with pytest.raises(DeviceHWMRefusal):  # a third chain shares the test slot
            await backend.sign(_request(ATT, 400, 0, chain=bytes.fromhex("0a0b0c0d")))
        hwm = await backend.all_hwm()
        assert (hwm.main_level, hwm.test_level) == (101, 500)
    finally:
        await rig.close()


async def test_reset_clears_had_attestation_but_not_had_preattestation() -> None:
    rig = make_rig("hid")
    set_up(rig.app)
    try:
        backend = rig.backend()
        await backend.start()
        await backend.sign(_request(PRE, 120, 0))
        await backend.reset_hwm(120)
        with pytest.raises(DeviceHWMRefusal):  # had_preattestation survived RESET
            await backend.sign(_request(PRE, 120, 0))
        await backend.sign(_request(ATT, 120, 0))  # had_attestation cleared
    finally:
        await rig.close()


def test_hwm_disabled_keeps_the_mark_in_ram_only() -> None:
    app = FakeBakingApp(hwm_disabled=True)
    set_up(app, level=100)
    app.exchange(apdu.sign_path(Curve.ED25519, PATH))
    assert app.exchange(apdu.sign_message(attestation(150, 0)))[-2:] == b"\x90\x00"
    app.power_cycle()
    assert app.main.level == 100  # back to the last value written to NVRAM
    app.exchange(apdu.sign_path(Curve.ED25519, PATH))
    app.exchange(apdu.sign_message(attestation(150, 0)))
    app.quit_app()
    app.power_cycle()
    assert app.main.level == 150


# --- recorded fixtures -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["zebra_ed25519_session", "zebra_secp256k1_session"])
async def test_driver_replays_the_recorded_session(name: str) -> None:
    fixture = load(name)
    replay = ReplayApp(exchanges_of(fixture))
    hid = FakeHidModule()
    hid.add(replay)
    rig = Rig("hid", FakeBakingApp(), hid=hid)
    try:
        backend = rig.backend(fixture["uri"].split("/", 3)[3])
        await backend.start()
        assert (backend.pkh, backend.public_key) == (fixture["pkh"], fixture["public_key"])
        for step in fixture["results"]:
            request = bytes.fromhex(step["request"])
            if "signature" in step:
                assert await backend.sign(request) == step["signature"]
            else:
                with pytest.raises(BackendError) as info:
                    await backend.sign(request)
                assert (str(info.value), info.value.status) == (step["error"], step["status"])
        hwm = await backend.device_hwm()
        assert {k: list(v) for k, v in hwm.items()} == fixture["device_hwm"]
    finally:
        await rig.close()
    assert replay.errors == []
    assert replay.position == len(replay.exchanges)


@pytest.mark.parametrize("name", ["zebra_ed25519_session", "zebra_secp256k1_session"])
async def test_fake_still_produces_the_recorded_session(name: str) -> None:
    assert json.loads(json.dumps(await record_session(name))) == load(name)


def test_recorded_zebra_signature_is_the_keys_json_vector() -> None:
    fixture = load("zebra_ed25519_session")
    assert fixture["results"][0]["signature"] == (
        "edsigtbWNbUYcs4rdfUmLjw5ZuJiBcx6Y1XivBJRqqdriCdaZjxBLByxKuVuT4EWmSjPfTvpn3cvT96sLFcoLwt51MjrEtgwVKh"
    )
    assert fixture["results"][1]["status"] == 409


# --- discovery -------------------------------------------------------------------------------


def test_list_devices_reports_app_key_and_hwm() -> None:
    hid = FakeHidModule()
    app = FakeBakingApp()
    set_up(app, curve=1, level=300)
    hid.add(app, path=b"dev-0", serial="A1")
    hid.add(FakeBakingApp(locked=True), path=b"dev-1", serial="B2")
    first, second = list_devices(hid)
    assert first["model"] == "Nano S Plus" and first["serial"] == "A1"
    assert (first["app"], first["app_version"]) == ("Tezos Baking", "2.5.1")
    assert first["device_id"] == app.secret_key(0, apdu.TEZOS_ROOT).pkh
    assert first["authorized_key"] == {
        "curve": "secp256k1",
        "path": "m/44'/1729'/0'/0'",
        "pkh": app.secret_key(1, PATH).pkh,
    }
    assert first["hwm"]["main"] == {"level": 300, "round": 0}
    assert "error" not in first
    assert second["error"] == (
        "ledger: VERSION: device locked; unlock it with the PIN and open the Tezos Baking app "
        "(0x5515)"
    )
    line = format_device(first)
    assert "Nano S Plus" in line and "baking key tz2" in line and "HWM main 300/0" in line


async def test_list_devices_over_tcp() -> None:
    rig = make_rig("tcp")
    try:
        assert rig.server is not None
        (report,) = list_devices(tcp=("127.0.0.1", rig.server.port))
    finally:
        await rig.close()
    assert report["model"] == "emulator" and report["authorized_key"] is None
    assert keys.pkh_curve(report["device_id"]) == "ed25519"
    assert report["hwm"]["main_chain_id"] == "00000000"
