"""TezSign gadget facts (tezsign.md §2, §3, §7, §8): ids, readiness, error codes, timeouts."""

from __future__ import annotations

from typing import Final

VENDOR_ID: Final = 0x9997
PRODUCT_ID: Final = 0x0001
PRODUCT_STRING: Final = "tezsign-gadget"
VENDOR_CLASS: Final = 0xFF

#: Interface numbers: [0] signs, [1] manages (unlock, set-level, …).
IF_SIGN: Final = 0
IF_MANAGEMENT: Final = 1

# Readiness control transfer (§3).
READY_REQUEST_TYPE: Final = 0x81
READY_REQUEST: Final = 0x5A
READY_LENGTH: Final = 8
READY_MAGIC: Final = b"TZSG"

#: pyusb read timeout of the reader thread, in ms (§11.6).
READ_TIMEOUT_MS: Final = 500
WRITE_TIMEOUT_MS: Final = 1000
CTRL_TIMEOUT_MS: Final = 1000

#: Watchdog cadence (§10, §11.8), seconds.
WATCHDOG_INTERVAL: Final = 1.0
RECONNECT_INTERVAL: Final = 0.5
STATUS_INTERVAL: Final = 5.0

# Host-side timeouts per request (§8), seconds.
TIMEOUT_SIGN: Final = 5.0
TIMEOUT_SHORT: Final = 3.0  # status, lock, logs, version, init_info, set_level
TIMEOUT_UNLOCK_BASE: Final = 5.0
TIMEOUT_PER_EXTRA_KEY: Final = 1.5
TIMEOUT_MAX: Final = 30.0


def unlock_timeout(n_keys: int) -> float:
    """Unlock timeout: 5 s + 1.5 s per extra key, at most 30 s (Argon2id per key)."""
    return min(TIMEOUT_MAX, TIMEOUT_UNLOCK_BASE + TIMEOUT_PER_EXTRA_KEY * max(0, n_keys - 1))


# Error codes (§7).
ERR_BAD_PROTOBUF: Final = 1
ERR_UNLOCK_NO_IDS: Final = 10
ERR_UNLOCK_NO_PASSPHRASE: Final = 11
ERR_UNLOCK_THROTTLED: Final = 12
ERR_LOCK_NO_IDS: Final = 20
ERR_SIGN_OTHER: Final = 30
ERR_KEY_NOT_FOUND: Final = 31
ERR_KEY_LOCKED: Final = 32
ERR_STALE: Final = 33
ERR_BAD_PAYLOAD: Final = 34
ERR_SET_LEVEL: Final = 80
ERR_WRONG_INTERFACE: Final = 98
ERR_UNKNOWN_REQUEST: Final = 1000
ERR_SIGN_ON_MANAGEMENT: Final = 1001
