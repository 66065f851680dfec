"""Base58check with every Tezos prefix (signing-requests.md §11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signer_guard import b58

VECTORS = Path(__file__).resolve().parent.parent / "fixtures" / "vectors"

# Spec §11: b58 length of every prefix (checked with all-zero and all-0xff payloads).
B58_LENGTHS = {
    "tz1": 36,
    "tz2": 36,
    "tz3": 36,
    "tz4": 36,
    "tz5": 36,
    "KT1": 36,
    "edpk": 54,
    "sppk": 55,
    "p2pk": 55,
    "BLpk": 76,
    "edsk": 54,
    "edsk64": 98,
    "spsk": 54,
    "p2sk": 54,
    "BLsk": 54,
    "edsig": 99,
    "spsig1": 99,
    "p2sig": 98,
    "sig": 96,
    "BLsig": 142,
    "Net": 15,
    "B": 51,
    "vh": 52,
    "LLo": 53,
    "Co": 52,
    "nce": 53,
}

# The text each encoded value starts with (edsk64 is written "edsk", spsig1 "spsig1").
TEXT_PREFIX = {name: name.removesuffix("64") for name in B58_LENGTHS}


def test_every_prefix_is_covered() -> None:
    assert set(B58_LENGTHS) == set(b58.PREFIXES)


@pytest.mark.parametrize("name", sorted(B58_LENGTHS))
@pytest.mark.parametrize("fill", [0x00, 0xFF])
def test_round_trip_extremes(name: str, fill: int) -> None:
    size = b58.PREFIXES[name][1]
    payload = bytes([fill]) * size
    text = b58.encode(name, payload)
    assert len(text) == B58_LENGTHS[name]
    assert text.startswith(TEXT_PREFIX[name])
    assert b58.decode(name, text) == payload
    assert b58.identify(text) == (name, payload)


@pytest.mark.parametrize("name", sorted(B58_LENGTHS))
@given(data=st.data())
def test_round_trip_random(name: str, data: st.DataObject) -> None:
    size = b58.PREFIXES[name][1]
    payload = data.draw(st.binary(min_size=size, max_size=size))
    text = b58.encode(name, payload)
    assert len(text) == B58_LENGTHS[name]
    assert text.startswith(TEXT_PREFIX[name])
    assert b58.decode(name, text) == payload
    assert b58.identify(text, (name,)) == (name, payload)


@pytest.mark.parametrize(
    ("hex_id", "text"),
    [
        ("7a06a770", "NetXdQprcVkpaWU"),
        ("af1864d9", "NetXnHfVqm9iesp"),
        ("ed9d217c", "NetXxkAx4woPLyu"),
    ],
)
def test_known_chain_ids(hex_id: str, text: str) -> None:
    assert b58.encode("Net", bytes.fromhex(hex_id)) == text
    assert b58.decode("Net", text) == bytes.fromhex(hex_id)


def test_known_payload_hash_of_zero_bytes() -> None:
    # signing-requests.md §13: the octez_* vectors carry 32 zero bytes as payload hash.
    assert b58.encode("vh", bytes(32)) == "vh1g87ZG6scSYxKhspAUzprQVuLAyoa5qMBKcUfjgnQGnFb3dJcG"


def test_key_vectors_round_trip() -> None:
    keys = json.loads((VECTORS / "keys.json").read_text())
    assert keys
    for vector in keys:
        for field in ("pkh", "public_key", "secret_key", "signature"):
            text = vector[field]
            name, payload = b58.identify(text)
            assert b58.encode(name, payload) == text, (vector["name"], field)
        if "signature_hex" in vector:
            _, sig = b58.identify(vector["signature"])
            assert sig.hex() == vector["signature_hex"]


def test_whitespace_around_is_ignored() -> None:
    assert b58.decode("Net", "  NetXdQprcVkpaWU\n") == bytes.fromhex("7a06a770")


def test_bad_checksum_says_checksum() -> None:
    text = b58.encode("tz1", bytes(range(20)))
    last = text[-1]
    broken = text[:-1] + ("2" if last != "2" else "3")
    with pytest.raises(b58.Base58Error, match="checksum"):
        b58.decode("tz1", broken)
    with pytest.raises(b58.Base58Error, match="checksum"):
        b58.identify(broken)


def test_invalid_character_is_named() -> None:
    with pytest.raises(b58.Base58Error, match=r"invalid base58 character '0' at position 3"):
        b58.decode("tz1", "tz10abc")


def test_too_short() -> None:
    with pytest.raises(b58.Base58Error, match="too short"):
        b58.b58check_decode("1")


def test_wrong_prefix_says_which_was_expected() -> None:
    tz1 = b58.encode("tz1", bytes(20))
    with pytest.raises(b58.Base58Error, match=r"not a tz2 value \(wrong prefix\)"):
        b58.decode("tz2", tz1)
    with pytest.raises(b58.Base58Error, match="not a edsk value"):
        b58.decode("edsk64", b58.encode("edsk", bytes(32)))


def test_wrong_payload_length_on_decode() -> None:
    prefix, _ = b58.PREFIXES["Net"]
    text = b58.b58check_encode(prefix + bytes(5))
    with pytest.raises(b58.Base58Error, match="has 5 payload bytes, expected 4"):
        b58.decode("Net", text)


def test_wrong_payload_length_on_encode() -> None:
    with pytest.raises(b58.Base58Error, match="tz1 payload must be 20 bytes, got 19"):
        b58.encode("tz1", bytes(19))


def test_identify_unknown_lists_candidates() -> None:
    text = b58.encode("Net", bytes(4))
    with pytest.raises(b58.Base58Error, match="not one of: tz1, tz2"):
        b58.identify(text, ("tz1", "tz2"))


def test_leading_zero_bytes_survive() -> None:
    assert b58.b58decode(b58.b58encode(b"\0\0\x01")) == b"\0\0\x01"
    assert b58.b58encode(b"") == ""
    assert b58.b58decode("") == b""
