"""`signer-guard` command line: one module per command group, registered here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from signer_guard import __version__
from signer_guard.cli import decode, devices, failover, hwm, release, serve, status

# Exit codes (spec README): 0 ok, 1 operational error, 2 usage error, 3 refused for safety.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3

COMMANDS = (serve, decode, hwm, status, failover, release, devices)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="signer-guard",
        description="Tezos signing proxy that refuses to double sign.",
    )
    parser.add_argument("--version", action="version", version=f"signer-guard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
