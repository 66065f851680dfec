"""Base58check with the Tezos prefixes (signing-requests.md §11)."""

from __future__ import annotations

import hashlib
from typing import Final

ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX: Final = {c: i for i, c in enumerate(ALPHABET)}

# name -> (prefix bytes, payload length)
PREFIXES: Final[dict[str, tuple[bytes, int]]] = {
    "tz1": (bytes([6, 161, 159]), 20),
    "tz2": (bytes([6, 161, 161]), 20),
    "tz3": (bytes([6, 161, 164]), 20),
    "tz4": (bytes([6, 161, 166]), 20),
    "tz5": (bytes([6, 161, 169]), 20),
    "KT1": (bytes([2, 90, 121]), 20),
    "edpk": (bytes([13, 15, 37, 217]), 32),
    "sppk": (bytes([3, 254, 226, 86]), 33),
    "p2pk": (bytes([3, 178, 139, 127]), 33),
    "BLpk": (bytes([6, 149, 135, 204]), 48),
    "edsk": (bytes([13, 15, 58, 7]), 32),
    "edsk64": (bytes([43, 246, 78, 7]), 64),
    "spsk": (bytes([17, 162, 224, 201]), 32),
    "p2sk": (bytes([16, 81, 238, 189]), 32),
    "BLsk": (bytes([3, 150, 192, 40]), 32),
    "edsig": (bytes([9, 245, 205, 134, 18]), 64),
    "spsig1": (bytes([13, 115, 101, 19, 63]), 64),
    "p2sig": (bytes([54, 240, 44, 52]), 64),
    "sig": (bytes([4, 130, 43]), 64),
    "BLsig": (bytes([40, 171, 64, 207]), 96),
    "Net": (bytes([87, 82, 0]), 4),
    "B": (bytes([1, 52]), 32),
    "vh": (bytes([1, 106, 242]), 32),
    "LLo": (bytes([29, 159, 109]), 32),
    "Co": (bytes([79, 199]), 32),
    "nce": (bytes([69, 220, 169]), 32),
}


class Base58Error(ValueError):
    """A base58check string that is not what was expected; the message says why."""


def _checksum(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()[:4]


_CHUNK = 10  # base58 digits per machine-sized division step
_CHUNK_BASE = 58**_CHUNK


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    digits: list[str] = []
    # Divide by 58^10 on the big integer, then split each chunk with small-int arithmetic.
    while n:
        n, chunk = divmod(n, _CHUNK_BASE)
        for _ in range(_CHUNK):
            chunk, r = divmod(chunk, 58)
            digits.append(ALPHABET[r])
    text = "".join(reversed(digits)).lstrip("1")
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + text


def b58decode(text: str) -> bytes:
    n = 0
    for start in range(0, len(text), _CHUNK):
        part = text[start : start + _CHUNK]
        chunk = 0
        for i, c in enumerate(part, start):
            try:
                chunk = chunk * 58 + _INDEX[c]
            except KeyError:
                raise Base58Error(f"invalid base58 character {c!r} at position {i}") from None
        n = n * 58 ** len(part) + chunk
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def b58check_encode(data: bytes) -> str:
    return b58encode(data + _checksum(data))


def b58check_decode(text: str) -> bytes:
    raw = b58decode(text)
    if len(raw) < 4:
        raise Base58Error(f"base58check string {text[:12]!r} is too short")
    data, check = raw[:-4], raw[-4:]
    if _checksum(data) != check:
        raise Base58Error(f"bad base58check checksum in {text[:12]!r}…")
    return data


def encode(name: str, payload: bytes) -> str:
    """Encode `payload` with the prefix `name` (e.g. "tz1", "edsig", "Net")."""
    prefix, size = PREFIXES[name]
    if len(payload) != size:
        raise Base58Error(f"{name} payload must be {size} bytes, got {len(payload)}")
    return b58check_encode(prefix + payload)


def decode(name: str, text: str) -> bytes:
    """Decode `text`, which must carry the prefix `name`; return the payload."""
    prefix, size = PREFIXES[name]
    data = b58check_decode(text.strip())
    if not data.startswith(prefix):
        raise Base58Error(f"{text[:12]!r}… is not a {name.rstrip('64')} value (wrong prefix)")
    payload = data[len(prefix) :]
    if len(payload) != size:
        raise Base58Error(
            f"{name.rstrip('64')} value {text[:12]!r}… has {len(payload)} payload bytes, "
            f"expected {size}"
        )
    return payload


def identify(text: str, candidates: tuple[str, ...] | None = None) -> tuple[str, bytes]:
    """Find which prefix `text` carries (among `candidates`); return (name, payload)."""
    data = b58check_decode(text.strip())
    names = candidates if candidates is not None else tuple(PREFIXES)
    # Longest prefixes first, so that "sig" never shadows a longer one.
    for name in sorted(names, key=lambda n: -len(PREFIXES[n][0])):
        prefix, size = PREFIXES[name]
        if data.startswith(prefix) and len(data) - len(prefix) == size:
            return name, data[len(prefix) :]
    wanted = ", ".join(n.rstrip("64") for n in names)
    raise Base58Error(f"{text[:12]!r}… is not one of: {wanted} (unknown prefix or length)")
