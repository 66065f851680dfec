"""HWM interchange formats for `hwm import` / `hwm export` (watermark-rules.md §7).

- octez-signer: a directory with `block_/preattestation_/attestation_high_watermarks` files;
- Signatory: a `watermark_v2` directory, or one `<chain_id>.json` file (import only);
- signer-guard JSON: the `hwm show --json` array.

Readers validate every entry and raise `HWMFormatError` naming the file and the entry. Unknown
kinds are skipped with a warning. Imported records carry epoch 0; the store stamps its own epoch
when it merges them.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from signer_guard import b58
from signer_guard.model import KINDS, WHOLE_LEVEL_ROUND, HWMKey, HWMRecord, Kind, utc_now

log = logging.getLogger(__name__)

INT32_MAX: Final = 2**31 - 1
ZERO_HASH_HEX: Final = "0" * 64
OCTEZ_FILES: Final[dict[Kind, str]] = {
    "block": "block_high_watermarks",
    "preattestation": "preattestation_high_watermarks",
    "attestation": "attestation_high_watermarks",
}
OCTEZ_LEGACY_FILES: Final = ("endorsement_high_watermarks",)
SIGNATORY_KINDS: Final[dict[str, Kind]] = {
    "block": "block",
    "preattestation": "preattestation",
    "attestation": "attestation",
    "attestation_with_dal": "attestation",
}
PKH_PREFIXES: Final = ("tz1", "tz2", "tz3", "tz4")
SIGNATURE_PREFIXES: Final = ("edsig", "spsig1", "p2sig", "BLsig", "sig")


class HWMFormatError(ValueError):
    """An interchange file that cannot be imported; the message names the file and the entry."""


# -- validation ---------------------------------------------------------------------------------
def _fail(where: str, what: str) -> HWMFormatError:
    return HWMFormatError(f"{where}: {what}")


def _chain_id(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"chain id must be a string, got {value!r}")
    try:
        b58.decode("Net", value)
    except (b58.Base58Error, ValueError) as exc:
        raise _fail(where, f"bad chain id {value!r} ({exc})") from None
    return value


def _pkh(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"pkh must be a string, got {value!r}")
    try:
        b58.identify(value, PKH_PREFIXES)
    except (b58.Base58Error, ValueError) as exc:
        raise _fail(where, f"bad pkh {value!r} ({exc})") from None
    return value


def _int32(value: object, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, f"{name} must be an integer, got {value!r}")
    if not 0 <= value <= INT32_MAX:
        raise _fail(where, f"{name} {value} is out of range (0 to {INT32_MAX})")
    return value


def _hex_hash(value: object, where: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64:
        raise _fail(where, f"hash must be 64 hex characters, got {value!r}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise _fail(where, f"hash is not hex: {value!r}") from None
    return None if raw == bytes(32) else raw  # 64 zeros = no hash (it never matches a request)


def _signature(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(where, f"signature must be a string, got {value!r}")
    try:
        b58.identify(value, SIGNATURE_PREFIXES)
    except (b58.Base58Error, ValueError) as exc:
        raise _fail(where, f"bad signature {value[:16]!r}… ({exc})") from None
    return value


def _object(value: object, where: str, what: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise _fail(where, f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HWMFormatError(f"{path}: not valid JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HWMFormatError(f"{path}: cannot read it ({exc})") from None


def _record(
    chain_id: str, pkh: str, kind: Kind, level: int, round_: int, hash_: bytes | None,
    signature: str | None, epoch: int = 0, updated_at: str | None = None,
) -> HWMRecord:  # fmt: skip
    return HWMRecord(
        chain_id, pkh, kind, level, round_, hash_, signature, epoch, updated_at or utc_now()
    )


def max_merge(records: Iterable[HWMRecord]) -> list[HWMRecord]:
    """One record per (chain, pkh, kind): the highest (level, round); the first one on a tie."""
    best: dict[HWMKey, HWMRecord] = {}
    for rec in records:
        old = best.get(rec.key)
        if old is None or (rec.level, rec.round) > (old.level, old.round):
            best[rec.key] = rec
    return list(best.values())


# -- atomic file writes -------------------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write through a temp file in the same directory, fsync it, rename, fsync the directory."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


# -- octez-signer (§7.1) ------------------------------------------------------------------------
def export_octez(records: Iterable[HWMRecord], directory: str | os.PathLike[str]) -> list[Path]:
    """Write the three `*_high_watermarks` files (all three, even when empty)."""
    out = Path(directory)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    tables: dict[Kind, dict[str, dict[str, dict[str, object]]]] = {k: {} for k in KINDS}
    for rec in sorted(records, key=lambda r: (r.chain_id, r.pkh, r.kind)):
        mark: dict[str, object] = {
            "level": rec.level,
            "round": rec.round,
            "hash": rec.hash.hex() if rec.hash is not None else ZERO_HASH_HEX,
        }
        if rec.signature is not None:
            mark["signature"] = rec.signature
        tables[rec.kind].setdefault(rec.chain_id, {})[rec.pkh] = mark
    written = []
    for kind, name in OCTEZ_FILES.items():
        path = out / name
        write_atomic(path, json.dumps(tables[kind], indent=2) + "\n")
        written.append(path)
    return written


def _read_octez_file(path: Path, kind: Kind) -> list[HWMRecord]:
    data = _object(_load_json(path), str(path), "the file")
    records = []
    for chain, by_pkh in data.items():
        chain_id = _chain_id(chain, f"{path}: chain {chain!r}")
        for pkh_text, mark in _object(by_pkh, f"{path}: chain {chain}", "the entry").items():
            where = f"{path}: chain {chain}, pkh {pkh_text}"
            pkh = _pkh(pkh_text, where)
            fields = _object(mark, where, "the mark")
            if "level" not in fields:
                raise _fail(where, "level is missing")
            level = _int32(fields["level"], "level", where)
            round_ = (
                _int32(fields["round"], "round", where) if "round" in fields else WHOLE_LEVEL_ROUND
            )
            hash_ = _hex_hash(fields.get("hash"), where)
            signature = _signature(fields.get("signature"), where)
            records.append(_record(chain_id, pkh, kind, level, round_, hash_, signature))
    return records


def read_octez(directory: str | os.PathLike[str]) -> list[HWMRecord]:
    """Read an octez-signer base dir. A mark without `round` (legacy) takes the whole level."""
    base = Path(directory)
    if not base.is_dir():
        raise HWMFormatError(f"{base}: not a directory (expected the octez-signer base dir)")
    for legacy in OCTEZ_LEGACY_FILES:
        if (base / legacy).exists():
            log.warning("%s: legacy endorsement marks are not imported (skipped)", base / legacy)
    found = [(kind, base / name) for kind, name in OCTEZ_FILES.items() if (base / name).exists()]
    if not found:
        names = ", ".join(OCTEZ_FILES.values())
        raise HWMFormatError(f"{base}: no octez-signer high watermark file ({names})")
    records: list[HWMRecord] = []
    for kind, path in found:
        records.extend(_read_octez_file(path, kind))
    return records


# -- Signatory (§7.2) ---------------------------------------------------------------------------
def _vh_hash(value: object, where: str) -> bytes | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _fail(where, f"hash must be a vh… string, got {value!r}")
    try:
        return b58.decode("vh", value)
    except (b58.Base58Error, ValueError) as exc:
        raise _fail(where, f"bad hash {value!r} ({exc})") from None


def _read_signatory_file(path: Path) -> list[HWMRecord]:
    chain_id = _chain_id(path.stem, f"{path}: file name")
    data = _object(_load_json(path), str(path), "the file")
    records = []
    for pkh_text, by_kind in data.items():
        where_pkh = f"{path}: pkh {pkh_text}"
        pkh = _pkh(pkh_text, where_pkh)
        for kind_name, mark in _object(by_kind, where_pkh, "the entry").items():
            where = f"{where_pkh}, kind {kind_name}"
            kind = SIGNATORY_KINDS.get(kind_name)
            if kind is None:
                log.warning("%s: unknown kind, skipped", where)
                continue
            fields = _object(mark, where, "the mark")
            if "level" not in fields:
                raise _fail(where, "level is missing")
            level = _int32(fields["level"], "level", where)
            round_ = (
                _int32(fields["round"], "round", where) if "round" in fields else WHOLE_LEVEL_ROUND
            )
            hash_ = _vh_hash(fields.get("hash"), where)
            records.append(_record(chain_id, pkh, kind, level, round_, hash_, None))
    return max_merge(records)  # attestation_with_dal merges into attestation by max


def read_signatory(path: str | os.PathLike[str]) -> list[HWMRecord]:
    """Read a Signatory `watermark_v2` directory or one `<chain_id>.json` file."""
    src = Path(path)
    if src.is_dir():
        files = sorted(src.glob("*.json"))
        if not files:
            raise HWMFormatError(f"{src}: no <chain_id>.json file (expected watermark_v2)")
    elif src.is_file():
        files = [src]
    else:
        raise HWMFormatError(f"{src}: no such file or directory")
    records: list[HWMRecord] = []
    for file in files:
        records.extend(_read_signatory_file(file))
    return records


# -- signer-guard JSON (§7.3) -------------------------------------------------------------------
def export_json(records: Iterable[HWMRecord]) -> str:
    """The `hwm show --json` array."""
    return json.dumps([rec.to_json() for rec in records], separators=(",", ":"))


def read_json(text: str, source: str = "<json>") -> list[HWMRecord]:
    """Parse the `hwm show --json` array; only chain_id, pkh, kind, level and round are needed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HWMFormatError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise HWMFormatError(f"{source}: expected a JSON array of records")
    records = []
    for i, item in enumerate(data):
        where = f"{source}: record {i}"
        fields = _object(item, where, "a record")
        missing = [f for f in ("chain_id", "pkh", "kind", "level", "round") if f not in fields]
        if missing:
            raise _fail(where, f"missing field(s) {', '.join(missing)}")
        kind_name = fields["kind"]
        kind = next((k for k in KINDS if k == kind_name), None)
        if kind is None:
            log.warning("%s: unknown kind %r, skipped", where, kind_name)
            continue
        chain_id = _chain_id(fields["chain_id"], where)
        pkh = _pkh(fields["pkh"], where)
        where = f"{source}: record {i} ({chain_id}, {pkh}, {kind})"
        epoch = fields.get("epoch", 0)
        updated_at = fields.get("updated_at")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise _fail(where, f"epoch must be a non-negative integer, got {epoch!r}")
        if updated_at is not None and not isinstance(updated_at, str):
            raise _fail(where, f"updated_at must be a string, got {updated_at!r}")
        records.append(
            _record(
                chain_id, pkh, kind,
                _int32(fields["level"], "level", where),
                _int32(fields["round"], "round", where),
                _hex_hash(fields.get("hash"), where),
                _signature(fields.get("signature"), where),
                epoch, updated_at,
            )
        )  # fmt: skip
    return records
