"""SqliteStore on real SQLite files, including several OS processes sharing one file."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path

import pytest

from signer_guard import rule
from signer_guard.model import HWMKey, HWMRecord, SignIntent
from signer_guard.store.base import (
    FenceConflict,
    NotHolder,
    StoreCorrupt,
    StoreUnavailable,
)
from signer_guard.store.sqlite import SqliteStore
from tests import sqlite_children as kids
from tests.sqlite_children import CHAIN, KEY, PKH, intent, payload_hash

ME = "bake-a"
OTHER = "bake-b"
PRE = HWMKey(CHAIN, PKH, "preattestation")
BLOCK = HWMKey(CHAIN, PKH, "block")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "store.sqlite"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(db_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def ctx() -> SpawnContext:
    return multiprocessing.get_context("spawn")


@pytest.fixture
def procs() -> Iterator[list[SpawnProcess]]:
    """Processes started by a test; every one is stopped by PID at teardown."""
    started: list[SpawnProcess] = []
    try:
        yield started
    finally:
        for p in started:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join(10)


def run_all(
    ctx: SpawnContext, procs: list[SpawnProcess], target: Callable[..., None],
    args_list: list[tuple[object, ...]], timeout: float = 60,
) -> None:  # fmt: skip
    batch = [ctx.Process(target=target, args=args) for args in args_list]
    procs.extend(batch)
    for p in batch:
        p.start()
    deadline = time.monotonic() + timeout
    for p in batch:
        p.join(max(0.1, deadline - time.monotonic()))
        assert p.exitcode == 0, f"child {p.pid} exited with {p.exitcode}"


async def holder(store: SqliteStore, guard_id: str = ME) -> int:
    fence = await store.claim_initial_fence(guard_id)
    assert fence.holder == guard_id
    return fence.epoch


def record(key: HWMKey, level: int, round_: int, payload: str | None = None,
           signature: str | None = None) -> HWMRecord:  # fmt: skip
    h = payload_hash(payload) if payload is not None else None
    return HWMRecord(key.chain_id, key.pkh, key.kind, level, round_, h, signature, 0, "")


# -- layout ----------------------------------------------------------------------------------------
async def test_open_creates_private_wal_store(store: SqliteStore, db_path: Path) -> None:
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"meta", "fence", "hwm"}
    finally:
        raw.close()
    assert await store.read_fence() is None
    assert await store.list_records() == []


# -- the guarded path ------------------------------------------------------------------------------
async def test_advance_cache_and_refusals(store: SqliteStore) -> None:
    epoch = await holder(store)
    assert epoch == 1
    assert await store.advance(intent(10, "a"), ME, epoch) == rule.Advance()
    rec = await store.get_record(KEY)
    assert rec is not None
    assert (rec.level, rec.round, rec.hash, rec.signature, rec.epoch) == (
        10, 0, payload_hash("a"), None, 1,
    )  # fmt: skip

    # Identical retry before the signature is cached: refused (level lost, never re-signed).
    retry = await store.advance(intent(10, "a"), ME, epoch)
    assert isinstance(retry, rule.Refused) and retry.status == 409

    await store.store_signature(intent(10, "a"), "edsigCACHED", epoch)
    assert await store.advance(intent(10, "a"), ME, epoch) == rule.Cached("edsigCACHED")

    other = await store.advance(intent(10, "b"), ME, epoch)
    assert isinstance(other, rule.Refused)
    assert other.message == "attestation level 10 and round 0 already signed with different data"

    lower = await store.advance(intent(9, "c"), ME, epoch)
    assert isinstance(lower, rule.Refused)
    assert lower.message == "attestation level 9 below high watermark 10"

    wrong_epoch = await store.advance(intent(11, "d"), ME, epoch + 1)
    assert isinstance(wrong_epoch, rule.Refused) and wrong_epoch.status == 503
    not_me = await store.advance(intent(11, "d"), OTHER, epoch)
    assert isinstance(not_me, rule.Refused) and not_me.status == 503

    # Other kinds have their own marks.
    assert await store.advance(SignIntent(PRE, 10, 0, b"p" * 32), ME, 1) == rule.Advance()
    rec = await store.get_record(KEY)
    assert rec is not None and (rec.level, rec.signature) == (10, "edsigCACHED")


async def test_store_signature_only_matches_the_same_request(store: SqliteStore) -> None:
    epoch = await holder(store)
    assert await store.advance(intent(20, "a"), ME, epoch) == rule.Advance()
    await store.store_signature(intent(20, "other"), "edsigWRONG", epoch)
    await store.store_signature(intent(20, "a", round_=1), "edsigWRONG", epoch)
    rec = await store.get_record(KEY)
    assert rec is not None and rec.signature is None


async def test_without_fence_nothing_is_signed(store: SqliteStore) -> None:
    got = await store.advance(intent(20, "a"), ME, None)
    assert isinstance(got, rule.Refused) and got.status == 503
    assert await store.list_records() == []


async def test_event_loop_stays_free_while_sqlite_waits(db_path: Path) -> None:
    store = SqliteStore(db_path, busy_timeout_ms=3000)
    await store.open()
    try:
        epoch = await holder(store)
        raw = sqlite3.connect(db_path, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            task = asyncio.create_task(store.advance(intent(30, "a"), ME, epoch))
            ticks = 0
            for _ in range(20):
                await asyncio.sleep(0.01)
                ticks += 1
            assert not task.done()
            assert ticks == 20
        finally:
            raw.execute("ROLLBACK")
            raw.close()
        assert await task == rule.Advance()
    finally:
        await store.close()


async def test_locked_past_busy_timeout_is_unavailable(db_path: Path) -> None:
    store = SqliteStore(db_path, busy_timeout_ms=200)
    await store.open()
    try:
        epoch = await holder(store)
        raw = sqlite3.connect(db_path, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable, match="advance failed"):
                await store.advance(intent(30, "a"), ME, epoch)
        finally:
            raw.execute("ROLLBACK")
            raw.close()
        assert await store.get_record(KEY) is None
        assert await store.advance(intent(30, "a"), ME, epoch) == rule.Advance()
    finally:
        await store.close()


# -- durability and other processes ----------------------------------------------------------------
async def test_records_survive_close_and_reopen(db_path: Path) -> None:
    first = SqliteStore(db_path)
    await first.open()
    epoch = await holder(first)
    await first.advance(intent(40, "a"), ME, epoch)
    await first.store_signature(intent(40, "a"), "edsigCACHED", epoch)
    before = await first.list_records()
    fence = await first.read_fence()
    await first.close()

    again = SqliteStore(db_path)
    await again.open()
    try:
        assert await again.list_records() == before
        assert await again.read_fence() == fence
        assert await again.advance(intent(40, "a"), ME, epoch) == rule.Cached("edsigCACHED")
    finally:
        await again.close()


async def test_set_record_from_another_instance_applies_to_next_advance(
    store: SqliteStore, db_path: Path
) -> None:
    epoch = await holder(store)
    assert await store.advance(intent(10, "a"), ME, epoch) == rule.Advance()
    operator = SqliteStore(db_path)
    await operator.open()
    try:
        raised = await operator.set_record(KEY, 50, 0)
        assert raised.changed
        assert raised.old is not None and raised.old.level == 10
        assert raised.new is not None and (raised.new.level, raised.new.hash) == (50, None)
        refused = await store.advance(intent(20, "b"), ME, epoch)
        assert isinstance(refused, rule.Refused)
        assert refused.message == "attestation level 20 below high watermark 50"

        noop = await operator.set_record(KEY, 30, 0)
        assert not noop.changed and noop.new == noop.old

        lowered = await operator.set_record(KEY, 15, 0, allow_lower=True)
        assert lowered.changed and lowered.new is not None and lowered.new.level == 15
        assert await store.advance(intent(20, "b"), ME, epoch) == rule.Advance()
    finally:
        await operator.close()


async def test_set_record_rejects_negative_values(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="level and round"):
        await store.set_record(KEY, -1, 0)


async def test_fifty_processes_one_advance(
    db_path: Path, ctx: SpawnContext, procs: list[SpawnProcess]
) -> None:
    setup = SqliteStore(db_path)
    await setup.open()
    epoch = await holder(setup)
    await setup.close()
    n = 50
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    args: list[tuple[object, ...]] = [
        (str(db_path), ME, epoch, 100, f"payload-{i}", barrier, results) for i in range(n)
    ]
    await asyncio.to_thread(run_all, ctx, procs, kids.advance_child, args)
    outcomes = sorted(results.get(timeout=10) for _ in range(n))
    assert outcomes.count("Advance") == 1
    assert outcomes.count("Refused") == n - 1

    check = SqliteStore(db_path)
    await check.open()
    try:
        rec = await check.get_record(KEY)
        assert rec is not None and rec.level == 100
        assert rec.hash in {payload_hash(f"payload-{i}") for i in range(n)}
    finally:
        await check.close()


async def test_fence_claim_race_between_processes(
    db_path: Path, ctx: SpawnContext, procs: list[SpawnProcess]
) -> None:
    n = 12
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    args: list[tuple[object, ...]] = [(str(db_path), f"g{i}", barrier, results) for i in range(n)]
    await asyncio.to_thread(run_all, ctx, procs, kids.claim_child, args)
    lines = [results.get(timeout=10).split() for _ in range(n)]
    winners = [me for me, holder_id, epoch in lines if me == holder_id and epoch == "1"]
    assert len(winners) == 1
    assert {(holder_id, epoch) for _, holder_id, epoch in lines} == {(winners[0], "1")}


async def test_guard_id_lock_between_processes(
    store: SqliteStore, db_path: Path, ctx: SpawnContext, procs: list[SpawnProcess]
) -> None:
    await store.lock_guard_id(ME)
    results = ctx.Queue()
    args: list[tuple[object, ...]] = [(str(db_path), ME, results), (str(db_path), OTHER, results)]
    await asyncio.to_thread(run_all, ctx, procs, kids.lock_child, [args[0]])
    assert results.get(timeout=10).startswith("GuardIdInUse: another process already serves")
    await asyncio.to_thread(run_all, ctx, procs, kids.lock_child, [args[1]])
    assert results.get(timeout=10) == "locked"
    await store.close()  # releases the lock
    await asyncio.to_thread(run_all, ctx, procs, kids.lock_child, [args[0]])
    assert results.get(timeout=10) == "locked"


async def test_advance_survives_sigkill(
    db_path: Path, ctx: SpawnContext, procs: list[SpawnProcess]
) -> None:
    parent_end, child_end = ctx.Pipe(duplex=False)
    p = ctx.Process(target=kids.sigkill_child, args=(str(db_path), ME, 777, child_end))
    procs.append(p)
    p.start()
    assert await asyncio.to_thread(parent_end.poll, 60)
    assert parent_end.recv() == "Advance"
    await asyncio.to_thread(p.join, 30)
    assert p.exitcode == -signal.SIGKILL

    after = SqliteStore(db_path)
    await after.open()
    try:
        rec = await after.get_record(KEY)
        assert rec is not None
        assert (rec.level, rec.round, rec.hash, rec.epoch) == (777, 0, payload_hash("killed"), 1)
        fence = await after.read_fence()
        assert fence is not None and (fence.epoch, fence.holder) == (1, ME)
    finally:
        await after.close()


# -- failover and release --------------------------------------------------------------------------
async def test_takeover_raises_records_and_moves_the_fence(store: SqliteStore) -> None:
    epoch = await holder(store, OTHER)
    await store.advance(intent(90, "a"), OTHER, epoch)
    await store.store_signature(intent(90, "a"), "edsigCACHED", epoch)
    high = HWMKey(CHAIN, "tz1dyX3B1CFYa2DfdFLyPtiJCfQRUgPVME6E", "attestation")
    await store.set_record(high, 500, 2)
    old = await store.read_fence()

    result = await store.takeover(ME, 120, [KEY, PRE, BLOCK], expected=old)
    assert result.previous == old
    assert (result.fence.epoch, result.fence.holder, result.fence.fence_level) == (2, ME, 120)
    assert result.last_level == 500
    assert result.records_raised == 3  # KEY raised, PRE and BLOCK created
    records = {r.key: r for r in await store.list_records()}
    for key in (KEY, PRE, BLOCK):
        r = records[key]
        assert (r.level, r.round, r.hash, r.signature, r.epoch) == (120, 0, None, None, 2)
    assert (records[high].level, records[high].round) == (500, 2)  # never lowered
    assert await store.read_fence() == result.fence

    # The old holder is fenced; the new one signs above the fence level only.
    fenced = await store.advance(intent(200, "b"), OTHER, epoch)
    assert isinstance(fenced, rule.Refused) and fenced.status == 503
    at_fence = await store.advance(intent(120, "b"), ME, 2)
    assert isinstance(at_fence, rule.Refused) and at_fence.status == 409
    assert await store.advance(intent(121, "b"), ME, 2) == rule.Advance()


async def test_takeover_keeps_a_higher_old_fence_level(store: SqliteStore) -> None:
    await store.takeover(OTHER, 300, [], expected=None)
    old = await store.read_fence()
    result = await store.takeover(ME, 100, [KEY], expected=old)
    assert (result.fence.epoch, result.fence.fence_level) == (2, 300)


async def test_takeover_with_a_stale_fence_conflicts(store: SqliteStore) -> None:
    await holder(store, OTHER)
    with pytest.raises(FenceConflict):
        await store.takeover(ME, 50, [KEY], expected=None)
    stale = await store.read_fence()
    await store.takeover("bake-c", 60, [KEY], expected=stale)
    with pytest.raises(FenceConflict):
        await store.takeover(ME, 70, [KEY], expected=stale)
    fence = await store.read_fence()
    assert fence is not None and (fence.holder, fence.epoch, fence.fence_level) == ("bake-c", 2, 60)


async def test_release(store: SqliteStore) -> None:
    epoch = await holder(store)
    await store.advance(intent(80, "a"), ME, epoch)
    with pytest.raises(NotHolder):
        await store.release(OTHER)
    fence = await store.release(ME)
    assert (fence.epoch, fence.holder, fence.fence_level) == (epoch, "", 80)
    after = await store.advance(intent(81, "b"), ME, epoch)
    assert isinstance(after, rule.Refused) and after.reason == "released"
    with pytest.raises(NotHolder):
        await store.release(ME)


async def test_merge_never_lowers(store: SqliteStore) -> None:
    await store.set_record(KEY, 100, 1)
    changed = await store.merge_records(
        [
            record(KEY, 100, 0, "low"),  # lower round: ignored
            record(KEY, 100, 1, "same"),  # equal: ignored
            record(PRE, 70, 0, "new", "edsigIMPORTED"),  # missing: created, cache kept
        ]
    )
    assert changed == 1
    key_rec, pre_rec = await store.get_record(KEY), await store.get_record(PRE)
    assert key_rec is not None and (key_rec.level, key_rec.round, key_rec.hash) == (100, 1, None)
    assert pre_rec is not None
    assert (pre_rec.level, pre_rec.hash, pre_rec.signature) == (
        70, payload_hash("new"), "edsigIMPORTED",
    )  # fmt: skip
    assert await store.merge_records([record(KEY, 101, 0, "higher")]) == 1
    key_rec = await store.get_record(KEY)
    assert key_rec is not None and (key_rec.level, key_rec.hash) == (101, payload_hash("higher"))


# -- damaged, foreign and unwritable stores --------------------------------------------------------
async def test_garbage_file_is_corrupt(db_path: Path) -> None:
    db_path.parent.mkdir(mode=0o700)
    db_path.write_bytes(os.urandom(8192))
    with pytest.raises(StoreCorrupt, match=r"not an SQLite database.*Move the file"):
        await SqliteStore(db_path).open()


async def test_foreign_sqlite_file_is_corrupt(db_path: Path) -> None:
    db_path.parent.mkdir(mode=0o700)
    raw = sqlite3.connect(db_path)
    raw.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreCorrupt, match="not a signer-guard store"):
        await SqliteStore(db_path).open()


async def test_unknown_schema_version_is_corrupt(store: SqliteStore, db_path: Path) -> None:
    await store.close()
    raw = sqlite3.connect(db_path)
    raw.execute("UPDATE meta SET value = '9' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(StoreCorrupt, match="schema_version '9'"):
        await SqliteStore(db_path).open()


async def test_damaged_pages_are_corrupt(db_path: Path) -> None:
    s = SqliteStore(db_path)
    await s.open()
    for i in range(300):
        await s.set_record(HWMKey(CHAIN, f"tz1-{i:04}", "block"), i, 0)
    await s.close()
    data = bytearray(db_path.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    for offset in range(2 * page, len(data), page):
        data[offset : offset + 64] = b"\xa5" * 64  # every b-tree page header past the schema
    db_path.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt, match="Move the file"):
        await SqliteStore(db_path).open()


async def _prepare_holder(db_path: Path, level: int) -> int:
    s = SqliteStore(db_path)
    await s.open()
    epoch = await holder(s)
    await s.advance(intent(level, "before"), ME, epoch)
    await s.close()
    return epoch


async def _record_after(db_path: Path) -> HWMRecord | None:
    s = SqliteStore(db_path)
    await s.open()
    try:
        return await s.get_record(KEY)
    finally:
        await s.close()


async def test_read_only_file_is_unavailable_on_advance(
    db_path: Path, ctx: SpawnContext, procs: list[SpawnProcess]
) -> None:
    epoch = await _prepare_holder(db_path, 10)
    results = ctx.Queue()
    db_path.chmod(0o400)
    try:
        args = (str(db_path), ME, epoch, 11, "readonly", results)
        await asyncio.to_thread(run_all, ctx, procs, kids.failing_advance_child, [args])
    finally:
        db_path.chmod(0o600)
    outcome = results.get(timeout=10)
    assert outcome.startswith("advance StoreUnavailable:"), outcome
    assert "readonly" in outcome.lower() or "read-only" in outcome.lower()
    rec = await _record_after(db_path)
    assert rec is not None and rec.level == 10


async def test_read_only_directory_is_unavailable(
    db_path: Path, ctx: SpawnContext, procs: list[SpawnProcess]
) -> None:
    epoch = await _prepare_holder(db_path, 10)
    results = ctx.Queue()
    db_path.parent.chmod(0o500)
    try:
        args = (str(db_path), ME, epoch, 11, "readonly", results)
        await asyncio.to_thread(run_all, ctx, procs, kids.failing_advance_child, [args])
    finally:
        db_path.parent.chmod(0o700)
    outcome = results.get(timeout=10)
    assert "StoreUnavailable" in outcome and str(db_path) in outcome, outcome
    rec = await _record_after(db_path)
    assert rec is not None and rec.level == 10


async def test_disk_full_is_unavailable_and_rolled_back(
    db_path: Path, ctx: SpawnContext, procs: list[SpawnProcess]
) -> None:
    epoch = await _prepare_holder(db_path, 10)
    results = ctx.Queue()
    args = (str(db_path), ME, epoch, 11, "full", results)
    await asyncio.to_thread(run_all, ctx, procs, kids.failing_advance_child, [args])
    outcome = results.get(timeout=10)
    assert outcome.startswith("advance StoreUnavailable:"), outcome
    rec = await _record_after(db_path)
    assert rec is not None and rec.level == 10
