"""Plain value types shared by the rule, the stores and the server."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Literal

Kind = Literal["block", "preattestation", "attestation"]
KINDS: tuple[Kind, ...] = ("block", "preattestation", "attestation")

#: Round stored for an imported legacy mark without a round: the whole level is taken.
WHOLE_LEVEL_ROUND = 2**31 - 1


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class HWMKey:
    chain_id: str  # b58 Net…
    pkh: str  # b58 signing pkh
    kind: Kind


@dataclass(frozen=True, slots=True)
class HWMRecord:
    chain_id: str
    pkh: str
    kind: Kind
    level: int
    round: int
    hash: bytes | None  # blake2b-256 of the whole request
    signature: str | None  # b58, the signature cache
    epoch: int
    updated_at: str

    @property
    def key(self) -> HWMKey:
        return HWMKey(self.chain_id, self.pkh, self.kind)

    def to_json(self) -> dict[str, object]:
        return {
            "chain_id": self.chain_id,
            "pkh": self.pkh,
            "kind": self.kind,
            "level": self.level,
            "round": self.round,
            "hash": self.hash.hex() if self.hash is not None else None,
            "signature": self.signature,
            "epoch": self.epoch,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Fence:
    epoch: int
    holder: str  # guard_id, "" after release
    fence_level: int
    updated_at: str

    def to_json(self) -> dict[str, object]:
        return {
            "epoch": self.epoch,
            "holder": self.holder,
            "fence_level": self.fence_level,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class SignIntent:
    """What the store step needs to know about one request."""

    key: HWMKey
    level: int
    round: int
    hash: bytes  # blake2b-256 of the whole request
