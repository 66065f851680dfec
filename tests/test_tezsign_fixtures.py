"""Recorded TezSign exchanges (fixtures/tezsign/*.json, frames as hex): the driver must produce
the recorded host frames byte for byte and read the recorded gadget frames to the same answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from drivers.tezsign import frames
from drivers.tezsign import messages as M
from drivers.tezsign.errors import DeviceError
from signer_guard.keys import PublicKey, parse_signature, signature_b58
from tests.fakes.record_tezsign_fixtures import record

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tezsign"
FILES = sorted(FIXTURES.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def host_payload(request: dict[str, Any]) -> bytes:
    kind = request["type"]
    if kind == "version":
        return M.version_request()
    if kind == "status":
        return M.status_request()
    if kind == "sign":
        return M.sign_request(request["tz4"], bytes.fromhex(request["message"]))
    if kind == "set_level":
        return M.set_level_request(request["key_id"], request["level"])
    if kind == "lock":
        return M.lock_request(request["key_ids"])
    if kind == "unlock":
        return M.unlock_request(request["key_ids"], bytes.fromhex(request["passphrase"]))
    raise AssertionError(f"unknown request type {kind}")


def read_answer(kind: str, payload: bytes) -> Any:
    try:
        if kind == "version":
            info = M.parse_version(payload)
            return {"version": info.version, "build_date": info.build_date}
        if kind == "status":
            return [
                {
                    "key_id": k.key_id,
                    "lock_state": k.lock_state,
                    "tz4": k.tz4,
                    "bl_pubkey": k.bl_pubkey,
                    "pop": k.pop,
                    "marks": {kind: list(mark) for kind, mark in k.marks.items()},
                }
                for k in M.parse_status(payload)
            ]
        if kind == "sign":
            return {"signature": signature_b58("bls12_381", M.parse_sign(payload))}
        if kind == "set_level":
            return {"ok": M.parse_ok(payload)}
        if kind == "lock" or kind == "unlock":
            return [
                {"key_id": r.key_id, "ok": r.ok, "error": r.error}
                for r in M.parse_per_key(payload, "lock" if kind == "lock" else "unlock")
            ]
    except DeviceError as exc:
        return {"error": {"code": exc.code, "message": exc.message}}
    raise AssertionError(f"unknown request type {kind}")


def test_fixtures_are_present() -> None:
    names = {p.stem for p in FILES}
    assert {"version_if0", "status_if0", "sign_attestation_l1331_if0"} <= names
    assert len(FILES) >= 8


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_driver_produces_the_host_frames(path: Path) -> None:
    exchange = load(path)
    msg_id = bytes.fromhex(exchange["id"])
    expected = frames.encode(frames.request(msg_id, host_payload(exchange["request"]))).hex()
    # Retries re-send the very same frame.
    assert exchange["host_frames"] and set(exchange["host_frames"]) == {expected}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_driver_reads_the_gadget_frames(path: Path) -> None:
    exchange = load(path)
    msg_id = bytes.fromhex(exchange["id"])
    stream = b"".join(bytes.fromhex(h) for h in exchange["gadget_frames"])
    decoded = frames.FrameDecoder().feed(stream)
    types = [f.type for f in decoded]
    assert types[-1] == frames.FrameType.RESPONSE
    assert frames.FrameType.ACCEPT in types
    (response,) = [f for f in decoded if f.type == frames.FrameType.RESPONSE]
    assert response.msg_id == msg_id
    assert read_answer(exchange["request"]["type"], response.payload) == exchange["expect"]


def test_recorded_signatures_verify() -> None:
    for path in FILES:
        exchange = load(path)
        signature = (
            exchange["expect"].get("signature") if isinstance(exchange["expect"], dict) else None
        )
        if signature is None:
            continue
        status = load(FIXTURES / "status_if0.json")["expect"]
        key = next(k for k in status if k["tz4"] == exchange["request"]["tz4"])
        _, raw = parse_signature(signature)
        message = bytes.fromhex(exchange["request"]["message"])
        assert PublicKey.from_b58(key["bl_pubkey"]).verify(raw, message), path.stem


def test_expected_error_codes() -> None:
    codes = {
        p.stem: load(p)["expect"].get("error", {}).get("code")
        for p in FILES
        if isinstance(load(p)["expect"], dict)
    }
    assert codes["sign_repeat_stale_if0"] == 33
    assert codes["sign_locked_if0"] == 32
    assert codes["set_level_on_if0_wrong_interface"] == 98


def test_fixtures_are_reproducible() -> None:
    """Re-recording against the fake gives the same bytes (deterministic ids and BLS)."""
    fresh = {e["name"]: e for e in record()}
    for path in FILES:
        assert fresh[path.stem] == load(path), path.stem
