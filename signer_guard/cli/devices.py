"""`signer-guard devices` and `signer-guard unlock`: attached TezSign and Ledger devices."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from signer_guard.cli.common import add_store_args, fail, with_store
from signer_guard.failover_devices import DirectDevices
from signer_guard.store.base import Store, StoreError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("devices", help="list attached TezSign gadgets and Ledgers")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--ledger-tcp",
        metavar="HOST:PORT",
        help="also query a Ledger emulator (Speculos) at HOST:PORT",
    )
    p.set_defaults(func=run)

    u = sub.add_parser(
        "unlock",
        help="unlock TezSign keys (passphrase from a file or "
        "$TEZSIGN_PASSPHRASE, never from the command line)",
    )
    u.add_argument("key_ids", nargs="+", metavar="KEY", help="TezSign key ids, e.g. consensus")
    u.add_argument("--serial", default="*", help="gadget serial (default: the first one)")
    u.add_argument("--passphrase-file", help="file holding the passphrase (mode 0600)")
    u.set_defaults(func=run_unlock)
    register_raise(sub)


def _tezsign() -> list[dict[str, Any]]:
    from drivers.tezsign import list_devices

    try:
        return [dict(d, type="tezsign") for d in list_devices()]
    except Exception as exc:  # no libusb, no permission: report, do not crash
        return [{"type": "tezsign", "error": f"cannot enumerate USB devices: {exc}"}]


def _ledger(tcp: tuple[str, int] | None) -> list[dict[str, Any]]:
    from drivers.ledger.discover import list_devices

    try:
        return list_devices(tcp=tcp) if tcp else list_devices()
    except Exception as exc:
        return [{"type": "ledger", "error": f"cannot enumerate HID devices: {exc}"}]


def _print(devices: list[dict[str, Any]]) -> None:
    from drivers.ledger.discover import format_device

    if not devices:
        print("no TezSign gadget or Ledger found")
    for d in devices:
        if d.get("type") == "ledger":
            print(format_device(d))
            continue
        if d.get("error") and not d.get("serial"):
            print(f"tezsign: {d['error']}")
            continue
        print(
            f"tezsign {d.get('product') or 'TezSign'} serial {d.get('serial')} "
            f"version {d.get('version')}" + (f"  error: {d['error']}" if d.get("error") else "")
        )
        for k in d.get("keys", []):
            hwm = k.get("device_hwm")
            marks = (
                ", ".join(f"{kind} ({v['level']}, {v['round']})" for kind, v in hwm.items())
                if hwm
                else "HWM unreadable while locked"
            )
            print(f"    key {k.get('key_id')} {k.get('tz4')} {k.get('lock_state')}: {marks}")


def run(args: argparse.Namespace) -> int:
    tcp = None
    if args.ledger_tcp:
        host, _, port = args.ledger_tcp.rpartition(":")
        if not host or not port.isdigit():
            return fail("--ledger-tcp must be HOST:PORT", 2)
        tcp = (host, int(port))
    devices = _tezsign() + _ledger(tcp)
    if args.json:
        print(json.dumps(devices, indent=2))
    else:
        _print(devices)
    return 0


def run_unlock(args: argparse.Namespace) -> int:
    from drivers.tezsign import load_passphrase
    from drivers.tezsign.admin import unlock_keys

    try:
        passphrase = load_passphrase(args.passphrase_file)
    except ValueError as exc:
        return fail(str(exc), 2)
    try:
        results = unlock_keys(args.key_ids, passphrase, serial=args.serial)
    except Exception as exc:
        return fail(f"unlock failed: {exc}")
    code = 0
    for r in results:
        print(r)
        if not getattr(r, "ok", True):
            code = 1
    return code


def register_raise(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser(
        "raise-device-hwm",
        help="raise a device's own watermark to the guard's (a TezSign after an image update, a "
        "Ledger whose HWM lived in RAM); stop the serve that holds the device first",
    )
    add_store_args(r)
    r.add_argument("--key", required=True, help="tezsign://SERIAL/KEY or ledger://ID/CURVE/PATH")
    r.add_argument("--level", type=int, help="default: the store's highest level for the key")
    r.set_defaults(func=run_raise)


async def _raise(store: Store, uri: str, level: int | None) -> int:
    devices = DirectDevices()
    try:
        for warning in await devices.open([uri]):
            print(f"signer-guard: {warning}", file=sys.stderr)
        if not devices.devices:
            return 1
        dev = devices.devices[0]
        if level is None:
            levels = [r.level for r in await store.list_records() if r.pkh == dev.pkh]
            if not levels:
                return fail(f"the store has no watermark for {dev.pkh}: pass --level", 2)
            level = max(levels)
        if dev.level is not None and dev.level >= level:
            print(f"{dev.pkh}: device HWM {dev.level} is already at or above {level}: unchanged")
            return 0
        if dev.backend.backend_type == "tezsign":
            raised, warnings = await devices.raise_tezsign(level)
            problem = warnings[0] if warnings else None
        else:
            problem = await devices.reset_ledger(dev, level, print)
            raised = [] if problem else [dev.pkh]
        if problem or not raised:
            return fail(problem or f"{dev.pkh}: not raised")
        print(f"{dev.pkh}: device HWM raised from {dev.level} to {level}")
        return 0
    finally:
        await devices.close()


def run_raise(args: argparse.Namespace) -> int:
    if args.level is not None and args.level < 0:
        return fail("--level must not be negative", 2)
    try:
        return with_store(args, lambda store: _raise(store, args.key, args.level))
    except StoreError as exc:
        return fail(f"store: {exc}")
