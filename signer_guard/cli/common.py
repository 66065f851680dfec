"""Helpers shared by the operator commands (hwm, status, failover, release)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tomllib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from signer_guard.config import default_store
from signer_guard.store import make_store
from signer_guard.store.base import Store

T = TypeVar("T")


def add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="the guard's TOML config (for store and guard_id)")
    p.add_argument(
        "--store",
        help="PATH, sqlite:PATH or etcd://… (default: the config's, else the XDG state dir)",
    )


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    if not getattr(args, "config", None):
        return {}
    try:
        with open(args.config, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(fail(f"cannot read config {args.config}: {exc}", 2)) from None


def store_url(args: argparse.Namespace) -> str:
    url = getattr(args, "store", None) or config_values(args).get("store") or default_store()
    return str(url)


def open_store(args: argparse.Namespace) -> Store:
    return make_store(store_url(args))


def with_store(args: argparse.Namespace, use: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store named by the arguments, run `use` on it, close it (StoreError passes)."""

    async def go() -> T:
        store = open_store(args)
        try:
            await store.open()
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(go())


def fail(message: str, code: int = 1) -> int:
    print(f"signer-guard: {message}", file=sys.stderr)
    return code
