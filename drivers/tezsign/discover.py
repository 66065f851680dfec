"""`signer-guard devices`: every attached TezSign gadget with its version and keys."""

from __future__ import annotations

import logging
from typing import Any

from . import client, usbdev
from . import constants as C
from .admin import session
from .errors import InterfaceBusy, TezSignError
from .messages import KeyStatus

log = logging.getLogger(__name__)


def _key_dict(key: KeyStatus) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "tz4": key.tz4,
        "public_key": key.bl_pubkey,
        "lock_state": key.lock_state.lower(),
        # The gadget reports its marks only for unlocked keys (zeros otherwise).
        "device_hwm": (
            {kind: {"level": lvl, "round": rnd} for kind, (lvl, rnd) in key.marks.items()}
            if key.unlocked
            else None
        ),
        "state_corrupted": key.state_corrupted,
    }


def _describe(dev: Any, read_timeout_ms: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "model": "TezSign",
        "product": None,
        "serial": None,
        "version": None,
        "build_date": None,
        "keys": [],
        "error": None,
    }
    try:
        info["serial"] = usbdev.serial_of(dev)
        info["product"] = dev.product
    except (TezSignError, ValueError, OSError) as exc:
        info["error"] = str(exc)
        return info
    last: Exception | None = None
    # IF1 first: the sign interface is normally held by the running guard or `tezsign run`.
    for ifnum in (C.IF_MANAGEMENT, C.IF_SIGN):
        try:
            with session(dev, ifnum, read_timeout_ms=read_timeout_ms) as ch:
                version = client.version(ch)
                keys = client.status(ch)
        except InterfaceBusy as exc:
            last = exc
            continue
        except TezSignError as exc:
            last = exc
            break
        if version is not None:
            info["version"], info["build_date"] = version.version, version.build_date
        else:
            info["version"] = "unknown (gadget predates the Version request)"
        info["keys"] = [_key_dict(k) for k in keys]
        return info
    info["error"] = str(last)
    return info


def list_devices(
    backend: Any = None, *, read_timeout_ms: int = C.READ_TIMEOUT_MS
) -> list[dict[str, Any]]:
    """One dict per attached gadget: model, product, serial, version, build_date, keys, error.

    `backend` is a pyusb backend (None = the default, libusb). Blocking: call it off the loop.
    Each key: key_id, tz4, public_key, lock_state, device_hwm ({kind: {level, round}} or None
    while locked), state_corrupted."""
    devices = usbdev.find_gadgets(backend)
    result = []
    for dev in devices:
        try:
            result.append(_describe(dev, read_timeout_ms))
        finally:
            usbdev.dispose(dev)
    return result
