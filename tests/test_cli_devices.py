"""`signer-guard devices` and `unlock` against the fake gadget and the fake Ledger (HID)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.ledger import discover as ledger_discover
from drivers.tezsign import set_default_usb_backend
from signer_guard import keys
from signer_guard.cli import main
from tests.fakes.ledger_app import FakeBakingApp, FakeHidModule
from tests.fakes.ledger_rig import set_up
from tests.fakes.tezsign_gadget import FakeGadget, FakeUsb

PASSPHRASE = b"correct horse battery staple"


@pytest.fixture
def gadget() -> Iterator[FakeGadget]:
    gadget = FakeGadget(
        {
            "consensus": keys.SecretKey.generate("bls12_381"),
            "companion": keys.SecretKey.generate("bls12_381"),
        },
        serial="TZSG0042",
        passphrase=PASSPHRASE,
        locked=["companion"],
    )
    set_default_usb_backend(FakeUsb(gadget))
    yield gadget
    set_default_usb_backend(None)


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> FakeBakingApp:
    app = FakeBakingApp()
    set_up(app, curve=0, level=1234)
    hid = FakeHidModule()
    hid.add(app)
    monkeypatch.setattr(ledger_discover, "default_hid_module", lambda: hid)
    return app


def test_devices_json_lists_both(
    gadget: FakeGadget, ledger: FakeBakingApp, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["devices", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    tezsign = next(d for d in out if d["type"] == "tezsign")
    assert tezsign["serial"] == "TZSG0042" and tezsign["version"]
    by_id = {k["key_id"]: k for k in tezsign["keys"]}
    assert by_id["consensus"]["lock_state"] == "unlocked"
    assert by_id["consensus"]["device_hwm"] is not None
    assert by_id["companion"]["lock_state"] == "locked"
    assert by_id["companion"]["device_hwm"] is None
    led = next(d for d in out if d["type"] == "ledger")
    assert led["hwm"]["main"]["level"] == 1234
    assert led["authorized_key"]["curve"] == "ed25519"


def test_devices_text(
    gadget: FakeGadget, ledger: FakeBakingApp, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["devices"]) == 0
    text = capsys.readouterr().out
    assert "tezsign" in text and "TZSG0042" in text and "locked" in text
    assert "ledger" in text


def test_unlock_reads_the_passphrase_from_a_file_never_argv(
    gadget: FakeGadget,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TEZSIGN_PASSPHRASE", raising=False)
    assert main(["unlock", "companion"]) == 2  # no file, no environment: refused
    secret = tmp_path / "pass"
    secret.write_bytes(PASSPHRASE + b"\n")
    assert main(["unlock", "companion", "--passphrase-file", str(secret)]) == 0
    assert gadget.keys["companion"].state == "unlocked"
    assert PASSPHRASE.decode() not in capsys.readouterr().out


def _store_with(tmp_path: Path, pkh: str, level: int) -> str:
    store = str(tmp_path / "store.sqlite")
    assert (
        main(
            [
                "hwm",
                "set",
                "--store",
                store,
                "--chain",
                "NetXdQprcVkpaWU",
                "--pkh",
                pkh,
                "--kind",
                "attestation",
                "--level",
                str(level),
            ]
        )
        == 0
    )
    return store


def test_raise_device_hwm_tezsign_to_the_store_level(
    gadget: FakeGadget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = gadget.keys["consensus"]
    store = _store_with(tmp_path, key.tz4, 5000)
    assert main(["raise-device-hwm", "--store", store, "--key", "tezsign://*/consensus"]) == 0
    assert {kind: mark[0] for kind, mark in key.marks.items()} == {
        "block": 5000,
        "preattestation": 5000,
        "attestation": 5000,
    }
    assert "raised" in capsys.readouterr().out
    # already there: nothing to do; a locked key is reported, not raised
    assert main(["raise-device-hwm", "--store", store, "--key", "tezsign://*/consensus"]) == 0
    assert (
        main(
            [
                "raise-device-hwm",
                "--store",
                store,
                "--key",
                "tezsign://*/companion",
                "--level",
                "6000",
            ]
        )
        == 1
    )


def test_raise_device_hwm_ledger_resets_with_confirmation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from drivers.ledger import backend as ledger_backend

    app = FakeBakingApp()
    set_up(app, curve=0, level=100)
    hid = FakeHidModule()
    hid.add(app)
    monkeypatch.setattr(ledger_backend, "HID_MODULE", hid)
    pkh = app.secret_key(0, (44 | 2**31, 1729 | 2**31, 2**31, 2**31)).public_key.pkh
    store = _store_with(tmp_path, pkh, 900)
    assert main(["raise-device-hwm", "--store", store, "--key", "ledger://*/ed25519/0h/0h"]) == 0
    assert app.main.level == 900
    assert "waiting for confirmation on the Ledger" in capsys.readouterr().out
    app.prompt_policy = lambda _what: False  # the operator rejects on the device
    assert (
        main(
            [
                "raise-device-hwm",
                "--store",
                store,
                "--key",
                "ledger://*/ed25519/0h/0h",
                "--level",
                "950",
            ]
        )
        == 1
    )
    assert app.main.level == 900
