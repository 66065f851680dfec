"""`failover` and `release` on one host with SQLite: real `serve` processes on one store file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest

from signer_guard import keys
from signer_guard.failover import NO_LEVEL, FailoverOptions, failover
from signer_guard.forge import forge_consensus
from signer_guard.model import KINDS
from signer_guard.store.sqlite import SqliteStore
from tests.fakes.chain_apis import FakeNode, FakeTzkt
from tests.fakes.upstream_signer import FakeUpstreamSigner
from tests.guard_proc import GuardProcess, run_cli
from tests.http_client import get_json, sign

MAINNET = "NetXdQprcVkpaWU"
GHOSTNET = "NetXnHfVqm9iesp"
TZ1 = keys.SecretKey.from_b58("edsk4TjJWEszkHKono7XMnepVqwi37FrpbVt1KCsifJeAGimxheShG")

REPORT_KEYS = {
    "ok", "guard_id", "epoch", "previous", "fence_level", "last_level", "margin", "sources",
    "primary", "devices_raised", "records_raised", "local_guard", "warnings",
}  # fmt: skip
SOURCE_KEYS = {"store", "level", "node", "tzkt", "devices"}


def consensus(
    kind: Literal["attestation", "preattestation"], level: int, payload: int = 0
) -> bytes:
    tag = 21 if kind == "attestation" else 20
    return forge_consensus(kind, tag, MAINNET, level, 0, payload_hash=payload.to_bytes(32, "big"))


def att(level: int, payload: int = 0) -> bytes:
    return consensus("attestation", level, payload)


def fence_row(store: Path) -> tuple[int, str, int]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT epoch, holder, fence_level FROM fence WHERE id = 1").fetchone()
    return int(row[0]), str(row[1]), int(row[2])


def record_levels(store: Path) -> dict[tuple[str, str, str], tuple[int, int]]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT chain_id, pkh, kind, level, round FROM hwm").fetchall()
    return {(r[0], r[1], r[2]): (int(r[3]), int(r[4])) for r in rows}


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI off the event loop (the fakes answer on it), stdin a pipe (no terminal)."""
    return await asyncio.to_thread(run_cli, *args, input_text="")


def report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    body = json.loads(done.stdout)
    assert isinstance(body, dict), done.stdout
    assert "Traceback" not in done.stderr
    return body


async def wait_state(url: str, state: str, within: float) -> float:
    """Seconds until the guard's /status shows `state`; fails after `within` seconds."""
    started = time.monotonic()
    while True:
        _, body = await get_json(url + "status")
        if body["state"] == state:
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"still {body['state']}, not {state}"
        await asyncio.sleep(0.05)


async def assert_signs_only_above(url: str, fence_level: int) -> None:
    """The new holder signs above the fence level and refuses at or below it, for every kind."""
    for kind in ("attestation", "preattestation"):
        for level in (fence_level - 5, fence_level):
            status, body = await sign(url, TZ1.pkh, consensus(kind, level, payload=7))
            assert status == 409, (kind, level, body)
        status, body = await sign(url, TZ1.pkh, consensus(kind, fence_level + 1, payload=7))
        assert status == 200, (kind, body)


class Pair:
    """Guard A (active) and guard B (standby) on one SQLite file, one fake upstream."""

    def __init__(self, tmp_path: Path, upstream: FakeUpstreamSigner) -> None:
        self.store = tmp_path / "store.sqlite"
        key = [upstream.key_url(TZ1.pkh)]
        self.a = GuardProcess(
            tmp_path / "a", keys=key, store=str(self.store), guard_id="guard-a", name="a"
        )
        self.b = GuardProcess(
            tmp_path / "b",
            keys=key,
            store=str(self.store),
            guard_id="guard-b",
            name="b",
            standby=True,
        )

    def b_args(self, *extra: str) -> list[str]:
        return ["failover", "--config", str(self.b.config_path), "--url", self.b.url, *extra]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    async with FakeUpstreamSigner([TZ1], log_path=tmp_path / "upstream.jsonl") as upstream:
        made = Pair(tmp_path, upstream)
        try:
            await made.a.astart()
            await made.b.astart()
            yield made
        finally:
            await made.b.astop()
            await made.a.astop()


async def test_refused_while_primary_active_then_takes_over_with_level(pair: Pair) -> None:
    a, b = pair.a, pair.b
    assert (await sign(a.url, TZ1.pkh, att(100)))[0] == 200
    status, body = await sign(b.url, TZ1.pkh, att(101, payload=1))
    assert status == 503 and "standby" in body[0]["msg"]

    done = await cli(*pair.b_args("--level", "100", "--primary", a.url, "--yes", "--json"))
    assert done.returncode == 3, done.stdout + done.stderr
    body = report(done)
    assert set(body) == {"ok", "refused", "detail"}
    assert body["ok"] is False and body["refused"] == "primary_active"
    assert "answers state active" in body["detail"]
    assert fence_row(pair.store) == (1, "guard-a", 0)
    assert (await sign(a.url, TZ1.pkh, att(102)))[0] == 200  # the primary kept signing

    await a.astop()
    # In-process, like the CLI minus the local poll, to time how fast B notices by itself.
    store = SqliteStore(pair.store)
    await store.open()
    try:
        result = await failover(
            store,
            FailoverOptions(
                guard_id="guard-b", keys=b.config["keys"], level=120, primary=a.url, yes=True
            ),
        )
    finally:
        await store.close()
    done_at = time.monotonic()
    assert result.code == 0, result.lines
    assert await wait_state(b.url, "active", within=1.2) < 1.2
    assert time.monotonic() - done_at < 1.2
    rep = result.report
    assert set(rep) == REPORT_KEYS and set(rep["sources"]) == SOURCE_KEYS
    assert rep["sources"]["store"] == 102 and rep["sources"]["level"] == 120
    assert (rep["last_level"], rep["margin"], rep["fence_level"]) == (120, 10, 130)
    assert rep["epoch"] == 2 and rep["previous"]["holder"] == "guard-a"
    assert rep["primary"] == {"url": a.url, "state": "unreachable"}
    assert rep["records_raised"] == 3  # attestation raised, block and preattestation created
    assert all(line.startswith(("✔ ", "✘ ")) for line in result.lines if not line.startswith(" "))
    assert fence_row(pair.store) == (2, "guard-b", 130)
    assert record_levels(pair.store) == {(MAINNET, TZ1.pkh, k): (130, 0) for k in KINDS}
    await assert_signs_only_above(b.url, 130)
    _, status_body = await get_json(b.url + "status")
    assert status_body["epoch"] == 2 and status_body["holder"] == "guard-b"

    # Run again on the holder: reported, nothing changes.
    done = await cli(*pair.b_args("--level", "500", "--yes", "--json"))
    assert done.returncode == 0 and report(done)["already_holder"] is True
    assert fence_row(pair.store) == (2, "guard-b", 130)


async def test_release_then_failover_with_node_head(pair: Pair) -> None:
    a, b = pair.a, pair.b
    assert (await sign(a.url, TZ1.pkh, att(200)))[0] == 200
    done = await cli("release", "--config", str(a.config_path), "--url", a.url, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    body = report(done)
    assert body["holder"] == "" and body["fence_level"] == 200
    assert body["local_guard"] == {"state": "standby"}
    status, refusal = await sign(a.url, TZ1.pkh, att(201))
    assert status == 503 and "standby" in refusal[0]["msg"]

    async with FakeNode(level=250, chain_id=GHOSTNET) as node:
        args = pair.b_args("--node", node.url, "--primary", a.url, "--yes", "--json")
        done = await cli(*args)
        assert done.returncode == 3
        assert report(done)["refused"] == "chain_mismatch"
        assert fence_row(pair.store) == (1, "", 200)

        node.chain_id = MAINNET
        done = await cli(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    rep = report(done)
    assert set(rep) == REPORT_KEYS
    assert rep["primary"] == {"url": a.url, "state": "standby"}
    assert rep["sources"]["node"] == 250 and rep["sources"]["store"] == 200
    assert (rep["last_level"], rep["fence_level"]) == (250, 260)
    assert rep["local_guard"] == {"state": "active"}
    assert record_levels(pair.store) == {(MAINNET, TZ1.pkh, k): (260, 0) for k in KINDS}
    await assert_signs_only_above(b.url, 260)

    # Planned switchover back: release on B; B is standby within 1 s and refuses.
    done = await cli("release", "--config", str(b.config_path), "--url", b.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("✔ release:")
    assert await wait_state(b.url, "standby", within=1.0) < 1.0
    status, refusal = await sign(b.url, TZ1.pkh, att(300))
    assert status == 503
    assert fence_row(pair.store) == (2, "", 261)  # raised to the highest HWM
    done = await cli("release", "--config", str(b.config_path), "--url", b.url, "--json")
    assert done.returncode == 3
    assert report(done) == {
        "ok": False,
        "refused": "not_holder",
        "detail": "guard 'guard-b' does not hold the fence; holder: 'nobody'",
    }


async def test_failover_from_tzkt_after_primary_crash(pair: Pair) -> None:
    a, b = pair.a, pair.b
    assert (await sign(a.url, TZ1.pkh, att(300)))[0] == 200
    a.kill()
    async with FakeTzkt() as tzkt:
        tzkt.levels[("attestations", TZ1.pkh)] = 341
        tzkt.levels[("preattestations", TZ1.pkh)] = 340
        tzkt.levels[("blocks", TZ1.pkh)] = 330
        args = pair.b_args("--tzkt", tzkt.url, "--primary", a.url, "--yes", "--wait")
        running = asyncio.create_task(cli(*args, "--wait-timeout", "10"))
        await wait_state(b.url, "active", within=8.0)
        assert not running.done()  # --wait: it waits for a signature above the fence level
        assert (await sign(b.url, TZ1.pkh, att(352, payload=7)))[0] == 200
        done = await running
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("✔ source tzkt: " + TZ1.pkh + ": 341") for line in lines)
    assert "✔ source store: 300" in lines
    assert "✔ last level: L = 341 (max of 2 answers)" in lines
    assert any(line.startswith("✔ enable: local guard") for line in lines)
    assert f"✔ wait: {TZ1.pkh} signed attestation level 352" in lines
    assert {name for name, _ in tzkt.queries} == {"attestations", "preattestations", "blocks"}
    for name, query in tzkt.queries:
        account = "producer" if name == "blocks" else "delegate"
        assert query == {account: TZ1.pkh, "sort.desc": "level", "limit": "1", "select": "level"}
    assert fence_row(pair.store) == (2, "guard-b", 351)
    await assert_signs_only_above(b.url, 351)


async def test_refusals_change_nothing(pair: Pair) -> None:
    await pair.a.astop()  # it held the fence at level 0 and signed nothing
    before = fence_row(pair.store)
    done = await cli(*pair.b_args("--yes", "--json"))
    assert done.returncode == 3
    assert report(done) == {"ok": False, "refused": "no_last_level", "detail": NO_LEVEL}

    # SQLite without --primary: no probe is possible, so a confirmation is required.
    done = await cli(*pair.b_args("--level", "5"))
    assert done.returncode == 3
    assert "✘ probe primary: no probe possible" in done.stdout
    assert "✘ confirm: no terminal to confirm on: pass --yes" in done.stdout
    assert "Traceback" not in done.stderr

    done = await cli(*pair.b_args("--level", "5", "--margin", "0", "--yes", "--json"))
    assert done.returncode == 3 and report(done)["refused"] == "margin"
    done = await cli(*pair.b_args("--level", "5", "--margin", "-1", "--yes"))
    assert done.returncode == 2 and "--margin" in done.stderr
    assert fence_row(pair.store) == before == (1, "guard-a", 0)
    status, _ = await sign(pair.b.url, TZ1.pkh, att(10))
    assert status == 503


async def test_forced_takeover_with_typed_confirmation_fences_the_running_primary(
    pair: Pair,
) -> None:
    a, b = pair.a, pair.b
    assert (await sign(a.url, TZ1.pkh, att(400)))[0] == 200
    questions: list[str] = []
    answers = iter([False, True, True])

    async def answer(question: str) -> bool:
        questions.append(question)
        return next(answers)

    opts = FailoverOptions(
        guard_id="guard-b",
        keys=b.config["keys"],
        local_url=b.url,
        primary=a.url,
        force=True,
        confirm=answer,
    )
    store = SqliteStore(pair.store)
    await store.open()
    try:
        refused = await failover(store, opts)
        assert refused.code == 3 and refused.report["refused"] == "not_confirmed"
        assert fence_row(pair.store) == (1, "guard-a", 0)
        done = await failover(store, opts)
    finally:
        await store.close()
    assert done.code == 0, done.lines
    assert len(questions) == 3
    assert "answers state active" in questions[0] and "unplugged" in questions[0]
    assert "--force: confirm that the signer of guard-a" in questions[1]
    assert questions[2].startswith("Take over signing as guard 'guard-b'")
    assert done.report["primary"] == {"url": a.url, "state": "active"}
    assert (done.report["fence_level"], done.report["local_guard"]) == (410, {"state": "active"})
    # The primary was still running: its next request meets the new fence in the store.
    status, body = await sign(a.url, TZ1.pkh, att(411, payload=1))
    assert status == 503, body
    assert await wait_state(a.url, "fenced", within=1.0) < 1.0
    assert (await sign(b.url, TZ1.pkh, att(411, payload=2)))[0] == 200
