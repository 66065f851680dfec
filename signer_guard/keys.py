"""Tezos keys, key hashes and signatures for the four curves (signing-requests.md §11–§12).

Pure: no I/O. Ed25519, secp256k1 and P-256 use `cryptography`; BLS12-381 uses `signer_guard.bls`.

What each curve signs (`data` is the whole request, magic byte included):
- Ed25519: blake2b-256(data);
- secp256k1 / P-256: ECDSA over the blake2b-256 digest used directly as the hash, r ‖ s, low-S;
- BLS MinPk: the raw bytes; `version` picks the scheme (remote-signer-api.md §2).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from signer_guard import b58, bls

Curve = Literal["ed25519", "secp256k1", "p256", "bls12_381"]
CURVES: Final[tuple[Curve, ...]] = get_args(Curve)

_PK_PREFIX: Final[dict[Curve, str]] = {
    "ed25519": "edpk",
    "secp256k1": "sppk",
    "p256": "p2pk",
    "bls12_381": "BLpk",
}
_SK_PREFIX: Final[dict[Curve, str]] = {
    "ed25519": "edsk",
    "secp256k1": "spsk",
    "p256": "p2sk",
    "bls12_381": "BLsk",
}
_SIG_PREFIX: Final[dict[Curve, str]] = {
    "ed25519": "edsig",
    "secp256k1": "spsig1",
    "p256": "p2sig",
    "bls12_381": "BLsig",
}
_PKH_PREFIX: Final[dict[Curve, str]] = {
    "ed25519": "tz1",
    "secp256k1": "tz2",
    "p256": "tz3",
    "bls12_381": "tz4",
}
_PKH_TAG: Final[dict[str, int]] = {"tz1": 0, "tz2": 1, "tz3": 2, "tz4": 3, "tz5": 4}
_ENCRYPTED_SK: Final = ("edesk", "spesk", "p2esk", "BLesk")

_EC_CURVES: Final[dict[Curve, ec.EllipticCurve]] = {
    "secp256k1": ec.SECP256K1(),
    "p256": ec.SECP256R1(),
}
_EC_ORDER: Final[dict[Curve, int]] = {
    "secp256k1": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}
# RFC 6979 nonces: the same key and bytes always give the same signature.
_ECDSA: Final = ec.ECDSA(utils.Prehashed(hashes.SHA256()), deterministic_signing=True)
_ECDSA_VERIFY: Final = ec.ECDSA(utils.Prehashed(hashes.SHA256()))


class KeyFormatError(ValueError):
    """A key, key hash or signature that cannot be used; the message names what is wrong."""


def blake2b_256(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def blake2b_160(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=20).digest()


def _check_version(version: int | None) -> None:
    if version is not None and version not in (0, 1, 2, 3):
        raise ValueError(f"unsupported signing version {version}: expected 0, 1, 2 or 3")


def _bls_scheme(version: int | None) -> Literal["pop", "aug"]:
    """Absent, 2 or 3 → proof-of-possession scheme; 1 → augmented; 0 → no BLS."""
    _check_version(version)
    if version == 0:
        raise ValueError("version 0 does not allow BLS signatures")
    return "aug" if version == 1 else "pop"


# --------------------------------------------------------------------------- public keys ------


@dataclass(frozen=True)
class PublicKey:
    """A public key: `raw` is 32 (Ed25519), 33 (compressed secp256k1/P-256) or 48 (BLS) bytes."""

    curve: Curve
    raw: bytes
    _impl: object = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_impl", _load_public(self.curve, self.raw))

    @classmethod
    def from_b58(cls, text: str) -> PublicKey:
        try:
            data = b58.b58check_decode(text.strip())
        except b58.Base58Error as exc:
            raise KeyFormatError(f"invalid public key: {exc}") from None
        for curve, name in _PK_PREFIX.items():
            prefix, size = b58.PREFIXES[name]
            if data.startswith(prefix):
                payload = data[len(prefix) :]
                if len(payload) != size:
                    raise KeyFormatError(
                        f"invalid {name} public key: {len(payload)} payload bytes, expected {size}"
                    )
                return cls(curve, payload)
        raise KeyFormatError(
            f"a b58 value starting with {text.strip()[:4]!r} is not a public key: "
            "expected edpk…, sppk…, p2pk… or BLpk…"
        )

    @property
    def b58(self) -> str:
        return b58.encode(_PK_PREFIX[self.curve], self.raw)

    @property
    def pkh(self) -> str:
        return b58.encode(_PKH_PREFIX[self.curve], blake2b_160(self.raw))

    def verify(self, signature: bytes, data: bytes, *, version: int | None = None) -> bool:
        """True when `signature` (raw bytes) signs `data` under this key; never raises.

        secp256k1 signatures must be low-S (as Octez checks them): normalise before verifying a
        signature from a device. For BLS, `version` picks the scheme; version 0 (or any version
        that signing would refuse) gives False."""
        impl = self._impl
        if isinstance(impl, ed25519.Ed25519PublicKey):
            if len(signature) != 64:
                return False
            try:
                impl.verify(signature, blake2b_256(data))
            except InvalidSignature:
                return False
            return True
        if isinstance(impl, ec.EllipticCurvePublicKey):
            return _ecdsa_verify(self.curve, impl, signature, data)
        if not isinstance(impl, bls.PublicKeyPoint):
            return False
        try:
            scheme = _bls_scheme(version)
        except ValueError:
            return False
        if scheme == "aug":
            return bls.verify(impl, self.raw + data, signature, bls.DST_SIG_AUG)
        return bls.verify(impl, data, signature, bls.DST_SIG_POP)

    def verify_possession(self, proof: bytes) -> bool:
        """True when `proof` is a BLS proof of possession of this key; False for other curves."""
        if not isinstance(self._impl, bls.PublicKeyPoint):
            return False
        return bls.verify(self._impl, self.raw, proof, bls.DST_POP_PROVE)


def _load_public(curve: Curve, raw: bytes) -> object:
    if curve == "ed25519":
        if len(raw) != 32:
            raise KeyFormatError(f"Ed25519 public key must be 32 bytes, got {len(raw)}")
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    if curve in _EC_CURVES:
        if len(raw) != 33 or raw[0] not in (2, 3):
            raise KeyFormatError(
                f"{curve} public key must be 33 bytes, compressed (02/03 first), got {len(raw)} "
                "bytes"
            )
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(_EC_CURVES[curve], raw)
        except ValueError:
            raise KeyFormatError(f"{curve} public key is not a point of the curve") from None
    if curve == "bls12_381":
        try:
            return bls.parse_public_key(raw)
        except ValueError as exc:
            raise KeyFormatError(str(exc)) from None
    raise KeyFormatError(f"unknown curve {curve!r}")


def _ecdsa_verify(
    curve: Curve, key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes
) -> bool:
    if len(signature) != 64:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    n = _EC_ORDER[curve]
    if not (0 < r < n and 0 < s < n):
        return False
    if curve == "secp256k1" and s > n // 2:
        return False
    try:
        key.verify(utils.encode_dss_signature(r, s), blake2b_256(data), _ECDSA_VERIFY)
    except InvalidSignature:
        return False
    return True


# --------------------------------------------------------------------------- secret keys ------


class SecretKey:
    """A secret key of one of the four curves. Its repr and str never show the secret."""

    __slots__ = ("_impl", "_secret", "curve", "public_key")

    def __init__(self, curve: Curve, secret: bytes) -> None:
        """`secret`: the Ed25519 seed, the big-endian ECDSA scalar or the little-endian BLS
        scalar (32 bytes each, as in the b58 payload)."""
        if len(secret) != 32:
            raise KeyFormatError(f"{curve} secret key must be 32 bytes, got {len(secret)}")
        self.curve: Curve = curve
        self._secret = secret
        self._impl: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | int
        if curve == "ed25519":
            self._impl = ed25519.Ed25519PrivateKey.from_private_bytes(secret)
            raw = self._impl.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        elif curve in _EC_CURVES:
            scalar = int.from_bytes(secret, "big")
            if not 0 < scalar < _EC_ORDER[curve]:
                raise KeyFormatError(f"{curve} secret scalar is out of range (must be 1 ≤ d < n)")
            self._impl = ec.derive_private_key(scalar, _EC_CURVES[curve])
            raw = self._impl.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
        elif curve == "bls12_381":
            scalar = int.from_bytes(secret, "little")
            try:
                raw = bls.public_key(scalar)
            except ValueError as exc:
                raise KeyFormatError(str(exc)) from None
            self._impl = scalar
        else:
            raise KeyFormatError(f"unknown curve {curve!r}")
        self.public_key = PublicKey(curve, raw)

    def __repr__(self) -> str:
        return f"SecretKey(curve={self.curve!r}, pkh={self.public_key.pkh!r})"

    __str__ = __repr__

    @classmethod
    def from_b58(cls, text: str) -> SecretKey:
        """Parse edsk (54 or 98 characters), spsk, p2sk or BLsk. Error messages never quote
        the secret."""
        text = text.strip()
        if text.startswith(_ENCRYPTED_SK):
            raise KeyFormatError(
                "encrypted secret keys (edesk/spesk/p2esk/BLesk) are not supported; "
                "give the unencrypted key"
            )
        name, payload = _decode_secret(text)
        if name == "edsk64":
            key = cls("ed25519", payload[:32])
            if key.public_key.raw != payload[32:]:
                raise KeyFormatError(
                    "edsk secret key (98 characters): the embedded public key does not match "
                    "the seed"
                )
            return key
        curve = next(c for c, n in _SK_PREFIX.items() if n == name)
        return cls(curve, payload)

    @classmethod
    def generate(cls, curve: Curve) -> SecretKey:
        if curve == "bls12_381":
            scalar = 1 + secrets.randbelow(bls.ORDER - 1)
            return cls(curve, scalar.to_bytes(32, "little"))
        if curve in _EC_ORDER:
            scalar = 1 + secrets.randbelow(_EC_ORDER[curve] - 1)
            return cls(curve, scalar.to_bytes(32, "big"))
        return cls(curve, secrets.token_bytes(32))

    @property
    def b58(self) -> str:
        """The secret key in b58 (edsk in its 54-character seed form). Handle with care."""
        return b58.encode(_SK_PREFIX[self.curve], self._secret)

    @property
    def pkh(self) -> str:
        return self.public_key.pkh

    def sign(self, data: bytes, *, version: int | None = None) -> bytes:
        """Sign the whole request `data` (see the module docstring); return the raw signature.

        ValueError for an unknown version, and for version 0 with a BLS key."""
        _check_version(version)
        impl = self._impl
        if isinstance(impl, ed25519.Ed25519PrivateKey):
            return impl.sign(blake2b_256(data))
        if isinstance(impl, ec.EllipticCurvePrivateKey):
            r, s = utils.decode_dss_signature(impl.sign(blake2b_256(data), _ECDSA))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
            return normalize_signature(self.curve, sig)
        if _bls_scheme(version) == "aug":
            return bls.sign(impl, self.public_key.raw + data, bls.DST_SIG_AUG)
        return bls.sign(impl, data, bls.DST_SIG_POP)

    def prove_possession(self) -> bytes:
        """BLS proof of possession: a signature with the PoP DST over the 48-byte public key."""
        if not isinstance(self._impl, int):
            raise ValueError(f"proof of possession exists only for BLS keys, not {self.curve}")
        return bls.sign(self._impl, self.public_key.raw, bls.DST_POP_PROVE)


def _decode_secret(text: str) -> tuple[str, bytes]:
    """(prefix name, payload) of a b58 secret; messages name the problem but never quote it."""
    if not text:
        raise KeyFormatError("empty secret key")
    bad = [i for i, c in enumerate(text) if c not in b58.ALPHABET]
    if bad:
        raise KeyFormatError(
            f"secret key has a character outside the base58 alphabet at position {bad[0]}"
        )
    try:
        data = b58.b58check_decode(text)
    except b58.Base58Error:
        raise KeyFormatError(
            f"secret key ({len(text)} characters) has a bad base58check checksum "
            "(mistyped or truncated?)"
        ) from None
    for name in (*_SK_PREFIX.values(), "edsk64"):
        prefix, size = b58.PREFIXES[name]
        if data.startswith(prefix):
            label = name.rstrip("64")
            if len(data) - len(prefix) != size:
                expected = "54 or 98" if label == "edsk" else "54"
                raise KeyFormatError(
                    f"{label} secret key must be {expected} characters, got {len(text)} "
                    f"({len(data) - len(prefix)} payload bytes)"
                )
            return name, data[len(prefix) :]
    raise KeyFormatError(
        "not a secret key: expected a b58 string starting with edsk, spsk, p2sk or BLsk"
    )


# --------------------------------------------------------------------------- signatures -------


def signature_b58(curve: Curve, raw: bytes) -> str:
    """edsig / spsig1 / p2sig / BLsig b58 of a raw signature."""
    try:
        return b58.encode(_SIG_PREFIX[curve], raw)
    except b58.Base58Error as exc:
        raise KeyFormatError(f"invalid {curve} signature: {exc}") from None


def parse_signature(text: str) -> tuple[Curve | None, bytes]:
    """Raw bytes of an edsig/spsig1/p2sig/BLsig or generic `sig` signature, with its curve
    (None for the generic form, which fits any 64-byte signature)."""
    names = (*_SIG_PREFIX.values(), "sig")
    try:
        name, raw = b58.identify(text, names)
    except b58.Base58Error as exc:
        raise KeyFormatError(f"invalid signature: {exc}") from None
    for curve, prefix in _SIG_PREFIX.items():
        if prefix == name:
            return curve, raw
    return None, raw


def normalize_signature(curve: Curve, raw: bytes) -> bytes:
    """Low-S form for secp256k1 and P-256 (s > n/2 → n − s); other input is returned as is."""
    n = _EC_ORDER.get(curve)
    if n is None or len(raw) != 64:
        return raw
    s = int.from_bytes(raw[32:], "big")
    if n // 2 < s < n:
        return raw[:32] + (n - s).to_bytes(32, "big")
    return raw


# --------------------------------------------------------------------------- key hashes -------


def _split_pkh(pkh: str) -> tuple[str, bytes]:
    try:
        return b58.identify(pkh, tuple(_PKH_TAG))
    except b58.Base58Error as exc:
        raise KeyFormatError(f"invalid public key hash: {exc}") from None


def pkh_binary(pkh: str) -> bytes:
    """21 bytes: tag (0 tz1, 1 tz2, 2 tz3, 3 tz4, 4 tz5) ‖ 20-byte hash."""
    name, digest = _split_pkh(pkh)
    return bytes([_PKH_TAG[name]]) + digest


def pkh_curve(pkh: str) -> Curve:
    """tz1 → ed25519, tz2 → secp256k1, tz3 → p256, tz4 → bls12_381."""
    name, _ = _split_pkh(pkh)
    for curve, prefix in _PKH_PREFIX.items():
        if prefix == name:
            return curve
    raise KeyFormatError(f"{name} keys are not supported (only tz1, tz2, tz3 and tz4)")


def authentication_payload(pkh: str, data: bytes) -> bytes:
    """What a client signs to authenticate a request: 0x04 0x01 ‖ pkh_binary(pkh) ‖ data."""
    return b"\x04\x01" + pkh_binary(pkh) + data
