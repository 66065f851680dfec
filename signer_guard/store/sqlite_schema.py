"""The SQLite store's layout (fencing-and-failover.md §3) and its checks at open.

Everything here runs in the store's worker thread; nothing here touches the event loop.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Final

from signer_guard.model import KINDS, Fence, HWMRecord, Kind
from signer_guard.store.base import StoreCorrupt

SCHEMA_VERSION: Final = "1"
SQLITE_MAGIC: Final = b"SQLite format 3\x00"

DDL: Final[tuple[str, ...]] = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS fence (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "epoch INTEGER NOT NULL, holder TEXT NOT NULL, fence_level INTEGER NOT NULL, "
    "updated_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS hwm (chain_id TEXT NOT NULL, pkh TEXT NOT NULL, "
    "kind TEXT NOT NULL CHECK (kind IN ('block','preattestation','attestation')), "
    "level INTEGER NOT NULL, round INTEGER NOT NULL, hash BLOB, signature TEXT, "
    "epoch INTEGER NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (chain_id, pkh, kind))",
)

COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "meta": ("key", "value"),
    "fence": ("id", "epoch", "holder", "fence_level", "updated_at"),
    "hwm": (
        "chain_id", "pkh", "kind", "level", "round", "hash", "signature", "epoch", "updated_at",
    ),
}  # fmt: skip

RECORD_COLUMNS: Final = "chain_id, pkh, kind, level, round, hash, signature, epoch, updated_at"
FENCE_COLUMNS: Final = "epoch, holder, fence_level, updated_at"

CORRUPT_ADVICE: Final = (
    "signer-guard will not use it. Move the file (and any -wal/-shm beside it) away, then "
    "restore a backup, or start a fresh store and raise its watermarks before signing "
    "(`signer-guard hwm import` of an export, or `signer-guard failover --level N`)"
)


def corrupt(path: Path, what: str) -> StoreCorrupt:
    return StoreCorrupt(f"SQLite store {path}: {what}; {CORRUPT_ADVICE}")


def check_header(path: Path) -> None:
    """A non-empty file must start with the SQLite header (an empty file is a fresh store)."""
    with path.open("rb") as f:
        head = f.read(100)
    if head and (len(head) < 100 or not head.startswith(SQLITE_MAGIC)):
        raise corrupt(path, "the file is not an SQLite database")


def quick_check(conn: sqlite3.Connection, path: Path) -> None:
    rows = conn.execute("PRAGMA quick_check").fetchall()
    if [tuple(r) for r in rows] != [("ok",)]:
        detail = "; ".join(str(r[0]) for r in rows[:3])
        raise corrupt(path, f"integrity check failed ({detail})")


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(r[0]) for r in rows}


def ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a fresh file; check it in an existing one."""
    if not _tables(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in DDL:
                conn.execute(stmt)
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (SCHEMA_VERSION,),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    check_schema(conn, path)


def check_schema(conn: sqlite3.Connection, path: Path) -> None:
    tables = _tables(conn)
    if "meta" not in tables:
        found = ", ".join(sorted(tables)) or "none"
        raise corrupt(path, f"an SQLite database but not a signer-guard store (tables: {found})")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        raise corrupt(path, "no schema_version in table meta")
    if str(row[0]) != SCHEMA_VERSION:
        raise corrupt(
            path,
            f"schema_version {row[0]!r} is not the version this signer-guard reads "
            f"({SCHEMA_VERSION}); use the signer-guard release that wrote it",
        )
    for table, wanted in COLUMNS.items():
        if table not in tables:
            raise corrupt(path, f"table {table} is missing")
        have = {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})").fetchall()}
        missing = [c for c in wanted if c not in have]
        if missing:
            raise corrupt(path, f"table {table} lacks column(s) {', '.join(missing)}")


def row_to_fence(row: tuple[Any, ...] | None) -> Fence | None:
    if row is None:
        return None
    epoch, holder, fence_level, updated_at = row
    return Fence(int(epoch), str(holder), int(fence_level), str(updated_at))


def to_kind(text: object) -> Kind:
    for kind in KINDS:
        if text == kind:
            return kind
    raise ValueError(f"unknown kind {text!r} in the store")


def row_to_record(row: tuple[Any, ...]) -> HWMRecord:
    chain_id, pkh, kind, level, round_, hash_, signature, epoch, updated_at = row
    return HWMRecord(
        chain_id=str(chain_id),
        pkh=str(pkh),
        kind=to_kind(kind),
        level=int(level),
        round=int(round_),
        hash=bytes(hash_) if isinstance(hash_, bytes | bytearray | memoryview) else None,
        signature=str(signature) if signature is not None else None,
        epoch=int(epoch),
        updated_at=str(updated_at),
    )
