"""APDUs of the Ledger Tezos Baking app: building, parsing, status words (ledger.md §4–§10).

Pure functions and constants only; no I/O.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

CLA: Final = 0x80
MAX_DATA: Final = 235  # MAX_APDU_SIZE of the app; also the octez limit
HARDENED: Final = 0x80000000
TEZOS_ROOT: Final = (44 | HARDENED, 1729 | HARDENED)
MAX_PATH_COMPONENTS: Final = 10
# Levels with the top two bits set are invalid for the app (RESET, SETUP, signing).
MAX_LEVEL: Final = (1 << 30) - 1


class Ins(enum.IntEnum):
    VERSION = 0x00
    AUTHORIZE_BAKING = 0x01
    GET_PUBLIC_KEY = 0x02
    PROMPT_PUBLIC_KEY = 0x03
    SIGN = 0x04
    SIGN_UNSAFE = 0x05
    RESET = 0x06
    QUERY_AUTH_KEY = 0x07
    QUERY_MAIN_HWM = 0x08
    GIT = 0x09
    SETUP = 0x0A
    QUERY_ALL_HWM = 0x0B
    DEAUTHORIZE = 0x0C
    QUERY_AUTH_KEY_WITH_CURVE = 0x0D
    HMAC = 0x0E
    SIGN_WITH_HASH = 0x0F


P1_FIRST: Final = 0x00
P1_LAST_DATA: Final = 0x81


class Curve(enum.IntEnum):
    """P2 curve codes (ledger.md §6)."""

    ED25519 = 0x00
    SECP256K1 = 0x01
    P256 = 0x02
    BIP25519 = 0x03

    @property
    def uri_name(self) -> str:
        return _CURVE_URI_NAMES[self]

    @property
    def is_ecdsa(self) -> bool:
        return self in (Curve.SECP256K1, Curve.P256)


_CURVE_URI_NAMES: Final = {
    Curve.ED25519: "ed25519",
    Curve.SECP256K1: "secp256k1",
    Curve.P256: "p256",
    Curve.BIP25519: "bip25519",
}
CURVE_BY_NAME: Final[dict[str, Curve]] = {
    "ed25519": Curve.ED25519,
    "secp256k1": Curve.SECP256K1,
    "p256": Curve.P256,
    "p-256": Curve.P256,
    "secp256r1": Curve.P256,
    "bip25519": Curve.BIP25519,
}

# Group orders, for low-S normalisation (signing-requests.md §12).
SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
P256_N: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_P: Final = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
SECP256K1_P: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F


class ApduFormatError(ValueError):
    """A response from the app that does not have the documented shape."""


# --- building ------------------------------------------------------------------------------


def build(ins: int, p1: int = 0, p2: int = 0, data: bytes = b"") -> bytes:
    """`CLA INS P1 P2 Lc data`, short form, Lc always sent."""
    if len(data) > MAX_DATA:
        raise ValueError(f"APDU data of {len(data)} bytes exceeds the app's {MAX_DATA}-byte limit")
    return bytes([CLA, ins, p1, p2, len(data)]) + data


def encode_path(path: tuple[int, ...]) -> bytes:
    """BIP32 path: `count(1) ‖ count × u32 BE` (ledger.md §7)."""
    if not 0 < len(path) <= MAX_PATH_COMPONENTS:
        raise ValueError(f"a path has 1 to {MAX_PATH_COMPONENTS} components, got {len(path)}")
    return bytes([len(path)]) + b"".join(struct.pack(">I", c) for c in path)


def decode_path(data: bytes) -> tuple[tuple[int, ...], bytes]:
    """Inverse of `encode_path`; returns (path, the bytes after it)."""
    if not data:
        raise ApduFormatError("empty BIP32 path")
    count = data[0]
    end = 1 + 4 * count
    if count == 0 or count > MAX_PATH_COMPONENTS or len(data) < end:
        raise ApduFormatError(f"bad BIP32 path encoding ({data[: 1 + 4 * 2].hex()}…)")
    return struct.unpack(f">{count}I", data[1:end]), data[end:]


def format_path(path: tuple[int, ...]) -> str:
    """`m/44'/1729'/0'/0'`."""
    parts = [f"{c & ~HARDENED}'" if c & HARDENED else str(c) for c in path]
    return "m/" + "/".join(parts)


def version() -> bytes:
    return build(Ins.VERSION)


def git() -> bytes:
    return build(Ins.GIT)


def get_public_key(curve: Curve, path: tuple[int, ...], *, prompt: bool = False) -> bytes:
    ins = Ins.PROMPT_PUBLIC_KEY if prompt else Ins.GET_PUBLIC_KEY
    return build(ins, 0, curve, encode_path(path))


def authorize_baking(curve: Curve, path: tuple[int, ...] | None) -> bytes:
    """AUTHORIZE_BAKING; an empty path keeps the authorized key."""
    return build(Ins.AUTHORIZE_BAKING, 0, curve, encode_path(path) if path else b"")


def setup(
    curve: Curve, path: tuple[int, ...], chain_id: bytes, main_level: int, test_level: int
) -> bytes:
    if len(chain_id) != 4:
        raise ValueError("a chain id is 4 bytes")
    _check_level(main_level)
    _check_level(test_level)
    data = chain_id + struct.pack(">II", main_level, test_level) + encode_path(path)
    return build(Ins.SETUP, 0, curve, data)


def reset(level: int) -> bytes:
    _check_level(level)
    return build(Ins.RESET, 0, 0, struct.pack(">I", level))


def deauthorize() -> bytes:
    return build(Ins.DEAUTHORIZE)


def query_auth_key() -> bytes:
    return build(Ins.QUERY_AUTH_KEY)


def query_auth_key_with_curve() -> bytes:
    return build(Ins.QUERY_AUTH_KEY_WITH_CURVE)


def query_main_hwm() -> bytes:
    return build(Ins.QUERY_MAIN_HWM)


def query_all_hwm() -> bytes:
    return build(Ins.QUERY_ALL_HWM)


def sign_path(curve: Curve, path: tuple[int, ...], *, with_hash: bool = True) -> bytes:
    ins = Ins.SIGN_WITH_HASH if with_hash else Ins.SIGN
    return build(ins, P1_FIRST, curve, encode_path(path))


def sign_message(message: bytes, *, with_hash: bool = True) -> bytes:
    ins = Ins.SIGN_WITH_HASH if with_hash else Ins.SIGN
    return build(ins, P1_LAST_DATA, 0, message)


def _check_level(level: int) -> None:
    if not 0 <= level <= MAX_LEVEL:
        raise ValueError(f"level {level} out of range 0..{MAX_LEVEL} (top two bits must be clear)")


# --- parsing ---------------------------------------------------------------------------------


def split_status(response: bytes) -> tuple[bytes, int]:
    """`data ‖ SW1 SW2` → (data, sw)."""
    if len(response) < 2:
        raise ApduFormatError(f"response of {len(response)} bytes has no status word")
    return response[:-2], int.from_bytes(response[-2:], "big")


@dataclass(frozen=True)
class AppVersion:
    app_class: int  # 1 = baking, 0 = wallet
    major: int
    minor: int
    patch: int

    @property
    def is_baking(self) -> bool:
        return self.app_class == 1

    def __str__(self) -> str:
        name = "Tezos Baking" if self.is_baking else f"Tezos (class {self.app_class})"
        return f"{name} {self.major}.{self.minor}.{self.patch}"


def parse_version(data: bytes) -> AppVersion:
    if len(data) < 4:
        raise ApduFormatError(f"VERSION answered {len(data)} bytes, expected 4")
    return AppVersion(data[0], data[1], data[2], data[3])


def parse_git(data: bytes) -> str:
    return data.split(b"\x00", 1)[0].decode("ascii", errors="replace")


def parse_public_key(data: bytes) -> bytes:
    """`len(1) ‖ pubkey` → pubkey as the app sends it (33 bytes Ed25519, 65 bytes ECDSA)."""
    if not data or len(data) != 1 + data[0]:
        raise ApduFormatError(f"malformed public key response ({len(data)} bytes)")
    return data[1:]


def tezos_public_key(curve: Curve, raw: bytes) -> bytes:
    """The app's public key bytes → Tezos public key bytes (32 for Ed25519, 33 compressed)."""
    if curve in (Curve.ED25519, Curve.BIP25519):
        if len(raw) != 33:
            raise ApduFormatError(f"Ed25519 public key of {len(raw)} bytes, expected 33")
        return raw[1:]
    if len(raw) == 33 and raw[0] in (2, 3):
        return raw
    if len(raw) != 65 or raw[0] != 0x04:
        raise ApduFormatError(f"ECDSA public key of {len(raw)} bytes is not uncompressed")
    x, y = raw[1:33], raw[33:]
    return bytes([0x02 | (y[-1] & 1)]) + x


@dataclass(frozen=True)
class AuthorizedKey:
    curve: Curve | None  # None when no key is authorized
    path: tuple[int, ...]

    @property
    def authorized(self) -> bool:
        return bool(self.path)


def parse_auth_key_with_curve(data: bytes) -> AuthorizedKey:
    """`curve(1) ‖ len(1) ‖ len × u32`; len 0 = no key authorized."""
    if len(data) < 2:
        raise ApduFormatError(f"QUERY_AUTH_KEY_WITH_CURVE answered {len(data)} bytes")
    count = data[1]
    if len(data) != 2 + 4 * count:
        raise ApduFormatError("QUERY_AUTH_KEY_WITH_CURVE: path length does not match")
    if count == 0:
        return AuthorizedKey(None, ())
    try:
        curve = Curve(data[0])
    except ValueError as exc:
        raise ApduFormatError(f"unknown curve code {data[0]} for the authorized key") from exc
    return AuthorizedKey(curve, struct.unpack(f">{count}I", data[2:]))


@dataclass(frozen=True)
class AllHWM:
    main_level: int
    main_round: int
    test_level: int
    test_round: int
    main_chain_id: bytes  # 4 bytes; zero = unset (every chain uses the main slot)

    @property
    def chain_unset(self) -> bool:
        return self.main_chain_id == b"\x00\x00\x00\x00"


def parse_all_hwm(data: bytes) -> AllHWM:
    if len(data) != 20:
        raise ApduFormatError(
            f"QUERY_ALL_HWM answered {len(data)} bytes, expected 20: this app version is too old "
            "(it keeps no round); update the Tezos Baking app"
        )
    ml, mr, tl, tr = struct.unpack(">IIII", data[:16])
    return AllHWM(ml, mr, tl, tr, data[16:20])


# --- signatures ------------------------------------------------------------------------------


def parse_der_signature(der: bytes) -> tuple[int, int]:
    """Strict DER `30 L 02 Lr r 02 Ls s` → (r, s). Bit 0 of the first byte must already be clear."""
    if len(der) < 8 or der[0] != 0x30 or der[1] != len(der) - 2:
        raise ApduFormatError(f"signature is not a DER sequence ({der[:4].hex()}…)")
    pos = 2
    values: list[int] = []
    for _ in range(2):
        if pos + 2 > len(der) or der[pos] != 0x02:
            raise ApduFormatError("DER signature: expected an INTEGER")
        length = der[pos + 1]
        start, end = pos + 2, pos + 2 + length
        if length == 0 or length > 33 or end > len(der):
            raise ApduFormatError("DER signature: bad INTEGER length")
        values.append(int.from_bytes(der[start:end], "big"))
        pos = end
    if pos != len(der):
        raise ApduFormatError("DER signature: trailing bytes")
    return values[0], values[1]


def der_to_raw(curve: Curve, der: bytes) -> bytes:
    """The app's ECDSA signature (DER, Y parity in bit 0 of byte 0) → r‖s, low-S (ledger.md §8)."""
    order = SECP256K1_N if curve is Curve.SECP256K1 else P256_N
    if not der:
        raise ApduFormatError("empty signature")
    r, s = parse_der_signature(bytes([der[0] & 0xFE]) + der[1:])
    if not (0 < r < order and 0 < s < order):
        raise ApduFormatError("DER signature: r or s out of range")
    if s > order // 2:
        s = order - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def signature_to_raw(curve: Curve, sig: bytes) -> bytes:
    """The app's signature bytes for `curve` → raw 64 bytes."""
    if curve.is_ecdsa:
        return der_to_raw(curve, sig)
    if len(sig) != 64:
        raise ApduFormatError(f"Ed25519 signature of {len(sig)} bytes, expected 64")
    return sig


# --- status words ----------------------------------------------------------------------------

SW_OK: Final = 0x9000
SW_HWM_REFUSAL: Final = 0x6A80
SW_DATA_NOT_FOUND: Final = 0x6A88
SW_SECURITY: Final = 0x6982
SW_DEVICE_LOCKED: Final = 0x5515
SW_REJECTED: Final = 0x6985
SW_WRONG_CLA: Final = 0x6E00
SW_APP_NOT_OPEN: Final = 0x6E01
SW_WRONG_INS: Final = 0x6D00
SW_WRONG_INS_2: Final = 0x6D02
SW_WRONG_P1P2: Final = 0x6B00
SW_WRONG_LENGTH: Final = 0x6C00
SW_PARSE_ERROR: Final = 0x9405
SW_TOO_LONG: Final = 0x917E
SW_MEMORY: Final = 0x9200
SW_CRYPTO: Final = 0x9001

APP_NOT_OPEN_SWS: Final = frozenset({SW_WRONG_CLA, SW_APP_NOT_OPEN})
UNKNOWN_INS_SWS: Final = frozenset({SW_WRONG_INS, SW_WRONG_INS_2})
# Status words after which the device (not this request) is the problem: the backend stops being
# ready until a probe shows the device usable again.
DEVICE_STATE_SWS: Final = frozenset({SW_DEVICE_LOCKED, SW_SECURITY, *APP_NOT_OPEN_SWS})

_DESCRIPTIONS: Final[dict[int, str]] = {
    SW_HWM_REFUSAL: "refused: device high watermark, or an invalid level, path or message",
    SW_SECURITY: (
        "key not authorized for baking or device locked; unlock the device, open the Tezos "
        "Baking app and authorize this key (octez-client setup ledger to bake for …)"
    ),
    SW_DEVICE_LOCKED: "device locked; unlock it with the PIN and open the Tezos Baking app",
    SW_WRONG_CLA: "Tezos Baking app not open; open it on the device (dashboard or another app)",
    SW_APP_NOT_OPEN: "Tezos Baking app not open; open it on the device (dashboard or another app)",
    SW_WRONG_INS: "instruction not supported by this app (wrong app or app version)",
    SW_WRONG_INS_2: "instruction not supported by this app (wrong app or app version)",
    SW_PARSE_ERROR: "the app could not parse the request (incompatible app version)",
    SW_TOO_LONG: "request too long or no key selected (driver bug)",
    SW_REJECTED: "rejected on the device",
    SW_WRONG_P1P2: "wrong P1/P2 (driver bug)",
    SW_WRONG_LENGTH: "wrong Lc (driver bug)",
    SW_DATA_NOT_FOUND: (
        "no baking key authorized; authorize one (octez-client setup ledger to bake for …)"
    ),
    SW_MEMORY: "device memory error",
    SW_CRYPTO: "device crypto error",
}


def describe_status(sw: int) -> str:
    """A human message for a status word, including the hex value and an operator hint."""
    text = _DESCRIPTIONS.get(sw, "unexpected status word")
    return f"{text} (0x{sw:04X})"


class StatusWordError(Exception):
    """The app answered a status word other than 0x9000 to the APDU with `ins` and `p1`."""

    def __init__(self, sw: int, ins: int, p1: int = 0) -> None:
        self.sw = sw
        self.ins = ins
        self.p1 = p1
        try:
            name = Ins(ins).name
        except ValueError:
            name = f"INS 0x{ins:02X}"
        super().__init__(f"ledger: {name}: {describe_status(sw)}")
