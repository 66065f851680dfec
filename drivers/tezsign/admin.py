"""Short management sessions on a gadget this process does not otherwise hold (CLI commands).

They open their own handle, claim one interface (IF1 by default, so that they work while a
running guard or `tezsign run` holds IF0), do their requests and release everything. Blocking.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from . import client, usbdev
from . import constants as C
from .errors import DeviceError
from .messages import PerKeyResult
from .transport import Channel


@contextmanager
def session(
    dev: Any, ifnum: int = C.IF_MANAGEMENT, *, read_timeout_ms: int = C.READ_TIMEOUT_MS
) -> Iterator[Channel]:
    """Claim interface `ifnum` of the opened gadget `dev` for the duration of the block."""
    intf = usbdev.open_interface(dev, ifnum)
    channel = Channel(
        dev,
        intf.ep_in,
        intf.ep_out,
        intf.max_packet,
        name=f"tezsign/if{intf.number}",
        read_timeout_ms=read_timeout_ms,
    )
    try:
        yield channel
    finally:
        channel.close("session ended")
        usbdev.release(dev, intf.number)


@contextmanager
def open_gadget(serial: str = "*", usb_backend: Any = None) -> Iterator[Any]:
    dev = usbdev.select(usbdev.find_gadgets(usb_backend), serial)
    try:
        yield dev
    finally:
        usbdev.dispose(dev)


def unlock_keys(
    key_ids: Sequence[str], passphrase: bytes, serial: str = "*", usb_backend: Any = None
) -> list[PerKeyResult]:
    """Unlock `key_ids` over IF1. Per-key failures are in the results; errors raise DeviceError."""
    with open_gadget(serial, usb_backend) as dev, session(dev) as ch:
        return client.unlock(ch, key_ids, passphrase)


def set_level(key_id: str, level: int, serial: str = "*", usb_backend: Any = None) -> None:
    """Raise every kind of `key_id` to (level, 0) over IF1 (raise-only: the gadget answers 80)."""
    if level < 0:
        raise ValueError(f"level must not be negative, got {level}")
    with open_gadget(serial, usb_backend) as dev, session(dev) as ch:
        client.set_level(ch, key_id, level)


__all__ = ["DeviceError", "open_gadget", "session", "set_level", "unlock_keys"]
