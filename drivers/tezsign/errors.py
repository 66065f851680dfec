"""Errors of the TezSign driver layers below the Backend (transport, protocol, device answers).

`backend.py` maps them onto the guard's Backend errors (drivers.base)."""

from __future__ import annotations


class TezSignError(Exception):
    """Base of the driver's own errors."""


class NoDevice(TezSignError):
    """No matching gadget is attached (or it vanished)."""


class NotReady(TezSignError):
    """The gadget is attached but its signer is not up (no interfaces yet, or ready flag 0)."""


class InterfaceBusy(TezSignError):
    """Another process holds the interface (EBUSY on claim)."""


class TransportError(TezSignError):
    """A request did not complete. `sent` tells whether its frame fully reached the gadget."""

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


class DeviceGone(TransportError):
    """The gadget disconnected (unplugged, rebooted) or the channel was closed."""


class WriteFailed(TransportError):
    """Writing the request frame failed twice."""


class RequestTimeout(TransportError):
    """No response within the request's timeout."""


class ProtocolError(TezSignError):
    """The gadget answered something that does not fit the schema or the request."""


class DeviceError(TezSignError):
    """The gadget answered with an Error message (tezsign.md §7)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"tezsign error {code}: {message}")
        self.code = code
        self.message = message
