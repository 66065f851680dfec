"""Decode Tezos signing requests (signing-requests.md §1–§8). Pure: no I/O.

`decode` checks every layout rule of the spec and names the byte offset of the first violation.
Offsets count from the magic byte (offset 0).
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass
from typing import Final, Literal

from signer_guard import b58
from signer_guard.model import Kind

RequestKind = Literal[
    "block",
    "preattestation",
    "attestation",
    "generic",
    "legacy_block",
    "legacy_endorsement",
    "michelson_data",
]

MAGIC_BLOCK: Final = 0x11
MAGIC_PREATTESTATION: Final = 0x12
MAGIC_ATTESTATION: Final = 0x13
MAGIC_GENERIC: Final = 0x03
MAGIC_AUTH: Final = 0x04
MAGIC_LEGACY_BLOCK: Final = 0x01
MAGIC_LEGACY_ENDORSEMENT: Final = 0x02
MAGIC_MICHELSON: Final = 0x05

_HWM_KINDS: Final[dict[int, Kind]] = {
    MAGIC_BLOCK: "block",
    MAGIC_PREATTESTATION: "preattestation",
    MAGIC_ATTESTATION: "attestation",
}

#: Consensus operation tags (§4): tag -> (name, magic it must follow, carries a slot).
CONSENSUS_TAGS: Final[dict[int, tuple[str, int, bool]]] = {
    20: ("preattestation", MAGIC_PREATTESTATION, True),
    21: ("attestation", MAGIC_ATTESTATION, True),
    23: ("attestation_with_dal", MAGIC_ATTESTATION, True),
    40: ("bls_mode_preattestation", MAGIC_PREATTESTATION, False),
    41: ("bls_mode_attestation", MAGIC_ATTESTATION, False),
}
TAG_DAL: Final = 23

#: Fitness byte lengths of a Tenderbake block: without / with a locked round (§3).
FITNESS_LENGTHS: Final = (33, 37)
_FITNESS_OFFSET: Final = 87
_GENERIC_MIN: Final = 34  # magic + branch(32) + first contents tag


class DecodeError(ValueError):
    """A malformed signing request: `reason` says what is wrong, `offset` where (byte index)."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if self.offset is None:
            return self.reason
        return f"{self.reason} at offset {self.offset}"


@dataclass(frozen=True, slots=True)
class SigningRequest:
    """One decoded request. `round` of a block is the fitness round, never `payload_round`."""

    raw: bytes
    magic: int
    kind: RequestKind
    chain_id: str | None = None  # b58 Net…
    level: int | None = None
    round: int | None = None
    tag: int | None = None
    slot: int | None = None
    payload_hash: str | None = None  # b58 vh…
    dal: int | None = None  # tag-23 DAL attestation bitset
    locked_round: int | None = None  # block only
    payload_round: int | None = None  # block only

    @property
    def hwm_kind(self) -> Kind | None:
        """The watermark kind (from the magic byte), or None for requests without a watermark."""
        return _HWM_KINDS.get(self.magic)

    @property
    def digest(self) -> bytes:
        """blake2b-256 of the whole request: the identical-bytes check value (§8)."""
        return hashlib.blake2b(self.raw, digest_size=32).digest()

    def to_json(self) -> dict[str, object]:
        """The `decode --json` object: exactly the §7 keys, in order."""
        return {
            "magic": self.magic,
            "kind": self.kind,
            "chain_id": self.chain_id,
            "level": self.level,
            "round": self.round,
            "tag": self.tag,
            "slot": self.slot,
            "payload_hash": self.payload_hash,
        }


_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")


def parse_hex(text: str) -> bytes:
    """Hex text to bytes: optional `0x`, surrounding whitespace and upper case are accepted."""
    s = text.strip()
    if s[:2] in ("0x", "0X"):
        s = s[2:]
    if not s:
        raise DecodeError("empty request", 0)
    for i, c in enumerate(s):
        if c not in _HEX_DIGITS:
            raise DecodeError(f"not hexadecimal (character {c!a}, hex digit {i})", i // 2)
    if len(s) % 2:
        raise DecodeError(f"odd number of hex digits ({len(s)})", len(s) // 2)
    return bytes.fromhex(s)


class _Reader:
    """Sequential big-endian reads that fail with the offset of the field that does not fit."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int, field: str) -> bytes:
        start, end = self.pos, self.pos + n
        if end > len(self.data):
            left = len(self.data) - start
            raise DecodeError(
                f"request ends inside {field} (needs {n} byte{'s' if n > 1 else ''}, "
                f"{left} left, length {len(self.data)})",
                start,
            )
        self.pos = end
        return self.data[start:end]

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "big")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "big")

    def i32(self, field: str) -> int:
        value: int = struct.unpack(">i", self.take(4, field))[0]
        return value

    def nonneg_i32(self, field: str) -> int:
        at = self.pos
        value = self.i32(field)
        if value < 0:
            raise DecodeError(f"negative {field} {value}", at)
        return value

    def end(self, after: str) -> None:
        extra = len(self.data) - self.pos
        if extra:
            raise DecodeError(
                f"{extra} trailing byte{'s' if extra > 1 else ''} after {after} "
                f"(length {len(self.data)}, expected {self.pos})",
                self.pos,
            )


@functools.lru_cache(maxsize=64)
def _chain_b58(raw: bytes) -> str:
    return b58.encode("Net", raw)


def _chain_id(r: _Reader) -> str:
    return _chain_b58(r.take(4, "chain_id"))  # a guard sees one or two chains: cached


def _payload_hash(r: _Reader) -> str:
    return b58.encode("vh", r.take(32, "block_payload_hash"))


def decode(data: bytes) -> SigningRequest:
    """Decode one signing request; raise DecodeError for anything malformed."""
    raw = bytes(data)
    if not raw:
        raise DecodeError("empty request", 0)
    magic = raw[0]
    if magic == MAGIC_BLOCK:
        return _decode_block(raw)
    if magic in (MAGIC_PREATTESTATION, MAGIC_ATTESTATION):
        return _decode_consensus(raw)
    if magic == MAGIC_GENERIC:
        return _decode_generic(raw)
    if magic in (MAGIC_LEGACY_BLOCK, MAGIC_LEGACY_ENDORSEMENT, MAGIC_MICHELSON):
        return _decode_minor(raw)
    if magic == MAGIC_AUTH:
        raise DecodeError("magic byte 0x04 is reserved for authentication payloads", 0)
    raise DecodeError(f"unknown magic byte 0x{magic:02x}", 0)


def _decode_block(raw: bytes) -> SigningRequest:
    r = _Reader(raw, 1)
    chain_id = _chain_id(r)
    level = r.nonneg_i32("level")
    r.take(1 + 32 + 8 + 1 + 32, "shell header")  # proto, predecessor, timestamp, pass, ops hash
    f_at = r.pos
    f_len = r.u32("fitness length")
    if f_len not in FITNESS_LENGTHS:
        raise DecodeError(f"fitness length {f_len}, expected 33 or 37", f_at)
    locked_round, round_ = _decode_fitness(r, f_len, level)
    r.take(32, "context hash")
    payload_hash = _payload_hash(r)
    payload_round = r.nonneg_i32("payload_round")
    r.take(8, "proof_of_work_nonce")
    flag_at = r.pos
    flag = r.u8("seed_nonce_hash flag")
    if flag == 0xFF:
        r.take(32, "seed_nonce_hash")
    elif flag != 0x00:
        raise DecodeError(f"seed_nonce_hash flag 0x{flag:02x}, expected 0x00 or 0xff", flag_at)
    r.u8("per_block_votes")
    r.end("per_block_votes")
    return SigningRequest(
        raw=raw,
        magic=MAGIC_BLOCK,
        kind="block",
        chain_id=chain_id,
        level=level,
        round=round_,
        payload_hash=payload_hash,
        locked_round=locked_round,
        payload_round=payload_round,
    )


def _decode_fitness(r: _Reader, f_len: int, level: int) -> tuple[int | None, int]:
    """Check the 5 Tenderbake fitness elements (§3); return (locked_round, round)."""
    data, start = r.data, r.pos
    stop = start + f_len
    if stop > len(data):
        raise DecodeError(
            f"request ends inside the fitness ({f_len} bytes declared, {len(data) - start} left)",
            start,
        )
    pos = start
    values: list[int | None] = []
    for index, (name, sizes) in enumerate(_FITNESS_ELEMENTS, start=1):
        if pos + 4 > stop:
            raise DecodeError(
                f"{f_len}-byte fitness ends before its {name} element ({index} of 5)", pos
            )
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size not in sizes:
            wanted = " or ".join(str(s) for s in sizes)
            raise DecodeError(f"fitness {name} element has size {size}, expected {wanted}", pos)
        pos += 4
        if pos + size > stop:
            raise DecodeError(f"fitness {name} element overruns the {f_len}-byte fitness", pos)
        value = data[pos : pos + size]
        if index == 1 and value != b"\x02":
            raise DecodeError(f"fitness version 0x{value.hex()}, expected 0x02", pos)
        number = int.from_bytes(value, "big", signed=True) if size == 4 else None
        if index == 2 and number != level:
            raise DecodeError(f"fitness level {number} differs from shell level {level}", pos)
        if index in (3, 5) and number is not None and number < 0:
            raise DecodeError(f"negative {name} {number}", pos)
        values.append(number)
        pos += size
    if pos != stop:
        raise DecodeError(f"{f_len}-byte fitness has {stop - pos} bytes after its 5 elements", pos)
    r.pos = stop
    # The round is the last element, hence the last 4 bytes of the fitness (offset 83 + F).
    return values[2], int.from_bytes(data[stop - 4 : stop], "big")


_FITNESS_ELEMENTS: Final[tuple[tuple[str, tuple[int, ...]], ...]] = (
    ("version", (1,)),
    ("level", (4,)),
    ("locked round", (0, 4)),
    ("predecessor round", (4,)),
    ("round", (4,)),
)


def _decode_consensus(raw: bytes) -> SigningRequest:
    magic = raw[0]
    r = _Reader(raw, 1)
    chain_id = _chain_id(r)
    r.take(32, "branch")
    tag_at = r.pos
    tag = r.u8("operation tag")
    spec = CONSENSUS_TAGS.get(tag)
    if spec is None:
        raise DecodeError(f"tag {tag} is not a signable consensus operation", tag_at)
    name, wanted_magic, has_slot = spec
    if wanted_magic != magic:
        raise DecodeError(f"tag {tag} ({name}) not allowed after magic 0x{magic:02x}", tag_at)
    fixed = 80 if has_slot else 78
    if tag == TAG_DAL:
        if len(raw) < fixed:
            raise DecodeError(
                f"{name} request has length {len(raw)}, expected at least {fixed + 1}", len(raw)
            )
    elif len(raw) != fixed:
        raise DecodeError(
            f"{name} request has length {len(raw)}, expected {fixed}", min(len(raw), fixed)
        )
    slot = r.u16("slot") if has_slot else None
    level = r.nonneg_i32("level")
    round_ = r.nonneg_i32("round")
    payload_hash = _payload_hash(r)
    dal = _read_dal(r) if tag == TAG_DAL else None
    r.end("the DAL bitset" if tag == TAG_DAL else "block_payload_hash")
    return SigningRequest(
        raw=raw,
        magic=magic,
        kind="preattestation" if magic == MAGIC_PREATTESTATION else "attestation",
        chain_id=chain_id,
        level=level,
        round=round_,
        tag=tag,
        slot=slot,
        payload_hash=payload_hash,
        dal=dal,
    )


def _read_dal(r: _Reader) -> int:
    """Signed zarith (§5), non-negative and canonical; it must be the last field."""
    data, start = r.data, r.pos
    if start >= len(data):
        raise DecodeError("DAL bitset missing", start)
    end = start
    while data[end] & 0x80:
        end += 1
        if end >= len(data):
            raise DecodeError(
                "DAL bitset truncated (continuation bit set on the last byte)", len(data) - 1
            )
    if data[start] & 0x40:
        raise DecodeError("DAL bitset is negative (sign bit set)", start)
    if end > start and data[end] == 0:
        raise DecodeError("DAL bitset not canonical (last byte 0x00 after a continuation)", end)
    r.pos = end + 1
    return _z_value(data[start : end + 1])


def _z_value(chunk: bytes) -> int:
    """Magnitude of a well-formed zarith; linear time, so huge bitsets stay cheap."""
    groups = [format(b & 0x7F, "07b") for b in reversed(chunk[1:])]
    groups.append(format(chunk[0] & 0x3F, "06b"))
    return int("".join(groups), 2)


def _decode_generic(raw: bytes) -> SigningRequest:
    if len(raw) < _GENERIC_MIN:
        raise DecodeError(
            f"generic request has {len(raw)} bytes, needs at least {_GENERIC_MIN} "
            "(magic, branch, first contents tag)",
            len(raw),
        )
    return SigningRequest(raw=raw, magic=MAGIC_GENERIC, kind="generic", tag=raw[33])


_MINOR: Final[dict[int, tuple[RequestKind, int]]] = {
    MAGIC_LEGACY_BLOCK: ("legacy_block", 9),
    MAGIC_LEGACY_ENDORSEMENT: ("legacy_endorsement", 5),
    MAGIC_MICHELSON: ("michelson_data", 2),
}


def _decode_minor(raw: bytes) -> SigningRequest:
    magic = raw[0]
    kind, minimum = _MINOR[magic]
    if len(raw) < minimum:
        raise DecodeError(
            f"{kind} request has {len(raw)} bytes, needs at least {minimum}", len(raw)
        )
    if magic == MAGIC_MICHELSON:
        return SigningRequest(raw=raw, magic=magic, kind=kind)
    r = _Reader(raw, 1)
    chain_id = _chain_id(r)
    level = r.nonneg_i32("level") if magic == MAGIC_LEGACY_BLOCK else None
    return SigningRequest(raw=raw, magic=magic, kind=kind, chain_id=chain_id, level=level)
