"""`signer-guard release`: the holder gives up the fence for a planned switchover (§7.1)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import aiohttp

from signer_guard.cli.common import add_store_args, fail
from signer_guard.cli.failover import add_guard_args, load_config, local_url, print_json
from signer_guard.config import ConfigError
from signer_guard.failover import EXIT_ERROR, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, release
from signer_guard.failover_sources import get_status
from signer_guard.store import make_store
from signer_guard.store.base import NotHolder, StoreError

STANDBY_TIMEOUT = 3.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "release",
        help="planned switchover: the holder gives up the fence (its serve turns standby)",
    )
    add_store_args(p)
    add_guard_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON report")
    p.set_defaults(func=run)


async def _wait_standby(url: str) -> str:
    """Poll the local guard until it shows standby (≤ 3 s); its last state, or "not running"."""
    deadline = time.monotonic() + STANDBY_TIMEOUT
    state = "not running"
    async with aiohttp.ClientSession() as session:
        while True:
            status = await get_status(session, url, 1.0)
            state = str(status.get("state")) if status else "not running"
            if state in ("standby", "not running") or time.monotonic() >= deadline:
                return state
            await asyncio.sleep(0.1)


async def _release(store_url: str, guard_id: str, url: str | None) -> tuple[int, dict[str, Any]]:
    store = make_store(store_url)
    try:
        await store.open()
        fence = await release(store, guard_id)
    except NotHolder as exc:
        return EXIT_REFUSED, {"ok": False, "refused": "not_holder", "detail": str(exc)}
    except StoreError as exc:
        return EXIT_ERROR, {"ok": False, "error": "store_unavailable", "detail": str(exc)}
    finally:
        await store.close()
    body: dict[str, Any] = {
        "ok": True,
        "guard_id": guard_id,
        "epoch": fence.epoch,
        "holder": fence.holder,
        "fence_level": fence.fence_level,
    }
    if url is not None:
        body["local_guard"] = {"state": await _wait_standby(url)}
    return EXIT_OK, body


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args)
        url = local_url(args, config)
    except (ConfigError, ValueError) as exc:
        return fail(str(exc), EXIT_USAGE)
    try:
        code, body = asyncio.run(_release(config.store, config.guard_id, url))
    except ValueError as exc:  # a malformed store URL
        return fail(str(exc), EXIT_USAGE)
    if args.json:
        print_json(body)
        return code
    if code != EXIT_OK:
        print(f"✘ release: {body['detail']}")
        print(f"signer-guard: release refused: {body['detail']}", file=sys.stderr)
        return code
    print(
        f"✔ release: guard {config.guard_id!r} gave up the fence (epoch {body['epoch']}); "
        f"fence level {body['fence_level']}"
    )
    local = body.get("local_guard")
    if local is not None:
        ok = local["state"] in ("standby", "not running")
        print(f"{'✔' if ok else '✘'} local guard: {local['state']}")
    print(
        "next: run `signer-guard failover --primary <this guard's URL>` on the guard that takes "
        "over"
    )
    return code
