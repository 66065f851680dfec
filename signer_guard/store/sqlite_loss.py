"""A SQLite store file deleted or replaced under a running guard: detection and the rescue file.

An open SQLite connection keeps writing to an unlinked inode without any error, so advances made
after a deletion would vanish at the next start, and a fresh file would lower every watermark. The
store therefore compares the path's (device, inode) with the file it opened before every
operation. On a mismatch it writes the records it still holds beside the path as an importable
rescue file (`hwm show --json` format), moves its own stale `-wal`/`-shm` aside (they would be
replayed into whatever file is put at the path next) and refuses until a file whose watermarks
cover the rescued ones is at the path. Everything here runs in the store's worker thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from signer_guard import hwm_io
from signer_guard.model import HWMRecord
from signer_guard.store.base import StoreCorrupt

log = logging.getLogger(__name__)

FileId = tuple[int, int]  # (st_dev, st_ino)


def file_id(path: Path) -> FileId | None:
    """The identity of the file at `path` now, None if there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"


def rescue_files(path: Path) -> list[Path]:
    try:
        return sorted(path.parent.glob(f"{path.name}.rescued-*.json"))
    except OSError:
        return []


def write_rescue(path: Path, records: list[HWMRecord], when: str) -> Path | None:
    """Write the records beside `path` (0600, fsynced); None if that is impossible."""
    target = path.with_name(f"{path.name}.rescued-{when}.json")
    try:
        hwm_io.write_atomic(target, hwm_io.export_json(records) + "\n")
    except OSError as exc:
        log.error("could not write the rescue file %s: %s", target, exc)
        return None
    return target


def read_rescue(files: Iterable[Path]) -> list[HWMRecord]:
    records: list[HWMRecord] = []
    for f in files:
        try:
            records.extend(hwm_io.read_json(f.read_text(encoding="utf-8"), str(f)))
        except (OSError, ValueError) as exc:
            raise StoreCorrupt(
                f"cannot read the rescue file {f}: {exc}; it holds the watermarks of a store "
                "that was lost while a guard served it: fix or import it, then move it away"
            ) from None
    return records


def move_aside(path: Path, expected: FileId | None, when: str) -> Path | None:
    """Rename `path` (a -wal or -shm) to `…orphaned-<when>` if it is still the file we opened."""
    if expected is None or file_id(path) != expected:
        return None
    target = path.with_name(f"{path.name}.orphaned-{when}")
    try:
        os.rename(path, target)
    except OSError as exc:
        log.error("could not move the stale %s aside: %s", path, exc)
        return None
    return target


def uncovered(old: Iterable[HWMRecord], new: Iterable[HWMRecord], floor: int) -> list[str]:
    """The old records that the new file (its records, and `floor` = its fence level) would
    let a guard sign below again."""
    by_key = {rec.key: rec for rec in new}
    out = []
    for rec in old:
        now = by_key.get(rec.key)
        if rec.level <= floor:
            continue
        if now is not None and (now.level, now.round) >= (rec.level, rec.round):
            continue
        have = "no record" if now is None else f"({now.level}, {now.round})"
        out.append(
            f"{rec.pkh} {rec.kind} on {rec.chain_id}: ({rec.level}, {rec.round}) rescued, "
            f"{have} in the file (fence level {floor})"
        )
    return out


def advice(path: Path, rescue: Path | None) -> str:
    source = (
        f"`signer-guard hwm import --store {path} --format json {rescue}`"
        if rescue is not None
        else "`signer-guard hwm import` of the last export"
    )
    return (
        f"put the store file back at {path} (a copy whose watermarks are not below the "
        f"rescued ones), or create it with {source} or `signer-guard failover --level N` with N "
        "above every level signed"
    )


def lost_message(path: Path, what: str, rescue: Path | None, records: list[HWMRecord]) -> str:
    saved = (
        f"its last {len(records)} watermark(s) are saved in {rescue}"
        if rescue is not None
        else "its last watermarks are in the log (the rescue file could not be written)"
    )
    return (
        f"SQLite store {path} was {what} while this guard was running; refusing to sign (writes "
        "would go to a file nobody reads again, and a fresh store would lower every watermark). "
        f"This guard never creates a new one by itself: {saved}. To recover, {advice(path, rescue)}"
        "; the guard adopts such a file by itself, without a restart"
    )
