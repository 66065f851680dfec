"""A fake Tezos Baking app at the APDU level (ledger.md §4–§11, §13), for tests without hardware.

`FakeBakingApp.handle(apdu)` answers `data ‖ SW` and says how long the answer takes (button
prompts, a slow device). Expose it with `FakeHidModule` (a fake `hid` module speaking the 64-byte
HID reports of §2) or `FakeTcpServer` (the TCP framing of §3); both are re-exported here.

Implemented literally: CLA/P1/P2/Lc checks, the 235-byte limit, one data packet per signature, the
chain slots (main / shared test) with (level, round) and the had-attestation / had-preattestation
flags, SETUP/RESET/DEAUTHORIZE, `hwm_disabled` persistence, locked / PIN / app-closed states and an
accept/reject policy for prompts. Keys: BIP39 seed of 'zebra'×24 + SLIP-10 (see ledger_keys).
Not implemented: generic 0x03 operations (reveal/delegation) and HMAC; they answer 0x9405 / 0x6D00.
ECDSA signatures come back as DER with bit 0 of the first byte set from r's parity (the real app
puts the Y parity there) and, on every other signature, with a high S, so the driver must clear
the bit and normalise.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from signer_guard.keys import SecretKey, blake2b_256
from tests.fakes.ledger_hid import FakeHidModule, HidEndpoint
from tests.fakes.ledger_keys import ZEBRA_MNEMONIC, bip39_seed, derive_secret_key
from tests.fakes.ledger_tcp import FakeTcpServer

__all__ = [
    "MAINNET",
    "FakeBakingApp",
    "FakeHidModule",
    "FakeTcpServer",
    "HidEndpoint",
    "SlotHWM",
]

MAINNET: Final = bytes.fromhex("7a06a770")
HARDENED: Final = 0x80000000
ROOT: Final = (44 | HARDENED, 1729 | HARDENED)
MAX_DATA: Final = 235
_CURVES: Final = {0: "ed25519", 1: "secp256k1", 2: "p256", 3: "bip25519"}
_ORDERS: Final = {
    "secp256k1": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}

OK: Final = 0x9000
SW_WRONG_VALUES: Final = 0x6A80
SW_NOT_FOUND: Final = 0x6A88
SW_SECURITY: Final = 0x6982
SW_LOCKED: Final = 0x5515
SW_REJECT: Final = 0x6985
SW_CLASS: Final = 0x6E00
SW_APP_NOT_OPEN: Final = 0x6E01
SW_INS: Final = 0x6D00
SW_PARAM: Final = 0x6B00
SW_LENGTH: Final = 0x6C00
SW_PARSE: Final = 0x9405
SW_LENGTH_FOR_INS: Final = 0x917E


class _Sw(Exception):
    def __init__(self, sw: int) -> None:
        super().__init__(f"0x{sw:04X}")
        self.sw = sw


@dataclass
class SlotHWM:
    level: int = 0
    round: int = 0
    had_attestation: bool = False
    had_preattestation: bool = False


@dataclass
class _Selection:
    curve: int
    path: tuple[int, ...]
    got_data: bool = False


@dataclass
class _NVRAM:
    authorized: tuple[int, tuple[int, ...]] | None
    main_chain_id: bytes
    main: SlotHWM
    test: SlotHWM


@dataclass
class FakeBakingApp:
    """The app's state and APDU handler. Thread-safe (one lock)."""

    seed: bytes = field(default_factory=lambda: bip39_seed(ZEBRA_MNEMONIC))
    version: tuple[int, int, int, int] = (1, 2, 5, 1)  # class 1 = baking, 2.5.1
    git: str = "fake0000"
    authorized: tuple[int, tuple[int, ...]] | None = None  # (curve code, path)
    main_chain_id: bytes = b"\x00\x00\x00\x00"
    main: SlotHWM = field(default_factory=SlotHWM)
    test: SlotHWM = field(default_factory=SlotHWM)
    hwm_disabled: bool = False
    locked: bool = False  # OS lock screen: every APDU → 0x5515
    pin_validated: bool = True
    app_open: bool = True  # False: dashboard, every APDU → `closed_sw`
    closed_sw: int = SW_APP_NOT_OPEN
    supports_sign_with_hash: bool = True
    legacy_hwm: bool = False  # QUERY_ALL_HWM answers 12 bytes (an app that keeps no round)
    prompt_policy: Callable[[str], bool] = field(default=lambda _what: True)
    button_delay: float = 0.0  # seconds a prompt takes to be answered
    sign_delay: float = 0.0  # seconds a signature takes
    exchanges: list[tuple[bytes, bytes]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    _selection: _Selection | None = None
    _nvram: _NVRAM | None = None
    _signatures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- test helpers ---

    def secret_key(self, curve: int, path: tuple[int, ...]) -> SecretKey:
        return derive_secret_key(self.seed, _CURVES[curve], path)

    def power_cycle(self) -> None:
        """A power cut: RAM state is lost; with `hwm_disabled` the HWM comes back as last saved."""
        with self._lock:
            saved = self._nvram
            self._selection = None
            if saved is not None:
                self.authorized = saved.authorized
                self.main_chain_id = saved.main_chain_id
                self.main, self.test = replace(saved.main), replace(saved.test)
            else:
                self.authorized, self.main_chain_id = None, b"\x00\x00\x00\x00"
                self.main, self.test = SlotHWM(), SlotHWM()

    def quit_app(self) -> None:
        """A clean exit: everything is written to NVRAM, then the dashboard shows."""
        with self._lock:
            self._persist(force=True)
            self.app_open = False

    def _persist(self, *, force: bool = False) -> None:
        if force or not self.hwm_disabled or self._nvram is None:
            self._nvram = _NVRAM(
                self.authorized, self.main_chain_id, replace(self.main), replace(self.test)
            )

    # --- APDU handling ---

    def exchange(self, apdu: bytes) -> bytes:
        """Answer one APDU without delay."""
        return self.handle(apdu)[0]

    def handle(self, apdu: bytes) -> tuple[bytes, float]:
        """One APDU → (`data ‖ SW1 SW2`, seconds until the answer is available)."""
        with self._lock:
            delay = 0.0
            try:
                data, delay = self._dispatch(apdu)
                sw = OK
            except _Sw as exc:
                data, sw = b"", exc.sw
                if exc.sw == SW_REJECT:
                    delay = self.button_delay
            response = data + struct.pack(">H", sw)
            self.exchanges.append((bytes(apdu), response))
            return response, delay

    def _prompt(self, what: str) -> float:
        self.prompts.append(what)
        if not self.prompt_policy(what):
            raise _Sw(SW_REJECT)
        return self.button_delay

    def _dispatch(self, apdu: bytes) -> tuple[bytes, float]:
        if self.locked:
            raise _Sw(SW_LOCKED)
        if not self.app_open:
            raise _Sw(self.closed_sw)
        if len(apdu) < 5 or apdu[4] != len(apdu) - 5:
            raise _Sw(SW_LENGTH)
        cla, ins, p1, p2, lc = apdu[:5]
        data = apdu[5:]
        if cla != 0x80:
            raise _Sw(SW_CLASS)
        if lc > MAX_DATA:
            raise _Sw(SW_LENGTH_FOR_INS)
        if ins in (0x00, 0x06, 0x07, 0x08, 0x09, 0x0B, 0x0C, 0x0D) and (p1 or p2):
            raise _Sw(SW_PARAM)
        if ins == 0x00:
            return bytes(self.version), 0.0
        if ins == 0x09:
            return self.git.encode() + b"\x00", 0.0
        if ins in (0x02, 0x03):
            return self._public_key(p2, data, prompt=ins == 0x03)
        if ins == 0x01:
            return self._authorize(p2, data)
        if ins == 0x0A:
            return self._setup(p2, data)
        if ins == 0x06:
            return self._reset(data)
        if ins == 0x0C:
            self.authorized = None
            self._persist(force=True)
            return b"", 0.0
        if ins == 0x07:
            path = self.authorized[1] if self.authorized else ()
            return _encode_path(path), 0.0
        if ins == 0x0D:
            if self.authorized is None:
                return b"\x00\x00", 0.0
            return bytes([self.authorized[0]]) + _encode_path(self.authorized[1]), 0.0
        if ins == 0x08:
            return struct.pack(">II", self.main.level, self.main.round), 0.0
        if ins == 0x0B:
            if self.legacy_hwm:
                return struct.pack(">III", self.main.level, self.test.level, 0), 0.0
            m, t = self.main, self.test
            return struct.pack(
                ">IIII", m.level, m.round, t.level, t.round
            ) + self.main_chain_id, 0.0
        if ins == 0x04 or (ins == 0x0F and self.supports_sign_with_hash):
            return self._sign(ins, p1, p2, data)
        raise _Sw(SW_INS)

    def _key(self, p2: int, data: bytes) -> tuple[int, tuple[int, ...], SecretKey]:
        if p2 not in _CURVES:
            raise _Sw(SW_PARAM)
        path, rest = _decode_path(data)
        if rest:
            raise _Sw(SW_LENGTH_FOR_INS)
        if not self.pin_validated:
            raise _Sw(SW_SECURITY)
        return p2, path, self.secret_key(p2, path)

    def _public_key(self, p2: int, data: bytes, *, prompt: bool) -> tuple[bytes, float]:
        curve, _, key = self._key(p2, data)
        delay = self._prompt("public key") if prompt else 0.0
        return _app_public_key(curve, key), delay

    def _authorize(self, p2: int, data: bytes) -> tuple[bytes, float]:
        if data:
            curve, path, key = self._key(p2, data)
        elif self.authorized is not None:
            curve, path = self.authorized
            key = self.secret_key(curve, path)
        else:
            raise _Sw(SW_NOT_FOUND)
        delay = self._prompt("authorize baking")
        self.authorized = (curve, path)
        self._persist(force=True)
        return _app_public_key(curve, key), delay

    def _setup(self, p2: int, data: bytes) -> tuple[bytes, float]:
        if len(data) < 12:
            raise _Sw(SW_LENGTH_FOR_INS)
        chain_id = data[:4]
        main_level, test_level = struct.unpack(">II", data[4:12])
        if _invalid_level(main_level) or _invalid_level(test_level):
            raise _Sw(SW_WRONG_VALUES)
        curve, path, key = self._key(p2, data[12:])
        delay = self._prompt("setup")
        self.authorized = (curve, path)
        self.main_chain_id = chain_id
        self.main = SlotHWM(main_level, 0)
        self.test = SlotHWM(test_level, 0)
        self._persist(force=True)
        return _app_public_key(curve, key), delay

    def _reset(self, data: bytes) -> tuple[bytes, float]:
        if len(data) != 4:
            raise _Sw(SW_LENGTH_FOR_INS)
        (level,) = struct.unpack(">I", data)
        if _invalid_level(level):
            raise _Sw(SW_WRONG_VALUES)
        delay = self._prompt(f"reset {level}")
        for slot in (self.main, self.test):
            # RESET clears had_attestation only (ledger.md §11).
            slot.level, slot.round, slot.had_attestation = level, 0, False
        self._persist(force=True)
        return b"", delay

    # --- signing ---

    def _sign(self, ins: int, p1: int, p2: int, data: bytes) -> tuple[bytes, float]:
        if p1 == 0x00:
            curve, path, _ = self._key(p2, data)
            self._selection = _Selection(curve, path)
            return b"", 0.0
        if p1 & 0x7F != 0x01:
            raise _Sw(SW_PARAM)
        selection = self._selection
        if selection is None:
            raise _Sw(SW_LENGTH_FOR_INS)
        if selection.got_data:
            raise _Sw(SW_PARSE)
        selection.got_data = True
        if not p1 & 0x80:
            return b"", 0.0  # a first, not-last packet: any further one is refused
        self._selection = None
        if self.authorized != (selection.curve, selection.path):
            raise _Sw(SW_SECURITY)
        if not self.pin_validated:
            raise _Sw(SW_SECURITY)
        kind, chain_id, level, round_ = _parse_message(data)
        slot = (
            self.main
            if chain_id == self.main_chain_id or not any(self.main_chain_id)
            else self.test
        )
        if not _allowed(slot, kind, level, round_):
            raise _Sw(SW_WRONG_VALUES)
        if (level, round_) != (slot.level, slot.round):
            slot.had_attestation = slot.had_preattestation = False
        slot.level, slot.round = max(level, slot.level), round_
        if kind == "attestation":
            slot.had_attestation = True
        elif kind == "preattestation":
            slot.had_preattestation = True
        self._persist()
        key = self.secret_key(selection.curve, selection.path)
        signature = self._device_signature(selection.curve, key, data)
        prefix = blake2b_256(data) if ins == 0x0F else b""
        return prefix + signature, self.sign_delay

    def _device_signature(self, curve: int, key: SecretKey, data: bytes) -> bytes:
        raw = key.sign(data)
        if key.curve not in _ORDERS:
            return raw
        self._signatures += 1
        r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        if self._signatures % 2 == 0:
            s = _ORDERS[key.curve] - s  # the device does not normalise to low S
        der = bytearray(encode_dss_signature(r, s))
        der[0] |= r & 1  # stand-in for the Y parity bit the app stores there
        return bytes(der)


def _invalid_level(level: int) -> bool:
    return bool(level & 0xC0000000)


def _allowed(slot: SlotHWM, kind: str, level: int, round_: int) -> bool:
    """The app's rule (ledger.md §11; truth table watermark-rules.md §5.1)."""
    if level > slot.level:
        return True
    if level == slot.level and round_ > slot.round:
        return True
    if (level, round_) != (slot.level, slot.round):
        return False
    if kind == "attestation":
        return not slot.had_attestation
    if kind == "preattestation":
        return not (slot.had_attestation or slot.had_preattestation)
    return False  # a block is never allowed at an equal (level, round)


def _parse_message(data: bytes) -> tuple[str, bytes, int, int]:
    """(kind, chain id, level, round) of a baking request, as the app parses it (ledger.md §9)."""
    if not data:
        raise _Sw(SW_PARSE)
    magic = data[0]
    if magic == 0x11:
        if len(data) < 87:
            raise _Sw(SW_PARSE)
        (level,) = struct.unpack(">I", data[5:9])
        (fitness_len,) = struct.unpack(">I", data[83:87])
        fitness = data[87 : 87 + fitness_len]
        if len(fitness) != fitness_len or fitness_len < 9 or fitness[:5] != b"\x00\x00\x00\x01\x02":
            raise _Sw(SW_WRONG_VALUES)  # not a Tenderbake block
        (round_,) = struct.unpack(">I", fitness[-4:])
        kind = "block"
    elif magic in (0x12, 0x13):
        if len(data) < 48:
            raise _Sw(SW_PARSE)
        tag = data[37]
        if (magic, tag) not in ((0x12, 20), (0x13, 21), (0x13, 23)):
            raise _Sw(SW_PARSE)
        level, round_ = struct.unpack(">II", data[40:48])
        kind = "preattestation" if magic == 0x12 else "attestation"
    else:
        raise _Sw(SW_PARSE)  # 0x03 (reveal/delegation) is not implemented by this fake
    if _invalid_level(level):
        raise _Sw(SW_WRONG_VALUES)
    return kind, data[1:5], level, round_


def _encode_path(path: tuple[int, ...]) -> bytes:
    return bytes([len(path)]) + b"".join(struct.pack(">I", c) for c in path)


def _decode_path(data: bytes) -> tuple[tuple[int, ...], bytes]:
    if not data:
        raise _Sw(SW_LENGTH_FOR_INS)
    count = data[0]
    end = 1 + 4 * count
    if count == 0 or count > 10 or len(data) < end:
        raise _Sw(SW_WRONG_VALUES)
    path: tuple[int, ...] = struct.unpack(f">{count}I", data[1:end])
    if path[:2] != ROOT:
        raise _Sw(SW_SECURITY)  # the OS only lets the app derive under 44'/1729'
    return path, data[end:]


def _app_public_key(curve: int, key: SecretKey) -> bytes:
    """`len ‖ pubkey` as the app sends it: 0x02 ‖ 32 (Ed25519), 0x04 ‖ X ‖ Y (ECDSA)."""
    raw = key.public_key.raw
    if key.curve == "ed25519":
        body = b"\x02" + raw
    else:
        body = b"\x04" + raw[1:] + _uncompressed_y(key.curve, raw)
    return bytes([len(body)]) + body


def _uncompressed_y(curve: str, compressed: bytes) -> bytes:
    ec_curve: ec.EllipticCurve = ec.SECP256K1() if curve == "secp256k1" else ec.SECP256R1()
    point = ec.EllipticCurvePublicKey.from_encoded_point(ec_curve, compressed)
    return point.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[33:]
