"""TezSign USB gadget driver (tezsign.md): frames, messages, transport, backend, discovery.

Layers, bottom up: `frames` (wire frames) → `schema`/`messages` (protobuf, built at runtime) →
`usbdev` (pyusb discovery, readiness, claims) → `transport` (one interface, reader thread) →
`client` (blocking requests) → `connection` (shared per gadget, watchdog) → `backend`.
"""

from __future__ import annotations

from .backend import TezSignBackend
from .discover import list_devices
from .passphrase import load_passphrase
from .uri import TezSignURI, parse_uri
from .usbdev import set_default_usb_backend

__all__ = [
    "TezSignBackend",
    "TezSignURI",
    "list_devices",
    "load_passphrase",
    "parse_uri",
    "set_default_usb_backend",
]
