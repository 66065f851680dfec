"""Fencing end to end on a real 3-member etcd cluster: two `serve` processes on one prefix, each
in front of its own fake upstream that logs every signature it hands out."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest

from signer_guard import codec, keys
from signer_guard.failover import FailoverOptions, FailoverResult, failover
from signer_guard.forge import forge_consensus
from signer_guard.store.etcd import EtcdStore
from tests.etcd_cluster import EtcdCluster
from tests.fakes.upstream_signer import FakeUpstreamSigner
from tests.guard_proc import GuardProcess, run_cli
from tests.http_client import get_json, request, sign

MAINNET = "NetXdQprcVkpaWU"
TZ1 = keys.SecretKey.from_b58("edsk4TjJWEszkHKono7XMnepVqwi37FrpbVt1KCsifJeAGimxheShG")
TZ4 = keys.SecretKey.from_b58("BLsk2jjZe6wQH9TwtBzJwL7xLePfEgUxsV6BfwDP8dGfsosgnekSgC")
_prefixes = itertools.count()


def consensus(
    kind: Literal["attestation", "preattestation"],
    level: int,
    payload: int = 0,
    *,
    bls: bool = False,
) -> bytes:
    """A (pre)attestation; `bls` uses the tz4 tags (41/40), else the slot tags (21/20)."""
    tag = (41 if kind == "attestation" else 40) if bls else (21 if kind == "attestation" else 20)
    return forge_consensus(kind, tag, MAINNET, level, 0, payload_hash=payload.to_bytes(32, "big"))


def att(level: int, payload: int = 0) -> bytes:
    return consensus("attestation", level, payload)


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster() as etcd:
        yield etcd


@pytest.fixture
def etcd(cluster: EtcdCluster) -> EtcdCluster:
    cluster.ensure_all_up()
    return cluster


@dataclass
class Side:
    guard: GuardProcess
    upstream: FakeUpstreamSigner


class Pair:
    """Guard A (takes the fence) and guard B (standby) on one etcd prefix."""

    def __init__(self, tmp_path: Path, url: str, ua: FakeUpstreamSigner, ub: FakeUpstreamSigner):
        self.url = url
        self.a = Side(self._guard(tmp_path, url, "a", ua, standby=False), ua)
        self.b = Side(self._guard(tmp_path, url, "b", ub, standby=True), ub)

    @staticmethod
    def _guard(
        tmp: Path, url: str, name: str, up: FakeUpstreamSigner, standby: bool
    ) -> GuardProcess:
        return GuardProcess(
            tmp / name,
            keys=[up.key_url(TZ1.pkh), up.key_url(TZ4.pkh)],
            store=url,
            guard_id=f"bake-{name}",
            name=name,
            standby=standby,
        )


@pytest.fixture
async def pair(tmp_path: Path, etcd: EtcdCluster) -> AsyncIterator[Pair]:
    url = etcd.store_url(f"fo{os.getpid()}-{next(_prefixes)}")
    async with (
        FakeUpstreamSigner([TZ1, TZ4], log_path=tmp_path / "upstream-a.jsonl") as ua,
        FakeUpstreamSigner([TZ1, TZ4], log_path=tmp_path / "upstream-b.jsonl") as ub,
    ):
        made = Pair(tmp_path, url, ua, ub)
        try:
            await made.a.guard.astart()
            await made.b.guard.astart()
            yield made
        finally:
            await made.b.guard.astop()
            await made.a.guard.astop()


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, *args, input_text="")


def report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert "Traceback" not in done.stderr, done.stderr
    body = json.loads(done.stdout)
    assert isinstance(body, dict)
    return body


async def state_of(url: str) -> str:
    _, body = await get_json(url + "status")
    return str(body["state"])


async def wait_state(url: str, state: str, within: float) -> float:
    started = time.monotonic()
    while (current := await state_of(url)) != state:
        assert time.monotonic() - started < within, f"still {current}, not {state}"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def read_fence(url: str) -> tuple[int, str, int]:
    store = EtcdStore(url)
    await store.open()
    try:
        fence = await store.read_fence()
    finally:
        await store.close()
    assert fence is not None
    return fence.epoch, fence.holder, fence.fence_level


async def test_paused_primary_is_fenced_and_never_comes_back(pair: Pair) -> None:
    a, b = pair.a, pair.b
    for level in (10, 11, 12):
        assert (await sign(a.guard.url, TZ1.pkh, att(level)))[0] == 200
    assert (await sign(b.guard.url, TZ1.pkh, att(13, payload=2)))[0] == 503

    args = ["failover", "--config", str(b.guard.config_path), "--url", b.guard.url, "--json"]
    done = await cli(*args, "--yes")
    assert done.returncode == 3
    refusal = report(done)
    assert refusal["refused"] == "primary_active"
    assert "holder bake-a looks alive (lease" in refusal["detail"]
    assert await read_fence(pair.url) == (1, "bake-a", 0)

    done = await cli(*args, "--force")  # --force alone: the lease is live and nobody confirmed
    assert done.returncode == 3 and report(done)["refused"] == "not_confirmed"

    a.guard.pause()
    try:
        done = await cli(*args, "--force", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        rep = report(done)
    finally:
        a.guard.resume()
    signed_by_a = len(a.upstream.signatures)
    fence_level = rep["fence_level"]
    assert (rep["last_level"], fence_level, rep["epoch"]) == (12, 22, 2)
    assert rep["primary"] == {"url": None, "state": "active"}
    assert any("--force --yes: you confirm that the signer of bake-a" in w for w in rep["warnings"])
    assert rep["local_guard"] == {"state": "active"}

    # Everything A is asked from now on is refused, and nothing reaches its backend.
    for level in (13, fence_level + 1, fence_level + 2, fence_level + 50):
        status, body = await sign(a.guard.url, TZ1.pkh, att(level, payload=1))
        assert status == 503, body
    assert await state_of(a.guard.url) == "fenced"
    _, status_body = await get_json(a.guard.url + "status")
    assert (status_body["holder"], status_body["epoch"]) == ("bake-b", 2)
    _, metrics = await request("GET", a.guard.url + "metrics")
    assert b"signer_guard_fenced_total 1.0" in metrics
    assert b'signer_guard_state{state="fenced"} 1.0' in metrics

    assert (await sign(b.guard.url, TZ1.pkh, att(fence_level + 1, payload=2)))[0] == 200
    assert (await sign(b.guard.url, TZ1.pkh, att(fence_level, payload=2)))[0] == 409

    await asyncio.sleep(2.5)  # a few fence polls later A still does not take it back
    assert await read_fence(pair.url) == (2, "bake-b", 22)
    assert await state_of(a.guard.url) == "fenced"
    assert (await sign(a.guard.url, TZ4.pkh, consensus("attestation", 90, bls=True)))[0] == 503
    await a.guard.astop()
    await a.guard.astart()  # a restarted A is only a standby
    assert await state_of(a.guard.url) == "standby"
    assert (await sign(a.guard.url, TZ1.pkh, att(91, payload=1)))[0] == 503
    assert len(a.upstream.signatures) == signed_by_a
    assert await read_fence(pair.url) == (2, "bake-b", 22)


async def test_member_loss_keeps_signing_quorum_loss_refuses(pair: Pair, etcd: EtcdCluster) -> None:
    url = pair.a.guard.url
    level = 100
    assert (await sign(url, TZ1.pkh, att(level)))[0] == 200
    first, second = etcd.follower_indexes()
    etcd.kill(first)
    for _ in range(5):
        level += 1
        status, body = await sign(url, TZ1.pkh, att(level))
        assert status == 200, body
    etcd.kill(second)
    killed = time.monotonic()
    for _ in range(3):
        level += 1
        started = time.monotonic()
        status, body = await sign(url, TZ1.pkh, att(level))
        assert status == 503, body
        assert time.monotonic() - started < 2.0
    refused_for = time.monotonic() - killed
    assert refused_for < 4.0
    assert await state_of(url) == "degraded"
    assert time.monotonic() - killed < 6.0

    etcd.restart(first, wait=False)
    deadline = time.monotonic() + 20
    while True:
        level += 1
        status, _ = await sign(url, TZ1.pkh, att(level))
        if status == 200:
            break
        assert time.monotonic() < deadline, "signing did not resume with quorum back"
        await asyncio.sleep(0.2)
    resumed_after = time.monotonic() - killed
    await wait_state(url, "active", within=3.0)
    assert (await sign(url, TZ1.pkh, att(level + 1)))[0] == 200
    print(
        f"\nquorum lost: 3 requests refused in {refused_for:.2f} s; resumed {resumed_after:.1f} s"
    )


# -- races ----------------------------------------------------------------------------------------

RACES = 200
Signed = list[tuple[str, str, str, int, int, str]]


class Hammer:
    """Sends (pre)attestations at increasing levels to both guards at once, with a different
    payload per guard: if both ever signed one (kind, level, round), that is a double signature."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.level = 1000
        self.statuses: Counter[int] = Counter()
        self.stop = asyncio.Event()

    async def _one(self, session: aiohttp.ClientSession, i: int, data: bytes, pkh: str) -> None:
        async with session.post(
            f"{self.urls[i]}keys/{pkh}",
            data=json.dumps(data.hex()),
            timeout=aiohttp.ClientTimeout(total=10),
        ) as resp:
            self.statuses[resp.status] += 1
            if resp.status == 409:
                body = await resp.json(content_type=None)
                msg = body[0]["msg"]
                if "not above fence level " in msg:  # jump past a new fence level
                    fence = int(msg.split("not above fence level ")[1].split()[0])
                    self.level = max(self.level, fence)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not self.stop.is_set():
                self.level += 1
                kind: Literal["attestation", "preattestation"] = random.choice(
                    ("attestation", "preattestation")
                )
                pkh = random.choice((TZ1.pkh, TZ4.pkh))
                await asyncio.gather(
                    *(
                        self._one(
                            session,
                            i,
                            consensus(kind, self.level, payload=i + 1, bls=pkh == TZ4.pkh),
                            pkh,
                        )
                        for i in range(len(self.urls))
                    )
                )


def conflicts(signed: Signed) -> dict[Any, set[str]]:
    """(chain, pkh, kind, level, round) → payloads, for every key signed with more than one."""
    seen: defaultdict[tuple[str, str, str, int, int], set[str]] = defaultdict(set)
    for chain, pkh, kind, level, round_, payload in signed:
        seen[(chain, pkh, kind, level, round_)].add(payload)
    return {k: v for k, v in seen.items() if len(v) > 1}


def upstream_signed(fake: FakeUpstreamSigner) -> Signed:
    out: Signed = []
    for line in fake.signatures:
        req = codec.decode(bytes.fromhex(str(line["data"])))
        assert req.chain_id and req.hwm_kind and req.level is not None and req.round is not None
        out.append(
            (req.chain_id, str(line["pkh"]), req.hwm_kind, req.level, req.round, req.digest.hex())
        )
    return out


def journal_signed(path: Path) -> Signed:
    out: Signed = []
    for text in path.read_text().splitlines():
        e = json.loads(text)
        if e["decision"] in ("signed", "cached"):
            out.append((e["chain"], e["pkh"], e["kind"], e["level"], e["round"], e["payload_hash"]))
    return out


async def test_randomized_failover_races_never_double_sign(pair: Pair) -> None:
    a, b = pair.a, pair.b
    ids = {"bake-a": a, "bake-b": b}
    stores = {gid: EtcdStore(pair.url) for gid in ids}
    for store in stores.values():
        await store.open()
    assert (await sign(a.guard.url, TZ1.pkh, att(999)))[0] == 200  # the store knows a level
    hammer = Hammer([a.guard.url, b.guard.url])
    hammering = asyncio.create_task(hammer.run())
    results: list[FailoverResult] = []

    async def take(gid: str, delay: float) -> None:
        await asyncio.sleep(delay)
        opts = FailoverOptions(
            guard_id=gid,
            keys=ids[gid].guard.config["keys"],
            margin=random.randint(1, 3),
            force=True,
            yes=True,
        )
        results.append(await failover(stores[gid], opts))

    rng = random.Random(os.getpid())
    started = time.monotonic()
    try:
        holder = "bake-a"
        races = 0
        while races < RACES:
            target = "bake-b" if holder == "bake-a" else "bake-a"
            runs = [take(target, 0.0)]
            if races + 2 <= RACES and rng.random() < 0.3:  # both at once, random offset
                runs.append(take(holder, rng.uniform(0.0, 0.03)))
            await asyncio.gather(*runs)
            races += len(runs)
            fence = await stores[target].read_fence()
            assert fence is not None
            holder = fence.holder
            await asyncio.sleep(rng.uniform(0.05, 0.6))
    finally:
        hammer.stop.set()
        await hammering
        for store in stores.values():
            await store.close()
    elapsed = time.monotonic() - started

    codes = Counter(r.code for r in results)
    took = [r for r in results if r.code == 0 and not r.report.get("already_holder")]
    final = await read_fence(pair.url)
    assert set(codes) <= {0, 1}, [
        (r.report, r.lines) for r in results if r.code
    ]  # 1 = compare failed 3 times under load: nothing written
    assert codes[0] >= 0.9 * len(results), codes
    assert final[0] == 1 + len(took)  # every takeover raised the epoch by exactly one
    assert sorted(r.report["epoch"] for r in took) == list(range(2, 2 + len(took)))

    signed = upstream_signed(a.upstream) + upstream_signed(b.upstream)
    journals = journal_signed(a.guard.journal) + journal_signed(b.guard.journal)
    assert conflicts([(MAINNET, TZ1.pkh, "attestation", 5, 0, h) for h in "xy"])  # it finds one
    assert conflicts(signed) == {}
    assert conflicts(journals) == {}
    assert len(a.upstream.signatures) > 20 and len(b.upstream.signatures) > 20
    assert hammer.statuses[200] + 1 == len(signed)
    print(
        f"\n{len(results)} failovers in {elapsed:.0f} s ({len(took)} takeovers, "
        f"codes {dict(codes)}); {len(signed)} signatures (A {len(a.upstream.signatures)}, B "
        f"{len(b.upstream.signatures)}); requests {dict(hammer.statuses)}"
    )
