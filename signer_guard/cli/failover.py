"""`signer-guard failover`: take over signing on this host (fencing-and-failover.md §7)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from signer_guard.cli.common import add_store_args, fail
from signer_guard.config import Config, ConfigError, load, split_listen
from signer_guard.failover import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    FailoverOptions,
    FailoverResult,
    failover,
)
from signer_guard.store import make_store
from signer_guard.store.base import StoreError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "failover",
        help="take over signing on this host: raise every watermark to the last level + margin "
        "and take the fence",
    )
    add_store_args(p)
    add_guard_args(p)
    p.add_argument("--level", type=int, help="the last level the primary may have signed")
    p.add_argument("--node", help="Octez node RPC URL: its head level is a source of the level")
    p.add_argument("--tzkt", help="TzKT API base URL (e.g. https://api.tzkt.io): a level source")
    p.add_argument("--margin", type=int, default=10, help="levels added above the last (10)")
    p.add_argument("--primary", help="the primary guard's base URL, probed at /status")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--force",
        action="store_true",
        help="go on although the primary looks active (still needs its lease expired, or "
        "--yes / a typed confirmation that its signer is unplugged)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON report")
    p.add_argument(
        "--wait", action="store_true", help="wait for the first signature above the fence level"
    )
    p.add_argument("--wait-timeout", dest="wait_timeout", type=float, default=60.0)
    p.set_defaults(func=run)


def add_guard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guard-id", dest="guard_id", help="this guard's id (default: the config's)")
    p.add_argument(
        "--url", help="the local guard's base URL (default: from the config's listen address)"
    )


def load_config(args: argparse.Namespace) -> Config:
    """The guard's config with --store and --guard-id applied; raises ConfigError."""
    return load(
        getattr(args, "config", None),
        {"store": getattr(args, "store", None), "guard_id": getattr(args, "guard_id", None)},
    )


def local_url(args: argparse.Namespace, config: Config) -> str | None:
    """The local `serve`'s base URL: --url, else the config's listen address (unless port 0)."""
    if getattr(args, "url", None):
        return str(args.url)
    host, port = split_listen(config.listen)
    if port == 0:
        return None
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


async def ask(question: str) -> bool:
    """Ask on the terminal; only "yes" confirms."""
    print(f"{question}\nType yes to continue: ", end="", file=sys.stderr, flush=True)
    answer: str = await asyncio.to_thread(sys.stdin.readline)
    return answer.strip() == "yes"


def print_json(body: dict[str, Any]) -> None:
    print(json.dumps(body, indent=2))


async def _run(config: Config, opts: FailoverOptions) -> FailoverResult:
    store = make_store(config.store)
    try:
        await store.open()
    except StoreError as exc:
        await store.close()
        detail = f"cannot open the store {config.store}: {exc}"
        if opts.emit is not None:
            opts.emit(f"✘ read: {detail}")
        return FailoverResult(
            EXIT_ERROR, {"ok": False, "error": "store_unavailable", "detail": detail}
        )
    try:
        return await failover(store, opts)
    finally:
        await store.close()


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args)
        url = local_url(args, config)
    except (ConfigError, ValueError) as exc:
        return fail(str(exc), EXIT_USAGE)
    if args.margin < 0:
        return fail(f"--margin must be >= 0 (got {args.margin})", EXIT_USAGE)
    if args.level is not None and args.level < 0:
        return fail(f"--level must be >= 0 (got {args.level})", EXIT_USAGE)
    if args.wait_timeout <= 0:
        return fail("--wait-timeout must be > 0", EXIT_USAGE)
    opts = FailoverOptions(
        guard_id=config.guard_id,
        keys=list(config.keys),
        allowed_chains=list(config.allowed_chains),
        local_url=url,
        level=args.level,
        node=args.node or config.node,
        tzkt=args.tzkt,
        margin=args.margin,
        primary=args.primary,
        yes=args.yes,
        force=args.force,
        wait=args.wait,
        wait_timeout=args.wait_timeout,
        confirm=ask if sys.stdin.isatty() else None,
        emit=None if args.json else (lambda line: print(line, flush=True)),
    )
    try:
        result = asyncio.run(_run(config, opts))
    except ValueError as exc:  # a malformed store URL
        return fail(str(exc), EXIT_USAGE)
    if args.json:
        print_json(result.report)
    elif result.code != EXIT_OK:
        kind = "refused" if result.report.get("refused") else "failed"
        print(f"signer-guard: failover {kind}: {result.report.get('detail')}", file=sys.stderr)
    return result.code
