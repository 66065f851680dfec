"""BLS12-381 MinPk primitives for tz4 keys (signing-requests.md §12), on py-arkworks-bls12381.

Public keys are compressed G1 points (48 bytes), signatures compressed G2 points (96 bytes). A
signature is `sk · H(msg, dst)`; it verifies when e(pk, H(msg, dst)) = e(g1, sig). The DST picks the
scheme, so the caller decides what `msg` is (the raw bytes, pk ‖ bytes, or the public key).
This module is the only one that knows which BLS library is used.
"""

from __future__ import annotations

from typing import Final

from py_arkworks_bls12381 import GT, G1Point, G2Point, Scalar

#: The order r of the G1/G2 subgroups; a secret scalar lies in [1, r).
ORDER: Final = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001

DST_SIG_POP: Final = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"
DST_POP_PROVE: Final = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"
DST_SIG_AUG: Final = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_AUG_"

PUBLIC_KEY_SIZE: Final = 48
SIGNATURE_SIZE: Final = 96

#: The type of a parsed (decompressed, subgroup-checked) public key.
PublicKeyPoint = G1Point

_G1: Final = G1Point()  # the generator
_MINUS_G1: Final = -G1Point()
_G1_IDENTITY: Final = G1Point.identity()


def check_scalar(scalar: int) -> None:
    """Raise ValueError unless 1 ≤ scalar < r."""
    if not 0 < scalar < ORDER:
        raise ValueError("BLS secret scalar is out of range (must be 1 ≤ s < r)")


def public_key(scalar: int) -> bytes:
    """The 48-byte compressed G1 public key of a secret scalar."""
    check_scalar(scalar)
    return (_G1 * Scalar(scalar)).to_compressed_bytes()


def parse_public_key(raw: bytes) -> PublicKeyPoint:
    """Decompress a public key; ValueError unless it is a non-identity point of the G1 subgroup."""
    if len(raw) != PUBLIC_KEY_SIZE:
        raise ValueError(f"BLS public key must be {PUBLIC_KEY_SIZE} bytes, got {len(raw)}")
    try:
        point = G1Point.from_compressed_bytes(raw)
    except ValueError:
        raise ValueError("BLS public key is not a point of the G1 subgroup") from None
    if point == _G1_IDENTITY:
        raise ValueError("BLS public key is the point at infinity")
    return point


def sign(scalar: int, msg: bytes, dst: bytes) -> bytes:
    """The 96-byte compressed G2 signature sk · H(msg, dst)."""
    check_scalar(scalar)
    return (G2Point.hash_to_curve(msg, dst) * Scalar(scalar)).to_compressed_bytes()


def verify(pk: PublicKeyPoint, msg: bytes, signature: bytes, dst: bytes) -> bool:
    """True when `signature` is a valid signature of `msg` under `pk` and `dst`; never raises."""
    if len(signature) != SIGNATURE_SIZE:
        return False
    try:
        sig = G2Point.from_compressed_bytes(signature)
    except ValueError:
        return False
    return GT.pairing_check([pk, _MINUS_G1], [G2Point.hash_to_curve(msg, dst), sig])
