"""`signer-guard decode HEX [--json]`: show what a signing request asks for (spec §7)."""

from __future__ import annotations

import argparse
import json
import sys

from signer_guard.codec import DecodeError, decode, parse_hex

EXIT_OK, EXIT_USAGE = 0, 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "decode",
        help="decode a signing request (hex)",
        description="Decode a Tezos signing request and print magic, kind, chain, level, round, "
        "tag, slot and payload hash. Malformed input exits with status 2.",
    )
    parser.add_argument(
        "hex", metavar="HEX", help="the request as hex (optional 0x), or - for stdin"
    )
    parser.add_argument("--json", action="store_true", help="print one compact JSON object")
    parser.set_defaults(func=run)


def _format_text(fields: dict[str, object]) -> str:
    def show(value: object) -> str:
        return "null" if value is None else str(value)

    return " ".join(f"{key}={show(value)}" for key, value in fields.items())


def run(args: argparse.Namespace) -> int:
    text: str = args.hex
    if text == "-":
        # latin-1 maps every byte to a character, so stray bytes are reported as non-hex.
        text = sys.stdin.buffer.read().decode("latin-1")
    try:
        request = decode(parse_hex(text))
    except DecodeError as err:
        print(f"signer-guard decode: {err}", file=sys.stderr)
        return EXIT_USAGE
    fields = request.to_json()
    if args.json:
        print(json.dumps(fields, separators=(",", ":")))
    else:
        print(_format_text(fields))
    return EXIT_OK
