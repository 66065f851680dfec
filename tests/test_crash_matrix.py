"""The crash matrix: real `serve` processes SIGKILL themselves at each of the 7 crash points
(signer_guard/faults.py), 50 times per point, each time restarted on the same SQLite store.

Random traffic per run: blocks, preattestations and attestations at levels and rounds around a
moving frontier, random payloads, identical retries, conflicting payloads, on three keys per
crash point (tz1, tz3, and a tz2 whose upstream signs with randomised ECDSA, so that re-sent bytes
would show as a second signature). The seven crash points run side by side, each on its own
store and keys; one upstream signs for all and logs every signature it hands out.

Checked: from the upstream's own log, never two different payloads signed for one
(chain, pkh, kind, level, round), never the same bytes sent twice (so never two signatures over
one tz2 payload); from the store, read after every restart, no watermark ever goes down and each
record is what the rule predicts; every answer is what the rule predicts; and the crash table
(watermark-rules.md §1.2) for the request that was in flight when the guard died.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from signer_guard import codec, keys
from signer_guard.faults import ENV, STEPS
from signer_guard.forge import forge_block, forge_consensus
from tests.fakes.upstream_signer import FakeUpstreamSigner
from tests.guard_proc import GuardProcess
from tests.http_client import sign

RUNS_PER_STEP = 50
CHAIN = "NetXdQprcVkpaWU"
KINDS = ("block", "preattestation", "attestation")
BEFORE_STORE = ("received", "decoded")
ADVANCED_UNSIGNED = ("advanced", "backend_called", "backend_replied")

Outcome = Literal["signed", "cached", "refused"]


class RandomisedKey(keys.SecretKey):
    """A tz2/tz3 key that signs with a random nonce, as many devices do: the same bytes signed
    twice give two different signatures."""

    def sign(self, data: bytes, *, version: int | None = None) -> bytes:
        impl = self._impl
        assert isinstance(impl, ec.EllipticCurvePrivateKey)
        der = impl.sign(keys.blake2b_256(data), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        r, s = utils.decode_dss_signature(der)
        return keys.normalize_signature(self.curve, r.to_bytes(32, "big") + s.to_bytes(32, "big"))


@dataclass
class Rec:
    level: int
    round: int
    hash: bytes
    signature: str | None


@dataclass
class Req:
    pkh: str
    kind: str
    level: int
    round: int
    data: bytes

    @property
    def digest(self) -> bytes:
        return keys.blake2b_256(self.data)


@dataclass
class Lane:
    """One crash point: its store, its keys, the rule's model of its records, its history."""

    step: str
    root: Path
    keys: list[keys.SecretKey]
    rng: random.Random
    model: dict[tuple[str, str], Rec] = field(default_factory=dict)
    seen: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    history: list[Req] = field(default_factory=list)
    frontier: int = 1000
    table: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    #: answered signatures whose queued cache write a crash overtook (allowed by §1.2)
    lost_cache: int = 0

    @property
    def store(self) -> Path:
        return self.root / "store.sqlite"

    # -- the rule, as a model ---------------------------------------------------------------
    def predict(self, q: Req) -> Outcome:
        rec = self.model.get((q.pkh, q.kind))
        if rec is None or (q.level, q.round) > (rec.level, rec.round):
            return "signed"
        if (q.level, q.round) == (rec.level, rec.round) and q.digest == rec.hash:
            return "cached" if rec.signature is not None else "refused"
        return "refused"

    def advance(self, q: Req, signature: str | None) -> None:
        self.model[(q.pkh, q.kind)] = Rec(q.level, q.round, q.digest, signature)

    # -- traffic ----------------------------------------------------------------------------
    def forge(self, pkh: str, kind: str, level: int, round_: int) -> bytes:
        payload = self.rng.randbytes(32)
        if kind == "block":
            return forge_block(CHAIN, level, round_, payload_hash=payload)
        magic, tag = (0x12, 20) if kind == "preattestation" else (0x13, 21)
        return forge_consensus(
            magic, tag, CHAIN, level, round_, slot=self.rng.randrange(8), payload_hash=payload
        )

    def next_request(self) -> Req:
        roll = self.rng.random()
        recent = self.history[-12:]
        if recent and roll < 0.2:  # an identical retry
            return self.rng.choice(recent)
        if recent and roll < 0.32:  # other bytes at a (level, round) already used
            old = self.rng.choice(recent)
            return Req(
                old.pkh,
                old.kind,
                old.level,
                old.round,
                self.forge(old.pkh, old.kind, old.level, old.round),
            )
        self.frontier += self.rng.choice((0, 1, 1, 2))
        pkh = self.rng.choice(self.keys).pkh
        kind = self.rng.choice(KINDS)
        level = self.frontier + self.rng.choice((-2, -1, 0, 0, 1))
        round_ = self.rng.choice((0, 0, 1, 2))
        return Req(pkh, kind, level, round_, self.forge(pkh, kind, level, round_))

    def reaches(self, q: Req, predicted: Outcome) -> bool:
        """Does the request pass the lane's crash point?"""
        if self.step in BEFORE_STORE:
            return True
        if self.step == "response_sent":
            return predicted in ("signed", "cached")
        return predicted == "signed"


def read_store(path: Path) -> dict[tuple[str, str], Rec]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT pkh, kind, level, round, hash, signature FROM hwm").fetchall()
    return {(r[0], r[1]): Rec(r[2], r[3], bytes(r[4]), r[5]) for r in rows}


async def post(url: str, q: Req) -> tuple[int, Any] | None:
    """The answer, or None when the guard died before answering."""
    try:
        return await sign(url, q.pkh, q.data)
    except (aiohttp.ClientError, ConnectionError):
        return None


def classify(answer: tuple[int, Any] | None) -> str:
    if answer is None:
        return "no answer"
    code, body = answer
    if code == 200:
        return "200"
    return f"{code} {body[0]['msg'] if isinstance(body, list) else body}"


async def check_store_after_restart(lane: Lane) -> None:
    """No watermark went down since the last look, and each record is the model's."""
    store = await asyncio.to_thread(read_store, lane.store)
    for key, rec in store.items():
        before = lane.seen.get(key)
        assert before is None or (rec.level, rec.round) >= before, (
            f"[{lane.step}] watermark of {key} went down: {before} -> {(rec.level, rec.round)}"
        )
        lane.seen[key] = (rec.level, rec.round)
        want = lane.model.get(key)
        assert want is not None and (want.level, want.round, want.hash) == (
            rec.level,
            rec.round,
            rec.hash,
        ), f"[{lane.step}] store has {rec} for {key}, the rule says {want}"
        if rec.signature is None and want.signature is not None:
            # the crash came before the queued cache write of an answered signature landed
            # (watermark-rules.md §1.2): an identical retry is now refused, never re-signed
            lane.lost_cache += 1
            lane.model[key] = Rec(want.level, want.round, want.hash, None)
            continue
        assert rec.signature == want.signature, f"[{lane.step}] cache of {key}: {rec} {want}"
    assert set(store) == set(lane.model), f"[{lane.step}] records {set(store) ^ set(lane.model)}"


class Guards:
    """Every guard the test starts, so that teardown stops each by PID whatever happened."""

    def __init__(self) -> None:
        self.started: list[tuple[GuardProcess, threading.Event]] = []

    async def start(self, g: GuardProcess) -> GuardProcess:
        done = threading.Event()
        self.started.append((g, done))

        def run() -> None:
            try:
                g.start()
            finally:
                done.set()

        await asyncio.to_thread(run)
        return g

    def stop_all(self) -> None:
        for g, done in self.started:
            done.wait(30)
            g.stop()


async def run_once(
    lane: Lane, fake: FakeUpstreamSigner, guards: Guards, crashed: Req | None
) -> Req:
    """Start an armed guard, retry what was in flight at the last crash, then send traffic until
    the guard kills itself; return the request in flight at that moment."""
    count = lane.rng.randint(2, 4)  # ≥ 2: the retry below never is the one that crashes
    g = GuardProcess(
        lane.root,
        keys=[fake.key_url(k.pkh) for k in lane.keys],
        store=str(lane.store),
        env={ENV: f"{lane.step}:{count}"},
        log_level="WARNING",
    )
    await guards.start(g)
    try:
        await check_store_after_restart(lane)
        reached = 0
        for i in range(60):
            retry = i == 0 and crashed is not None
            q = crashed if retry and crashed is not None else lane.next_request()
            predicted = lane.predict(q)
            reaching = lane.reaches(q, predicted)
            reached += reaching
            crashing = reaching and reached == count
            answer = await post(g.url, q)
            lane.requests += 1
            if retry:
                lane.table[f"{crash_row(lane.step)} -> retry {classify(answer)[:3]}"] += 1
            if crashing:
                await crashed_request(lane, g, q, predicted, answer)
                return q
            check_answer(lane, q, predicted, answer)
            lane.history.append(q)
        raise AssertionError(f"[{lane.step}] armed at {count}, the guard never crashed")
    finally:
        await g.astop()


def crash_row(step: str) -> str:
    if step in BEFORE_STORE:
        return "before commit"
    if step in ADVANCED_UNSIGNED:
        return "after commit, before cache"
    return "after cache write"


def check_answer(lane: Lane, q: Req, predicted: Outcome, answer: tuple[int, Any] | None) -> None:
    where = f"[{lane.step}] {q.kind} {q.level}/{q.round} on {q.pkh[:8]}"
    assert answer is not None, f"{where}: no answer, but no crash was due"
    code, body = answer
    lane.outcomes[predicted] += 1
    if predicted == "refused":
        assert code == 409, f"{where}: expected 409, got {code} {body}"
        return
    assert code == 200, f"{where}: expected 200 ({predicted}), got {code} {body}"
    if predicted == "cached":
        rec = lane.model[(q.pkh, q.kind)]
        assert body["signature"] == rec.signature, f"{where}: cached signature differs"
    else:
        lane.advance(q, body["signature"])


async def crashed_request(
    lane: Lane, g: GuardProcess, q: Req, predicted: Outcome, answer: tuple[int, Any] | None
) -> None:
    """The guard must die by its own SIGKILL; update the model to what the crash table says the
    store holds now."""
    assert g.proc is not None
    code = await asyncio.to_thread(g.proc.wait, 15)
    assert code == -9, f"[{lane.step}] guard exited {code}, not by its SIGKILL"
    step = lane.step
    if step in BEFORE_STORE:
        assert answer is None, f"[{step}] answered {answer} before the store step"
        return
    if step in ADVANCED_UNSIGNED:
        assert answer is None, f"[{step}] answered {answer}"
        lane.advance(q, None)
        return
    # signature_stored: killed just after the cache write, which the answer does not wait for:
    #   the answer may or may not have left
    # response_sent: killed after the answer; its cache write was queued, not awaited
    if step == "signature_stored":
        assert answer is None or answer[0] == 200, f"[{step}] {answer}"
    else:
        assert answer is not None and answer[0] == 200, f"[{step}] {answer}"
    if predicted == "cached":
        assert answer is not None
        assert answer[1]["signature"] == lane.model[(q.pkh, q.kind)].signature
        return
    store = await asyncio.to_thread(read_store, lane.store)
    rec = store[(q.pkh, q.kind)]
    assert (rec.level, rec.round, rec.hash) == (q.level, q.round, q.digest)
    if step == "response_sent" and rec.signature is None:
        # the answer left before its queued cache write landed (watermark-rules.md §1.2): the
        # baker has the signature; an identical retry is refused, never signed again
        lane.lost_cache += 1
        lane.advance(q, None)
        return
    assert rec.signature is not None, f"[{step}] killed after the cache write, none stored"
    if answer is not None:
        assert answer[1]["signature"] == rec.signature
    lane.advance(q, rec.signature)


async def run_lane(lane: Lane, fake: FakeUpstreamSigner, guards: Guards) -> None:
    crashed: Req | None = None
    for _ in range(RUNS_PER_STEP):
        crashed = await run_once(lane, fake, guards, crashed)
    # one last, unarmed guard: the last crash's retry and a last look at the store
    g = GuardProcess(
        lane.root, keys=[fake.key_url(k.pkh) for k in lane.keys], store=str(lane.store)
    )
    await guards.start(g)
    try:
        await check_store_after_restart(lane)
        assert crashed is not None
        predicted = lane.predict(crashed)
        answer = await post(g.url, crashed)
        lane.table[f"{crash_row(lane.step)} -> retry {classify(answer)[:3]}"] += 1
        check_answer(lane, crashed, predicted, answer)
    finally:
        await g.astop()


def check_upstream_log(log: Path, tz2: set[str]) -> dict[str, int]:
    """The backend's own record: one payload per (chain, pkh, kind, level, round), one
    signature per payload (a re-sent tz2 payload would carry a second, different one)."""
    payloads: dict[tuple[object, ...], set[str]] = defaultdict(set)
    sent: Counter[tuple[str, str]] = Counter()
    signatures: dict[tuple[str, str], set[str]] = defaultdict(set)
    lines = log.read_text().splitlines()
    for line in lines:
        entry = json.loads(line)
        req = codec.decode(bytes.fromhex(entry["data"]))
        slot = (req.chain_id, entry["pkh"], req.hwm_kind, req.level, req.round)
        payloads[slot].add(entry["data"])
        sent[(entry["pkh"], entry["data"])] += 1
        signatures[(entry["pkh"], entry["data"])].add(entry["signature"])
    double = {k: v for k, v in payloads.items() if len(v) > 1}
    assert not double, f"DOUBLE SIGNING: two payloads signed for {next(iter(double))}"
    resigned = [k for k, v in signatures.items() if len(v) > 1]
    assert not resigned, f"one payload signed twice with different signatures: {resigned[0]}"
    resent = [k for k, n in sent.items() if n > 1]
    assert not resent, f"identical bytes sent to the backend twice: {resent[0]}"
    return {
        "signatures": len(lines),
        "tz2": sum(1 for pkh, _ in sent if pkh in tz2),
    }


@pytest.fixture
def guards() -> Iterator[Guards]:
    registry = Guards()
    try:
        yield registry
    finally:
        registry.stop_all()


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[tuple[FakeUpstreamSigner, list[Lane]]]:
    seed = int(os.environ.get("CRASH_MATRIX_SEED", time.time_ns() % 2**32))
    print(f"\ncrash matrix seed {seed} (CRASH_MATRIX_SEED to replay)")
    lanes = [
        Lane(
            step,
            tmp_path / step,
            [
                keys.SecretKey.generate("ed25519"),
                RandomisedKey.from_b58(keys.SecretKey.generate("secp256k1").b58),
                keys.SecretKey.generate("p256"),
            ],
            random.Random(seed + i),
        )
        for i, step in enumerate(STEPS)
    ]
    secrets = [k for lane in lanes for k in lane.keys]
    async with FakeUpstreamSigner(secrets, log_path=tmp_path / "upstream.jsonl") as fake:
        yield fake, lanes


async def test_crash_matrix(
    upstream: tuple[FakeUpstreamSigner, list[Lane]], guards: Guards
) -> None:
    fake, lanes = upstream
    started = time.monotonic()
    async with asyncio.TaskGroup() as group:  # a failing lane cancels the others
        for lane in lanes:
            group.create_task(run_lane(lane, fake, guards))
    elapsed = time.monotonic() - started
    assert fake.log_path is not None
    tz2 = {lane.keys[1].pkh for lane in lanes}
    totals = check_upstream_log(fake.log_path, tz2)
    print(f"crash matrix: {len(lanes)} points x {RUNS_PER_STEP} runs in {elapsed:.1f} s; {totals}")
    for lane in lanes:
        print(f"  {lane.step:17} {lane.requests:4} requests {dict(lane.outcomes)}")
        print(f"  {'':17} crash table {dict(lane.table)}, cache writes lost {lane.lost_cache}")
    for lane in lanes:
        rows = set(lane.table)
        if lane.step in BEFORE_STORE:
            assert all(r.endswith(("200", "409")) for r in rows), rows
        elif lane.step in ADVANCED_UNSIGNED:
            assert rows == {"after commit, before cache -> retry 409"}, rows
        elif lane.step == "signature_stored":
            assert rows == {"after cache write -> retry 200"}, rows
        else:  # response_sent: a retry is 409 only where the crash overtook the cache write
            assert rows <= {"after cache write -> retry 200", "after cache write -> retry 409"}
            assert lane.table["after cache write -> retry 409"] <= lane.lost_cache, rows
        assert sum(lane.table.values()) == RUNS_PER_STEP
