"""In-process software key: `--key unencrypted:SECRET` (edsk…, spsk…, p2sk…, BLsk…).

The secret sits in this process's memory, so this backend is for tests, emulators and keys that
do not matter. The secret never appears in `uri`, `display_uri`, logs or error messages.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from drivers.base import Backend, NotSupported
from signer_guard.keys import SecretKey, signature_b58

log = logging.getLogger(__name__)

SCHEME: Final = "unencrypted:"


def parse_unencrypted_uri(uri: str) -> SecretKey:
    """The secret key of an `unencrypted:SECRET` URI; ValueError (KeyFormatError) otherwise."""
    if not uri.startswith(SCHEME):
        raise ValueError("a software key URI must look like unencrypted:SECRET")
    return SecretKey.from_b58(uri[len(SCHEME) :])


class SoftwareBackend(Backend):
    """Signs with a secret key held in memory. Raises ValueError at construction for a bad URI."""

    backend_type = "software"

    def __init__(self, uri: str) -> None:
        self._key = parse_unencrypted_uri(uri)
        # The base class keeps `uri` for logs and /status: give it the redacted form only.
        super().__init__(f"{SCHEME}<{self._key.pkh}>")

    async def start(self) -> None:
        self._public_key = self._key.public_key.b58
        self._pkh = self._key.pkh
        log.warning(
            "%s: the secret key is held unencrypted in this process's memory; "
            "use a device for keys that matter",
            self.display_uri,
        )

    async def ensure_ready(self) -> None:
        return None

    async def sign(self, data: bytes, *, version: int | None = None) -> str:
        if version is not None and version not in (0, 1, 2, 3):
            raise NotSupported(f"{self.display_uri}: signing version {version} is not supported")
        curve = self._key.curve
        if curve == "bls12_381":
            if version == 0:
                raise NotSupported(f"{self.display_uri}: version 0 does not allow BLS signatures")
            raw = await asyncio.to_thread(self._key.sign, data, version=version)
        else:
            raw = self._key.sign(data, version=version)
        return signature_b58(curve, raw)

    async def prove_possession(self, bls_pk: str | None = None) -> str:
        if self._key.curve != "bls12_381":
            raise NotSupported(
                f"{self.display_uri}: proof of possession exists only for BLS (tz4) keys"
            )
        own = self._key.public_key.b58
        if bls_pk is not None and bls_pk.strip() != own:
            raise NotSupported(
                f"{self.display_uri}: cannot prove possession of {bls_pk.strip()[:12]}…, "
                f"only of its own key {own}"
            )
        raw = await asyncio.to_thread(self._key.prove_possession)
        return signature_b58("bls12_381", raw)
