"""`ledger://ID/CURVE/PATH[?tcp=HOST:PORT]` (spec README, key URIs)."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from drivers.ledger import apdu
from drivers.ledger.apdu import Curve
from drivers.ledger.tcp_transport import parse_host_port
from signer_guard import b58


class LedgerURIError(ValueError):
    """A ledger:// key URI that cannot be used; the message says why."""


@dataclass(frozen=True)
class LedgerURI:
    device_id: str | None  # None = first device ("*"), else the tz1 of the 44'/1729' ed25519 key
    curve: Curve
    path: tuple[int, ...]  # full path, starting with 44'/1729'
    tcp: tuple[str, int] | None

    @property
    def path_text(self) -> str:
        return apdu.format_path(self.path)


def _component(text: str, uri: str) -> int:
    hardened = text.endswith(("h", "'", "H"))
    number = text[:-1] if hardened else text
    if not number.isdigit():
        raise LedgerURIError(f"{uri}: path component {text!r} is not a number (e.g. 0h)")
    value = int(number)
    if value >= apdu.HARDENED:
        raise LedgerURIError(f"{uri}: path component {text!r} is too large")
    return value | apdu.HARDENED if hardened else value


def parse_uri(uri: str) -> LedgerURI:
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme != "ledger":
        raise LedgerURIError(f"{uri}: not a ledger:// URI")
    device = parsed.netloc
    if not device:
        raise LedgerURIError(f"{uri}: missing device id (use * or a tz1)")
    device_id: str | None = None
    if device != "*":
        try:
            b58.decode("tz1", device)
        except (b58.Base58Error, ValueError) as exc:
            raise LedgerURIError(
                f"{uri}: device id {device!r} is neither * nor a tz1; octez animal ids "
                "(e.g. 'ugly-dog-…') are not supported: use the tz1 of the device's "
                "44'/1729' ed25519 key (see `signer-guard devices`)"
            ) from exc
        device_id = device
    parts = [p for p in parsed.path.split("/") if p]
    if not parts:
        raise LedgerURIError(f"{uri}: missing curve (ed25519, secp256k1, p256 or bip25519)")
    curve = apdu.CURVE_BY_NAME.get(parts[0].lower())
    if curve is None:
        raise LedgerURIError(
            f"{uri}: unknown curve {parts[0]!r} (ed25519, secp256k1, p256 or bip25519)"
        )
    path = apdu.TEZOS_ROOT + tuple(_component(p, uri) for p in parts[1:])
    if len(path) > apdu.MAX_PATH_COMPONENTS:
        raise LedgerURIError(
            f"{uri}: at most {apdu.MAX_PATH_COMPONENTS - 2} path components after 44'/1729'"
        )
    tcp: tuple[str, int] | None = None
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    unknown = set(query) - {"tcp"}
    if unknown:
        raise LedgerURIError(f"{uri}: unknown query parameter(s) {', '.join(sorted(unknown))}")
    if "tcp" in query:
        try:
            tcp = parse_host_port(query["tcp"][-1])
        except ValueError as exc:
            raise LedgerURIError(f"{uri}: {exc}") from exc
    return LedgerURI(device_id, curve, path, tcp)
