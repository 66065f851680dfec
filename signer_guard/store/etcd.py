"""The etcd store, for several hosts, through etcd's v3 JSON gateway (fencing-and-failover.md §4).

The fencing token is the `mod_revision` of `P/fence`. Every change is one `Txn` whose compares
make a stale read harmless: the advance compares the fence token and the record's `mod_revision`,
so the store caches both and needs no read per advance. A timed-out or failed write has an unknown
outcome: `StoreUnavailable` is raised (never a signing decision) and every cached revision is
dropped, so the next step re-reads.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from signer_guard import rule
from signer_guard.model import Fence, HWMKey, HWMRecord, SignIntent, utc_now
from signer_guard.store.base import (
    FenceConflict,
    NotHolder,
    SetResult,
    Store,
    StoreError,
    StoreUnavailable,
    TakeoverResult,
)
from signer_guard.store.etcd_alive import ALIVE_TTL, KEEPALIVE_INTERVAL, AliveKey
from signer_guard.store.etcd_client import (
    DEFAULT_TIMEOUT,
    KV,
    EtcdClient,
    cmp_absent,
    cmp_mod,
    cmp_mod_range,
    cmp_present_or_absent,
    op_put,
    op_range,
)
from signer_guard.store.etcd_layout import (
    Layout,
    check_meta,
    decode_alive,
    decode_fence,
    decode_record,
    encode_fence,
    encode_meta,
    encode_record,
    encode_sig,
    parse_etcd_url,
    with_cached_signature,
)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Seen:
    """A value read from etcd: its `mod_revision` (0 = absent) and the store revision it was read
    at (so an older answer never replaces a newer one in the cache)."""

    value: Any
    mod_revision: int
    at: int


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The fence and every HWM record at one revision."""

    revision: int
    fence: Fence | None
    fence_rev: int
    records: dict[HWMKey, tuple[HWMRecord, int]]

    @property
    def last_level(self) -> int:
        levels = [rec.level for rec, _ in self.records.values()]
        if self.fence is not None:
            levels.append(self.fence.fence_level)
        return max(levels, default=0)


class EtcdStore(Store):
    """HWM records, the signature cache and the fence under one etcd prefix."""

    kind = "etcd"
    keeps_liveness = True

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        alive_ttl: int = ALIVE_TTL,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
    ) -> None:
        endpoints, prefix = parse_etcd_url(url)
        self.url = url
        self.layout = Layout(prefix)
        self._client = EtcdClient(endpoints, timeout)
        self._alive_ttl = alive_ttl
        self._keepalive_interval = keepalive_interval
        self._alive: AliveKey | None = None
        self._fence: _Seen | None = None  # value: Fence | None; mod_revision = the token
        self._records: dict[HWMKey, _Seen] = {}  # value: HWMRecord | None

    def __repr__(self) -> str:
        return f"EtcdStore({self.url!r})"

    @property
    def fence_token(self) -> int | None:
        """The cached `mod_revision` of the fence (the fencing token), if known."""
        return self._fence.mod_revision if self._fence is not None else None

    # -- cache --------------------------------------------------------------------------------
    def _forget(self) -> None:
        self._fence = None
        self._records.clear()

    def _see_fence(self, kvs: list[KV], at: int) -> Fence | None:
        fence = decode_fence(kvs[0].value) if kvs else None
        if self._fence is None or at >= self._fence.at:
            self._fence = _Seen(fence, kvs[0].mod_revision if kvs else 0, at)
        return fence

    def _see_record(
        self, key: HWMKey, kvs: list[KV], at: int, sig_kvs: list[KV] | None = None
    ) -> HWMRecord | None:
        record = decode_record(key, kvs[0].value) if kvs else None
        record = with_cached_signature(record, sig_kvs[0].value if sig_kvs else None)
        self._note_record(key, record, kvs[0].mod_revision if kvs else 0, at)
        return record

    def _note_record(self, key: HWMKey, record: HWMRecord | None, mod: int, at: int) -> None:
        old = self._records.get(key)
        if old is None or at >= old.at:
            self._records[key] = _Seen(record, mod, at)

    async def _guarded(self, what: str, step: Awaitable[T]) -> T:
        """Await `step`; on a store error drop every cached revision (I4) and re-raise."""
        try:
            return await step
        except StoreUnavailable as exc:
            self._forget()
            raise StoreUnavailable(f"etcd store {self.url}: {what}: {exc}") from exc

    # -- open / close -------------------------------------------------------------------------
    async def open(self) -> None:
        await self._client.start()
        meta = self.layout.meta
        result = await self._guarded(
            "open",
            self._client.txn([cmp_absent(meta)], [op_put(meta, encode_meta())], [op_range(meta)]),
        )
        if not result.succeeded and result.ranges and result.ranges[0]:
            check_meta(result.ranges[0][0].value)

    async def close(self) -> None:
        if self._alive is not None:
            await self._alive.release()
            self._alive = None
        await self._client.close()

    # -- liveness key (I7, §4.4) --------------------------------------------------------------
    async def lock_guard_id(self, guard_id: str) -> None:
        if not guard_id or "/" in guard_id or "\0" in guard_id:
            raise ValueError(f"invalid guard id {guard_id!r}: it must be non-empty, without '/'")
        if self._alive is not None and self._alive.guard_id == guard_id:
            return
        alive = AliveKey(
            self._client,
            self.layout.alive(guard_id),
            guard_id,
            ttl=self._alive_ttl,
            interval=self._keepalive_interval,
        )
        await alive.acquire()
        self._alive = alive

    async def set_alive_state(self, state: str, epoch: int | None = None) -> None:
        """Rewrite this guard's liveness value when its state changes (a hint for failover)."""
        if self._alive is not None:
            await self._alive.set_state(state, epoch)

    async def read_alive(self, guard_id: str) -> dict[str, Any] | None:
        """The live value of `P/alive/<guard_id>`, or None when no live process holds it."""
        _, kvs = await self._guarded(
            "read liveness key", self._client.range(self.layout.alive(guard_id))
        )
        return decode_alive(kvs[0].value) if kvs else None

    # -- fence --------------------------------------------------------------------------------
    async def read_fence(self) -> Fence | None:
        revision, kvs = await self._guarded("read fence", self._client.range(self.layout.fence))
        return self._see_fence(kvs, revision)

    async def claim_initial_fence(self, guard_id: str) -> Fence:
        key = self.layout.fence
        fence = Fence(epoch=1, holder=guard_id, fence_level=0, updated_at=utc_now())
        try:
            result = await self._client.txn(
                [cmp_absent(key)], [op_put(key, encode_fence(fence))], [op_range(key)]
            )
        except StoreUnavailable:
            # Unknown outcome: whatever the store holds now decides (the write may land later).
            self._forget()
            current = await self.read_fence()
            if current is None:
                raise
            return current
        if result.succeeded:
            self._fence = _Seen(fence, result.revision, result.revision)
            return fence
        current = self._see_fence(result.ranges[0], result.revision)
        if current is None:
            raise StoreUnavailable(f"etcd store {self.url}: the fence vanished while claiming it")
        return current

    async def _snapshot(self) -> _Snapshot:
        """The fence and the whole hwm prefix at one revision (a linearizable read)."""
        lay = self.layout
        result = await self._guarded(
            "read fence and records",
            self._client.read_many(
                [
                    op_range(lay.fence),
                    op_range(lay.hwm_start, lay.hwm_end),
                    op_range(lay.sig_start, lay.sig_end),
                ]
            ),
        )
        fence_kvs, record_kvs, sig_kvs = result.ranges
        fence = self._see_fence(fence_kvs, result.revision)
        sigs = {k: kv.value for kv in sig_kvs if (k := lay.sig_key_of(kv.key)) is not None}
        records: dict[HWMKey, tuple[HWMRecord, int]] = {}
        for kv in record_kvs:
            key = lay.hwm_key_of(kv.key)
            record = with_cached_signature(decode_record(key, kv.value), sigs.get(key))
            assert record is not None
            records[key] = (record, kv.mod_revision)
            self._note_record(key, records[key][0], kv.mod_revision, result.revision)
        return _Snapshot(
            result.revision, fence, fence_kvs[0].mod_revision if fence_kvs else 0, records
        )

    async def takeover(
        self, guard_id: str, fence_level: int, keys: Iterable[HWMKey], expected: Fence | None
    ) -> TakeoverResult:
        """§4.2: one Txn comparing the fence read and that no HWM changed since the read."""
        if fence_level < 0:
            raise ValueError(f"fence level must be >= 0, got {fence_level}")
        wanted = list(dict.fromkeys(keys))
        lay = self.layout
        failure: StoreError | None = None
        pending: TakeoverResult | None = None  # the attempt that timed out, if any
        for _ in range(MAX_ATTEMPTS):
            snap = await self._snapshot()
            if pending is not None and _names(snap.fence, guard_id, pending.fence.epoch):
                return pending  # the timed-out attempt was applied after all
            if snap.fence != expected:
                raise _changed(expected, snap.fence)
            old = snap.fence
            now = utc_now()
            new = Fence(
                epoch=(old.epoch if old else 0) + 1,
                holder=guard_id,
                fence_level=max(old.fence_level if old else 0, fence_level),
                updated_at=now,
            )
            raised = {
                k: HWMRecord(k.chain_id, k.pkh, k.kind, fence_level, 0, None, None, new.epoch, now)
                for k in [
                    *(k for k, (rec, _) in snap.records.items() if rec.level < fence_level),
                    *(k for k in wanted if k not in snap.records),
                ]
            }
            fence_cmp = (
                cmp_mod(lay.fence, "EQUAL", snap.fence_rev) if old else cmp_absent(lay.fence)
            )
            compare = [
                fence_cmp,
                cmp_mod_range(lay.hwm_start, lay.hwm_end, "LESS", snap.revision + 1),
            ]
            puts = [op_put(lay.fence, encode_fence(new))]
            puts += [op_put(lay.hwm(k), encode_record(rec)) for k, rec in raised.items()]
            result = TakeoverResult(old, new, snap.last_level, len(raised))
            try:
                txn = await self._client.txn(compare, puts, [op_range(lay.fence)])
            except StoreUnavailable as exc:
                # Unknown outcome (§4.2): a linearizable re-read of the fence tells.
                self._forget()
                failure, pending = exc, result
                if _names(await self.read_fence(), guard_id, new.epoch):
                    return result
                continue
            if txn.succeeded:
                self._fence = _Seen(new, txn.revision, txn.revision)
                for k, rec in raised.items():
                    self._note_record(k, rec, txn.revision, txn.revision)
                return result
            current = self._see_fence(txn.ranges[0], txn.revision)
            if pending is not None and _names(current, guard_id, new.epoch):
                return pending
            if current != old:
                raise _changed(expected, current)
            failure = FenceConflict("an HWM record changed during every attempt")
        if isinstance(failure, StoreUnavailable):
            raise StoreUnavailable(
                f"etcd store {self.url}: takeover timed out {MAX_ATTEMPTS} times, unresolved: "
                f"{failure}"
            )
        raise FenceConflict(
            f"etcd store {self.url}: takeover failed {MAX_ATTEMPTS} times: HWM records kept "
            f"changing (is the old holder still signing?)"
        )

    async def release(self, guard_id: str) -> Fence:
        """§4.3: holder := "", fence_level := max(fence_level, max HWM level), if I hold it."""
        lay = self.layout
        pending: Fence | None = None  # the released fence of an attempt that timed out
        for _ in range(MAX_ATTEMPTS):
            snap = await self._snapshot()
            old = snap.fence
            if pending is not None and _names(old, "", pending.epoch):
                assert old is not None
                return old  # the timed-out attempt was applied after all
            if old is None or old.holder != guard_id:
                holder = "nobody (no fence)" if old is None else repr(old.holder or "nobody")
                raise NotHolder(f"guard {guard_id!r} does not hold the fence; holder: {holder}")
            new = Fence(old.epoch, "", snap.last_level, utc_now())
            compare = [
                cmp_mod(lay.fence, "EQUAL", snap.fence_rev),
                cmp_mod_range(lay.hwm_start, lay.hwm_end, "LESS", snap.revision + 1),
            ]
            try:
                txn = await self._client.txn(compare, [op_put(lay.fence, encode_fence(new))], [])
            except StoreUnavailable:
                self._forget()
                pending = new
                current = await self.read_fence()
                if current is not None and _names(current, "", old.epoch):
                    return current
                continue
            if txn.succeeded:
                self._fence = _Seen(new, txn.revision, txn.revision)
                return new
        raise StoreUnavailable(
            f"etcd store {self.url}: release did not go through in {MAX_ATTEMPTS} attempts"
        )

    # -- the guarded path (§4.1) ----------------------------------------------------------------
    async def _read_step(self, key: HWMKey) -> None:
        lay = self.layout
        result = await self._guarded(
            "read fence and record",
            self._client.read_many(
                [op_range(lay.fence), op_range(lay.hwm(key)), op_range(lay.sig(key))]
            ),
        )
        self._see_fence(result.ranges[0], result.revision)
        self._see_record(key, result.ranges[1], result.revision, result.ranges[2])

    async def advance(self, intent: SignIntent, guard_id: str, epoch: int | None) -> rule.Decision:
        key = intent.key
        lay = self.layout
        fresh = False
        attempts = 0
        while True:
            if self._fence is None or key not in self._records:
                await self._read_step(key)
                fresh = True
            assert self._fence is not None
            fence_seen, seen = self._fence, self._records[key]
            decision = rule.decide(intent, seen.value, fence_seen.value, guard_id, epoch)
            if not isinstance(decision, rule.Advance):
                if fresh:
                    return decision
                # Decided on cached data: confirm with a linearizable read before answering.
                self._fence = None
                self._records.pop(key, None)
                continue
            if attempts == MAX_ATTEMPTS:
                raise StoreUnavailable(
                    f"etcd store {self.url}: record {key.chain_id}/{key.pkh}/{key.kind} changed "
                    f"during {MAX_ATTEMPTS} attempts"
                )
            attempts += 1
            assert epoch is not None  # decide() refuses a missing epoch
            new = HWMRecord(
                key.chain_id, key.pkh, key.kind, intent.level, intent.round, intent.hash, None,
                epoch, utc_now(),
            )  # fmt: skip
            record_key = lay.hwm(key)
            result = await self._guarded(
                "advance",
                self._client.txn(
                    [
                        cmp_mod(lay.fence, "EQUAL", fence_seen.mod_revision),
                        cmp_present_or_absent(record_key, seen.mod_revision),
                    ],
                    [op_put(record_key, encode_record(new))],
                    [op_range(lay.fence), op_range(record_key), op_range(lay.sig(key))],
                ),
            )
            if result.succeeded:
                self._note_record(key, new, result.revision, result.revision)
                return decision
            # The fence or the record changed: re-apply the rule to what the store holds now.
            self._see_fence(result.ranges[0], result.revision)
            self._see_record(key, result.ranges[1], result.revision, result.ranges[2])
            fresh = True

    async def store_signature(self, intent: SignIntent, signature: str, epoch: int) -> None:
        """A second Txn comparing the fence token and the record's revision from the advance,
        writing `P/sig/…` beside the record: the record's own mod_revision stays as it is, so
        the next advance of this key never fails its compare because of a cache write."""
        key = intent.key
        lay = self.layout
        try:
            if self._fence is None or key not in self._records:
                await self._read_step(key)
            assert self._fence is not None
            fence_seen, seen = self._fence, self._records[key]
            record: HWMRecord | None = seen.value
            fence: Fence | None = fence_seen.value
            if (
                record is None
                or fence is None
                or fence.epoch != epoch
                or (record.level, record.round, record.hash)
                != (intent.level, intent.round, intent.hash)
                or record.signature == signature
            ):
                return
            new = dataclasses.replace(record, signature=signature)
            result = await self._guarded(
                "store signature",
                self._client.txn(
                    [
                        cmp_mod(lay.fence, "EQUAL", fence_seen.mod_revision),
                        cmp_mod(lay.hwm(key), "EQUAL", seen.mod_revision),
                    ],
                    [op_put(lay.sig(key), encode_sig(record, signature))],
                    [],
                ),
            )
        except StoreError as exc:
            log.warning("signature cache write skipped: %s", exc)
            return
        if result.succeeded:
            self._note_record(key, new, seen.mod_revision, result.revision)
        else:
            self._records.pop(key, None)  # something changed: re-read on the next step

    # -- operator tools -------------------------------------------------------------------------
    async def list_records(self) -> list[HWMRecord]:
        snap = await self._snapshot()
        return sorted(
            (rec for rec, _ in snap.records.values()), key=lambda r: (r.chain_id, r.pkh, r.kind)
        )

    async def get_record(self, key: HWMKey) -> HWMRecord | None:
        lay = self.layout
        result = await self._guarded(
            "read record",
            self._client.read_many([op_range(lay.hwm(key)), op_range(lay.sig(key))]),
        )
        return self._see_record(key, result.ranges[0], result.revision, result.ranges[1])

    async def _write_record(self, new: HWMRecord, mod_revision: int) -> bool:
        """Put one record if it is unchanged since read; False when it changed meanwhile."""
        record_key = self.layout.hwm(new.key)
        result = await self._guarded(
            "write record",
            self._client.txn(
                [cmp_present_or_absent(record_key, mod_revision)],
                [op_put(record_key, encode_record(new))],
                [],
            ),
        )
        if result.succeeded:
            self._note_record(new.key, new, result.revision, result.revision)
        return result.succeeded

    async def set_record(
        self, key: HWMKey, level: int, round_: int, *, allow_lower: bool = False
    ) -> SetResult:
        if level < 0 or round_ < 0:
            raise ValueError(f"level and round must be >= 0, got ({level}, {round_})")
        for _ in range(MAX_ATTEMPTS):
            await self._read_step(key)
            assert self._fence is not None
            fence: Fence | None = self._fence.value
            seen = self._records[key]
            old: HWMRecord | None = seen.value
            if old is not None and not allow_lower and (level, round_) <= (old.level, old.round):
                return SetResult(old=old, new=old, changed=False)
            new = HWMRecord(
                key.chain_id, key.pkh, key.kind, level, round_, None, None,
                fence.epoch if fence else 0, utc_now(),
            )  # fmt: skip
            if await self._write_record(new, seen.mod_revision):
                same = old is not None and (old.level, old.round, old.hash, old.signature) == (
                    level, round_, None, None,
                )  # fmt: skip
                return SetResult(old=old, new=new, changed=not same)
        raise StoreUnavailable(
            f"etcd store {self.url}: record {key.chain_id}/{key.pkh}/{key.kind} changed during "
            f"{MAX_ATTEMPTS} attempts"
        )

    async def merge_records(self, records: Iterable[HWMRecord]) -> int:
        incoming = list(records)
        for rec in incoming:
            if rec.level < 0 or rec.round < 0:
                raise ValueError(f"negative level or round in imported record {rec.key}")
        changed = 0
        for rec in incoming:
            for _ in range(MAX_ATTEMPTS):
                await self._read_step(rec.key)
                assert self._fence is not None
                fence: Fence | None = self._fence.value
                seen = self._records[rec.key]
                old: HWMRecord | None = seen.value
                if old is not None and (rec.level, rec.round) <= (old.level, old.round):
                    break
                new = HWMRecord(
                    rec.chain_id, rec.pkh, rec.kind, rec.level, rec.round, rec.hash,
                    rec.signature, fence.epoch if fence else 0, utc_now(),
                )  # fmt: skip
                if await self._write_record(new, seen.mod_revision):
                    changed += 1
                    break
            else:
                raise StoreUnavailable(
                    f"etcd store {self.url}: record {rec.key} changed during {MAX_ATTEMPTS} "
                    f"attempts (merged {changed} records before it)"
                )
        return changed


def _names(fence: Fence | None, holder: str, epoch: int) -> bool:
    return fence is not None and (fence.holder, fence.epoch) == (holder, epoch)


def _changed(expected: Fence | None, found: Fence | None) -> FenceConflict:
    return FenceConflict(
        f"the fence changed since it was read: expected "
        f"{expected.to_json() if expected else None}, found {found.to_json() if found else None}"
    )


__all__ = ["EtcdStore", "parse_etcd_url"]
