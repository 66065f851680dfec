"""`make soak`: mixed load against one guard process for a while; memory and descriptors over time.

Run: `python -m bench.soak [--minutes 10]`. The guard runs as its own process (software keys of
all four curves, SQLite store in a temp dir). One worker per key signs new levels of every kind and
mixes in identical retries (cached), conflicting payloads (409), refusals (absurd level 403,
malformed body 400, unknown key 404), fresh connections next to keep-alive ones, and
/status + /metrics scrapes. Every `--sample` seconds it reads the guard's resident memory
(`VmRSS` in /proc/<pid>/status) and its open descriptors (/proc/<pid>/fd).

Pass: resident memory grows by less than `--rss-limit-mb` (default 10) from the end of the
warm-up to the end; once the load has stopped and its connections are closed, the guard holds at
most 2 more descriptors than before the load (journal, WAL); no request got an unexpected status
(so no 5xx) and the guard is still running. Exit 0 on pass, 1 on fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from signer_guard import keys
from signer_guard.forge import forge_block, forge_consensus
from tests.guard_proc import GuardProcess

MAINNET = "NetXdQprcVkpaWU"
CURVES = ("ed25519", "secp256k1", "p256", "bls12_381")
UNKNOWN_TZ1 = "tz1Ke2h7sDdakHJQh8WX4Z372du1KChsksyU"


@dataclass
class Sample:
    t: float
    rss_kb: int
    fds: int
    requests: int


@dataclass
class Tally:
    by_status: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    total: int = 0

    def note(self, what: str, status: int, expected: int) -> None:
        self.total += 1
        self.by_status[f"{what} {status}"] += 1
        if status != expected and len(self.unexpected) < 20:
            self.unexpected.append(f"{what}: {status} (expected {expected})")


def read_proc(pid: int) -> tuple[int, int]:
    """(VmRSS in kB, open descriptors) of `pid`."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def requests_for(sk: keys.SecretKey, level: int) -> list[tuple[str, bytes]]:
    tz4 = sk.curve == "bls12_381"
    return [
        ("block", forge_block(MAINNET, level, 0)),
        ("preattestation", forge_consensus("preattestation", 40 if tz4 else 20, MAINNET, level, 0)),
        ("attestation", forge_consensus("attestation", 41 if tz4 else 21, MAINNET, level, 0)),
    ]


async def post(session: aiohttp.ClientSession, url: str, body: str | bytes) -> int:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        await r.read()
        return r.status


async def side_requests(
    session: aiohttp.ClientSession,
    base: str,
    url: str,
    sk: keys.SecretKey,
    level: int,
    roll: float,
    tally: Tally,
) -> None:
    """Now and then: a refusal (absurd level, malformed body, unknown key) or the scrapes."""
    tag = 41 if sk.curve == "bls12_381" else 21
    if roll < 0.1:
        absurd = forge_consensus("attestation", tag, MAINNET, 2**30, 0)
        tally.note("absurd level", await post(session, url, json.dumps(absurd.hex())), 403)
    elif roll < 0.2:
        tally.note("malformed", await post(session, url, b'"zz"'), 400)
    elif roll < 0.25:
        body = json.dumps(forge_consensus("attestation", tag, MAINNET, level, 0).hex())
        status = await post(session, f"{base}keys/{UNKNOWN_TZ1}", body)
        tally.note("unknown key", status, 404)
    elif roll < 0.35:
        for path in ("status", "metrics", "healthz", "authorized_keys"):
            async with session.get(base + path) as r:
                await r.read()
                tally.note(f"GET /{path}", r.status, 200)


async def worker(base: str, sk: keys.SecretKey, stop: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    url = f"{base}keys/{sk.public_key.pkh}"
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as keepalive:
        level = 1
        while time.monotonic() < stop:
            level += 1
            fresh = rng.random() < 0.2  # some requests on a new connection each
            session = (
                aiohttp.ClientSession(
                    timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)
                )
                if fresh
                else keepalive
            )
            try:
                for kind, data in requests_for(sk, level):
                    body = json.dumps(data.hex()) + "\n"
                    tally.note(f"sign {kind}", await post(session, url, body), 200)
                    if rng.random() < 0.3:
                        tally.note("identical retry", await post(session, url, body), 200)
                    if rng.random() < 0.2:
                        other = bytearray(data)
                        other[-1] ^= 0xFF  # another payload at the same (level, round)
                        tally.note(
                            "conflict", await post(session, url, json.dumps(other.hex())), 409
                        )
                await side_requests(session, base, url, sk, level, rng.random(), tally)
            finally:
                if fresh:
                    await session.close()


async def sampler(pid: int, stop: float, every: float, tally: Tally, out: list[Sample]) -> None:
    started = time.monotonic()
    while True:
        rss, fds = read_proc(pid)
        out.append(Sample(time.monotonic() - started, rss, fds, tally.total))
        if time.monotonic() >= stop:
            return
        await asyncio.sleep(min(every, max(stop - time.monotonic(), 0.05)))


async def soak(minutes: float, every: float, rss_limit_mb: float, warmup: float) -> int:
    secrets_ = [keys.SecretKey.generate(c) for c in CURVES]  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="sg-soak-") as tmp:
        guard = GuardProcess(
            Path(tmp),
            keys=[f"unencrypted:{sk.b58}" for sk in secrets_],
            log_level="WARNING",
        )
        await guard.astart()
        assert guard.proc is not None
        pid = guard.proc.pid
        tally = Tally()
        samples: list[Sample] = []
        started = time.monotonic()
        stop = started + minutes * 60
        try:
            await asyncio.gather(
                sampler(pid, stop, every, tally, samples),
                *(worker(guard.url, sk, stop, tally, i) for i, sk in enumerate(secrets_)),
            )
            await asyncio.sleep(2.0)  # every client connection is closed: the guard is idle
            alive = guard.proc.poll() is None
            if alive:
                rss, fds = read_proc(pid)
                samples.append(Sample(time.monotonic() - started, rss, fds, tally.total))
        finally:
            await guard.astop()
    return report(samples, tally, alive, rss_limit_mb, warmup, time.monotonic() - started)


def report(
    samples: list[Sample],
    tally: Tally,
    alive: bool,
    rss_limit_mb: float,
    warmup: float,
    elapsed: float,
) -> int:
    print(f"{'t (s)':>7} {'RSS (MB)':>9} {'fds':>5} {'requests':>9}")
    for s in samples:
        print(f"{s.t:7.0f} {s.rss_kb / 1024:9.1f} {s.fds:5d} {s.requests:9d}")
    base = next((s for s in samples if s.t >= warmup), samples[0])
    end = samples[-1]
    growth_mb = (end.rss_kb - base.rss_kb) / 1024
    fd_range = (min(s.fds for s in samples), max(s.fds for s in samples))
    print()
    print(f"requests: {tally.total} in {elapsed:.0f} s ({tally.total / elapsed:.0f}/s)")
    for what, n in sorted(tally.by_status.items()):
        print(f"  {what:<28} {n:>8}")
    print(
        f"resident memory: start {samples[0].rss_kb / 1024:.1f} MB, after warm-up "
        f"({base.t:.0f} s) {base.rss_kb / 1024:.1f} MB, end {end.rss_kb / 1024:.1f} MB, "
        f"max {max(s.rss_kb for s in samples) / 1024:.1f} MB; growth after warm-up "
        f"{growth_mb:+.1f} MB (limit {rss_limit_mb:g} MB)"
    )
    idle_before, idle_after = samples[0].fds, end.fds
    print(
        f"open descriptors: idle before the load {idle_before}, idle after it {idle_after}, "
        f"range under load {fd_range[0]}..{fd_range[1]}"
    )
    failures = []
    if not alive:
        failures.append("the guard process died")
    if growth_mb >= rss_limit_mb:
        failures.append(f"memory grew by {growth_mb:.1f} MB")
    if idle_after > idle_before + 2:
        failures.append(f"idle descriptors grew from {idle_before} to {idle_after}")
    if tally.unexpected:
        failures.append("unexpected statuses: " + "; ".join(tally.unexpected[:5]))
    print("PASS" if not failures else "FAIL: " + " | ".join(failures))
    return 0 if not failures else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--rss-limit-mb", type=float, default=10.0)
    parser.add_argument(
        "--warmup", type=float, default=30.0, help="seconds before the memory baseline"
    )
    args = parser.parse_args(argv)
    return asyncio.run(soak(args.minutes, args.sample, args.rss_limit_mb, args.warmup))


if __name__ == "__main__":
    sys.exit(main())
