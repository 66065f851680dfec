"""`signer-guard failover` as a library: steps 1–10 of fencing-and-failover.md §7.

Every step emits one line, "✔ step: detail" or "✘ step: detail" (a ✘ that does not stop the
failover is also a warning in the report). The CLI prints the lines as they come, or with
`--json` only the final report. Tests call `failover()` in-process to race it.

Exit codes (spec README): 0 done, 1 operational error, 2 usage, 3 refused for safety.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from signer_guard.failover_devices import DirectDevices, is_device_uri
from signer_guard.failover_sources import (
    PROBE_TIMEOUT,
    SourceError,
    get_status,
    node_head,
    tzkt_last_level,
)
from signer_guard.model import KINDS, Fence, HWMKey, HWMRecord
from signer_guard.store.base import FenceConflict, Store, StoreError, TakeoverResult

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
MAX_TAKEOVER_ATTEMPTS: Final = 3
ACTIVE_STATES: Final = ("active", "degraded")
NO_LEVEL: Final = "cannot determine the last signed level; pass --level or --node"

Confirm = Callable[[str], Awaitable[bool]]
Emit = Callable[[str], None]


@dataclass
class FailoverOptions:
    """What `failover` is asked to do; the CLI fills it from flags and the config."""

    guard_id: str
    keys: Sequence[str] = ()  # the key URIs of this guard's config
    allowed_chains: Sequence[str] = ()
    local_url: str | None = None  # the local `serve` with this guard id, if known
    level: int | None = None
    node: str | None = None
    tzkt: str | None = None
    margin: int = 10
    primary: str | None = None
    yes: bool = False
    force: bool = False
    wait: bool = False
    wait_timeout: float = 60.0
    local_timeout: float = 5.0
    probe_timeout: float = PROBE_TIMEOUT
    confirm: Confirm | None = None  # asks the operator; None = no terminal attached
    emit: Emit | None = None  # receives each line as it is made


@dataclass
class FailoverResult:
    code: int
    report: dict[str, Any]
    lines: list[str] = field(default_factory=list)


class _Stop(Exception):
    """Ends the run with an exit code and a JSON body."""

    def __init__(self, code: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("detail", ""))
        self.code = code
        self.body = body


def _refused(reason: str, detail: str) -> _Stop:
    return _Stop(EXIT_REFUSED, {"ok": False, "refused": reason, "detail": detail})


def _failed(error: str, detail: str) -> _Stop:
    return _Stop(EXIT_ERROR, {"ok": False, "error": error, "detail": detail})


def _fence_text(fence: Fence | None) -> str:
    if fence is None:
        return "no fence yet"
    holder = repr(fence.holder) if fence.holder else "nobody (released)"
    return f"epoch {fence.epoch}, holder {holder}, fence level {fence.fence_level}"


def _store_level(fence: Fence | None, records: list[HWMRecord]) -> int | None:
    """Max of the HWM levels and the old fence level; None when the store knows nothing."""
    levels = [r.level for r in records]
    if fence is not None and fence.fence_level > 0:
        levels.append(fence.fence_level)
    return max(levels) if levels else None


def _status_level(status: dict[str, Any]) -> dict[str, int]:
    """Device HWM levels per pkh from a guard's /status."""
    out: dict[str, int] = {}
    for key in status.get("keys") or []:
        marks = key.get("device_hwm") if isinstance(key, dict) else None
        pkh = key.get("pkh") if isinstance(key, dict) else None
        if not marks or not isinstance(pkh, str) or not isinstance(marks, dict):
            continue
        levels = [m[0] for m in marks.values() if isinstance(m, list) and m]
        ints = [lvl for lvl in levels if isinstance(lvl, int)]
        if ints:
            out[pkh] = max(ints)
    return out


def _uri_pkh(uri: str) -> str | None:
    """The pkh a key URI names without touching a device (upstream, software, TezSign tz4)."""
    scheme = uri.split(":", 1)[0].lower()
    try:
        if scheme in ("http", "https"):
            from drivers.upstream import parse_upstream_uri

            return parse_upstream_uri(uri)[1]
        if scheme == "unencrypted":
            from drivers.software import parse_unencrypted_uri

            return parse_unencrypted_uri(uri).pkh
        if scheme == "tezsign":
            from drivers.tezsign.uri import parse_uri

            parsed = parse_uri(uri)
            return parsed.key if parsed.key_is_tz4 else None
    except ValueError:
        return None
    return None


class _Run:
    """One failover: the state carried from step to step."""

    def __init__(self, store: Store, opts: FailoverOptions, session: aiohttp.ClientSession):
        self.store = store
        self.opts = opts
        self.session = session
        self.lines: list[str] = []
        self.warnings: list[str] = []
        self.devices = DirectDevices()
        self.fence: Fence | None = None
        self.records: list[HWMRecord] = []
        self.local: dict[str, Any] | None = None
        self.primary: dict[str, Any] = {"url": opts.primary, "state": None}
        self.probed_holder: str | None = None
        self.store_level: int | None = None
        self.node_level: int | None = None
        self.tzkt_levels: dict[str, int | None] = {}
        self.device_levels: dict[str, int] = {}
        self.node_chain: str | None = None
        self.local_mismatch = False  # the local URL answers as another guard
        self.pkhs: list[str] = []

    # -- output ---------------------------------------------------------------------------------
    def line(self, ok: bool, step: str, detail: str, *, warn: bool = False) -> None:
        text = f"{'✔' if ok else '✘'} {step}: {detail}"
        self.lines.append(text)
        if warn:
            self.warnings.append(detail)
        if self.opts.emit is not None:
            self.opts.emit(text)

    def note(self, text: str) -> None:
        self.lines.append(text)
        if self.opts.emit is not None:
            self.opts.emit(text)

    # -- step 1 ---------------------------------------------------------------------------------
    async def read(self) -> None:
        try:
            self.fence = await self.store.read_fence()
            self.records = await self.store.list_records()
        except StoreError as exc:
            self.line(False, "read", f"store unreachable: {exc}")
            raise _failed("store_unavailable", str(exc)) from None
        level = _store_level(self.fence, self.records)
        self.store_level = level
        self.line(
            True,
            "read",
            f"{self.store.kind} store: {_fence_text(self.fence)}; {len(self.records)} records"
            + (f", highest level {level}" if level is not None else ""),
        )

    async def read_local(self) -> None:
        url = self.opts.local_url
        if not url:
            return
        status = await get_status(self.session, url, 1.0)
        if status is not None and status.get("guard_id") not in (None, self.opts.guard_id):
            self.line(
                False,
                "local guard",
                f"the guard at {url} is {status.get('guard_id')!r}, not {self.opts.guard_id!r}: "
                "ignored",
                warn=True,
            )
            status = None
            self.local_mismatch = True
        self.local = status

    # -- step 2 ---------------------------------------------------------------------------------
    async def _alive(self, holder: str) -> tuple[bool, dict[str, Any] | None]:
        """(read, value) of the holder's liveness key (etcd); value None = no live key."""
        if not self.store.keeps_liveness or not holder:
            return False, None
        try:
            return True, await self.store.read_alive(holder)
        except StoreError as exc:
            self.line(False, "probe primary", f"liveness key unreadable: {exc}", warn=True)
            return False, None

    async def probe(self) -> bool:
        """Returns True when a confirmation is required because no probe was possible."""
        holder = self.fence.holder if self.fence else ""
        self.probed_holder = holder
        read, alive = await self._alive(holder)
        live_state = alive.get("state") if alive is not None else None
        url = self.opts.primary
        if url:
            status = await get_status(self.session, url, self.opts.probe_timeout)
            state = str(status.get("state")) if status else "unreachable"
            self.primary = {"url": url, "state": state}
            who = f" (guard {status.get('guard_id')})" if status and status.get("guard_id") else ""
            active = state in ACTIVE_STATES
            detail = f"{url} answers state {state}{who}" if status else f"{url} does not answer"
            if not active and live_state in ACTIVE_STATES:
                self.line(
                    True,
                    "probe primary",
                    f"{detail}; but the liveness key of {holder} is still live ({live_state})",
                    warn=True,
                )
            elif not active:
                self.line(True, "probe primary", f"{detail}: continuing")
            message = (
                f"the primary at {url} answers state {state}{who}: stop it or run "
                "`signer-guard release` on it first (or use --force)"
            )
        elif self.store.keeps_liveness:
            if not holder:
                state = "released" if self.fence else "none"
                self.primary = {"url": None, "state": state}
                self.line(True, "probe primary", f"no holder to probe ({state}): continuing")
                return False
            state = str(live_state) if alive is not None else "no liveness key"
            self.primary = {"url": None, "state": state}
            active = live_state in ACTIVE_STATES
            if not active:
                self.line(
                    True, "probe primary", f"holder {holder}: liveness key: {state}: continuing"
                )
            message = (
                f"holder {holder} looks alive (lease, state {live_state}); if it just died, "
                "retry in ~20 s or use --force"
            )
        else:
            if not holder:
                state = "released" if self.fence else "none"
                self.primary = {"url": None, "state": state}
                self.line(True, "probe primary", f"no holder to probe ({state}): continuing")
                return False
            self.primary = {"url": None, "state": "unknown"}
            self.line(
                False,
                "probe primary",
                f"no probe possible ({self.store.kind} store without --primary): make sure "
                f"holder {holder} is stopped before you confirm",
                warn=True,
            )
            return True
        if active:
            await self._forced(message, holder, lease_expired=read and alive is None)
        return False

    async def _forced(self, message: str, holder: str, *, lease_expired: bool) -> None:
        if not self.opts.force:
            self.line(False, "probe primary", message)
            raise _refused("primary_active", message)
        if lease_expired:
            self.line(
                True,
                "probe primary",
                f"{message}; --force: the liveness lease of {holder} has expired",
                warn=True,
            )
            return
        if self.opts.yes:
            self.line(
                True,
                "probe primary",
                f"{message}; --force --yes: you confirm that the signer of "
                f"{holder or 'the primary'} is stopped or unplugged",
                warn=True,
            )
            return
        question = (
            f"{message}.\n--force: confirm that the signer of {holder or 'the primary'} is stopped "
            "or unplugged"
        )
        if self.opts.confirm is None or not await self.opts.confirm(question):
            detail = (
                "--force needs the primary's lease to have expired, or a confirmation that its "
                "signer is unplugged (answer yes on a terminal, or pass --yes with --force)"
            )
            self.line(False, "probe primary", detail)
            raise _refused("not_confirmed", detail)
        self.line(
            True, "probe primary", f"--force: the operator confirmed {holder}'s signer is unplugged"
        )

    # -- step 3 ---------------------------------------------------------------------------------
    async def confirm(self) -> None:
        if self.opts.yes:
            self.line(True, "confirm", "--yes")
            return
        if self.opts.confirm is None:
            detail = "no terminal to confirm on: pass --yes"
            self.line(False, "confirm", detail)
            raise _refused("not_confirmed", detail)
        question = (
            f"Take over signing as guard {self.opts.guard_id!r} "
            f"({_fence_text(self.fence)})? Nothing else may sign for these keys"
        )
        if not await self.opts.confirm(question):
            self.line(False, "confirm", "not confirmed")
            raise _refused("not_confirmed", "the operator did not type yes")
        self.line(True, "confirm", "confirmed")

    # -- step 4 ---------------------------------------------------------------------------------
    async def open_devices(self) -> None:
        uris = [u for u in self.opts.keys if is_device_uri(u)]
        if not uris:
            return
        if self.local is not None:
            self.note(f"  device keys are held by the local guard: reading {self.opts.local_url}")
            return
        for warning in await self.devices.open(uris):
            self.line(False, "source device", warning, warn=True)

    def resolve_pkhs(self) -> None:
        pkhs = [p for p in (_uri_pkh(u) for u in self.opts.keys) if p]
        if self.local is not None:
            pkhs += [
                k["pkh"]
                for k in self.local.get("keys") or []
                if isinstance(k, dict) and isinstance(k.get("pkh"), str)
            ]
        pkhs += [d.pkh for d in self.devices.devices]
        self.pkhs = list(dict.fromkeys(pkhs))
        unresolved = [
            u for u in self.opts.keys if _uri_pkh(u) is None and is_device_uri(u)
        ]  # fmt: skip
        if unresolved and not self.local and not self.devices.devices:
            self.line(
                False,
                "keys",
                f"{len(unresolved)} device key(s) not reachable: their records are created on "
                "their first signature (the fence level still covers them)",
                warn=True,
            )

    async def last_level(self) -> int:
        store_level = self.store_level
        if store_level is None:
            self.line(False, "source store", "no records and fence level 0")
        else:
            self.line(True, "source store", str(store_level))
        if self.opts.level is not None:
            self.line(True, "source level", f"{self.opts.level} (--level)")
        await self._node()
        await self._tzkt()
        self._device_levels()
        answers = [store_level, self.opts.level, self.node_level, *self.tzkt_levels.values()]
        levels = [v for v in answers if v is not None] + list(self.device_levels.values())
        if not levels:
            self.line(False, "last level", NO_LEVEL)
            raise _refused("no_last_level", NO_LEVEL)
        level = max(levels)
        count = f"{len(levels)} answer{'s' if len(levels) != 1 else ''}"
        self.line(True, "last level", f"L = {level} (max of {count})")
        return level

    async def _node(self) -> None:
        node = self.opts.node
        if not node:
            return
        try:
            level, chain = await node_head(self.session, node, self.opts.probe_timeout)
        except SourceError as exc:
            self.line(False, "source node", str(exc), warn=True)
            return
        self.node_chain = chain
        known = {r.chain_id for r in self.records}
        allowed = set(self.opts.allowed_chains)
        if chain is not None and (
            (known and chain not in known) or (allowed and chain not in allowed)
        ):
            expected = ", ".join(sorted(known or allowed))
            detail = f"node {node} is on chain {chain}, the guard's records are on {expected}"
            self.line(False, "source node", detail)
            raise _refused("chain_mismatch", detail)
        self.node_level = level
        self.line(True, "source node", f"{level} (head of {chain or 'unknown chain'})")

    async def _tzkt(self) -> None:
        base = self.opts.tzkt
        if not base:
            return
        if not self.pkhs:
            self.line(False, "source tzkt", "no configured pkh to look up", warn=True)
            return
        for pkh in self.pkhs:
            try:
                level, per_kind = await tzkt_last_level(
                    self.session, base, pkh, self.opts.probe_timeout
                )
            except SourceError as exc:
                self.line(False, "source tzkt", str(exc), warn=True)
                continue
            self.tzkt_levels[pkh] = level
            shown = ", ".join(f"{k} {'-' if v is None else v}" for k, v in per_kind.items())
            found = "nothing signed" if level is None else str(level)
            self.line(level is not None, "source tzkt", f"{pkh}: {found} ({shown})")

    def _device_levels(self) -> None:
        found: dict[str, int] = {}
        if self.local is not None:
            found.update(_status_level(self.local))
        for dev in self.devices.devices:
            if dev.level is not None:
                found[dev.pkh] = max(found.get(dev.pkh, 0), dev.level)
            else:
                self.line(False, "source device", f"{dev.pkh}: no HWM (locked?)", warn=True)
        for pkh, level in found.items():
            self.line(True, "source device", f"{pkh}: {level}")
        self.device_levels = found

    # -- steps 5–8 ------------------------------------------------------------------------------
    def fence_target(self, level: int) -> int:
        margin = self.opts.margin
        if margin < 1 and not self.opts.force:
            detail = f"margin {margin} < 1 (use --force to allow it)"
            self.line(False, "margin", detail)
            raise _refused("margin", detail)
        target = level + margin
        self.line(True, "margin", f"F = L + {margin} = {target}")
        return target

    async def raise_devices(self, target: int) -> list[str]:
        if self.local is not None and any(is_device_uri(u) for u in self.opts.keys):
            self.line(
                True,
                "raise devices",
                "held by the local guard, which raises its own device HWM (sync_device_hwm)",
            )
            return []
        if not any(d.backend.backend_type == "tezsign" for d in self.devices.devices):
            return []
        raised, warnings = await self.devices.raise_tezsign(target)
        for warning in warnings:
            self.line(False, "raise devices", warning, warn=True)
        if raised:
            self.line(True, "raise devices", f"TezSign {', '.join(raised)} → {target}")
        return raised

    def _keys(self) -> list[HWMKey]:
        if self.node_chain:
            chains = [self.node_chain]
        elif self.opts.allowed_chains:
            chains = list(self.opts.allowed_chains)
        else:
            chains = sorted({r.chain_id for r in self.records})
        return [HWMKey(c, p, k) for c in chains for p in self.pkhs for k in KINDS]

    async def take_fence(self, target: int, last: int) -> tuple[TakeoverResult, int, int]:
        """Step 7; a FenceConflict re-reads (and re-probes) and tries again, ≤ 3 times."""
        if self.pkhs and not self._keys():
            self.line(
                False,
                "take fence",
                "no chain known (no node, no allowed_chains, no records): records are created by "
                "the first signatures; the fence level covers every key meanwhile",
                warn=True,
            )
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await self.store.takeover(
                    self.opts.guard_id, target, self._keys(), expected=self.fence
                )
            except FenceConflict as exc:
                if attempt >= MAX_TAKEOVER_ATTEMPTS:
                    self.line(False, "take fence", f"{exc} ({attempt} attempts)")
                    raise _failed("fence_conflict", str(exc)) from None
                self.line(False, "take fence", f"{exc}: re-reading", warn=True)
                await self.read()
                if self.fence is not None and self.fence.holder == self.opts.guard_id:
                    raise _Stop(EXIT_OK, {}) from None  # another run named us meanwhile
                if (self.fence.holder if self.fence else "") != self.probed_holder:
                    await self.probe()
                store_level = self.store_level
                if store_level is not None and store_level > last:
                    last = store_level
                    target = self.fence_target(last)
                continue
            except StoreError as exc:
                self.line(False, "take fence", f"store: {exc}")
                raise _failed("store_unavailable", str(exc)) from None
            break
        fence = result.fence
        self.line(
            True,
            "take fence",
            f"epoch {fence.epoch}, holder {fence.holder!r}, fence level {fence.fence_level}; "
            f"{result.records_raised} records raised to {target}",
        )
        if result.last_level > last:
            self.line(
                False,
                "take fence",
                f"the store's highest level moved to {result.last_level} during the failover "
                f"(above L = {last}); records above {target} keep their own marks",
                warn=True,
            )
        return result, target, last

    async def ledgers(self, target: int) -> list[str]:
        behind = self.devices.ledgers_behind(target)
        if not behind:
            return []
        raised: list[str] = []
        for dev in behind:
            if self.opts.confirm is None:
                self.line(
                    False,
                    "ledger",
                    f"device_hwm_behind: Ledger {dev.pkh} is below {target}; run failover on a "
                    "terminal (or set its HWM) to RESET it on the device",
                    warn=True,
                )
                continue
            warning = await self.devices.reset_ledger(dev, target, self.note)
            if warning is not None:
                self.line(False, "ledger", warning, warn=True)
            else:
                raised.append(dev.pkh)
                self.line(True, "ledger", f"{dev.pkh} RESET to {target}")
        return raised

    # -- step 9 ---------------------------------------------------------------------------------
    async def enable(self, fence: Fence) -> dict[str, Any]:
        url = self.opts.local_url
        if not url or self.local_mismatch:
            self.line(
                False,
                "enable",
                f"no local guard URL known: start `signer-guard serve` with guard id "
                f"{self.opts.guard_id!r}; it turns active within 1 s",
                warn=True,
            )
            return {"state": "unknown"}
        deadline = time.monotonic() + self.opts.local_timeout
        status: dict[str, Any] | None = None
        while True:
            status = await get_status(self.session, url, 1.0)
            if status and status.get("state") == "active" and status.get("epoch") == fence.epoch:
                self.line(True, "enable", f"local guard at {url} is active at epoch {fence.epoch}")
                return {"state": "active"}
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)
        if status is None:
            self.line(
                False,
                "enable",
                f"no guard answers at {url}: start `signer-guard serve` with guard id "
                f"{self.opts.guard_id!r}",
                warn=True,
            )
            return {"state": "not running"}
        state = str(status.get("state"))
        self.line(
            False,
            "enable",
            f"local guard at {url} is {state} after {self.opts.local_timeout:g} s",
            warn=True,
        )
        return {"state": state}

    async def wait_first_signature(self, target: int) -> dict[str, Any] | None:
        url = self.opts.local_url
        if not url:
            self.line(False, "wait", "no local guard URL to watch", warn=True)
            return None
        deadline = time.monotonic() + self.opts.wait_timeout
        while time.monotonic() < deadline:
            status = await get_status(self.session, url, 1.0)
            for key in (status or {}).get("keys") or []:
                last = key.get("last_signed") if isinstance(key, dict) else None
                level = last.get("level") if isinstance(last, dict) else None
                if isinstance(level, int) and level > target:
                    assert isinstance(last, dict)
                    first = {"pkh": key.get("pkh"), **last}
                    self.line(
                        True, "wait", f"{key.get('pkh')} signed {last.get('kind')} level {level}"
                    )
                    return first
            await asyncio.sleep(0.25)
        self.line(
            False,
            "wait",
            f"no signature above {target} within {self.opts.wait_timeout:g} s (the delegate may "
            "have no rights yet; check `signer-guard status`)",
            warn=True,
        )
        return None

    # -- the whole run --------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        await self.read()
        if self.fence is not None and self.fence.holder == self.opts.guard_id:
            self.line(True, "report", f"guard {self.opts.guard_id!r} already holds the fence")
            return {
                "ok": True,
                "guard_id": self.opts.guard_id,
                "already_holder": True,
                "epoch": self.fence.epoch,
                "fence_level": self.fence.fence_level,
                "warnings": self.warnings,
            }
        await self.read_local()
        must_confirm = await self.probe()
        if must_confirm and self.opts.yes:
            self.note("  (--yes given: taken as the confirmation that the holder is stopped)")
        await self.confirm()
        await self.open_devices()
        self.resolve_pkhs()
        last = await self.last_level()
        target = self.fence_target(last)
        raised = await self.raise_devices(target)
        previous = self.fence
        result, target, last = await self.take_fence(target, last)
        if result.previous is not None:
            previous = result.previous
        raised += await self.ledgers(target)
        local = await self.enable(result.fence)
        report: dict[str, Any] = {
            "ok": True,
            "guard_id": self.opts.guard_id,
            "epoch": result.fence.epoch,
            "previous": previous.to_json() if previous else None,
            "fence_level": result.fence.fence_level,
            "last_level": last,
            "margin": self.opts.margin,
            "sources": {
                "store": self.store_level,
                "level": self.opts.level,
                "node": self.node_level,
                "tzkt": self.tzkt_levels,
                "devices": self.device_levels,
            },
            "primary": self.primary,
            "devices_raised": raised,
            "records_raised": result.records_raised,
            "local_guard": local,
            "warnings": self.warnings,
        }
        if self.opts.wait:
            report["first_signature"] = await self.wait_first_signature(target)
        self.line(
            True,
            "report",
            f"guard {self.opts.guard_id!r} holds the fence at epoch {result.fence.epoch}; "
            f"nothing is signed at or below level {result.fence.fence_level}",
        )
        return report


async def failover(store: Store, opts: FailoverOptions) -> FailoverResult:
    """Run steps 1–10 against an opened store. Never raises for an expected failure: the result
    carries the exit code, the JSON report (§7 step 10 or a refusal/error body) and the lines."""
    async with aiohttp.ClientSession() as session:
        run = _Run(store, opts, session)
        try:
            report = await run.run()
            code = EXIT_OK
        except _Stop as stop:
            code = stop.code
            if code == EXIT_OK:  # another failover named this guard meanwhile
                run.line(True, "report", f"guard {opts.guard_id!r} holds the fence")
                fence = run.fence
                report = {
                    "ok": True,
                    "guard_id": opts.guard_id,
                    "already_holder": True,
                    "epoch": fence.epoch if fence else None,
                    "fence_level": fence.fence_level if fence else None,
                    "warnings": run.warnings,
                }
            else:
                report = stop.body
        finally:
            await run.devices.close()
    return FailoverResult(code, report, run.lines)


async def release(store: Store, guard_id: str) -> Fence:
    """§7.1: holder := "" and fence level := max(fence level, highest HWM), if I hold it.
    Raises NotHolder (exit 3) or StoreError (exit 1)."""
    return await store.release(guard_id)
