"""Ledger Tezos Baking app driver: HID (hidapi) and TCP (Speculos) transports (ledger.md)."""

from __future__ import annotations

from drivers.ledger.apdu import AllHWM, Curve, StatusWordError
from drivers.ledger.backend import LedgerBackend
from drivers.ledger.discover import list_devices

__all__ = ["AllHWM", "Curve", "LedgerBackend", "StatusWordError", "list_devices"]
