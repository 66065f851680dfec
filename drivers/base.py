"""What every backend offers the guard, and the errors it may raise.

A backend signs bytes that the guard has already decoded, checked and durably recorded. It never
decides whether something may be signed; it only reports what the device or upstream said.
"""

from __future__ import annotations

import abc
from typing import Literal

Kind = Literal["block", "preattestation", "attestation"]
# Device high watermark per kind: (level, round); round is None when the device keeps only a level.
DeviceHWM = dict[Kind, tuple[int, int | None]]


class BackendError(Exception):
    """The backend failed; the request was not signed (HTTP 502)."""

    status = 502


class BackendUnavailable(BackendError):
    """The backend cannot sign right now (unplugged, reconnecting, not yet re-checked): HTTP 503.

    Raised by `ensure_ready` before the store step, so an unready device costs no level."""

    status = 503


class UnknownOutcome(BackendError):
    """The device or upstream did not answer in time: it may or may not have signed (HTTP 502).

    The guard must never re-send the same bytes after this (a randomised ECDSA signature over the
    same block would be a second, different signed block)."""

    status = 502


class DeviceHWMRefusal(BackendError):
    """The device's or upstream's own high watermark refused the request (HTTP 409)."""

    status = 409


class NotSupported(BackendError):
    """The backend cannot do this (e.g. proof of possession on a Ledger): HTTP 403."""

    status = 403


class Backend(abc.ABC):
    """One signing key behind one device or upstream."""

    #: "software", "upstream", "tezsign" or "ledger"
    backend_type: str = "abstract"

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._public_key: str | None = None
        self._pkh: str | None = None

    @property
    def public_key(self) -> str:
        """b58 public key (edpk/sppk/p2pk/BLpk), known after `start`."""
        if self._public_key is None:
            raise BackendUnavailable(f"{self.display_uri}: public key not known yet")
        return self._public_key

    @property
    def pkh(self) -> str:
        """b58 public key hash (tz1..tz4), known after `start`."""
        if self._pkh is None:
            raise BackendUnavailable(f"{self.display_uri}: public key not known yet")
        return self._pkh

    @property
    def display_uri(self) -> str:
        """The URI with any secret removed, safe for logs, /status and metrics."""
        return self.uri

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and learn the public key. May raise BackendError."""

    @abc.abstractmethod
    async def ensure_ready(self) -> None:
        """Cheap check that a sign call can succeed now; raise BackendUnavailable if not."""

    @abc.abstractmethod
    async def sign(self, data: bytes, *, version: int | None = None) -> str:
        """Sign the whole request `data` (magic byte included); return a b58 signature.

        `version` is the remote-signer `version=` query value (matters for BLS only)."""

    async def prove_possession(self, bls_pk: str | None = None) -> str:
        """BLS proof of possession (BLsig…) of this key."""
        raise NotSupported("Request to prove possession is not allowed.")

    async def device_hwm(self) -> DeviceHWM | None:
        """The device's own high watermark, or None when the backend keeps none."""
        return None

    async def raise_device_hwm(self, level: int) -> None:
        """Raise the device's own high watermark to `level` (raise-only)."""
        raise NotSupported(f"{self.display_uri}: cannot set the device high watermark")

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release the device or connection."""
