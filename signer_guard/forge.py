"""Build signing requests: the inverse of `signer_guard.codec`, for tests, fakes and benchmarks.

The forgers write what they are told: they check only that each value fits its field, so tests
can also forge inconsistent requests (a tag under the wrong magic byte, a negative level).
"""

from __future__ import annotations

import struct
from typing import Final, Literal

from signer_guard import b58

MAINNET: Final = "NetXdQprcVkpaWU"
ZERO32: Final = bytes(32)
DEFAULT_TIMESTAMP: Final = 1_700_000_000  # 2023-11-14T22:13:20Z
DEFAULT_PROTO: Final = 1

_CONSENSUS_MAGIC: Final = {"preattestation": 0x12, "attestation": 0x13}
_SLOT_TAGS: Final = frozenset({20, 21, 23})


def encode_z(value: int) -> bytes:
    """Signed zarith (`Data_encoding.z`): sign in bit 6 of the first byte, 7-bit groups after."""
    magnitude = -value if value < 0 else value
    first = (magnitude & 0x3F) | (0x40 if value < 0 else 0)
    magnitude >>= 6
    if not magnitude:
        return bytes([first])
    bits = format(magnitude, "b")
    bits = "0" * (-len(bits) % 7) + bits
    groups = [int(bits[i : i + 7], 2) for i in range(len(bits) - 7, -1, -7)]
    out = bytearray([first | 0x80])
    out.extend(g | 0x80 for g in groups[:-1])
    out.append(groups[-1])
    return bytes(out)


def _fixed(name: str, value: bytes, size: int) -> bytes:
    if len(value) != size:
        raise ValueError(f"{name} must be {size} bytes, got {len(value)}")
    return value


def _pack(fmt: str, name: str, value: int) -> bytes:
    try:
        return struct.pack(fmt, value)
    except struct.error:
        raise ValueError(f"{name} {value} does not fit its field") from None


def _i32(name: str, value: int) -> bytes:
    return _pack(">i", name, value)


def fitness(
    level: int, round_: int, *, locked_round: int | None = None, predecessor_round: int = 0
) -> bytes:
    """Tenderbake fitness (version 2): 33 bytes, or 37 with a locked round."""
    locked = b"" if locked_round is None else _i32("locked_round", locked_round)
    elements = [
        b"\x02",
        _i32("level", level),
        locked,
        _i32("predecessor_round", -predecessor_round - 1),
        _i32("round", round_),
    ]
    return b"".join(len(e).to_bytes(4, "big") + e for e in elements)


def forge_block(
    chain_id: str,
    level: int,
    round_: int,
    *,
    locked_round: int | None = None,
    payload_round: int | None = None,
    payload_hash: bytes = ZERO32,
    seed_nonce_hash: bytes | None = None,
    predecessor: bytes = ZERO32,
    timestamp: int = DEFAULT_TIMESTAMP,
    proto: int = DEFAULT_PROTO,
    votes: int = 0,
    predecessor_round: int = 0,
    validation_pass: int = 4,
    operations_hash: bytes = ZERO32,
    context: bytes = ZERO32,
    proof_of_work_nonce: bytes = bytes(8),
) -> bytes:
    """A 0x11 block request. `payload_round` defaults to the locked round, else to the round."""
    if payload_round is None:
        payload_round = round_ if locked_round is None else locked_round
    fit = fitness(level, round_, locked_round=locked_round, predecessor_round=predecessor_round)
    seed = (
        b"\x00"
        if seed_nonce_hash is None
        else b"\xff" + _fixed("seed_nonce_hash", seed_nonce_hash, 32)
    )
    return b"".join(
        (
            b"\x11",
            b58.decode("Net", chain_id),
            _i32("level", level),
            _pack(">B", "proto", proto),
            _fixed("predecessor", predecessor, 32),
            _pack(">q", "timestamp", timestamp),
            _pack(">B", "validation_pass", validation_pass),
            _fixed("operations_hash", operations_hash, 32),
            len(fit).to_bytes(4, "big"),
            fit,
            _fixed("context", context, 32),
            _fixed("payload_hash", payload_hash, 32),
            _i32("payload_round", payload_round),
            _fixed("proof_of_work_nonce", proof_of_work_nonce, 8),
            seed,
            _pack(">B", "votes", votes),
        )
    )


def forge_consensus(
    kind_magic_or_kind: int | Literal["preattestation", "attestation"],
    tag: int,
    chain_id: str,
    level: int,
    round_: int,
    *,
    slot: int = 0,
    payload_hash: bytes = ZERO32,
    branch: bytes = ZERO32,
    dal: int | None = None,
) -> bytes:
    """A 0x12/0x13 request. Tags 20/21/23 carry `slot`; tag 23 needs `dal` (signed zarith)."""
    if isinstance(kind_magic_or_kind, str):
        magic = _CONSENSUS_MAGIC[kind_magic_or_kind]
    else:
        magic = kind_magic_or_kind
    if (dal is not None) != (tag == 23):
        raise ValueError("dal is required for tag 23 and only allowed there")
    parts = [
        _pack(">B", "magic", magic),
        b58.decode("Net", chain_id),
        _fixed("branch", branch, 32),
        _pack(">B", "tag", tag),
    ]
    if tag in _SLOT_TAGS:
        parts.append(_pack(">H", "slot", slot))
    parts += [_i32("level", level), _i32("round", round_), _fixed("payload_hash", payload_hash, 32)]
    if dal is not None:
        parts.append(encode_z(dal))
    return b"".join(parts)


def forge_generic(branch: bytes, tag: int, body: bytes) -> bytes:
    """A 0x03 request: branch, the first contents tag, then the rest of the contents as given."""
    return b"\x03" + _fixed("branch", branch, 32) + _pack(">B", "tag", tag) + body
