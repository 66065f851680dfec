"""`signer-guard status`: the running guard's /status, or the store's view when none runs."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import aiohttp

from signer_guard.cli.common import add_store_args, config_values, fail, with_store
from signer_guard.config import DEFAULT_LISTEN
from signer_guard.store.base import Store, StoreError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="state, fence and watermarks of the guard")
    add_store_args(p)
    p.add_argument(
        "--url", help=f"the guard's base URL (default: from config, else http://{DEFAULT_LISTEN}/)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


async def fetch_status(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """GET URL/status; None when nothing answers."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                url.rstrip("/") + "/status", timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp,
        ):
            if resp.status != 200:
                return None
            body = await resp.json(content_type=None)
            return body if isinstance(body, dict) else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def store_status(store: Store) -> dict[str, Any]:
    """What the store says when no guard answers."""
    fence = await store.read_fence()
    records = await store.list_records()
    return {
        "state": "not running",
        "guard_id": None,
        "epoch": fence.epoch if fence else None,
        "fence_level": fence.fence_level if fence else None,
        "holder": fence.holder if fence else None,
        "store": {"kind": store.kind, "ok": True},
        "records": [r.to_json() for r in records],
    }


def _print_text(st: dict[str, Any]) -> None:
    print(f"state:       {st.get('state')}")
    print(f"guard id:    {st.get('guard_id')}")
    print(
        f"fence:       epoch {st.get('epoch')}, holder {st.get('holder')!r}, "
        f"fence level {st.get('fence_level')}"
    )
    store = st.get("store") or {}
    print(f"store:       {store.get('kind')} ({'ok' if store.get('ok') else 'UNAVAILABLE'})")
    for key in st.get("keys", []):
        print(f"key {key.get('pkh')} [{key.get('backend')}] ready={key.get('ready')}")
        for kind, lr in sorted((key.get("hwm") or {}).items()):
            dev = (key.get("device_hwm") or {}).get(kind)
            print(f"    {kind:<15} hwm {lr}" + (f"  device {dev}" if dev else ""))
        if key.get("last_signed"):
            print(f"    last signed {key['last_signed']}")
    for rec in st.get("records", []):
        print(
            f"  {rec['pkh']} {rec['kind']:<15} {rec['chain_id']} ({rec['level']}, {rec['round']})"
        )
    for w in st.get("warnings", []):
        print(f"warning:     {w}")


def run(args: argparse.Namespace) -> int:
    url = args.url
    if url is None:
        listen = str(config_values(args).get("listen", DEFAULT_LISTEN))
        url = f"http://{listen}/"
    st = asyncio.run(fetch_status(url))
    if st is None:
        try:
            st = with_store(args, store_status)
        except StoreError as exc:
            return fail(f"no guard answers at {url} and the store cannot be read: {exc}")
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        _print_text(st)
    return 0
