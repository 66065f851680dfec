"""The device's own HWM as a second line of defence (watermark-rules.md §3).

Compared per key with the guard's records (the highest (level, round) over kinds, because a
Ledger keeps one mark for all kinds):
- device behind the store: warning `device_hwm_behind`; TezSign is raised (raise-only) when
  `sync_device_hwm` is on and the guard has a record for all three kinds.
- device ahead of the store (something signed outside the guard): the key is disabled unless
  `accept_device_hwm`, which raises the store to the device's mark first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from drivers.base import Backend, BackendError
from signer_guard.model import KINDS, HWMRecord, utc_now
from signer_guard.store.base import Store

log = logging.getLogger("signer_guard.device")


@dataclass(frozen=True)
class DeviceCheck:
    device_hwm: dict[str, tuple[int, int | None]]
    warning: str | None = None
    disabled: str | None = None


def _best(values: list[tuple[int, int]]) -> tuple[int, int] | None:
    return max(values) if values else None


async def check_device(
    backend: Backend,
    store: Store,
    *,
    accept: bool,
    sync: bool,
    chains: list[str],
    epoch: int | None,
) -> DeviceCheck:
    try:
        device = await backend.device_hwm()
    except BackendError as exc:
        return DeviceCheck({}, warning=f"device_hwm_unreadable: {backend.pkh}: {exc}")
    if not device:
        return DeviceCheck({})
    pkh = backend.pkh
    shown: dict[str, tuple[int, int | None]] = {k: v for k, v in device.items()}
    records = [r for r in await store.list_records() if r.pkh == pkh]
    dev_best = _best([(lvl, rnd or 0) for lvl, rnd in device.values()])
    store_best = _best([(r.level, r.round) for r in records])
    if dev_best is None or dev_best[0] == 0:
        return DeviceCheck(shown)
    if store_best is None or dev_best > store_best:
        detail = (
            f"device HWM {dev_best} of {pkh} is ahead of the guard's "
            f"{store_best or 'empty record'}: something signed outside the guard"
        )
        if not accept:
            log.error(
                "%s; key disabled (restart with --accept-device-hwm to raise the store to it)",
                detail,
            )
            return DeviceCheck(
                shown,
                warning=f"device_hwm_ahead: {detail}",
                disabled=f"{detail}; restart with --accept-device-hwm",
            )
        targets = sorted({r.chain_id for r in records} | set(chains))
        if len(targets) != 1:
            msg = (
                f"{detail}; cannot tell which chain to raise (set allowed_chains to exactly "
                "one chain)"
            )
            log.error("%s", msg)
            return DeviceCheck(shown, warning=f"device_hwm_ahead: {detail}", disabled=msg)
        now = utc_now()
        await store.merge_records(
            [
                HWMRecord(
                    targets[0], pkh, kind, dev_best[0], dev_best[1], None, None, epoch or 0, now
                )
                for kind in KINDS
            ]
        )
        log.warning(
            "%s; store raised to %s on %s (--accept-device-hwm)", detail, dev_best, targets[0]
        )
        return DeviceCheck(shown, warning=f"device_hwm_ahead: {detail} (accepted)")
    if dev_best < store_best:
        warning = f"device_hwm_behind: device {dev_best} < guard {store_best} for {pkh}"
        by_kind = {k: max((r.level for r in records if r.kind == k), default=None) for k in KINDS}
        levels = [v for v in by_kind.values() if v is not None]
        if sync and backend.backend_type == "tezsign" and len(levels) == len(KINDS):
            m = min(levels)
            if all(m > lvl for lvl, _ in device.values()):
                try:
                    await backend.raise_device_hwm(m)
                    log.warning("raised device HWM of %s to level %d", pkh, m)
                    shown = {k: v for k, v in (await backend.device_hwm() or {}).items()}
                except BackendError as exc:
                    log.warning("could not raise device HWM of %s: %s", pkh, exc)
        log.warning("%s", warning)
        return DeviceCheck(shown, warning=warning)
    return DeviceCheck(shown)
