"""The guarded signing path (spec README data flow, steps 1–8) and the guard's fence state.

HTTP lives in `server.py`; this module knows nothing about aiohttp's request objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from drivers.base import Backend, BackendError, DeviceHWMRefusal, UnknownOutcome
from signer_guard import codec, keys
from signer_guard.auth import Authorizer
from signer_guard.device_sync import check_device
from signer_guard.faults import crash_point
from signer_guard.journal import Journal, JournalEntry
from signer_guard.metrics import Metrics
from signer_guard.model import Fence, HWMKey, SignIntent, utc_now
from signer_guard.node import NodeHead
from signer_guard.policy import Policy, PolicyRefusal
from signer_guard.rule import Advance, Cached, Refused, fence_refusal
from signer_guard.store.base import Store, StoreError, StoreUnavailable

log = logging.getLogger("signer_guard")

FENCE_POLL_SECONDS = 1.0


class Refusal(Exception):
    """A request that is not signed: HTTP `status`, metric `result`, message for log and body."""

    def __init__(self, status: int, result: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.result = result
        self.message = message


class UnknownKey(Exception):
    """No configured key has this pkh (HTTP 404, empty body)."""


@dataclass
class KeySlot:
    """One configured key URI and its backend; `pkh` is known once the backend has started."""

    backend: Backend
    started: bool = False
    error: str | None = None
    disabled: str | None = None  # set when the key must not sign (e.g. device HWM ahead)
    last_signed: dict[str, object] | None = None
    device_hwm: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    warning: str | None = None
    _public: tuple[str, keys.PublicKey] | None = None

    @property
    def public(self) -> keys.PublicKey:
        """The parsed public key, cached: it is used to verify every signature."""
        text = self.backend.public_key
        if self._public is None or self._public[0] != text:
            self._public = (text, keys.PublicKey.from_b58(text))
        return self._public[1]


class Guard:
    def __init__(
        self,
        *,
        guard_id: str,
        store: Store,
        slots: list[KeySlot],
        policy: Policy,
        authorizer: Authorizer,
        journal: Journal,
        metrics: Metrics,
        node: NodeHead,
        standby: bool = False,
        verify_signatures: bool = True,
        accept_device_hwm: bool = False,
        sync_device_hwm: bool = True,
        chains: tuple[str, ...] = (),
    ) -> None:
        self.guard_id = guard_id
        self.store = store
        self.slots = slots
        self.policy = policy
        self.authorizer = authorizer
        self.journal = journal
        self.metrics = metrics
        self.node = node
        self.standby_requested = standby
        self.verify_signatures = verify_signatures
        self.accept_device_hwm = accept_device_hwm
        self.sync_device_hwm = sync_device_hwm
        self.chains = chains
        self.by_pkh: dict[str, KeySlot] = {}
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.epoch: int | None = None  # the epoch this process holds, None when not the holder
        self.fence: Fence | None = None
        self.was_fenced = False
        self.lost_epoch: int | None = None  # the epoch this process held when it was fenced
        self.store_ok = True
        self.store_error: str | None = None  # why the store is unusable, shown in /status
        # The start-up claim failed on a store error (e.g. a read-only store): the fence poll
        # retries the claim instead of reading, and the guard shows `degraded` until it works.
        self.claim_pending = False
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._published: str | None = None

    # ---------------------------------------------------------------- state -------------------
    @property
    def state(self) -> str:
        if self.epoch is None:
            if self.claim_pending:
                return "degraded"
            return "fenced" if self.was_fenced else "standby"
        if not self.store_ok or not any(s.started and not s.disabled for s in self.slots):
            return "degraded"
        return "active"

    def apply_fence(self, fence: Fence | None) -> None:
        """Derive who we are from the fence record (fencing-and-failover.md §1)."""
        self.fence = fence
        before = self.state
        if fence is not None and fence.holder == self.guard_id:
            if self.epoch != fence.epoch:
                log.warning(
                    "guard %s holds the fence at epoch %d (fence level %d)",
                    self.guard_id,
                    fence.epoch,
                    fence.fence_level,
                )
            self.epoch = fence.epoch
            self.was_fenced = False
        elif self.epoch is not None:
            if fence is not None and fence.holder == "":
                log.warning(
                    "guard %s released the fence (epoch %d): standby", self.guard_id, fence.epoch
                )
            else:
                holder = fence.holder if fence else "nobody"
                epoch = fence.epoch if fence else "?"
                log.critical(
                    "FENCED: guard %s lost the fence (it held epoch %s; the store now names %r at "
                    "epoch %s). Refusing every request from now on; only a failover naming this "
                    "guard can make it sign again.",
                    self.guard_id,
                    self.epoch,
                    holder,
                    epoch,
                )
                self.was_fenced = True
                self.lost_epoch = self.epoch
                self.metrics.fenced.inc()
            self.epoch = None
        if self.state != before:
            log.warning("state %s -> %s", before, self.state)
        self._publish_state()

    def _publish_state(self) -> None:
        state = self.state
        if state != self._published:
            self._published = state
            self._background(self._publish_alive(state, self.epoch))
        self.metrics.set_state(state)
        self.metrics.epoch.set(self.epoch or 0)
        self.metrics.fence_level.set(self.fence.fence_level if self.fence else 0)

    async def poll_fence_once(self) -> None:
        fence: Fence | None
        try:
            if self.claim_pending:
                fence = await self.store.claim_initial_fence(self.guard_id)
                self.claim_pending = False
            else:
                fence = await self.store.read_fence()
        except StoreError as exc:
            if self.store_ok or str(exc) != self.store_error:
                log.error("store unavailable: %s (refusing to sign until it is back)", exc)
            self.store_ok, self.store_error = False, str(exc)
            self._publish_state()
            return
        if not self.store_ok:
            log.warning("store reachable again")
        self.store_ok, self.store_error = True, None
        self.apply_fence(fence)

    async def _fence_loop(self) -> None:
        while True:
            await asyncio.sleep(FENCE_POLL_SECONDS)
            await self.poll_fence_once()

    # ---------------------------------------------------------------- lifecycle ---------------
    async def start(self) -> None:
        await self.store.open()
        await self.store.lock_guard_id(self.guard_id)
        await self.node.start()
        for slot in self.slots:
            await self.start_slot(slot)
        if self.standby_requested:
            fence = await self.store.read_fence()
        else:
            try:
                fence = await self.store.claim_initial_fence(self.guard_id)
            except StoreUnavailable as exc:
                log.error("cannot claim the fence: %s (degraded; retrying every second)", exc)
                fence, self.claim_pending = None, True
                self.store_ok, self.store_error = False, str(exc)
        self.apply_fence(fence)
        for slot in self.slots:
            if slot.started:
                await self.check_slot_device(slot)
        await self.refresh_hwm_metrics()
        self._tasks.append(asyncio.create_task(self._fence_loop()))
        self._tasks.append(asyncio.create_task(self._restart_loop()))

    async def start_slot(self, slot: KeySlot) -> None:
        try:
            await slot.backend.start()
        except BackendError as exc:
            slot.error = str(exc)
            log.error(
                "key %s: backend did not start: %s (will retry)", slot.backend.display_uri, exc
            )
            return
        pkh = slot.backend.pkh
        other = self.by_pkh.get(pkh)
        if other is not None and other is not slot:
            slot.disabled = f"pkh {pkh} is configured twice"
            log.error("key %s: %s", slot.backend.display_uri, slot.disabled)
            return
        slot.started, slot.error = True, None
        self.by_pkh[pkh] = slot
        log.info("key %s ready: %s (%s)", pkh, slot.backend.display_uri, slot.backend.backend_type)

    async def check_slot_device(self, slot: KeySlot) -> None:
        """Read the device's own HWM and compare it with the store's (device_sync.py)."""
        try:
            check = await check_device(
                slot.backend,
                self.store,
                accept=self.accept_device_hwm,
                sync=self.sync_device_hwm,
                chains=list(self.chains),
                epoch=self.epoch,
            )
        except StoreError as exc:
            log.warning("device HWM check of %s skipped: %s", slot.backend.pkh, exc)
            return
        slot.device_hwm = check.device_hwm
        slot.warning = check.warning
        if check.disabled:
            slot.disabled = check.disabled
        for kind, (level, _) in check.device_hwm.items():
            self.metrics.device_hwm_level.labels(slot.backend.pkh, kind).set(level)

    async def _restart_loop(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(5.0)
            ticks += 1
            for slot in self.slots:
                if not slot.started and not slot.disabled:
                    await self.start_slot(slot)
                    if slot.started:
                        await self.check_slot_device(slot)
                elif slot.started and ticks % 60 == 0:  # every 5 minutes
                    await self.check_slot_device(slot)

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for slot in self.slots:
            with contextlib.suppress(Exception):
                await slot.backend.close()
        await self.node.close()
        await self.journal.close()
        await self.store.close()

    async def refresh_hwm_metrics(self) -> None:
        with contextlib.suppress(StoreError):
            for rec in await self.store.list_records():
                self.metrics.hwm_level.labels(rec.chain_id, rec.pkh, rec.kind).set(rec.level)

    # ---------------------------------------------------------------- lookups -----------------
    def slot_for(self, pkh: str) -> KeySlot:
        slot = self.by_pkh.get(pkh)
        if slot is None:
            raise UnknownKey(pkh)
        return slot

    # ---------------------------------------------------------------- the guarded path --------
    async def sign(
        self, pkh: str, data: bytes, *, version: int | None, authentication: str | None
    ) -> str:
        """Steps 2–8 for one POST /keys/<pkh>; the caller did step 1 (URL and body)."""
        slot = self.slot_for(pkh)
        try:
            self.authorizer.check(pkh, data, authentication)
        except Exception as exc:
            raise Refusal(403, "policy", str(exc)) from None
        try:
            req = codec.decode(data)
        except codec.DecodeError as exc:
            raise Refusal(400, "malformed", f"key {pkh}: cannot decode request: {exc}") from None
        try:
            self.policy.check(pkh, req, self.node.fresh_level)
        except PolicyRefusal as exc:
            raise self._refuse(pkh, req, 403, "policy", str(exc)) from None
        crash_point("decoded")
        if slot.disabled:
            raise self._refuse(
                pkh, req, 503, "unavailable", f"key {pkh} is disabled: {slot.disabled}"
            )
        epoch = self.epoch
        if epoch is None:
            raise self._refuse(
                pkh,
                req,
                503,
                "fence_refused",
                f"guard {self.guard_id} is {self.state}: it does not hold the "
                "fence and signs nothing",
            )
        async with self.locks[pkh]:
            if req.hwm_kind is None:  # generic 0x03, allowed by policy: no watermark,
                await self._check_fence_now(pkh, req, epoch)  # but still only the holder
                return await self._call_backend(slot, req, data, version, None, epoch)
            assert req.chain_id is not None and req.level is not None and req.round is not None
            intent = SignIntent(
                HWMKey(req.chain_id, pkh, req.hwm_kind), req.level, req.round, req.digest
            )
            try:
                await slot.backend.ensure_ready()
            except BackendError as exc:
                cached = await self._cached_despite_backend(intent)
                if cached is not None:
                    return cached
                raise self._refuse(
                    pkh,
                    req,
                    exc.status,
                    "unavailable",
                    f"key {pkh}: backend not ready, nothing advanced: {exc}",
                ) from None
            started = time.perf_counter()
            try:
                decision = await self.store.advance(intent, self.guard_id, epoch)
            except StoreUnavailable as exc:
                self.store_ok, self.store_error = False, str(exc)
                self._publish_state()
                raise self._refuse(
                    pkh, req, 503, "unavailable", f"store unavailable, not signed: {exc}"
                ) from None
            self.metrics.store_seconds.observe(time.perf_counter() - started)
            if isinstance(decision, Cached):
                self.metrics.sign.labels(pkh, req.hwm_kind, "cached").inc()
                await self._journal(pkh, req, "cached", signature=decision.signature)
                return decision.signature
            if isinstance(decision, Refused):
                if decision.reason in ("not_holder", "released"):
                    await self.poll_fence_once()
                    result = "fence_refused"
                else:
                    result = "hwm_refused" if decision.reason == "hwm" else "fence_refused"
                raise self._refuse(pkh, req, decision.status, result, decision.message)
            assert isinstance(decision, Advance)
            crash_point("advanced")
            self.store_ok, self.store_error = True, None
            self.metrics.last_commit.set(time.time())
            self.metrics.hwm_level.labels(req.chain_id, pkh, req.hwm_kind).set(req.level)
            return await self._call_backend(slot, req, data, version, intent, epoch)

    async def _check_fence_now(self, pkh: str, req: codec.SigningRequest, epoch: int) -> None:
        """Invariant I1 for requests without a watermark: re-read the fence from the store."""
        try:
            fence = await self.store.read_fence()
        except StoreError as exc:
            raise self._refuse(pkh, req, 503, "unavailable", f"store unavailable: {exc}") from None
        refused = fence_refusal(fence, self.guard_id, epoch)
        if refused is not None:
            self.apply_fence(fence)
            raise self._refuse(pkh, req, refused.status, "fence_refused", refused.message)

    async def _cached_despite_backend(self, intent: SignIntent) -> str | None:
        """An identical retry is answered from the cache even while the device is away."""
        try:
            rec = await self.store.get_record(intent.key)
        except StoreError:
            return None
        if (
            rec is not None
            and (rec.level, rec.round) == (intent.level, intent.round)
            and rec.hash == intent.hash
            and rec.signature is not None
            and self.epoch is not None
        ):
            return rec.signature
        return None

    async def _call_backend(
        self,
        slot: KeySlot,
        req: codec.SigningRequest,
        data: bytes,
        version: int | None,
        intent: SignIntent | None,
        epoch: int,
    ) -> str:
        pkh = slot.backend.pkh
        started = time.perf_counter()
        crash_point("backend_called")
        try:
            raw_sig = await slot.backend.sign(data, version=version)
        except DeviceHWMRefusal as exc:
            raise self._refuse(
                pkh, req, 409, "hwm_refused", f"device high watermark refusal: {exc}"
            ) from None
        except UnknownOutcome as exc:
            log.error(
                "key %s: UNKNOWN OUTCOME for %s level %s round %s: %s (the level stays "
                "taken; identical bytes are never re-sent)",
                pkh,
                req.kind,
                req.level,
                req.round,
                exc,
            )
            raise self._refuse(pkh, req, 502, "device_error", f"unknown outcome: {exc}") from None
        except BackendError as exc:
            raise self._refuse(
                pkh,
                req,
                exc.status if exc.status != 503 else 502,
                "device_error",
                f"backend failure: {exc}",
            ) from None
        finally:
            self.metrics.backend_seconds.labels(slot.backend.backend_type).observe(
                time.perf_counter() - started
            )
        crash_point("backend_replied")
        signature = self._checked_signature(slot, req, data, raw_sig, version)
        if intent is not None:
            # The signature cache is not needed for safety (watermark-rules.md §1.2): the write
            # is queued on the store's single worker, ahead of any later advance, and the answer
            # does not wait for it. A crash in between leaves an identical retry at 409 (the
            # baker, having the answer, does not retry), never a second signature.
            self._background(self._store_signature(intent, signature, epoch))
        slot.last_signed = {
            "kind": req.hwm_kind or req.kind,
            "level": req.level,
            "round": req.round,
            "at": utc_now(),
        }
        self.metrics.sign.labels(pkh, req.hwm_kind or req.kind, "signed").inc()
        await self._journal(pkh, req, "signed", signature=signature)
        return signature

    def _checked_signature(
        self, slot: KeySlot, req: codec.SigningRequest, data: bytes, text: str, version: int | None
    ) -> str:
        """Normalise (low-S, specific prefix) and verify; a bad signature is never passed on."""
        pkh = slot.backend.pkh
        pk = slot.public
        try:
            curve, raw = keys.parse_signature(text)
        except ValueError as exc:
            raise self._refuse(
                pkh, req, 502, "device_error", f"backend returned an unreadable signature: {exc}"
            ) from None
        if curve is not None and curve != pk.curve:
            raise self._refuse(
                pkh,
                req,
                502,
                "device_error",
                f"backend returned a {curve} signature for a {pk.curve} key",
            )
        normal = keys.normalize_signature(pk.curve, raw)
        if self.verify_signatures and not pk.verify(normal, data, version=version):
            raise self._refuse(
                pkh,
                req,
                502,
                "device_error",
                "backend returned a signature that does not verify against the key; not passed on",
            )
        if curve is not None and normal == raw:
            return text  # already the curve's own prefix and normal form: no re-encoding
        return keys.signature_b58(pk.curve, normal)

    # ---------------------------------------------------------------- refusals ----------------
    def _refuse(
        self, pkh: str, req: codec.SigningRequest, status: int, result: str, message: str
    ) -> Refusal:
        kind = req.hwm_kind or req.kind
        log.warning(
            "refused %s for %s: chain %s level %s round %s: %s (HTTP %d)",
            kind,
            pkh,
            req.chain_id,
            req.level,
            req.round,
            message,
            status,
        )
        self.metrics.sign.labels(pkh, kind, result).inc()
        with contextlib.suppress(Exception):
            self.journal.record_nowait(_entry(pkh, req, result, None, message))
        return Refusal(status, result, message)

    async def _journal(
        self, pkh: str, req: codec.SigningRequest, decision: str, *, signature: str
    ) -> None:
        """Queued in order with every other decision; the journal thread writes it. A journal
        failure is logged: it does not withhold a signature whose watermark is durable."""
        try:
            self.journal.record_nowait(_entry(pkh, req, decision, signature, None))
        except Exception as exc:
            log.error("journal write failed: %s", exc)

    async def _store_signature(self, intent: SignIntent, signature: str, epoch: int) -> None:
        await self.store.store_signature(intent, signature, epoch)
        crash_point("signature_stored")

    async def _publish_alive(self, state: str, epoch: int | None) -> None:
        try:
            await self.store.set_alive_state(state, epoch)
        except StoreError as exc:
            log.warning("could not publish state %s to the store: %s", state, exc)

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # ---------------------------------------------------------------- status ------------------
    async def status(self) -> dict[str, object]:
        records: dict[str, dict[str, list[int]]] = {}
        store_ok = self.store_ok
        try:
            for rec in await self.store.list_records():
                records.setdefault(rec.pkh, {})
                prev = records[rec.pkh].get(rec.kind)
                if prev is None or (rec.level, rec.round) > (prev[0], prev[1]):
                    records[rec.pkh][rec.kind] = [rec.level, rec.round]
        except StoreError:
            store_ok = False
        keys_out: list[dict[str, object]] = []
        for slot in self.slots:
            pkh = slot.backend.pkh if slot.started else None
            entry: dict[str, object] = {
                "pkh": pkh,
                "uri": slot.backend.display_uri,
                "backend": slot.backend.backend_type,
                "ready": slot.started and not slot.disabled,
                "hwm": records.get(pkh or "", {}),
                "device_hwm": {k: list(v) for k, v in slot.device_hwm.items()},
                "last_signed": slot.last_signed,
            }
            if slot.error:
                entry["error"] = slot.error
            if slot.disabled:
                entry["disabled"] = slot.disabled
            keys_out.append(entry)
        warnings = [s.warning for s in self.slots if s.warning]
        if self.node.warning:
            warnings.append(self.node.warning)
        fence = self.fence
        return {
            "state": self.state,
            "guard_id": self.guard_id,
            "epoch": fence.epoch if fence else None,
            "fence_level": fence.fence_level if fence else None,
            "holder": fence.holder if fence else None,
            **({"fenced_epoch": self.lost_epoch} if self.state == "fenced" else {}),
            "store": {"kind": self.store.kind, "ok": store_ok}
            | ({"error": self.store_error} if self.store_error else {}),
            "node": {
                "url": self.node.node,
                "head": self.node.level,
                "fresh": self.node.fresh_level is not None,
            }
            if self.node.node
            else None,
            "keys": keys_out,
            "warnings": warnings,
        }


def _entry(
    pkh: str, req: codec.SigningRequest, decision: str, signature: str | None, message: str | None
) -> JournalEntry:
    return JournalEntry(
        pkh=pkh,
        decision=decision,
        kind=req.hwm_kind or req.kind,
        chain=req.chain_id,
        level=req.level,
        round=req.round,
        payload_hash=req.payload_hash,
        signature=signature,
        message=message,
    )
