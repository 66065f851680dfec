"""The signing devices `failover` opens itself (fencing-and-failover.md §7 steps 4, 6 and 8).

Only when no local `serve` holds them: the caller decides. A TezSign gadget is raised with
`raise_device_hwm` (SetLevel, raise-only); a Ledger with `reset_hwm` (RESET, confirmed on the
device). Every failure here is a warning for the caller: the store is what protects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from drivers.base import Backend, BackendError, DeviceHWM
from signer_guard.backends import KeyUriError, make_backend

DEVICE_SCHEMES: Final = ("tezsign", "ledger")
START_TIMEOUT: Final = 10.0


def is_device_uri(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in DEVICE_SCHEMES


@dataclass
class Device:
    """One device key opened by failover."""

    uri: str
    backend: Backend
    marks: DeviceHWM | None

    @property
    def pkh(self) -> str:
        return self.backend.pkh

    @property
    def level(self) -> int | None:
        """The highest level over kinds, or None when the device reports none (locked)."""
        if not self.marks:
            return None
        return max(level for level, _ in self.marks.values())


class DirectDevices:
    """The device keys of a config, opened directly; `close` releases them all."""

    def __init__(self) -> None:
        self.devices: list[Device] = []

    async def open(self, uris: Sequence[str]) -> list[str]:
        """Start each device key and read its HWM; returns one warning per failure."""
        warnings: list[str] = []
        for uri in uris:
            try:
                backend = make_backend(uri)
            except (KeyUriError, ValueError) as exc:
                warnings.append(f"device key {uri}: {exc}")
                continue
            try:
                await asyncio.wait_for(backend.start(), START_TIMEOUT)
                marks = await asyncio.wait_for(backend.device_hwm(), START_TIMEOUT)
            except (BackendError, TimeoutError) as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
                warnings.append(f"device {backend.display_uri}: {reason}")
                with contextlib.suppress(Exception):
                    await backend.close()
                continue
            self.devices.append(Device(uri, backend, marks))
        return warnings

    async def raise_tezsign(self, level: int) -> tuple[list[str], list[str]]:
        """SetLevel(level) on every TezSign key whose kinds are all below it.
        Returns (pkhs raised, warnings)."""
        raised: list[str] = []
        warnings: list[str] = []
        for dev in self.devices:
            if dev.backend.backend_type != "tezsign":
                continue
            if dev.marks is None:
                warnings.append(f"device_hwm_behind: TezSign key {dev.pkh} is locked: not raised")
                continue
            if all(lvl >= level for lvl, _ in dev.marks.values()):
                continue
            try:
                await dev.backend.raise_device_hwm(level)
            except BackendError as exc:
                warnings.append(f"device_hwm_behind: TezSign key {dev.pkh}: {exc}")
                continue
            raised.append(dev.pkh)
        return raised, warnings

    def ledgers_behind(self, level: int) -> list[Device]:
        return [
            d
            for d in self.devices
            if d.backend.backend_type == "ledger" and (d.level is None or d.level < level)
        ]

    async def reset_ledger(
        self, dev: Device, level: int, notify: Callable[[str], None]
    ) -> str | None:
        """RESET the Ledger's HWM to `level` (confirmed on the device); a warning on failure."""
        reset: Callable[[int], Awaitable[None]] | None = getattr(dev.backend, "reset_hwm", None)
        if reset is None:
            return f"device_hwm_behind: {dev.backend.display_uri} cannot reset its HWM"
        notify(f"waiting for confirmation on the Ledger… (RESET {dev.pkh} to level {level})")
        try:
            await reset(level)
        except BackendError as exc:
            return f"device_hwm_behind: Ledger {dev.pkh}: RESET to {level} not done: {exc}"
        return None

    async def close(self) -> None:
        for dev in self.devices:
            with contextlib.suppress(Exception):
                await dev.backend.close()
        self.devices.clear()
