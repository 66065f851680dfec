"""Model checking by property tests: the real store + rule against the reference model
(tests/hwm_model.py), step by step, across kinds, keys, chains, retries, conflicts, restarts,
`hwm set`, failovers and release; and a smaller machine over real HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from signer_guard import keys
from signer_guard.forge import forge_block, forge_consensus
from signer_guard.model import Fence, HWMKey, SignIntent
from signer_guard.rule import Advance, Cached, Decision, Refused
from signer_guard.store.base import FenceConflict, NotHolder
from signer_guard.store.sqlite import SqliteStore
from tests.guard_proc import GuardProcess
from tests.hostile_http import assert_trace, http, port_of, send_raw
from tests.hwm_model import Key, Outcome, Reference

T = TypeVar("T")

CHAINS = ("NetXdQprcVkpaWU", "NetXnHfVqm9iesp")
PKHS = ("tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv", "tz4AQcKaQU1sUzsmPTX43qnK4ddkCeeknJnf")
KINDS = ("block", "preattestation", "attestation")
GUARDS = ("a", "b", "c")
ALL_KEYS: list[Key] = [(c, p, k) for c in CHAINS for p in PKHS for k in KINDS]

levels = st.integers(min_value=0, max_value=12)
rounds = st.integers(min_value=0, max_value=2)
payloads = st.integers(min_value=0, max_value=2)
key_st = st.sampled_from(ALL_KEYS)


def request_hash(key: Key, lvl: int, rnd: int, payload: int) -> bytes:
    return hashlib.blake2b(repr((key, lvl, rnd, payload)).encode(), digest_size=32).digest()


def outcome_of(decision: Decision) -> Outcome:
    if isinstance(decision, Advance):
        return ("advance", None)
    if isinstance(decision, Cached):
        return ("cached", decision.signature)
    assert isinstance(decision, Refused)
    return ("refused", (decision.status, decision.reason))


class StoreMachine(RuleBasedStateMachine):
    """SqliteStore + rule (through store.advance / store_signature) against the reference."""

    sent = Bundle("sent")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="sg-model-"))
        self.path = self.dir / "store.sqlite"
        self.store = SqliteStore(self.path)
        self.run(self.store.open())
        self.ref = Reference()
        self.epochs: dict[str, int | None] = dict.fromkeys(GUARDS)
        # safety, independent of the model: (key, level, round) -> the one hash ever advanced
        self.advanced: dict[tuple[Key, int, int], bytes] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize()
    def claim(self) -> None:
        fence = self.run(self.store.claim_initial_fence("a"))
        assert (fence.epoch, fence.holder, fence.fence_level) == (1, "a", 0)
        self.ref.fence = (1, "a", 0)
        self.epochs["a"] = 1

    def _sign(
        self, guard: str, key: Key, lvl: int, rnd: int, payload: int, cache: bool
    ) -> tuple[str, Key, int, int, int]:
        h = request_hash(key, lvl, rnd, payload)
        intent = SignIntent(HWMKey(key[0], key[1], key[2]), lvl, rnd, h)  # type: ignore[arg-type]
        epoch = self.epochs[guard]
        want = self.ref.request(key, lvl, rnd, h, guard, epoch)
        got = outcome_of(self.run(self.store.advance(intent, guard, epoch)))
        assert got == want, (guard, key, lvl, rnd, payload)
        if got[0] == "advance":
            earlier = self.advanced.get((key, lvl, rnd))
            assert earlier is None or earlier == h, "two different requests signed at one level"
            self.advanced[(key, lvl, rnd)] = h
            if cache:  # else: a crash between the advance and the cache write
                assert epoch is not None
                signature = f"sig-{h.hex()[:16]}"
                self.run(self.store.store_signature(intent, signature, epoch))
                self.ref.cache(key, lvl, rnd, h, signature)
        if got[0] == "cached":
            assert got[1] == f"sig-{h.hex()[:16]}"
        return (guard, key, lvl, rnd, payload)

    @rule(
        target=sent,
        guard=st.sampled_from(GUARDS),
        key=key_st,
        lvl=levels,
        rnd=rounds,
        payload=payloads,
        cache=st.booleans(),
    )
    def request(
        self, guard: str, key: Key, lvl: int, rnd: int, payload: int, cache: bool
    ) -> tuple[str, Key, int, int, int]:
        return self._sign(guard, key, lvl, rnd, payload, cache)

    @rule(sent=sent, cache=st.booleans())
    def identical_retry(self, sent: tuple[str, Key, int, int, int], cache: bool) -> None:
        self._sign(*sent, cache=cache)

    @rule(sent=sent, other=payloads)
    def conflicting_payload(self, sent: tuple[str, Key, int, int, int], other: int) -> None:
        guard, key, lvl, rnd, _ = sent
        self._sign(guard, key, lvl, rnd, other, cache=True)

    @rule()
    def restart(self) -> None:
        """Close the store and open the same file again (a guard restart)."""
        self.run(self.store.close())
        self.store = SqliteStore(self.path)
        self.run(self.store.open())

    @rule(key=key_st, lvl=levels, rnd=rounds, allow_lower=st.booleans())
    def hwm_set(self, key: Key, lvl: int, rnd: int, allow_lower: bool) -> None:
        hkey = HWMKey(key[0], key[1], key[2])  # type: ignore[arg-type]
        self.run(self.store.set_record(hkey, lvl, rnd, allow_lower=allow_lower))
        self.ref.set(key, lvl, rnd, allow_lower)
        if allow_lower:  # the operator may re-open levels: forget what was signed there
            self.advanced = {k: v for k, v in self.advanced.items() if k[0] != key}

    @rule(
        guard=st.sampled_from(GUARDS),
        lvl=levels,
        create=st.lists(key_st, max_size=3),
        stale=st.booleans(),
    )
    def failover(self, guard: str, lvl: int, create: list[Key], stale: bool) -> None:
        expected = self.run(self.store.read_fence())
        assert expected is not None
        hkeys = [HWMKey(c, p, k) for c, p, k in create]  # type: ignore[arg-type]
        if stale:  # the fence moved since the caller read it: nothing may change
            moved = Fence(expected.epoch - 1, expected.holder, expected.fence_level, "then")
            try:
                self.run(self.store.takeover(guard, lvl, hkeys, moved))
            except FenceConflict:
                return
            raise AssertionError("a takeover with a stale fence succeeded")
        result = self.run(self.store.takeover(guard, lvl, hkeys, expected))
        epoch = self.ref.takeover(guard, lvl, create)
        assert result.fence.epoch == epoch
        self.epochs[guard] = epoch  # every other guard keeps its old, now stale, epoch

    @rule(guard=st.sampled_from(GUARDS))
    def release(self, guard: str) -> None:
        try:
            self.run(self.store.release(guard))
            released = True
        except NotHolder:
            released = False
        assert released == self.ref.release(guard)

    @invariant()
    def same_state(self) -> None:
        fence = self.run(self.store.read_fence())
        got_fence = None if fence is None else (fence.epoch, fence.holder, fence.fence_level)
        assert got_fence == self.ref.fence
        records = {
            (r.chain_id, r.pkh, r.kind): (r.level, r.round, r.hash, r.signature, r.epoch)
            for r in self.run(self.store.list_records())
        }
        want = {
            k: (m.level, m.round, m.hash, m.signature, m.epoch) for k, m in self.ref.marks.items()
        }
        assert records == want


TestStoreModel = StoreMachine.TestCase
TestStoreModel.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- the same reference over real HTTP -------------------------------------------------------
TZ1_SECRET = "edsk4TjJWEszkHKono7XMnepVqwi37FrpbVt1KCsifJeAGimxheShG"
TZ1 = PKHS[0]
TZ1_PK = keys.SecretKey.from_b58(TZ1_SECRET).public_key
HTTP_KINDS = ("block", "preattestation", "attestation")


def forge(kind: str, lvl: int, rnd: int, payload: int) -> bytes:
    ph = bytes([payload]) * 32
    if kind == "block":
        return forge_block(CHAINS[0], lvl, rnd, payload_hash=ph)
    tag = 20 if kind == "preattestation" else 21
    return forge_consensus(kind, tag, CHAINS[0], lvl, rnd, payload_hash=ph)  # type: ignore[arg-type]


class HttpMachine(RuleBasedStateMachine):
    """A real `signer-guard serve` process (tz1 software key, SQLite) against the reference:
    the fence stays (1, guard-a, 0), so statuses are 200 (advance or cached) or 409."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="sg-model-http-"))
        self.guard = GuardProcess(self.dir, keys=[f"unencrypted:{TZ1_SECRET}"], log_level="INFO")
        self.guard.start()
        self.ref = Reference(fence=(1, "guard-a", 0))
        self.sent: list[tuple[str, int, int, int]] = []
        self.restarts = 0  # each costs a process start (~0.6 s): one per example is enough

    def teardown(self) -> None:
        self.guard.stop()
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _sign(self, kind: str, lvl: int, rnd: int, payload: int) -> None:
        data = forge(kind, lvl, rnd, payload)
        h = hashlib.blake2b(data, digest_size=32).digest()
        key: Key = (CHAINS[0], TZ1, kind)
        want = self.ref.request(key, lvl, rnd, h, "guard-a", 1)
        body = (f'"{data.hex()}"\n').encode()
        req = http("POST", f"/keys/{TZ1}", body=body, headers={"Content-Type": "application/json"})
        resp = self.loop.run_until_complete(send_raw(port_of(self.guard.url), req))
        if want[0] == "refused":
            assert resp.status == want[1][0], (kind, lvl, rnd, payload, resp)  # type: ignore[index]
            assert_trace(resp)
            return
        assert resp.status == 200, (kind, lvl, rnd, payload, resp)
        body_json = resp.json()
        assert isinstance(body_json, dict) and set(body_json) == {"signature"}
        signature = str(body_json["signature"])
        _, raw = keys.parse_signature(signature)
        assert TZ1_PK.verify(raw, data)
        if want[0] == "cached":
            assert signature == want[1]
        else:
            self.ref.cache(key, lvl, rnd, h, signature)
        self.sent.append((kind, lvl, rnd, payload))

    @rule(
        kind=st.sampled_from(HTTP_KINDS),
        lvl=st.integers(1, 6),
        rnd=st.integers(0, 1),
        payload=st.integers(0, 1),
    )
    def sign(self, kind: str, lvl: int, rnd: int, payload: int) -> None:
        self._sign(kind, lvl, rnd, payload)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        self._sign(*data.draw(st.sampled_from(self.sent)))

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data(), other=st.integers(0, 1))
    def conflict(self, data: st.DataObject, other: int) -> None:
        kind, lvl, rnd, _ = data.draw(st.sampled_from(self.sent))
        self._sign(kind, lvl, rnd, other)

    @precondition(lambda self: self.restarts < 1 and bool(self.sent))
    @rule()
    def restart(self) -> None:
        self.restarts += 1
        self.guard.stop()
        self.guard.start()

    @invariant()
    def answers(self) -> None:
        resp = self.loop.run_until_complete(
            send_raw(port_of(self.guard.url), http("GET", "/healthz"))
        )
        assert resp.status == 200


TestHttpModel = HttpMachine.TestCase
TestHttpModel.settings = settings(
    max_examples=5,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
