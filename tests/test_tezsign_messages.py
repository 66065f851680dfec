"""TezSign messages (tezsign.md §6, §13), the .proto file, key URIs and passphrase sources."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drivers.tezsign import frames, schema
from drivers.tezsign import messages as M
from drivers.tezsign.errors import DeviceError, ProtocolError
from drivers.tezsign.passphrase import load_passphrase
from drivers.tezsign.uri import parse_uri

PROTO = Path(__file__).resolve().parents[1] / "drivers" / "tezsign" / "tezsign.proto"
TZ4 = "tz4AQcKaQU1sUzsmPTX43qnK4ddkCeeknJnf"
ATTESTATION = bytes.fromhex(
    "137a06a7700e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a829"
    "00000533000000000000000000000000000000000000000000000000000000000000000000000000"
)


def test_spec_status_payload() -> None:
    assert M.status_request().hex() == "1a00"


def test_spec_sign_request_payload_and_header() -> None:
    payload = M.sign_request(TZ4, ATTESTATION)
    assert len(ATTESTATION) == 78
    assert payload == b"\x22\x76\x0a\x24" + TZ4.encode() + b"\x12\x4e" + ATTESTATION
    header = frames.encode(frames.request(bytes(range(16)), payload))[: frames.HEADER_SIZE]
    assert header.hex() == "5601000102030405060708090a0b0c0d0e0f780000002f"


def test_spec_set_level_and_ok() -> None:
    assert M.set_level_request("consensus", 110).hex() == "4a0d0a09636f6e73656e737573186e"
    assert M.parse_ok(bytes.fromhex("7a020801")) is True


def test_spec_error_33() -> None:
    data = bytes.fromhex("820115082112117374616c65206c6576656c2f726f756e64")
    with pytest.raises(DeviceError) as info:
        M.parse_sign(data)
    assert (info.value.code, info.value.message) == (33, "stale level/round")


def test_spec_sign_response_prefix() -> None:
    data = M.response("sign", "SignResponse", signature=bytes(range(96)))
    assert data[:4].hex() == "22620a60"
    assert M.parse_sign(data) == bytes(range(96))


def test_wrong_answer_and_garbage_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="version"):
        M.parse_status(M.response("version", "VersionResponse", version="x"))
    with pytest.raises(ProtocolError):
        M.parse_status(b"\xff\xff\xff")
    with pytest.raises(ProtocolError, match="96"):
        M.parse_sign(M.response("sign", "SignResponse", signature=b"short"))


def test_status_fields_round_trip() -> None:
    key = schema.new(
        "KeyStatus",
        key_id="consensus",
        lock_state=2,
        tz4=TZ4,
        bl_pubkey="BLpk…",
        pop="BLsig…",
        last_block_level=10,
        last_preattestation_level=11,
        last_attestation_level=12,
        last_block_round=1,
        last_preattestation_round=2,
        last_attestation_round=3,
        state_corrupted=True,
    )
    (status,) = M.parse_status(M.response("status", "StatusResponse", keys=[key]))
    assert status.unlocked and status.state_corrupted
    assert status.marks == {"block": (10, 1), "preattestation": (11, 2), "attestation": (12, 3)}


def _proto_fields() -> dict[str, dict[int, tuple[str, str, bool]]]:
    """message -> {number: (name, type, repeated)} from tezsign.proto (a small parser)."""
    text = re.sub(r"//[^\n]*", "", PROTO.read_text())
    out: dict[str, dict[int, tuple[str, str, bool]]] = {}
    for name, body in re.findall(r"message\s+(\w+)\s*\{((?:[^{}]|\{[^{}]*\})*)\}", text):
        fields = re.findall(r"(repeated\s+)?(\w+)\s+(\w+)\s*=\s*(\d+)\s*;", body)
        out[name] = {int(n): (fname, ftype, bool(rep)) for rep, ftype, fname, n in fields}
    return out


def test_proto_file_matches_runtime_schema() -> None:
    proto = _proto_fields()
    runtime: dict[str, dict[int, tuple[str, str, bool]]] = {
        name: {n: (fname, ftype, rep) for n, fname, ftype, rep in fields}
        for name, fields in schema.MESSAGES.items()
    }
    for envelope, choices in schema.ENVELOPES.items():
        runtime[envelope] = {n: (fname, ftype, False) for n, fname, ftype in choices}
    assert proto == runtime
    enum_body = re.search(r"enum\s+LockState\s*\{([^}]*)\}", PROTO.read_text())
    assert enum_body is not None
    enum_values = dict(re.findall(r"(\w+)\s*=\s*(\d+);", enum_body.group(1)))
    assert {k: int(v) for k, v in enum_values.items()} == dict(schema.ENUMS["LockState"])


def test_runtime_descriptor_numbers() -> None:
    fdp = schema.file_descriptor()
    response = next(m for m in fdp.message_type if m.name == "Response")
    assert {f.name: f.number for f in response.field}["error"] == 16
    set_level = next(m for m in fdp.message_type if m.name == "SetLevelRequest")
    assert {f.name: f.number for f in set_level.field} == {"key_id": 1, "level": 3}


@pytest.mark.parametrize(
    ("uri", "serial", "key"),
    [
        ("tezsign://*/consensus", "*", "consensus"),
        ("tezsign://000000000000/key1", "000000000000", "key1"),
        (f"tezsign://ABC123/{TZ4}", "ABC123", TZ4),
    ],
)
def test_parse_uri(uri: str, serial: str, key: str) -> None:
    parsed = parse_uri(uri)
    assert (parsed.serial, parsed.key, str(parsed)) == (serial, key, uri)


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("ledger://*/ed25519/0h/0h", "not a TezSign"),
        ("tezsign://*", "SERIAL/KEY"),
        ("tezsign:///consensus", "SERIAL/KEY"),
        ("tezsign://*/Consensus!", "bad TezSign key"),
        ("tezsign://*/tz4AQcKaQU1sUzsmPTX43qnK4ddkCeeknJnX", "bad tz4"),
        ("tezsign://a b/key1", "bad gadget serial"),
    ],
)
def test_parse_uri_rejects(uri: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_uri(uri)


def test_passphrase_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pass"
    path.write_bytes(b"s3cret words\n")
    assert load_passphrase(path) == b"s3cret words"
    monkeypatch.setenv("TEZSIGN_PASSPHRASE", "from env")
    assert load_passphrase() == b"from env"
    monkeypatch.delenv("TEZSIGN_PASSPHRASE")
    with pytest.raises(ValueError, match="never on the command line"):
        load_passphrase()
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(ValueError, match="empty"):
        load_passphrase(tmp_path / "empty")
    with pytest.raises(ValueError, match="cannot read"):
        load_passphrase(tmp_path / "missing")
