"""`signer-guard serve`: the drop-in remote signer."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import resource
import signal
import socket
import stat
import sys
from pathlib import Path
from typing import Final

from aiohttp import web

from signer_guard.auth import Authorizer
from signer_guard.backends import KeyUriError, make_backend
from signer_guard.config import Config, ConfigError, load, split_listen
from signer_guard.guard import Guard, KeySlot
from signer_guard.journal import Journal
from signer_guard.metrics import Metrics
from signer_guard.node import NodeHead
from signer_guard.policy import Policy
from signer_guard.server import make_app, runner_options
from signer_guard.store import make_store
from signer_guard.store.base import GuardIdInUse, StoreCorrupt, StoreError

log = logging.getLogger("signer_guard")

#: Pending connections the kernel queues for us (a burst of 1,000 connects must not be dropped).
LISTEN_BACKLOG: Final = 1024
#: Every file this process creates (store, WAL, locks, journal) is private to its user.
UMASK: Final = 0o077
_SECRET = re.compile(r"\b(edesk|spesk|p2esk|BLesk|edsk|spsk|p2sk|BLsk)[1-9A-HJ-NP-Za-km-z]{8,}")


def redact(text: str) -> str:
    """`text` with every b58 secret key replaced by its prefix, for error messages and logs."""
    return _SECRET.sub(lambda m: f"{m.group(1)}…(redacted)", text)


def non_loopback_addresses(host: str) -> list[str]:
    """The addresses `host` resolves to that are not loopback (all of them if it does not
    resolve). Binding to any of them needs `allow_remote` (and authorized_keys)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return [host]
    out = []
    for info in infos:
        addr = str(info[4][0]).partition("%")[0]
        if not ipaddress.ip_address(addr).is_loopback:
            out.append(addr)
    return out or ([] if infos else [host])


def secret_in_config(config: Config) -> bool:
    return config.upstream_auth_key is not None or any(
        k.startswith("unencrypted:") for k in config.keys
    )


def check_config_file_mode(path: str | None, config: Config) -> None:
    """Warn when a config file that holds a secret can be read by other users."""
    if not path or not secret_in_config(config):
        return
    try:
        mode = stat.S_IMODE(Path(path).stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning(
            "config file %s holds a secret key but has mode %04o: run chmod 600 %s",
            path,
            mode,
            path,
        )


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
    host, port = split_listen(config.listen)
    if not config.allow_remote:
        remote = await asyncio.to_thread(non_loopback_addresses, host)
        if remote:
            log.error(
                "listen address %s resolves to %s, which is not loopback: set allow_remote = true "
                "and configure authorized_keys to serve other hosts",
                config.listen,
                ", ".join(remote),
            )
            return 2
    try:
        guard = build_guard(config)
    except (KeyUriError, ValueError) as exc:
        log.error("bad key configuration: %s", redact(str(exc)))
        return 2
    try:
        await guard.start()
    except GuardIdInUse as exc:
        log.error("%s", exc)
        await guard.close()
        return 3
    except StoreCorrupt as exc:
        log.error("store is damaged, refusing to start: %s", exc)
        await guard.close()
        return 1
    except StoreError as exc:
        log.error("cannot open the store %s: %s", config.store, exc)
        await guard.close()
        return 1
    app = make_app(guard, max_body=config.max_body_bytes, allow_remote=config.allow_remote)
    runner = web.AppRunner(app, **runner_options())  # type: ignore[arg-type]
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=LISTEN_BACKLOG)
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


def private_process() -> None:
    """Files we create are private (umask 077) and no core dump can carry a key to disk."""
    os.umask(os.umask(UMASK) | UMASK)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run(args: argparse.Namespace) -> int:
    private_process()
    try:
        config = load(args.config, _overrides(args))
    except (ConfigError, ValueError) as exc:
        print(f"signer-guard: {redact(str(exc))}", file=sys.stderr)
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
    check_config_file_mode(args.config, config)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(config))
    return 0
