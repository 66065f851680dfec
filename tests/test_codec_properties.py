"""Properties of the codec: forge → decode round trips, and malformed input only ever gives
DecodeError (never another exception)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from signer_guard import b58
from signer_guard.codec import DecodeError, SigningRequest, decode, parse_hex
from signer_guard.forge import encode_z, forge_block, forge_consensus, forge_generic

VECTORS = Path(__file__).resolve().parent.parent / "fixtures" / "vectors"
VALID_RAW = [
    bytes.fromhex(v["hex"])
    for name in ("requests.json", "extra_requests.json")
    for v in json.loads((VECTORS / name).read_text())
]
HWM_MAGICS = (0x11, 0x12, 0x13)

int32 = st.integers(min_value=0, max_value=2**31 - 1)
small_or_any = st.one_of(st.integers(min_value=0, max_value=10), int32)
chain_ids = st.binary(min_size=4, max_size=4).map(lambda b: b58.encode("Net", b))
hashes = st.binary(min_size=32, max_size=32)
# Bitsets of every size: a bit count first, then a value below 2**bits.
dal_bitsets = st.integers(min_value=0, max_value=20_000).flatmap(
    lambda bits: st.integers(min_value=0, max_value=(1 << bits) - 1 if bits else 0)
)


def decode_or_error(data: bytes) -> SigningRequest | None:
    """Decode; a DecodeError is fine (None); any other exception fails the test."""
    try:
        req = decode(data)
    except DecodeError as err:
        assert isinstance(err.offset, int)
        assert 0 <= err.offset <= len(data)
        assert "\n" not in str(err)
        return None
    assert len(req.to_json()) == 8
    assert req.raw == data
    return req


@given(
    chain_id=chain_ids,
    level=small_or_any,
    round_=small_or_any,
    locked_round=st.none() | small_or_any,
    payload_round=st.none() | small_or_any,
    payload_hash=hashes,
    seed=st.none() | hashes,
    predecessor_round=small_or_any,
    timestamp=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    proto=st.integers(min_value=0, max_value=255),
    votes=st.integers(min_value=0, max_value=255),
)
def test_block_round_trip(
    chain_id: str,
    level: int,
    round_: int,
    locked_round: int | None,
    payload_round: int | None,
    payload_hash: bytes,
    seed: bytes | None,
    predecessor_round: int,
    timestamp: int,
    proto: int,
    votes: int,
) -> None:
    raw = forge_block(
        chain_id,
        level,
        round_,
        locked_round=locked_round,
        payload_round=payload_round,
        payload_hash=payload_hash,
        seed_nonce_hash=seed,
        predecessor_round=predecessor_round,
        timestamp=timestamp,
        proto=proto,
        votes=votes,
    )
    req = decode(raw)
    expected_payload_round = (
        payload_round
        if payload_round is not None
        else (locked_round if locked_round is not None else round_)
    )
    assert (req.magic, req.kind, req.hwm_kind) == (0x11, "block", "block")
    assert (req.chain_id, req.level, req.round) == (chain_id, level, round_)
    assert (req.locked_round, req.payload_round) == (locked_round, expected_payload_round)
    assert req.payload_hash == b58.encode("vh", payload_hash)
    assert (req.tag, req.slot, req.dal) == (None, None, None)
    assert len(raw) == 198 + (4 if locked_round is not None else 0) + (32 if seed else 0)


@given(
    tag=st.sampled_from([20, 21, 23, 40, 41]),
    chain_id=chain_ids,
    level=small_or_any,
    round_=small_or_any,
    slot=st.integers(min_value=0, max_value=65535),
    payload_hash=hashes,
    branch=hashes,
    dal=dal_bitsets,
)
@example(
    tag=23,
    chain_id="NetXdQprcVkpaWU",
    level=0,
    round_=0,
    slot=0,
    payload_hash=bytes(32),
    branch=bytes(32),
    dal=2048,
)
def test_consensus_round_trip(
    tag: int,
    chain_id: str,
    level: int,
    round_: int,
    slot: int,
    payload_hash: bytes,
    branch: bytes,
    dal: int,
) -> None:
    kind = "preattestation" if tag in (20, 40) else "attestation"
    raw = forge_consensus(
        kind,  # type: ignore[arg-type]
        tag,
        chain_id,
        level,
        round_,
        slot=slot,
        payload_hash=payload_hash,
        branch=branch,
        dal=dal if tag == 23 else None,
    )
    req = decode(raw)
    assert (req.kind, req.hwm_kind, req.tag) == (kind, kind, tag)
    assert req.magic == (0x12 if kind == "preattestation" else 0x13)
    assert (req.chain_id, req.level, req.round) == (chain_id, level, round_)
    assert req.slot == (slot if tag in (20, 21, 23) else None)
    assert req.dal == (dal if tag == 23 else None)
    assert req.payload_hash == b58.encode("vh", payload_hash)


@given(value=st.integers(min_value=-(2**300), max_value=2**300))
@example(value=0)
@example(value=63)
@example(value=64)
@example(value=-64)
def test_zarith_encoding_shape(value: int) -> None:
    z = encode_z(value)
    assert all(b & 0x80 for b in z[:-1])
    assert not z[-1] & 0x80
    assert len(z) == 1 or z[-1] != 0  # canonical
    assert bool(z[0] & 0x40) == (value < 0)
    raw = forge_consensus("attestation", 21, "NetXdQprcVkpaWU", 1, 0)
    raw = raw[:37] + b"\x17" + raw[38:] + z
    if value >= 0:
        assert decode(raw).dal == value
    else:
        with pytest.raises(DecodeError, match="negative"):
            decode(raw)


def test_huge_dal_bitset_is_fast() -> None:
    value = (1 << 1_000_000) - 12345
    raw = forge_consensus("attestation", 23, "NetXdQprcVkpaWU", 9, 1, dal=value)
    start = time.perf_counter()
    assert decode(raw).dal == value
    assert time.perf_counter() - start < 2.0


@given(branch=hashes, tag=st.integers(min_value=0, max_value=255), body=st.binary(max_size=64))
def test_generic_round_trip(branch: bytes, tag: int, body: bytes) -> None:
    req = decode(forge_generic(branch, tag, body))
    assert (req.magic, req.kind, req.tag, req.hwm_kind) == (3, "generic", tag, None)
    assert (req.chain_id, req.level, req.round, req.slot, req.payload_hash) == (None,) * 5


@given(data=st.binary(max_size=300))
def test_random_bytes_only_decode_error(data: bytes) -> None:
    decode_or_error(data)


@given(magic=st.sampled_from([1, 2, 3, 4, 5, 0x11, 0x12, 0x13]), rest=st.binary(max_size=260))
def test_random_bodies_only_decode_error(magic: int, rest: bytes) -> None:
    decode_or_error(bytes([magic]) + rest)


@given(
    base=st.sampled_from(VALID_RAW),
    position=st.integers(min_value=0),
    byte=st.integers(min_value=0, max_value=255),
)
def test_single_byte_mutation_only_decode_error(base: bytes, position: int, byte: int) -> None:
    position %= len(base)
    assume(base[position] != byte)
    mutated = base[:position] + bytes([byte]) + base[position + 1 :]
    decode_or_error(mutated)


@given(base=st.sampled_from(VALID_RAW), cut=st.integers(min_value=0))
def test_truncation_only_decode_error(base: bytes, cut: int) -> None:
    cut %= len(base)
    req = decode_or_error(base[:cut])
    if base[0] in HWM_MAGICS:
        assert req is None  # fixed layouts and the DAL field end exactly


@given(base=st.sampled_from(VALID_RAW), extra=st.binary(min_size=1, max_size=40))
def test_extension_only_decode_error(base: bytes, extra: bytes) -> None:
    req = decode_or_error(base + extra)
    if base[0] in HWM_MAGICS:
        assert req is None


def test_every_truncation_of_every_vector() -> None:
    for base in VALID_RAW:
        for cut in range(len(base)):
            req = decode_or_error(base[:cut])
            if base[0] in HWM_MAGICS:
                assert req is None, (base.hex(), cut)


@given(text=st.text(max_size=80))
def test_parse_hex_only_decode_error(text: str) -> None:
    try:
        parse_hex(text)
    except DecodeError as err:
        assert str(err).isascii()


@given(
    data=st.binary(min_size=1, max_size=100),
    upper=st.booleans(),
    prefix=st.sampled_from(["", "0x", "0X"]),
    pad=st.sampled_from(["", " ", "\n", "\t "]),
)
def test_parse_hex_round_trip(data: bytes, upper: bool, prefix: str, pad: str) -> None:
    digits = data.hex().upper() if upper else data.hex()
    assert parse_hex(f"{pad}{prefix}{digits}{pad}") == data
