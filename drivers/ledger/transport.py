"""What the APDU layer needs from a transport (HID or TCP), and the transport errors."""

from __future__ import annotations

from typing import Protocol


class TransportError(Exception):
    """The link to the device failed (unplugged, framing error, connection closed).

    `sent` is True when the whole request had been written before the failure: the device may then
    have acted on it."""

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


class TransportTimeout(TransportError):
    """No (complete) answer within the timeout; the device may still be working on the request."""


class Transport(Protocol):
    """One open link to one device; `exchange` is called from one thread at a time."""

    description: str

    def exchange(self, apdu: bytes, timeout: float) -> bytes:
        """Send one APDU; return the response `data ‖ SW1 SW2`. Raises TransportError."""
        ...

    def close(self) -> None:
        """Release the link; never raises."""
        ...
