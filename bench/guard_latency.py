"""Added latency of the guard over calling the upstream directly, and throughput with SQLite.

Run: `python -m bench.guard_latency` (part of `make bench`). The upstream is a software tz1 key
behind an Octez-compatible HTTP signer on loopback; the guard runs as its own process with a real
SQLite store in a temp dir (WAL, synchronous=FULL). Direct and guarded calls alternate in one run,
so both see the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from bench.stats import summary_ms, table
from signer_guard import keys
from signer_guard.forge import forge_consensus
from tests.etcd_cluster import EtcdCluster
from tests.guard_proc import GuardProcess

MAINNET = "NetXdQprcVkpaWU"


async def _post(session: aiohttp.ClientSession, url: str, data: bytes) -> float:
    body = json.dumps(data.hex()) + "\n"
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url} answered {r.status}")
    return time.perf_counter() - started


@contextlib.asynccontextmanager
async def upstream_process(sk: keys.SecretKey) -> AsyncIterator[str]:
    """An Octez-compatible signer in its own process, as octez-signer is for a real baker (an
    upstream inside the benchmark's process would spare the direct path the process switches
    that the guarded path pays)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.upstream_signer", "--port", "0", "--key", sk.b58,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        if not line.strip().isdigit():
            raise RuntimeError(f"the upstream did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()


async def _interleaved(
    n: int, direct: str, guarded: str, pause: float
) -> tuple[list[float], list[float]]:
    """n signatures at new levels, each asked of the upstream directly and through the guard,
    one after the other; `pause` between pairs lets background work (cache writes) settle, as
    between a baker's real requests."""
    d: list[float] = []
    g: list[float] = []
    async with aiohttp.ClientSession() as session:
        for level in range(1, 51):  # warm-up
            data = forge_consensus("attestation", 21, MAINNET, level, 0)
            await _post(session, direct, data)
            await _post(session, guarded, data)
        for level in range(100, 100 + n):
            data = forge_consensus("attestation", 21, MAINNET, level, 0)
            d.append(await _post(session, direct, data))
            g.append(await _post(session, guarded, data))
            await asyncio.sleep(pause)
    return d, g


def _rows(
    name: str, direct: list[float], guarded: list[float], target: str
) -> list[tuple[str, ...]]:
    d50, d99, _ = summary_ms(direct)
    g50, g99, _ = summary_ms(guarded)
    added = [g - d for g, d in zip(sorted(guarded), sorted(direct), strict=True)]
    a50, a99, _ = summary_ms(added)
    return [
        (f"{name}: upstream directly", f"{d50:.3f}", f"{d99:.3f}", "", ""),
        (
            f"{name}: through the guard",
            f"{g50:.3f}",
            f"{g99:.3f}",
            f"{a50:.3f} / {a99:.3f}",
            target,
        ),
    ]


async def latency(n: int, work: Path, pause: float = 0.0) -> list[tuple[str, ...]]:
    """The guard on SQLite, then on a 3-member etcd, each against the upstream directly in the
    same phase (one guard runs at a time, so neither disturbs the other's numbers)."""
    sk = keys.SecretKey.generate("ed25519")
    rows: list[tuple[str, ...]] = []
    async with upstream_process(sk) as base:
        direct = f"{base}/keys/{sk.pkh}"
        key = [f"{base}/{sk.pkh}"]
        sqlite = GuardProcess(work / "lat-sqlite", keys=key, log_level="WARNING")
        await sqlite.astart()
        try:
            d, g = await _interleaved(n, direct, f"{sqlite.url}keys/{sk.pkh}", pause)
        finally:
            await sqlite.astop()
        rows += _rows("SQLite", d, g, "≤ 1 / ≤ 5")
        with EtcdCluster() as cluster:
            etcd = GuardProcess(
                work / "lat-etcd", keys=key, log_level="WARNING", store=cluster.store_url("bench")
            )
            await etcd.astart()
            try:
                d, g = await _interleaved(n, direct, f"{etcd.url}keys/{sk.pkh}", pause)
            finally:
                await etcd.astop()
        rows += _rows("etcd, 3 members", d, g, "≤ 3 (median)")
    return rows


async def throughput(seconds: float, n_keys: int, concurrency: int, work: Path) -> tuple[str, ...]:
    secrets = [keys.SecretKey.generate("ed25519") for _ in range(n_keys)]
    guard = GuardProcess(
        work / "tput", keys=[f"unencrypted:{s.b58}" for s in secrets], log_level="WARNING"
    )
    await guard.astart()
    done = 0
    try:
        levels = {s.pkh: 0 for s in secrets}
        deadline = time.monotonic() + seconds

        async def worker(i: int, session: aiohttp.ClientSession) -> None:
            nonlocal done
            pkh = secrets[i % n_keys].pkh
            while time.monotonic() < deadline:
                levels[pkh] += 1
                data = forge_consensus("attestation", 21, MAINNET, levels[pkh], 0)
                await _post(session, f"{guard.url}keys/{pkh}", data)
                done += 1

        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn) as session:
            started = time.monotonic()
            await asyncio.gather(*(worker(i, session) for i in range(concurrency)))
            elapsed = time.monotonic() - started
    finally:
        await guard.astop()
    return ("software tz1 keys, SQLite", str(n_keys), str(concurrency), f"{done / elapsed:.0f}")


async def main(n: int, seconds: float, pause: float = 0.0) -> None:
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        work = Path(tmp)
        rows = await latency(n, work, pause)
        spacing = f", {pause * 1e3:g} ms between requests" if pause else ", back to back"
        print(
            f"\nAdded latency, software tz1 key behind an upstream on loopback "
            f"({n} signatures{spacing})"
        )
        print(table(rows, ("path", "median ms", "p99 ms", "added median / p99 ms", "target")))
        row = await throughput(seconds, 8, 32, work)
        print(f"\nThroughput for {seconds:.0f} s (target ≥ 1000 signatures/s on 2 cores)")
        print(table([row], ("setup", "keys", "concurrency", "signatures/s")))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument(
        "--pause-ms",
        type=float,
        default=0.0,
        help="idle time between requests (a baker's are spaced; idle CPUs wake slower)",
    )
    a = ap.parse_args()
    asyncio.run(main(a.n, a.seconds, a.pause_ms / 1e3))
