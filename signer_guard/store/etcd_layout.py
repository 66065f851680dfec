"""The etcd store's key layout and JSON values (fencing-and-failover.md §4).

```
P/meta                          {"schema":1}
P/fence                         {"epoch":…,"holder":…,"fence_level":…,"updated_at":…}   no lease
P/hwm/<chain_id>/<pkh>/<kind>   {"level":…,"round":…,"hash":hex|null,"signature":…|null,
                                 "epoch":…,"updated_at":…}                            no lease
P/alive/<guard_id>              {"guard_id":…,"state":…,"epoch":…,"host":…,"pid":…,"since":…}
                                                                                      lease TTL 10 s
```
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from signer_guard.model import KINDS, Fence, HWMKey, HWMRecord
from signer_guard.store.base import StoreCorrupt
from signer_guard.store.etcd_client import prefix_end

SCHEMA_VERSION = 1


def parse_etcd_url(url: str) -> tuple[list[str], str]:
    """`etcd://H1:P1,H2:P2/PREFIX` → (["http://H1:P1", "http://H2:P2"], "PREFIX").

    The port defaults to 2379. PREFIX is required; it may contain `/` (e.g. `sg/mainnet`).
    Raises ValueError with a message naming what is wrong.
    """
    if not url.startswith("etcd://"):
        raise ValueError(f"not an etcd store URL (etcd://HOST:PORT[,HOST:PORT...]/PREFIX): {url}")
    rest = url[len("etcd://") :]
    hosts, slash, path = rest.partition("/")
    prefix = path.strip("/")
    if not slash or not prefix:
        raise ValueError(f"etcd store URL has no /PREFIX: {url}")
    if "?" in prefix or "#" in prefix:
        raise ValueError(f"etcd store URL prefix may not contain '?' or '#': {url}")
    endpoints = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"etcd store URL has an empty host: {url}")
        parts = urlsplit(f"http://{item}")
        try:
            port = parts.port or 2379
        except ValueError as exc:
            raise ValueError(f"etcd store URL has a bad port in {item!r}: {url}") from exc
        host = parts.hostname
        if not host or parts.username or parts.password or parts.path:
            raise ValueError(f"etcd store URL has a bad host {item!r}: {url}")
        endpoints.append(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
    return endpoints, prefix


@dataclass(frozen=True, slots=True)
class Layout:
    """The keys of one namespace (one prefix)."""

    prefix: str

    def _key(self, suffix: str) -> bytes:
        return f"{self.prefix}/{suffix}".encode()

    @property
    def meta(self) -> bytes:
        return self._key("meta")

    @property
    def fence(self) -> bytes:
        return self._key("fence")

    @property
    def hwm_start(self) -> bytes:
        return self._key("hwm/")

    @property
    def hwm_end(self) -> bytes:
        return prefix_end(self.hwm_start)

    def hwm(self, key: HWMKey) -> bytes:
        return self._key(f"hwm/{key.chain_id}/{key.pkh}/{key.kind}")

    def sig(self, key: HWMKey) -> bytes:
        """The signature cache of one record, beside it so that writing it never changes the
        record's mod_revision (the next advance's compare)."""
        return self._key(f"sig/{key.chain_id}/{key.pkh}/{key.kind}")

    @property
    def sig_start(self) -> bytes:
        return self._key("sig/")

    @property
    def sig_end(self) -> bytes:
        return prefix_end(self.sig_start)

    def sig_key_of(self, raw: bytes) -> HWMKey | None:
        text = raw.decode("utf-8", errors="replace")
        head = f"{self.prefix}/sig/"
        parts = text[len(head) :].split("/") if text.startswith(head) else []
        if len(parts) != 3 or parts[2] not in KINDS:
            return None  # a stray cache entry is ignored, never trusted
        return HWMKey(parts[0], parts[1], parts[2])

    def alive(self, guard_id: str) -> bytes:
        return self._key(f"alive/{guard_id}")

    def hwm_key_of(self, raw: bytes) -> HWMKey:
        text = raw.decode("utf-8", errors="replace")
        head = f"{self.prefix}/hwm/"
        parts = text[len(head) :].split("/") if text.startswith(head) else []
        if len(parts) != 3 or parts[2] not in KINDS or not parts[0] or not parts[1]:
            raise StoreCorrupt(f"etcd store: unexpected key under the hwm prefix: {text!r}")
        chain_id, pkh, kind = parts
        return HWMKey(chain_id, pkh, kind)  # type: ignore[arg-type]  # checked against KINDS


def _load(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise StoreCorrupt(f"etcd store: {what} is not JSON: {raw[:80]!r}") from exc
    if not isinstance(value, dict):
        raise StoreCorrupt(f"etcd store: {what} is not a JSON object")
    return value


def _dump(value: dict[str, object]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _int_field(value: dict[str, Any], name: str, what: str, minimum: int = 0) -> int:
    item = value.get(name)
    if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
        raise StoreCorrupt(f"etcd store: {what} has a bad {name!r}: {item!r}")
    return item


def _str_field(value: dict[str, Any], name: str, what: str, nullable: bool = False) -> Any:
    item = value.get(name)
    if (item is None and nullable) or isinstance(item, str):
        return item
    raise StoreCorrupt(f"etcd store: {what} has a bad {name!r}: {item!r}")


def encode_meta() -> bytes:
    return _dump({"schema": SCHEMA_VERSION})


def check_meta(raw: bytes) -> None:
    value = _load(raw, "meta")
    if value.get("schema") != SCHEMA_VERSION:
        raise StoreCorrupt(
            f"etcd store: schema {value.get('schema')!r} is not the supported {SCHEMA_VERSION}"
        )


def encode_fence(fence: Fence) -> bytes:
    return _dump(fence.to_json())


def decode_fence(raw: bytes) -> Fence:
    value = _load(raw, "fence")
    return Fence(
        epoch=_int_field(value, "epoch", "fence", minimum=1),
        holder=_str_field(value, "holder", "fence"),
        fence_level=_int_field(value, "fence_level", "fence"),
        updated_at=_str_field(value, "updated_at", "fence"),
    )


def encode_record(record: HWMRecord) -> bytes:
    return _dump(
        {
            "level": record.level,
            "round": record.round,
            "hash": record.hash.hex() if record.hash is not None else None,
            "signature": record.signature,
            "epoch": record.epoch,
            "updated_at": record.updated_at,
        }
    )


def decode_record(key: HWMKey, raw: bytes) -> HWMRecord:
    what = f"record {key.chain_id}/{key.pkh}/{key.kind}"
    value = _load(raw, what)
    hash_hex = _str_field(value, "hash", what, nullable=True)
    try:
        hash_ = bytes.fromhex(hash_hex) if hash_hex is not None else None
    except ValueError as exc:
        raise StoreCorrupt(f"etcd store: {what} has a bad hash: {hash_hex!r}") from exc
    return HWMRecord(
        chain_id=key.chain_id,
        pkh=key.pkh,
        kind=key.kind,
        level=_int_field(value, "level", what),
        round=_int_field(value, "round", what),
        hash=hash_,
        signature=_str_field(value, "signature", what, nullable=True),
        epoch=_int_field(value, "epoch", what),
        updated_at=_str_field(value, "updated_at", what),
    )


def encode_sig(record: HWMRecord, signature: str) -> bytes:
    assert record.hash is not None
    return _dump(
        {
            "level": record.level,
            "round": record.round,
            "hash": record.hash.hex(),
            "signature": signature,
        }
    )


def with_cached_signature(record: HWMRecord | None, raw_sig: bytes | None) -> HWMRecord | None:
    """The record with the cached signature of `P/sig/…` when that entry is for exactly this
    (level, round, hash); anything else in the cache is ignored."""
    if record is None or raw_sig is None or record.signature is not None or record.hash is None:
        return record
    try:
        value = json.loads(raw_sig)
    except ValueError:
        return record
    if (
        not isinstance(value, dict)
        or value.get("level") != record.level
        or value.get("round") != record.round
        or value.get("hash") != record.hash.hex()
        or not isinstance(value.get("signature"), str)
    ):
        return record
    return dataclasses.replace(record, signature=value["signature"])


def encode_alive(value: dict[str, object]) -> bytes:
    return _dump(value)


def decode_alive(raw: bytes) -> dict[str, Any]:
    return _load(raw, "liveness key")
