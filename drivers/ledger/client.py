"""Synchronous client of the Tezos Baking app over any transport (one call = whole APDU exchange).

Runs in the backend's worker thread (or in a CLI command); never on an event loop.
"""

from __future__ import annotations

import logging
from typing import Final

from drivers.ledger import apdu
from drivers.ledger.apdu import AllHWM, AppVersion, AuthorizedKey, Curve, StatusWordError
from drivers.ledger.transport import Transport, TransportError
from signer_guard import keys

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 5.0
SIGN_TIMEOUT: Final = 5.0
PROMPT_TIMEOUT: Final = 120.0

_KEY_CURVE: Final[dict[Curve, keys.Curve]] = {
    Curve.ED25519: "ed25519",
    Curve.BIP25519: "ed25519",
    Curve.SECP256K1: "secp256k1",
    Curve.P256: "p256",
}


def key_curve(curve: Curve) -> keys.Curve:
    """The `signer_guard.keys` curve of keys and signatures made with the app curve `curve`."""
    return _KEY_CURVE[curve]


class SignatureMismatch(Exception):
    """The app signed something else than what was sent (SIGN_WITH_HASH hash mismatch)."""


def device_public_key(curve: Curve, data: bytes) -> keys.PublicKey:
    """A GET_PUBLIC_KEY-style answer (`len ‖ pubkey`) → Tezos public key."""
    raw = apdu.tezos_public_key(curve, apdu.parse_public_key(data))
    try:
        return keys.PublicKey(key_curve(curve), raw)
    except keys.KeyFormatError as exc:
        raise apdu.ApduFormatError(f"the device returned an invalid public key: {exc}") from None


class BakingAppClient:
    """The APDUs of the Tezos Baking app (ledger.md §5) over one transport."""

    def __init__(
        self,
        transport: Transport,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        sign_timeout: float = SIGN_TIMEOUT,
        prompt_timeout: float = PROMPT_TIMEOUT,
    ) -> None:
        self.transport = transport
        self.timeout = timeout
        self.sign_timeout = sign_timeout
        self.prompt_timeout = prompt_timeout
        self._sign_ins_with_hash = True

    def close(self) -> None:
        self.transport.close()

    def exchange(self, request: bytes, timeout: float | None = None) -> bytes:
        """Send one APDU; return its data; raise StatusWordError unless the SW is 0x9000."""
        response = self.transport.exchange(request, self.timeout if timeout is None else timeout)
        try:
            data, sw = apdu.split_status(response)
        except apdu.ApduFormatError as exc:
            raise TransportError(f"ledger: {exc}", sent=True) from exc
        log.debug("ledger APDU %s -> %s %04x", request.hex(), data.hex(), sw)
        if sw != apdu.SW_OK:
            raise StatusWordError(sw, request[1], request[2])
        return data

    # --- queries (no prompt) ---

    def version(self) -> AppVersion:
        return apdu.parse_version(self.exchange(apdu.version()))

    def git(self) -> str:
        return apdu.parse_git(self.exchange(apdu.git()))

    def get_public_key(self, curve: Curve, path: tuple[int, ...]) -> keys.PublicKey:
        return device_public_key(curve, self.exchange(apdu.get_public_key(curve, path)))

    def device_id(self) -> str:
        """The tz1 of the device's ed25519 key at 44'/1729' (what `ledger://tz1…/` names)."""
        return self.get_public_key(Curve.ED25519, apdu.TEZOS_ROOT).pkh

    def query_auth_key_with_curve(self) -> AuthorizedKey:
        return apdu.parse_auth_key_with_curve(self.exchange(apdu.query_auth_key_with_curve()))

    def query_all_hwm(self) -> AllHWM:
        return apdu.parse_all_hwm(self.exchange(apdu.query_all_hwm()))

    def query_main_hwm(self) -> tuple[int, int | None]:
        data = self.exchange(apdu.query_main_hwm())
        if len(data) == 8:
            return int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big")
        if len(data) == 4:
            return int.from_bytes(data, "big"), None
        raise TransportError(f"ledger: QUERY_MAIN_HWM answered {len(data)} bytes", sent=True)

    # --- state changes (prompting ones wait for the button) ---

    def prompt_public_key(self, curve: Curve, path: tuple[int, ...]) -> keys.PublicKey:
        data = self.exchange(apdu.get_public_key(curve, path, prompt=True), self.prompt_timeout)
        return device_public_key(curve, data)

    def authorize_baking(self, curve: Curve, path: tuple[int, ...] | None) -> keys.PublicKey:
        data = self.exchange(apdu.authorize_baking(curve, path), self.prompt_timeout)
        return device_public_key(curve, data)

    def setup(
        self,
        curve: Curve,
        path: tuple[int, ...],
        chain_id: bytes,
        main_level: int,
        test_level: int,
    ) -> keys.PublicKey:
        request = apdu.setup(curve, path, chain_id, main_level, test_level)
        return device_public_key(curve, self.exchange(request, self.prompt_timeout))

    def reset(self, level: int) -> None:
        self.exchange(apdu.reset(level), self.prompt_timeout)

    def deauthorize(self) -> None:
        self.exchange(apdu.deauthorize())

    # --- signing ---

    def sign(self, curve: Curve, path: tuple[int, ...], message: bytes) -> bytes:
        """Two APDUs (path, then the whole message); returns the raw 64-byte signature.

        Uses SIGN_WITH_HASH and checks the returned hash; falls back to SIGN on 0x6D00.
        A TransportError raised after the message APDU was sent carries `sent=True`."""
        if len(message) > apdu.MAX_DATA:
            raise ValueError(f"request longer than {apdu.MAX_DATA} bytes")
        try:
            self.exchange(apdu.sign_path(curve, path, with_hash=self._sign_ins_with_hash))
        except StatusWordError as exc:
            if not (self._sign_ins_with_hash and exc.sw in apdu.UNKNOWN_INS_SWS):
                raise
            log.info("ledger: SIGN_WITH_HASH not supported by this app; using SIGN")
            self._sign_ins_with_hash = False
            self.exchange(apdu.sign_path(curve, path, with_hash=False))
        try:
            data = self.exchange(
                apdu.sign_message(message, with_hash=self._sign_ins_with_hash), self.sign_timeout
            )
        except TransportError as exc:
            exc.sent = True
            raise
        if self._sign_ins_with_hash:
            if len(data) < 32:
                raise TransportError("ledger: SIGN_WITH_HASH answer too short", sent=True)
            digest, data = data[:32], data[32:]
            if digest != keys.blake2b_256(message):
                raise SignatureMismatch(
                    "ledger: the device reports a different hash of the signed bytes"
                )
        try:
            return apdu.signature_to_raw(curve, data)
        except apdu.ApduFormatError as exc:
            raise TransportError(f"ledger: {exc}", sent=True) from exc
