"""The checked vectors (signing-requests.md §13) and the decode rules of §1–§8, case by case."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from signer_guard.codec import DecodeError, SigningRequest, decode, parse_hex
from signer_guard.forge import MAINNET, forge_block, forge_consensus, forge_generic

VECTORS = Path(__file__).resolve().parent.parent / "fixtures" / "vectors"
JSON_KEYS = ["magic", "kind", "chain_id", "level", "round", "tag", "slot", "payload_hash"]


def _load(name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())
    return rows


VALID = _load("requests.json") + _load("extra_requests.json")
INVALID = _load("invalid_requests.json")


def _decode_hex(text: str) -> SigningRequest:
    return decode(parse_hex(text))


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_valid_vector_decodes_exactly(vector: dict[str, Any]) -> None:
    req = _decode_hex(vector["hex"])
    out = req.to_json()
    assert list(out) == JSON_KEYS
    assert out == {key: vector[key] for key in JSON_KEYS}
    assert req.raw == bytes.fromhex(vector["hex"])
    assert req.digest == hashlib.blake2b(req.raw, digest_size=32).digest()
    if "block" in vector:
        assert req.locked_round == vector["block"]["locked_round"]
        assert req.payload_round == vector["block"]["payload_round"]


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vector_is_rejected_with_an_offset(vector: dict[str, Any]) -> None:
    with pytest.raises(DecodeError) as info:
        _decode_hex(vector["hex"])
    err = info.value
    assert isinstance(err.offset, int)
    assert err.reason
    assert str(err) == f"{err.reason} at offset {err.offset}"
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    ("name", "offset", "words"),
    [
        ("empty", 0, ["empty"]),
        ("odd_length_hex", 79, ["odd"]),
        ("non_hex", 0, ["hexadecimal", "'z'"]),
        ("unknown_magic_0x06", 0, ["unknown magic byte 0x06"]),
        ("tag21_truncated_79", 79, ["length 79", "expected 80"]),
        ("tag21_extra_byte_81", 80, ["length 81", "expected 80"]),
        ("tag41_extra_byte_79", 78, ["length 79", "expected 78"]),
        ("magic12_with_tag21", 37, ["tag 21", "0x12"]),
        ("magic13_with_tag40", 37, ["tag 40", "0x13"]),
        ("magic12_with_tag23", 37, ["tag 23", "0x12"]),
        ("tag23_z_unterminated", 81, ["DAL", "continuation"]),
        ("tag23_missing_z", 80, ["DAL", "missing"]),
        ("block_truncated", 197, ["per_block_votes"]),
        ("block_fitness_version_01", 91, ["version 0x01"]),
        ("block_fitness_len_34", 83, ["fitness length 34"]),
        ("block_seed_flag_01", 196, ["seed_nonce_hash flag 0x01"]),
        ("block_fitness_level_mismatch", 96, ["fitness level 20879", "shell level 20878"]),
        ("generic_too_short", 3, ["generic", "34"]),
    ],
)
def test_invalid_vector_reason_and_offset(name: str, offset: int, words: list[str]) -> None:
    (vector,) = [v for v in INVALID if v["name"] == name]
    with pytest.raises(DecodeError) as info:
        _decode_hex(vector["hex"])
    assert info.value.offset == offset
    for word in words:
        assert word in info.value.reason


def test_every_invalid_vector_has_a_reason_check() -> None:
    assert len(INVALID) == 18


def test_blake2b_of_spec_vectors() -> None:
    by_name = {v["name"]: v for v in VALID}
    tag21 = _decode_hex(by_name["octez_attestation_tag21_mainnet_l1331_r0"]["hex"])
    ledger = _decode_hex(by_name["ledger_example_attestation_l101_r0"]["hex"])
    assert tag21.digest.hex() == "22a4661cd4823a14313384e510544af380ce40c3c44d3026319b191718356f4a"
    assert ledger.digest.hex() == "57c47cb5da88e13aa235c3aec558971a78c51dd79fd6ae9b9505520e2f78c093"


def test_spec_vector_details() -> None:
    by_name = {v["name"]: _decode_hex(v["hex"]) for v in VALID}
    old = by_name["signatory_old_block_l20878_r0"]
    assert (old.locked_round, old.payload_round, len(old.raw)) == (None, 0, 198)
    built = by_name["constructed_block_locked_round_seed_nonce_l20878_r2"]
    assert (built.round, built.locked_round, built.payload_round, len(built.raw)) == (2, 1, 1, 234)
    dal = by_name["octez_attestation_with_dal_tag23_mainnet_l1331_r0"]
    assert dal.dal == 2048
    assert by_name["octez_attestation_tag21_mainnet_l1331_r0"].dal is None


@pytest.mark.parametrize(
    ("name", "hwm_kind"),
    [
        ("signatory_old_block_l20878_r0", "block"),
        ("octez_preattestation_tag20_mainnet_l1331_r0", "preattestation"),
        ("octez_bls_preattestation_tag40_mainnet_l1331_r0", "preattestation"),
        ("octez_attestation_tag21_mainnet_l1331_r0", "attestation"),
        ("octez_attestation_with_dal_tag23_mainnet_l1331_r0", "attestation"),
        ("octez_bls_attestation_tag41_mainnet_l1331_r0", "attestation"),
        ("generic_failing_noop_constructed", None),
        ("tacoinfra_emmy_block_l650", None),
        ("tacoinfra_emmy_endorsement_l631", None),
    ],
)
def test_hwm_kind(name: str, hwm_kind: str | None) -> None:
    (vector,) = [v for v in VALID if v["name"] == name]
    assert _decode_hex(vector["hex"]).hwm_kind == hwm_kind


def test_request_is_frozen() -> None:
    req = _decode_hex(VALID[0]["hex"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.level = 5  # type: ignore[misc]


# parse_hex


@pytest.mark.parametrize(
    "text", ["0x0a0B", "0X0A0b", "  0a0b\n", "\t0x0a0b ", "0A0B", "0a0b"], ids=repr
)
def test_parse_hex_tolerates(text: str) -> None:
    assert parse_hex(text) == b"\x0a\x0b"


@pytest.mark.parametrize(
    ("text", "offset", "word"),
    [
        ("", 0, "empty"),
        ("   ", 0, "empty"),
        ("0x", 0, "empty"),
        ("abc", 1, "odd"),
        ("0a 0b", 1, "hexadecimal"),
        ("0a0g", 1, "hexadecimal"),
        ("0x0x00", 0, "hexadecimal"),
        ("é0", 0, "hexadecimal"),
    ],
    ids=repr,
)
def test_parse_hex_rejects(text: str, offset: int, word: str) -> None:
    with pytest.raises(DecodeError) as info:
        parse_hex(text)
    assert info.value.offset == offset
    assert word in str(info.value)
    assert str(info.value).isascii()


# magic bytes and minor kinds


def test_authentication_magic_is_refused() -> None:
    with pytest.raises(DecodeError, match="authentication") as info:
        decode(b"\x04" + bytes(60))
    assert info.value.offset == 0


@pytest.mark.parametrize("magic", [0x00, 0x06, 0x10, 0x14, 0xFF])
def test_unknown_magic(magic: int) -> None:
    with pytest.raises(DecodeError, match=f"unknown magic byte 0x{magic:02x}"):
        decode(bytes([magic]) + bytes(80))


def test_legacy_block_minimum_and_fields() -> None:
    with pytest.raises(DecodeError, match="at least 9") as info:
        decode(bytes.fromhex("017a06a770000001"))
    assert info.value.offset == 8
    req = decode(bytes.fromhex("017a06a770000001f4"))
    assert (req.kind, req.chain_id, req.level, req.round) == ("legacy_block", MAINNET, 500, None)
    with pytest.raises(DecodeError, match="negative level") as neg:
        decode(bytes.fromhex("017a06a770ffffffff"))
    assert neg.value.offset == 5


def test_legacy_endorsement_minimum_and_fields() -> None:
    with pytest.raises(DecodeError, match="at least 5"):
        decode(bytes.fromhex("027a06a7"))
    req = decode(bytes.fromhex("027a06a770"))
    assert (req.kind, req.chain_id, req.level) == ("legacy_endorsement", MAINNET, None)


def test_michelson_minimum_and_fields() -> None:
    with pytest.raises(DecodeError, match="at least 2") as info:
        decode(b"\x05")
    assert info.value.offset == 1
    req = decode(bytes.fromhex("05deadbeef"))
    assert req.to_json() == {
        "magic": 5,
        "kind": "michelson_data",
        "chain_id": None,
        "level": None,
        "round": None,
        "tag": None,
        "slot": None,
        "payload_hash": None,
    }


def test_generic_minimum_and_tag() -> None:
    with pytest.raises(DecodeError) as info:
        decode(b"\x03" + bytes(32))
    assert info.value.offset == 33
    req = decode(forge_generic(bytes(32), 107, b""))
    assert (req.kind, req.tag, req.chain_id, req.level, req.hwm_kind) == (
        "generic",
        107,
        None,
        None,
        None,
    )


# blocks


def test_block_round_is_the_fitness_round_not_payload_round() -> None:
    req = decode(forge_block(MAINNET, 100, 3, locked_round=1, payload_round=1))
    assert (req.level, req.round, req.locked_round, req.payload_round) == (100, 3, 1, 1)
    assert len(req.raw) == 202


@pytest.mark.parametrize(
    ("locked", "seed", "length"),
    [(None, None, 198), (None, bytes(32), 230), (0, None, 202), (0, bytes(32), 234)],
)
def test_block_lengths(locked: int | None, seed: bytes | None, length: int) -> None:
    raw = forge_block(MAINNET, 7, 0, locked_round=locked, seed_nonce_hash=seed)
    assert len(raw) == length
    assert decode(raw).level == 7


def test_block_negative_values() -> None:
    with pytest.raises(DecodeError, match="negative level") as lvl:
        decode(forge_block(MAINNET, -1, 0))
    assert lvl.value.offset == 5
    with pytest.raises(DecodeError, match="negative round") as rnd:
        decode(forge_block(MAINNET, 1, -2))
    assert rnd.value.offset == 83 + 33
    with pytest.raises(DecodeError, match="negative locked round") as lck:
        decode(forge_block(MAINNET, 1, 2, locked_round=-1, payload_round=0))
    assert lck.value.offset == 87 + 5 + 8 + 4
    with pytest.raises(DecodeError, match="negative payload_round") as pay:
        decode(forge_block(MAINNET, 1, 2, payload_round=-1))
    assert pay.value.offset == 119 + 33 + 32


def test_block_trailing_byte() -> None:
    raw = forge_block(MAINNET, 1, 0) + b"\x00"
    with pytest.raises(DecodeError, match="trailing") as info:
        decode(raw)
    assert info.value.offset == 198


def test_block_fitness_element_sizes() -> None:
    raw = bytearray(forge_block(MAINNET, 1, 0, locked_round=0))
    raw[87 + 5 + 8 : 87 + 5 + 8 + 4] = (2).to_bytes(4, "big")  # locked round element size 2
    with pytest.raises(DecodeError, match="locked round element has size 2") as info:
        decode(bytes(raw))
    assert info.value.offset == 100
    raw = bytearray(forge_block(MAINNET, 1, 0))
    raw[87:91] = (2).to_bytes(4, "big")  # version element size 2
    with pytest.raises(DecodeError, match="version element has size 2"):
        decode(bytes(raw))


def test_block_fitness_37_without_locked_round() -> None:
    # F = 37 but the locked round element is empty: 4 bytes are left over in the fitness.
    raw = bytearray(forge_block(MAINNET, 1, 0))
    fit = raw[87:120] + bytes(4)
    raw[83:87] = (37).to_bytes(4, "big")
    raw[87:120] = fit
    with pytest.raises(DecodeError, match="after its 5 elements") as info:
        decode(bytes(raw))
    assert info.value.offset == 120


def test_block_truncated_inside_fitness() -> None:
    raw = forge_block(MAINNET, 1, 0)[:100]
    with pytest.raises(DecodeError, match="fitness") as info:
        decode(raw)
    assert info.value.offset == 87


# consensus operations


@pytest.mark.parametrize(
    ("kind", "tag", "slot", "length"),
    [
        ("preattestation", 20, 7, 80),
        ("attestation", 21, 65535, 80),
        ("preattestation", 40, None, 78),
        ("attestation", 41, None, 78),
    ],
)
def test_consensus_layouts(kind: str, tag: int, slot: int | None, length: int) -> None:
    raw = forge_consensus(kind, tag, MAINNET, 2**31 - 1, 5, slot=slot or 0)  # type: ignore[arg-type]
    assert len(raw) == length
    req = decode(raw)
    assert (req.kind, req.tag, req.slot, req.level, req.round) == (kind, tag, slot, 2**31 - 1, 5)


@pytest.mark.parametrize("tag", [0, 1, 22, 30, 31, 42, 255])
@pytest.mark.parametrize("magic", [0x12, 0x13])
def test_consensus_unknown_tags(magic: int, tag: int) -> None:
    raw = bytes([magic]) + bytes.fromhex("7a06a770") + bytes(32) + bytes([tag]) + bytes(42)
    with pytest.raises(DecodeError) as info:
        decode(raw)
    assert info.value.offset == 37


def test_consensus_negative_level_and_round() -> None:
    with pytest.raises(DecodeError, match="negative level") as lvl:
        decode(forge_consensus("attestation", 21, MAINNET, -5, 0))
    assert lvl.value.offset == 40
    with pytest.raises(DecodeError, match="negative round") as rnd:
        decode(forge_consensus("attestation", 41, MAINNET, 5, -1))
    assert rnd.value.offset == 42


@pytest.mark.parametrize(
    ("z", "word", "offset"),
    [
        ("8000", "not canonical", 81),
        ("808000", "not canonical", 82),
        ("40", "negative", 80),
        ("c001", "negative", 80),
        ("0000", "trailing", 81),
        ("8020ff", "trailing", 82),
        ("80a0ff", "truncated", 82),
    ],
)
def test_dal_bitset_rules(z: str, word: str, offset: int) -> None:
    raw = forge_consensus("attestation", 21, MAINNET, 1, 0)
    raw = raw[:37] + b"\x17" + raw[38:] + bytes.fromhex(z)
    with pytest.raises(DecodeError, match=word) as info:
        decode(raw)
    assert info.value.offset == offset


@pytest.mark.parametrize(
    ("z", "value"), [("00", 0), ("3f", 63), ("8001", 64), ("8020", 2048), ("bf7f", 8191)]
)
def test_dal_bitset_values(z: str, value: int) -> None:
    raw = forge_consensus("attestation", 21, MAINNET, 1, 0)
    raw = raw[:37] + b"\x17" + raw[38:] + bytes.fromhex(z)
    assert decode(raw).dal == value


def test_decode_error_without_offset() -> None:
    err = DecodeError("something odd")
    assert str(err) == "something odd"
    assert err.offset is None
    assert isinstance(err, ValueError)
