"""`signer-guard serve`: the drop-in remote signer."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from aiohttp import web

from signer_guard.auth import Authorizer
from signer_guard.backends import KeyUriError, make_backend
from signer_guard.config import Config, ConfigError, load, split_listen
from signer_guard.guard import Guard, KeySlot
from signer_guard.journal import Journal
from signer_guard.metrics import Metrics
from signer_guard.node import NodeHead
from signer_guard.policy import Policy
from signer_guard.server import make_app
from signer_guard.store import make_store
from signer_guard.store.base import GuardIdInUse, StoreCorrupt, StoreError

log = logging.getLogger("signer_guard")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve the Octez remote-signer protocol, guarded")
    p.add_argument("--config", help="TOML file; every flag has a key of the same name")
    p.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:6732)")
    p.add_argument("--store", help="PATH, sqlite:PATH or etcd://H:P,H:P,H:P/PREFIX")
    p.add_argument(
        "--key",
        action="append",
        dest="keys",
        default=[],
        help="key URI (repeatable): http://HOST:PORT/PKH, unencrypted:SECRET, "
        "ledger://…, tezsign://…",
    )
    p.add_argument(
        "--guard-id", dest="guard_id", help="unique id of this guard (default: host name)"
    )
    p.add_argument("--standby", action="store_true", help="do not take the fence on an empty store")
    p.add_argument("--node", help="Octez node RPC URL, for the level bound")
    p.add_argument(
        "--accept-device-hwm",
        dest="accept_device_hwm",
        action="store_true",
        help="raise the store to a device HWM that is ahead of it",
    )
    p.add_argument("--log-level", dest="log_level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        k: getattr(args, k)
        for k in (
            "listen",
            "store",
            "keys",
            "guard_id",
            "standby",
            "node",
            "accept_device_hwm",
            "log_level",
        )
    }


def build_guard(config: Config) -> Guard:
    slots = [
        KeySlot(make_backend(uri, upstream_auth_key=config.upstream_auth_key))
        for uri in config.keys
    ]
    return Guard(
        guard_id=config.guard_id,
        store=make_store(config.store),
        slots=slots,
        policy=Policy.from_config(config),
        authorizer=Authorizer.from_b58(config.authorized_keys),
        journal=Journal(
            config.journal_path, max_bytes=config.journal_max_bytes, backups=config.journal_backups
        ),
        metrics=Metrics(),
        node=NodeHead(config.node),
        standby=config.standby,
        verify_signatures=config.verify_signatures,
        accept_device_hwm=config.accept_device_hwm,
        sync_device_hwm=config.sync_device_hwm,
        chains=tuple(config.allowed_chains),
    )


async def serve(config: Config, ready: asyncio.Event | None = None) -> int:
    try:
        guard = build_guard(config)
    except (KeyUriError, ValueError) as exc:
        log.error("bad key configuration: %s", exc)
        return 2
    try:
        await guard.start()
    except GuardIdInUse as exc:
        log.error("%s", exc)
        await guard.close()
        return 3
    except StoreCorrupt as exc:
        log.error("store is damaged, refusing to start: %s", exc)
        return 1
    except StoreError as exc:
        log.error("cannot open the store %s: %s", config.store, exc)
        await guard.close()
        return 1
    host, port = split_listen(config.listen)
    runner = web.AppRunner(
        make_app(guard, max_body=config.max_body_bytes), access_log=None, handle_signals=False
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s: %s", config.listen, exc.strerror)
        await runner.cleanup()
        await guard.close()
        return 1
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info(
        "signer-guard %s listening on http://%s:%d/ (store %s, state %s)",
        guard.guard_id,
        host,
        bound,
        guard.store.kind,
        guard.state,
    )
    print(f"signer-guard listening on http://{host}:{bound}/ state={guard.state}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
        await guard.close()
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        config = load(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"signer-guard: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if any(k.startswith("unencrypted:") for k in args.keys):
        log.warning(
            "a secret key was given on the command line, where other users can read it "
            "(ps, shell history): put it in the config file (mode 0600) instead"
        )
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(config))
    return 0
