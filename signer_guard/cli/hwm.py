"""`signer-guard hwm show|set|export|import`: inspect and move high watermarks."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Awaitable
from pathlib import Path

from signer_guard import b58, hwm_io
from signer_guard.cli.common import add_store_args, fail, with_store
from signer_guard.model import KINDS, HWMKey, HWMRecord, Kind
from signer_guard.store.base import Store, StoreError

log = logging.getLogger("signer_guard.hwm")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("hwm", help="show, set, export or import high watermarks")
    hsub = p.add_subparsers(dest="hwm_command", required=True, metavar="ACTION")

    show = hsub.add_parser("show", help="list every HWM record")
    add_store_args(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_show)

    st = hsub.add_parser("set", help="raise one record (lowering needs --allow-lower --yes)")
    add_store_args(st)
    st.add_argument("--chain", required=True, help="chain id, Net…")
    st.add_argument("--pkh", required=True, help="signing pkh, tz1…tz4")
    st.add_argument("--kind", required=True, choices=KINDS)
    st.add_argument("--level", required=True, type=int)
    st.add_argument("--round", type=int, default=0)
    st.add_argument("--allow-lower", action="store_true")
    st.add_argument("--yes", action="store_true")
    st.set_defaults(func=run_set)

    ex = hsub.add_parser("export", help="write the records in octez-signer or JSON format")
    add_store_args(ex)
    ex.add_argument("--format", choices=("octez", "json"), required=True)
    ex.add_argument("path", nargs="?", help="octez: a directory; json: a file (default stdout)")
    ex.set_defaults(func=run_export)

    im = hsub.add_parser("import", help="max-merge records from octez-signer, Signatory or JSON")
    add_store_args(im)
    im.add_argument("--format", choices=("octez", "signatory", "json"), required=True)
    im.add_argument(
        "path",
        help="octez: base dir; signatory: watermark_v2 dir or <chain>.json; json: a file or -",
    )
    im.set_defaults(func=run_import)


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="signer-guard: %(levelname)s: %(message)s"
    )


def _list(store: Store) -> Awaitable[list[HWMRecord]]:
    return store.list_records()


def run_show(args: argparse.Namespace) -> int:
    try:
        records = with_store(args, _list)
    except StoreError as exc:
        return fail(f"store: {exc}")
    if args.json:
        print(hwm_io.export_json(records))
        return 0
    if not records:
        print("no high watermarks recorded")
        return 0
    print(f"{'chain':<16} {'pkh':<37} {'kind':<15} {'level':>10} {'round':>6}  cached  updated")
    for r in records:
        print(
            f"{r.chain_id:<16} {r.pkh:<37} {r.kind:<15} {r.level:>10} {r.round:>6}  "
            f"{'yes' if r.signature else 'no ':<6}  {r.updated_at}"
        )
    return 0


def run_set(args: argparse.Namespace) -> int:
    try:
        b58.decode("Net", args.chain)
        b58.identify(args.pkh, ("tz1", "tz2", "tz3", "tz4"))
    except ValueError as exc:
        return fail(str(exc), 2)
    if args.level < 0 or args.round < 0 or args.level >= 2**31 or args.round >= 2**31:
        return fail("level and round must be between 0 and 2^31-1", 2)
    if args.allow_lower and not args.yes:
        return fail(
            "lowering a watermark can allow a double signature: add --yes if you are sure", 3
        )
    kind: Kind = args.kind
    key = HWMKey(args.chain, args.pkh, kind)

    async def go(store: Store) -> int:
        old = await store.get_record(key)
        lowering = old is not None and (args.level, args.round) < (old.level, old.round)
        if lowering and not args.allow_lower and old is not None:
            print(
                f"unchanged: {kind} {args.pkh} on {args.chain} is already at "
                f"({old.level}, {old.round}) ≥ ({args.level}, {args.round}); lowering "
                "needs --allow-lower --yes"
            )
            return 0
        result = await store.set_record(key, args.level, args.round, allow_lower=args.allow_lower)
        if lowering and result.changed and old is not None:
            log.warning(
                "AUDIT: lowered %s %s on %s from (%d, %d) to (%d, %d)",
                kind, args.pkh, args.chain, old.level, old.round, args.level, args.round,
            )  # fmt: skip
        if result.changed:
            prev = f"({old.level}, {old.round})" if old else "none"
            print(f"set {kind} {args.pkh} on {args.chain}: {prev} -> ({args.level}, {args.round})")
        else:
            print(f"unchanged: already at or above ({args.level}, {args.round})")
        return 0

    _setup_logging()
    try:
        return with_store(args, go)
    except StoreError as exc:
        return fail(f"store: {exc}")


def run_export(args: argparse.Namespace) -> int:
    try:
        records = with_store(args, _list)
    except StoreError as exc:
        return fail(f"store: {exc}")
    if args.format == "json":
        text = hwm_io.export_json(records)
        if args.path and args.path != "-":
            hwm_io.write_atomic(Path(args.path), text + "\n")  # mkstemp: mode 0600
        else:
            print(text)
        return 0
    if not args.path:
        return fail("--format octez needs a directory", 2)
    try:
        hwm_io.export_octez(records, Path(args.path))
    except OSError as exc:
        return fail(f"cannot write {args.path}: {exc.strerror}")
    print(f"exported {len(records)} records to {args.path}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    _setup_logging()
    try:
        if args.format == "octez":
            records = hwm_io.read_octez(Path(args.path))
        elif args.format == "signatory":
            records = hwm_io.read_signatory(Path(args.path))
        else:
            text = sys.stdin.read() if args.path == "-" else Path(args.path).read_text()
            records = hwm_io.read_json(text)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        return fail(f"cannot import {args.path}: {exc}", 2)

    try:
        changed = with_store(args, lambda store: store.merge_records(records))
    except StoreError as exc:
        return fail(f"store: {exc}")
    print(f"imported {len(records)} records, {changed} raised (max-merge, nothing lowered)")
    return 0
