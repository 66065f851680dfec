"""The etcd store against a real 3-member etcd cluster on loopback."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from signer_guard.model import HWMKey, HWMRecord, SignIntent
from signer_guard.rule import Advance, Cached, Decision, Refused
from signer_guard.store.base import (
    FenceConflict,
    GuardIdInUse,
    NotHolder,
    StoreUnavailable,
)
from signer_guard.store.etcd import EtcdStore, parse_etcd_url
from signer_guard.store.etcd_client import EtcdUnavailable, TxnResult
from tests.etcd_cluster import ROOT, EtcdCluster

CHAIN = "NetXdQprcVkpaWU"
PKH = "tz4HVR6aty9KwsQFHh81C1G7gBdhxT8kuytm"
OTHER_PKH = "tz1VSUr8wwNhLAzempoch5deS4NpZfhuTdXa"
HASH_A = bytes(32)
HASH_B = bytes([1]) * 32
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster() as etcd:
        yield etcd


@pytest.fixture
def etcd(cluster: EtcdCluster) -> EtcdCluster:
    """The cluster with every member up and healthy (a previous test may have killed some)."""
    cluster.ensure_all_up()
    return cluster


@pytest.fixture
def prefix() -> str:
    return f"t{os.getpid()}-{next(_prefixes)}"


class Stores:
    """Opens stores on one prefix and closes them all at teardown."""

    def __init__(self, etcd: EtcdCluster, prefix: str) -> None:
        self.etcd = etcd
        self.prefix = prefix
        self.url = etcd.store_url(prefix)
        self.opened: list[EtcdStore] = []

    async def new(self, first: int | None = None) -> EtcdStore:
        """A store on this prefix; `first` = the member it talks to first."""
        store = EtcdStore(self.etcd.store_url(self.prefix, first))
        await store.open()
        self.opened.append(store)
        return store


@pytest.fixture
async def stores(etcd: EtcdCluster, prefix: str) -> AsyncIterator[Stores]:
    made = Stores(etcd, prefix)
    try:
        yield made
    finally:
        for store in made.opened:
            await store.close()


def intent(level: int, round_: int = 0, hash_: bytes = HASH_A, pkh: str = PKH) -> SignIntent:
    return SignIntent(HWMKey(CHAIN, pkh, "attestation"), level, round_, hash_)


async def holder(
    stores: Stores, guard_id: str = "bake-a", first: int | None = None
) -> tuple[EtcdStore, int]:
    store = await stores.new(first)
    fence = await store.claim_initial_fence(guard_id)
    assert fence.holder == guard_id
    return store, fence.epoch


def refused(decision: Decision) -> tuple[int, str]:
    assert isinstance(decision, Refused), decision
    return decision.status, decision.reason


# -- URL --------------------------------------------------------------------------------------


def test_parse_etcd_url() -> None:
    assert parse_etcd_url("etcd://h1:2379,10.0.0.2:2380,h3/sg/mainnet") == (
        ["http://h1:2379", "http://10.0.0.2:2380", "http://h3:2379"],
        "sg/mainnet",
    )
    assert parse_etcd_url("etcd://[::1]:2379/p") == (["http://[::1]:2379"], "p")
    for bad in ("http://h:1/p", "etcd://h:1", "etcd://h:1/", "etcd://h:x/p", "etcd://,h:1/p"):
        with pytest.raises(ValueError):
            parse_etcd_url(bad)


# -- the rule, through the store ----------------------------------------------------------------


async def test_advance_cached_and_refusals(stores: Stores) -> None:
    store, epoch = await holder(stores)
    assert isinstance(await store.advance(intent(10), "bake-a", epoch), Advance)
    # Same (L, R) and bytes, no signature cached yet: 409.
    assert refused(await store.advance(intent(10), "bake-a", epoch)) == (409, "hwm")
    await store.store_signature(intent(10), "sigA", epoch)
    assert await store.advance(intent(10), "bake-a", epoch) == Cached("sigA")
    # Same (L, R), other bytes.
    decision = await store.advance(intent(10, hash_=HASH_B), "bake-a", epoch)
    assert refused(decision) == (409, "hwm")
    assert (
        isinstance(decision, Refused) and "already signed with different data" in decision.message
    )
    # Lower level, lower round.
    assert refused(await store.advance(intent(9, 5), "bake-a", epoch)) == (409, "hwm")
    assert isinstance(await store.advance(intent(10, 2), "bake-a", epoch), Advance)
    assert refused(await store.advance(intent(10, 1), "bake-a", epoch)) == (409, "hwm")
    assert isinstance(await store.advance(intent(11), "bake-a", epoch), Advance)
    # Not the holder at this epoch, or no epoch at all: 503.
    assert refused(await store.advance(intent(12), "bake-a", epoch + 1)) == (503, "not_holder")
    assert refused(await store.advance(intent(12), "bake-b", epoch)) == (503, "not_holder")
    assert refused(await store.advance(intent(12), "bake-a", None)) == (503, "not_holder")
    # Every answer above is what a fresh store instance reads back.
    other = await stores.new()
    record = await other.get_record(intent(11).key)
    assert record is not None
    assert (record.level, record.round, record.hash, record.signature) == (11, 0, HASH_A, None)
    assert record.epoch == epoch


async def test_fence_level_refusal_and_release(stores: Stores) -> None:
    store, epoch = await holder(stores)
    fence = await store.read_fence()
    assert fence is not None
    result = await store.takeover("bake-a", 50, [intent(1).key], fence)
    epoch = result.fence.epoch
    assert (result.fence.fence_level, result.records_raised, epoch) == (50, 1, 2)
    decision = await store.advance(intent(50, 0), "bake-a", epoch)
    assert refused(decision) == (409, "hwm")  # the raised record sits at (50, 0)
    decision = await store.advance(intent(50, 3), "bake-a", epoch)
    assert refused(decision) == (409, "fence_level")
    decision = await store.advance(intent(40, pkh=OTHER_PKH), "bake-a", epoch)
    assert refused(decision) == (409, "fence_level")
    assert isinstance(await store.advance(intent(51), "bake-a", epoch), Advance)
    with pytest.raises(NotHolder):
        await (await stores.new()).release("bake-b")
    released = await store.release("bake-a")
    assert (released.holder, released.epoch, released.fence_level) == ("", epoch, 51)
    assert refused(await store.advance(intent(52), "bake-a", epoch)) == (503, "released")
    with pytest.raises(NotHolder):
        await store.release("bake-a")


async def test_merge_and_set_record(stores: Stores) -> None:
    store, epoch = await holder(stores)
    key = intent(1).key
    assert isinstance(await store.advance(intent(30), "bake-a", epoch), Advance)
    lower = HWMRecord(CHAIN, PKH, "attestation", 20, 0, None, None, 0, "t")
    higher = HWMRecord(CHAIN, PKH, "block", 25, 1, None, None, 0, "t")
    assert await store.merge_records([lower, higher]) == 1
    assert [(r.kind, r.level, r.round) for r in await store.list_records()] == [
        ("attestation", 30, 0),
        ("block", 25, 1),
    ]
    unchanged = await store.set_record(key, 29, 0)
    assert not unchanged.changed and unchanged.new == unchanged.old
    lowered = await store.set_record(key, 29, 0, allow_lower=True)
    assert lowered.changed and lowered.new is not None and lowered.new.level == 29


# -- fencing ------------------------------------------------------------------------------------


async def test_initial_fence_race_has_exactly_one_holder(stores: Stores) -> None:
    contenders = [await stores.new() for _ in range(8)]
    fences = await asyncio.gather(
        *(store.claim_initial_fence(f"guard-{i}") for i, store in enumerate(contenders))
    )
    assert len(set(fences)) == 1
    winner = fences[0]
    assert winner.epoch == 1 and winner.holder in {f"guard-{i}" for i in range(8)}
    for i, store in enumerate(contenders):
        decision = await store.advance(intent(5 + i), f"guard-{i}", 1)
        if f"guard-{i}" == winner.holder:
            assert isinstance(decision, Advance)
        else:
            assert refused(decision) == (503, "not_holder")


async def test_takeover_fences_the_old_holder_with_its_cached_token(stores: Stores) -> None:
    old, epoch = await holder(stores)
    for level in (100, 101):
        assert isinstance(await old.advance(intent(level), "bake-a", epoch), Advance)
    token = old.fence_token
    assert token is not None
    new = await stores.new()
    seen = await new.read_fence()
    result = await new.takeover("bake-b", 111, [intent(1).key], seen)
    assert (result.fence.holder, result.fence.epoch, result.last_level) == ("bake-b", 2, 101)
    assert old.fence_token == token  # still the stale token: no re-read happened
    decision = await old.advance(intent(200), "bake-a", epoch)
    assert refused(decision) == (503, "not_holder")
    assert isinstance(await new.advance(intent(112), "bake-b", 2), Advance)
    # A second takeover that read the fence before the first one is refused.
    with pytest.raises(FenceConflict):
        await old.takeover("bake-a", 300, [], seen)


async def test_takeover_races_concurrent_advances(stores: Stores) -> None:
    old, epoch = await holder(stores)
    keys = [f"tz1key{i:02d}" for i in range(50)]
    for pkh in keys:  # warm the old holder's cache: its advances need no read
        assert isinstance(await old.advance(intent(100, pkh=pkh), "bake-a", epoch), Advance)
    new = await stores.new()
    seen = await new.read_fence()
    fence_level = 160

    async def take() -> int:
        await asyncio.sleep(0.002)
        for _ in range(10):  # an operator would re-run failover after a conflict
            try:
                return (await new.takeover("bake-b", fence_level, [], seen)).last_level
            except FenceConflict:
                continue
        raise AssertionError("takeover never went through")

    async def sign(i: int) -> tuple[int, Decision]:
        level = 101 + i
        return level, await old.advance(intent(level, pkh=keys[i]), "bake-a", epoch)

    taking = asyncio.create_task(take())
    signed = await asyncio.gather(*(sign(i) for i in range(50)))
    last_level = await taking
    advanced = [level for level, decision in signed if isinstance(decision, Advance)]
    refusals = {refused(d) for _, d in signed if not isinstance(d, Advance)}
    assert refusals <= {(503, "not_holder")}
    # Every advance that went through was seen by the takeover, and is below the new fence level.
    assert max(advanced, default=0) <= last_level < fence_level, (advanced, last_level)
    records = await new.list_records()
    assert len(records) == 50
    assert {(r.level, r.round, r.epoch) for r in records} == {(fence_level, 0, epoch + 1)}
    assert refused(await old.advance(intent(500, pkh=keys[0]), "bake-a", epoch))[0] == 503


async def test_hwm_set_elsewhere_applies_to_the_next_advance(stores: Stores) -> None:
    store, epoch = await holder(stores)
    assert isinstance(await store.advance(intent(10), "bake-a", epoch), Advance)
    operator = await stores.new()
    assert (await operator.set_record(intent(1).key, 20, 0)).changed
    decision = await store.advance(intent(15), "bake-a", epoch)
    assert refused(decision) == (409, "hwm")
    assert isinstance(decision, Refused) and "below high watermark 20" in decision.message
    assert isinstance(await store.advance(intent(21), "bake-a", epoch), Advance)
    # Lowering (allowed explicitly) is seen too, although the cache says 21.
    assert (await operator.set_record(intent(1).key, 5, 0, allow_lower=True)).changed
    assert isinstance(await store.advance(intent(12), "bake-a", epoch), Advance)


def lose_next_answer(store: EtcdStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the store's next conditional txn is applied, but its answer is lost (as
    when a request times out after etcd committed it)."""
    real = store._client.txn
    armed = [True]

    async def applied_then_lost(
        compare: list[dict[str, Any]], success: list[dict[str, Any]], failure: list[dict[str, Any]]
    ) -> TxnResult:
        result = await real(compare, success, failure)
        if compare and armed[0]:
            armed[0] = False
            raise EtcdUnavailable("simulated: the answer was lost after sending: outcome unknown")
        return result

    monkeypatch.setattr(store._client, "txn", applied_then_lost)


async def test_lost_advance_answer_is_unavailable_then_reread(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, epoch = await holder(stores)
    assert isinstance(await store.advance(intent(6), "bake-a", epoch), Advance)
    lose_next_answer(store, monkeypatch)
    with pytest.raises(StoreUnavailable):
        await store.advance(intent(7), "bake-a", epoch)  # committed, but never an Advance
    # The retry re-reads: the level is taken (liveness, not safety), and nothing is re-signed.
    assert refused(await store.advance(intent(7), "bake-a", epoch)) == (409, "hwm")
    assert isinstance(await store.advance(intent(8), "bake-a", epoch), Advance)


async def test_lost_takeover_answer_is_resolved_by_rereading_the_fence(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, epoch = await holder(stores)
    assert isinstance(await old.advance(intent(30), "bake-a", epoch), Advance)
    new = await stores.new()
    seen = await new.read_fence()
    lose_next_answer(new, monkeypatch)
    result = await new.takeover("bake-b", 40, [intent(1).key], seen)
    assert (result.fence.holder, result.fence.epoch, result.fence.fence_level) == ("bake-b", 2, 40)
    assert await (await stores.new()).read_fence() == result.fence
    assert refused(await old.advance(intent(31), "bake-a", epoch)) == (503, "not_holder")
    assert isinstance(await new.advance(intent(41), "bake-b", 2), Advance)


# -- the liveness key ---------------------------------------------------------------------------


async def test_guard_id_lock_and_alive_state(stores: Stores) -> None:
    first = await stores.new()
    await first.lock_guard_id("bake-a")
    second = await stores.new()
    with pytest.raises(GuardIdInUse):
        await second.lock_guard_id("bake-a")
    await second.lock_guard_id("bake-b")
    await first.set_alive_state("active", 3)
    alive = await second.read_alive("bake-a")
    assert alive is not None
    assert (alive["guard_id"], alive["state"], alive["epoch"]) == ("bake-a", "active", 3)
    assert alive["pid"] == os.getpid()
    await first.close()  # revokes the lease: the id is free again
    assert await second.read_alive("bake-a") is None
    third = await stores.new()
    await third.lock_guard_id("bake-a")


_HOLDER = """
import asyncio, sys
from signer_guard.store.etcd import EtcdStore

async def main() -> None:
    store = EtcdStore(sys.argv[1], alive_ttl=2, keepalive_interval=0.5)
    await store.open()
    await store.lock_guard_id("crashing")
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_alive_key_lives_while_refreshed_and_expires_after_its_lease(
    stores: Stores,
) -> None:
    watcher = await stores.new()
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, stores.url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 10)
        assert line.strip() == b"ready", process.stderr.read() if process.stderr else b""
        await asyncio.sleep(2.5)  # longer than the TTL: the keepalive holds the key
        assert await watcher.read_alive("crashing") is not None
        process.kill()
        process.wait(timeout=5)
        killed = time.monotonic()
        while await watcher.read_alive("crashing") is not None:
            assert time.monotonic() - killed < 8, "liveness key outlived its lease"
            await asyncio.sleep(0.2)
        await watcher.lock_guard_id("crashing")  # the id is free again
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


# -- faults ---------------------------------------------------------------------------------------


async def test_one_member_killed_advances_keep_working(etcd: EtcdCluster, stores: Stores) -> None:
    victim = etcd.follower_indexes()[0]
    store, epoch = await holder(stores, first=victim)  # it talks to the victim
    assert isinstance(await store.advance(intent(1), "bake-a", epoch), Advance)
    etcd.kill(victim)
    await asyncio.sleep(0.05)
    for level in range(2, 22):
        assert isinstance(await store.advance(intent(level), "bake-a", epoch), Advance)


async def test_paused_member_costs_one_timeout(etcd: EtcdCluster, stores: Stores) -> None:
    victim = etcd.follower_indexes()[0]
    store, epoch = await holder(stores, first=victim)
    assert isinstance(await store.advance(intent(1), "bake-a", epoch), Advance)
    etcd.pause(victim)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="timed out"):
        await store.advance(intent(2), "bake-a", epoch)  # outcome unknown: never Advance
    assert time.monotonic() - started < 1.5
    for level in range(3, 13):  # the store moved on to another member
        assert isinstance(await store.advance(intent(level), "bake-a", epoch), Advance)
    assert time.monotonic() - started < 2
    etcd.resume(victim)


async def test_quorum_loss_refuses_within_two_seconds_then_recovers(
    etcd: EtcdCluster, stores: Stores
) -> None:
    store, epoch = await holder(stores)
    assert isinstance(await store.advance(intent(1), "bake-a", epoch), Advance)
    followers = etcd.follower_indexes()
    for index in followers:
        etcd.kill(index)
    for level in (2, 3):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.advance(intent(level), "bake-a", epoch)
        assert time.monotonic() - started < 2
    etcd.restart(followers[0], wait=False)
    deadline = time.monotonic() + 15
    level = 10
    while True:
        level += 1
        try:
            decision = await store.advance(intent(level), "bake-a", epoch)
            break
        except StoreUnavailable:
            assert time.monotonic() < deadline, "advances did not resume with quorum back"
            await asyncio.sleep(0.2)
    assert isinstance(decision, Advance)
    assert isinstance(await store.advance(intent(level + 1), "bake-a", epoch), Advance)


async def test_leader_killed_advances_resume(etcd: EtcdCluster, stores: Stores) -> None:
    store, epoch = await holder(stores)
    leader = etcd.leader_index()
    assert leader is not None
    etcd.kill(leader)
    killed = time.monotonic()
    level = 1
    while True:
        level += 1
        try:
            if isinstance(await store.advance(intent(level), "bake-a", epoch), Advance):
                break
        except StoreUnavailable:
            assert time.monotonic() - killed < 6, "no new leader accepted the advance"
    assert isinstance(await store.advance(intent(level + 1), "bake-a", epoch), Advance)


async def test_signature_cache_survives_a_new_store_and_does_not_disturb_the_next_advance(
    stores: Stores,
) -> None:
    store, epoch = await holder(stores)
    assert isinstance(await store.advance(intent(10), "bake-a", epoch), Advance)
    # the cache write and the next advance of the same record race: both must succeed, and the
    # advance must not pay a failed compare for it (the cache lives beside the record)
    _, nxt = await asyncio.gather(
        store.store_signature(intent(10), "sig-10", epoch),
        store.advance(intent(11), "bake-a", epoch),
    )
    assert isinstance(nxt, Advance)
    await store.store_signature(intent(11), "sig-11", epoch)
    other = await stores.new()
    decision = await other.advance(intent(11), "bake-a", epoch)
    assert decision == Cached("sig-11")
    (record,) = await other.list_records()
    assert (record.level, record.signature) == (11, "sig-11")
    fetched = await other.get_record(intent(11).key)
    assert fetched is not None and fetched.signature == "sig-11"
    # a cache entry for an older (level, round) never answers for the current record
    refusal = await other.advance(intent(11, hash_=HASH_B), "bake-a", epoch)
    assert refused(refusal)[0] == 409
