"""Latency of one store step: `advance`, and `advance` + `store_signature`, etcd vs SQLite.

Run: `python -m bench.store_latency [-n N] [--json]`. etcd is a real 3-member cluster on loopback
(tests/etcd_cluster.py, etcd from scripts/install-etcd.sh); SQLite is a file in a temp dir (WAL,
synchronous=FULL). The two stores alternate request by request, so both see the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from bench.stats import summary_ms, table
from signer_guard.model import HWMKey, SignIntent
from signer_guard.rule import Advance
from signer_guard.store.base import Store
from signer_guard.store.etcd import EtcdStore
from signer_guard.store.sqlite import SqliteStore
from tests.etcd_cluster import EtcdCluster

KEY = HWMKey("NetXdQprcVkpaWU", "tz4HVR6aty9KwsQFHh81C1G7gBdhxT8kuytm", "attestation")
GUARD = "bench"


async def _step(store: Store, epoch: int, level: int, with_signature: bool) -> float:
    intent = SignIntent(KEY, level, 0, level.to_bytes(32, "big"))
    started = time.perf_counter()
    decision = await store.advance(intent, GUARD, epoch)
    if with_signature:
        await store.store_signature(intent, f"sig{level}", epoch)
    elapsed = time.perf_counter() - started
    if not isinstance(decision, Advance):
        raise RuntimeError(f"{store!r} did not advance to level {level}: {decision}")
    return elapsed


async def measure(n: int, work: Path) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with EtcdCluster() as cluster:
        stores: dict[str, Store] = {
            "etcd (3 members, loopback)": EtcdStore(cluster.store_url("bench")),
            "sqlite (FULL)": SqliteStore(work / "store.sqlite"),
        }
        epochs: dict[str, int] = {}
        try:
            for name, store in stores.items():
                await store.open()
                epochs[name] = (await store.claim_initial_fence(GUARD)).epoch
            samples: dict[str, list[float]] = {}
            level = 0
            for with_signature in (False, True):
                what = "advance + store_signature" if with_signature else "advance"
                for _ in range(50):  # warm-up
                    level += 1
                    for name, store in stores.items():
                        await _step(store, epochs[name], level, with_signature)
                for _ in range(n):
                    level += 1
                    for name, store in stores.items():
                        elapsed = await _step(store, epochs[name], level, with_signature)
                        samples.setdefault(f"{name}: {what}", []).append(elapsed)
        finally:
            for store in stores.values():
                await store.close()
    for label, values in samples.items():
        median, p99, mean = summary_ms(values)
        results[label] = {"median_ms": median, "p99_ms": p99, "mean_ms": mean, "n": len(values)}
    return results


async def main(n: int, as_json: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        results = await measure(n, Path(tmp))
    if as_json:
        print(json.dumps(results, indent=2))
        return
    rows: list[tuple[str, ...]] = [
        (label, f"{r['median_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['mean_ms']:.3f}")
        for label, r in results.items()
    ]
    print(f"store step latency, n={n} each")
    print(table(rows, ("store: step", "median ms", "p99 ms", "mean ms")))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=2000, help="samples per store and step")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.json))
