"""Blocking TezSign requests over a Channel, with the host timeouts of tezsign.md §8.

Each function raises DeviceError when the gadget answers with an Error, ProtocolError for an
answer that does not fit, and the transport errors of `Channel.call`.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import constants as C
from . import messages as M
from .errors import DeviceError
from .transport import Channel


def version(ch: Channel, timeout: float = C.TIMEOUT_SHORT) -> M.VersionInfo | None:
    """The gadget's version, or None for old gadgets that do not know Version (error 1000)."""
    try:
        return M.parse_version(ch.call(M.version_request(), timeout))
    except DeviceError as exc:
        if exc.code == C.ERR_UNKNOWN_REQUEST:
            return None
        raise


def status(ch: Channel, timeout: float = C.TIMEOUT_SHORT) -> list[M.KeyStatus]:
    return M.parse_status(ch.call(M.status_request(), timeout))


def sign(ch: Channel, tz4: str, message: bytes, timeout: float = C.TIMEOUT_SIGN) -> bytes:
    """The 96-byte BLS signature of `message` (magic byte included) by key `tz4` (IF0 only)."""
    return M.parse_sign(ch.call(M.sign_request(tz4, message), timeout))


def unlock(ch: Channel, key_ids: Sequence[str], passphrase: bytes) -> list[M.PerKeyResult]:
    """Unlock (load) keys (IF1 only). Per-key failures are in the results."""
    timeout = C.unlock_timeout(len(key_ids))
    return M.parse_per_key(ch.call(M.unlock_request(key_ids, passphrase), timeout), "unlock")


def lock(ch: Channel, key_ids: Sequence[str]) -> list[M.PerKeyResult]:
    return M.parse_per_key(ch.call(M.lock_request(key_ids), C.TIMEOUT_SHORT), "lock")


def set_level(ch: Channel, key_id: str, level: int) -> None:
    """Raise every kind of `key_id` to (level, 0) (IF1 only; the gadget refuses to lower: 80)."""
    M.parse_ok(ch.call(M.set_level_request(key_id, level), C.TIMEOUT_SHORT))


def logs(ch: Channel, limit: int = 0) -> list[str]:
    return M.parse_logs(ch.call(M.logs_request(limit), C.TIMEOUT_SHORT))
