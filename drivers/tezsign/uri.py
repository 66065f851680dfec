"""`tezsign://SERIAL/KEY` (spec README, key URIs): SERIAL `*` = first gadget; KEY = id or tz4."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from signer_guard import b58

SCHEME: Final = "tezsign://"
_ALIAS: Final = re.compile(r"^[a-z0-9_-]{1,64}$")
_SERIAL: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True, slots=True)
class TezSignURI:
    serial: str  # "*" = the first gadget found
    key: str  # key id (alias) or tz4 address

    @property
    def key_is_tz4(self) -> bool:
        return self.key.startswith("tz4")

    def __str__(self) -> str:
        return f"{SCHEME}{self.serial}/{self.key}"


def parse_uri(uri: str) -> TezSignURI:
    """Parse and check a TezSign key URI; raises ValueError naming what is wrong."""
    if not uri.startswith(SCHEME):
        raise ValueError(f"not a TezSign key URI (expected {SCHEME}SERIAL/KEY): {uri!r}")
    rest = uri[len(SCHEME) :]
    serial, sep, key = rest.partition("/")
    if not sep or not serial or not key:
        raise ValueError(f"TezSign key URI must be {SCHEME}SERIAL/KEY (SERIAL may be *): {uri!r}")
    if serial != "*" and not _SERIAL.match(serial):
        raise ValueError(f"bad gadget serial {serial!r} in {uri!r}")
    if key.startswith("tz4"):
        try:
            b58.decode("tz4", key)
        except b58.Base58Error as exc:
            raise ValueError(f"bad tz4 address in {uri!r}: {exc}") from exc
    elif not _ALIAS.match(key):
        raise ValueError(
            f"bad TezSign key {key!r} in {uri!r}: use a key id ([a-z0-9_-], at most 64) or a tz4"
        )
    return TezSignURI(serial=serial, key=key)
