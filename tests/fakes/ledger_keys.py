"""Deterministic keys for the fake Ledger: BIP39 seed + SLIP-10 (ed25519, secp256k1, P-256).

SLIP-10 for ed25519 at m/44'/1729'/0'/0' of the 'zebra'×24 mnemonic gives the key of the Tezos
Baking app's own tests (keys.json `ledger_zebra_ed25519_attestation_l101`). The real app's
`bip25519` curve uses BIP32-Ed25519; the fake instead derives an ordinary Ed25519 key by SLIP-10
under a different HMAC key (deterministic, enough for tests, not the device's key).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from signer_guard.keys import Curve, SecretKey

ZEBRA_MNEMONIC: Final = " ".join(["zebra"] * 24)
HARDENED: Final = 0x80000000

_SEED_KEYS: Final[dict[str, bytes]] = {
    "ed25519": b"ed25519 seed",
    "bip25519": b"fake bip25519 seed (not BIP32-Ed25519)",
    "secp256k1": b"Bitcoin seed",
    "p256": b"Nist256p1 seed",
}
_ORDERS: Final[dict[str, int]] = {
    "secp256k1": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}


def bip39_seed(mnemonic: str, passphrase: str = "") -> bytes:
    salt = ("mnemonic" + passphrase).encode()
    return hashlib.pbkdf2_hmac("sha512", mnemonic.encode(), salt, 2048)


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha512).digest()


def slip10(seed: bytes, scheme: str, path: tuple[int, ...]) -> bytes:
    """The 32-byte secret (Ed25519 seed or ECDSA scalar) at `path`.

    `scheme`: ed25519, bip25519 (fake), secp256k1 or p256. Ed25519 components are all hardened."""
    i = _hmac(_SEED_KEYS[scheme], seed)
    if scheme in _ORDERS:
        order = _ORDERS[scheme]
        while not 0 < int.from_bytes(i[:32], "big") < order:
            i = _hmac(_SEED_KEYS[scheme], i)
    key, chain = i[:32], i[32:]
    for component in path:
        if scheme in ("ed25519", "bip25519"):
            i = _hmac(chain, b"\x00" + key + (component | HARDENED).to_bytes(4, "big"))
            key, chain = i[:32], i[32:]
            continue
        order = _ORDERS[scheme]
        curve: Curve = "secp256k1" if scheme == "secp256k1" else "p256"
        if component & HARDENED:
            data = b"\x00" + key + component.to_bytes(4, "big")
        else:
            data = SecretKey(curve, key).public_key.raw + component.to_bytes(4, "big")
        while True:
            i = _hmac(chain, data)
            child = (int.from_bytes(i[:32], "big") + int.from_bytes(key, "big")) % order
            if int.from_bytes(i[:32], "big") < order and child != 0:
                break
            data = b"\x01" + i[32:] + component.to_bytes(4, "big")
        key, chain = child.to_bytes(32, "big"), i[32:]
    return key


def derive_secret_key(seed: bytes, scheme: str, path: tuple[int, ...]) -> SecretKey:
    curve: Curve = "ed25519" if scheme in ("ed25519", "bip25519") else scheme  # type: ignore[assignment]
    return SecretKey(curve, slip10(seed, scheme, path))
