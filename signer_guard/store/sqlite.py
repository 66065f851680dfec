"""The embedded SQLite store: one file, one host (fencing-and-failover.md §3).

Every blocking call (SQLite, flock, fsync) runs in one dedicated worker thread, never on the event
loop. The guarded step is one `BEGIN IMMEDIATE … COMMIT` transaction with `synchronous=FULL`, so
a commit that returned has been fsynced (WAL) before any byte reaches a signer.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Final, TypeVar

from signer_guard import hwm_io, rule
from signer_guard.model import Fence, HWMKey, HWMRecord, SignIntent, utc_now
from signer_guard.store import sqlite_loss as loss
from signer_guard.store import sqlite_schema as schema
from signer_guard.store.base import (
    FenceConflict,
    GuardIdInUse,
    NotHolder,
    SetResult,
    Store,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
    TakeoverResult,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT_MS: Final = 5000
_CORRUPT_ERRORS: Final = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})

_SELECT_FENCE: Final = f"SELECT {schema.FENCE_COLUMNS} FROM fence WHERE id = 1"
_SELECT_RECORD: Final = (
    f"SELECT {schema.RECORD_COLUMNS} FROM hwm WHERE chain_id = ? AND pkh = ? AND kind = ?"
)
_UPSERT: Final = (
    f"INSERT INTO hwm ({schema.RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (chain_id, pkh, kind) DO UPDATE SET level = excluded.level, "
    "round = excluded.round, hash = excluded.hash, signature = excluded.signature, "
    "epoch = excluded.epoch, updated_at = excluded.updated_at"
)
_CACHE_SIGNATURE: Final = (
    "UPDATE hwm SET signature = ? WHERE chain_id = ? AND pkh = ? AND kind = ? "
    "AND level = ? AND round = ? AND hash = ?"
)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_HINTS: Final = {
    "SQLITE_READONLY": "the store file or its directory is read-only",
    "SQLITE_FULL": "the disk is full",
    "SQLITE_BUSY": "another process held the store locked past busy_timeout",
    "SQLITE_IOERR": "I/O error",
    "SQLITE_CANTOPEN": "the file or its directory cannot be opened",
}


def _errname(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", type(exc).__name__))


def _describe(exc: sqlite3.Error) -> str:
    name = _errname(exc)
    hint = next((h for prefix, h in _HINTS.items() if name.startswith(prefix)), None)
    return f"{hint}: {name}: {exc}" if hint else f"{name}: {exc}"


class SqliteStore(Store):
    """HWM records and the fence in one SQLite file."""

    kind = "sqlite"

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
    ) -> None:
        self.path = Path(path).expanduser()
        self.busy_timeout_ms = busy_timeout_ms
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # synchronous=FULL: the guarded path
        self._cache_conn: sqlite3.Connection | None = None  # synchronous=NORMAL: signature cache
        self._locks: dict[str, int] = {}  # guard_id -> fd holding the flock
        # The files this store opened: the db, its -wal and -shm (sqlite_loss.py).
        self._ids: dict[str, loss.FileId | None] = {}
        # Why the last operation failed; while set, `read_fence` first proves that a write
        # commits again (reconnecting if needed), so a degraded guard recovers by itself.
        self._unhealthy: str | None = None
        # Set once the file was deleted or replaced under us: every call refuses with it.
        self._lost: str | None = None
        self._rescued: tuple[Fence | None, list[HWMRecord]] = (None, [])

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # -- the worker thread ------------------------------------------------------------------
    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        return self._executor

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run `fn` in the worker thread; map SQLite and OS errors to StoreUnavailable."""
        loop = asyncio.get_running_loop()

        def run() -> T:
            try:
                return fn()
            except (sqlite3.Error, OSError) as exc:
                self._unhealthy = f"{what}: {exc}"
                raise

        try:
            return await loop.run_in_executor(self._worker(), run)
        except StoreError:
            raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(
                f"SQLite store {self.path}: {what} failed ({_describe(exc)})"
            ) from exc
        except OSError as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {what} failed: {exc}") from exc

    def _main(self) -> sqlite3.Connection:
        """The guarded connection, after checking that the path still names the opened file."""
        if self._lost is not None:
            raise StoreUnavailable(self._lost)
        if self._conn is None:
            last = f" (last error: {self._unhealthy})" if self._unhealthy else ""
            raise StoreUnavailable(f"SQLite store {self.path} is not open{last}")
        now = loss.file_id(self.path)
        if now != self._ids.get("db"):
            self._lose("deleted" if now is None else "replaced by another file")
        return self._conn

    @staticmethod
    def _txn(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        """One IMMEDIATE transaction; rolled back on any error, including a failed COMMIT."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return result

    # -- open / close -----------------------------------------------------------------------
    def _connect(self, synchronous: str) -> sqlite3.Connection:
        """Open the existing file (never create it: `_create_file` does, once, at open)."""
        uri = "file:" + urllib.parse.quote(os.fspath(self.path)) + "?mode=rw"
        conn = sqlite3.connect(
            uri, uri=True, timeout=self.busy_timeout_ms / 1000, isolation_level=None
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            self._set_wal(conn)
            conn.execute(f"PRAGMA synchronous = {synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_wal(self, conn: sqlite3.Connection) -> None:
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if _errname(exc) != "SQLITE_BUSY" or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if str(mode).lower() != "wal":
            raise StoreUnavailable(
                f"SQLite store {self.path}: cannot switch to WAL journal mode (got {mode!r})"
            )

    def _create_file(self) -> None:
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            directory.chmod(0o700)  # the umask may have cut the mode further: that is fine too
            _fsync_dir(directory.parent)
        if not self.path.exists():
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            _fsync_dir(directory)
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("SQLite store %s has mode %o; 0600 is recommended", self.path, mode)

    def _open_sync(self) -> None:
        if self._conn is not None:
            return
        self._create_file()
        schema.check_header(self.path)
        opened = loss.file_id(self.path)
        try:
            conn = self._connect("FULL")
        except sqlite3.DatabaseError as exc:
            if _errname(exc) in _CORRUPT_ERRORS:
                raise schema.corrupt(self.path, str(exc)) from exc
            raise
        try:
            if int(conn.execute("PRAGMA synchronous").fetchone()[0]) < 2:
                raise StoreUnavailable(f"SQLite store {self.path}: synchronous=FULL not applied")
            schema.quick_check(conn, self.path)
            schema.ensure_schema(conn, self.path)
            cache_conn = self._connect("NORMAL")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if _errname(exc) in _CORRUPT_ERRORS:
                raise schema.corrupt(self.path, str(exc)) from exc
            raise
        except BaseException:
            conn.close()
            raise
        if not os.access(self.path, os.W_OK):
            log.warning("SQLite store %s is read-only: signing requests will get 503", self.path)
        if loss.file_id(self.path) != opened:
            conn.close()
            cache_conn.close()
            raise StoreUnavailable(f"SQLite store {self.path} was replaced while being opened")
        self._conn, self._cache_conn = conn, cache_conn
        self._remember_files()

    def _remember_files(self) -> None:
        self._ids = {
            "db": loss.file_id(self.path),
            "wal": loss.file_id(self._sibling("-wal")),
            "shm": loss.file_id(self._sibling("-shm")),
        }

    def _sibling(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    def _close_conns(self) -> None:
        for conn in (self._cache_conn, self._conn):
            if conn is not None:
                with suppress(sqlite3.Error):
                    conn.close()
        self._conn = self._cache_conn = None

    async def open(self) -> None:
        """Open, creating the directory (0700), the file (0600) and the schema if needed.

        Raises StoreCorrupt for a damaged or foreign file, StoreUnavailable when the file cannot
        be opened (permissions, a read-only directory, I/O errors)."""
        await self._call("open", self._open_sync)

    def _close_sync(self) -> None:
        self._close_conns()
        for fd in self._locks.values():
            with suppress(OSError):
                os.close(fd)  # closing the descriptor releases the flock
        self._locks.clear()

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._call("close", self._close_sync)
        finally:
            self._executor.shutdown(wait=False)
            self._executor = None

    # -- faults: recovery, and a file deleted or replaced under us -------------------------
    def _write_check(self, conn: sqlite3.Connection) -> None:
        """A durable write that changes no watermark: proves the store can commit again."""
        self._txn(
            conn,
            lambda c: c.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_write_check', ?)",
                (utc_now(),),
            ),
        )

    def _recover_sync(self) -> None:
        """After a failure: a write must commit again, on the same connection or a new one
        (a connection opened while the file was read-only stays read-only)."""
        if self._conn is not None:
            try:
                self._write_check(self._main())
            except sqlite3.Error:
                pass
            else:
                self._healthy()
                return
        self._close_conns()
        if loss.file_id(self.path) != self._ids.get("db"):
            self._lose("deleted or replaced")
        conn = self._connect("FULL")
        try:
            self._write_check(conn)
            cache_conn = self._connect("NORMAL")
        except BaseException:
            conn.close()
            raise
        self._conn, self._cache_conn = conn, cache_conn
        self._main()  # the identity check, once more
        self._healthy()

    def _healthy(self) -> None:
        log.warning("SQLite store %s: writes commit again (was: %s)", self.path, self._unhealthy)
        self._unhealthy = None

    def _lose(self, what: str) -> None:
        """The path no longer names the file we opened: rescue what we hold, then refuse."""
        fence: Fence | None = None
        records: list[HWMRecord] = []
        conn = self._conn
        if conn is not None:
            try:
                fence = self._fence(conn)
                rows = conn.execute(f"SELECT {schema.RECORD_COLUMNS} FROM hwm").fetchall()
                records = [schema.row_to_record(row) for row in rows]
            except sqlite3.Error as exc:
                log.error("SQLite store %s: the lost file could not be read: %s", self.path, exc)
        when = loss.stamp()
        rescue = loss.write_rescue(self.path, records, when) if records else None
        for suffix in ("-wal", "-shm"):
            loss.move_aside(self._sibling(suffix), self._ids.get(suffix[1:]), when)
        self._close_conns()
        self._rescued = (fence, records)
        self._lost = loss.lost_message(self.path, what, rescue, records)
        log.critical("%s", self._lost)
        log.critical("rescued watermarks of %s: %s", self.path, hwm_io.export_json(records))
        raise StoreUnavailable(self._lost)

    def _adopt_sync(self) -> None:
        """After a loss: use the file now at the path if it covers every rescued watermark."""
        assert self._lost is not None
        lost = self._lost
        if loss.file_id(self.path) is None:
            raise StoreUnavailable(lost)
        try:
            schema.check_header(self.path)
            conn = self._connect("FULL")
        except (StoreCorrupt, sqlite3.Error) as exc:
            raise StoreUnavailable(
                f"{lost}. The file now at {self.path} is unusable: {exc}"
            ) from None
        try:
            schema.quick_check(conn, self.path)
            schema.check_schema(conn, self.path)
            fence = self._fence(conn)
            rows = conn.execute(f"SELECT {schema.RECORD_COLUMNS} FROM hwm").fetchall()
            old_fence, old_records = self._rescued
            ref = fence if fence is not None else old_fence
            floor = ref.fence_level if ref is not None else 0
            problems = loss.uncovered(old_records, map(schema.row_to_record, rows), floor)
            if old_fence is not None and floor < old_fence.fence_level:
                problems.insert(0, f"fence level {floor} < {old_fence.fence_level} rescued")
            if problems:
                raise StoreUnavailable(
                    f"{lost}. The file now at {self.path} is below the rescued watermarks "
                    f"({'; '.join(problems[:3])}): not used"
                )
            if fence is None and old_fence is not None:  # restore the fence we served under
                self._txn(conn, lambda c: self._put_fence(c, old_fence))
            cache_conn = self._connect("NORMAL")
        except StoreCorrupt as exc:
            conn.close()
            raise StoreUnavailable(
                f"{lost}. The file now at {self.path} is unusable: {exc}"
            ) from None
        except BaseException:
            conn.close()
            raise
        self._conn, self._cache_conn = conn, cache_conn
        self._remember_files()
        self._lost, self._unhealthy, self._rescued = None, None, (None, [])
        log.warning(
            "SQLite store %s: adopted the file now at the path (its watermarks cover every "
            "rescued one)",
            self.path,
        )

    @staticmethod
    def _put_fence(conn: sqlite3.Connection, fence: Fence) -> None:
        conn.execute(
            "INSERT INTO fence (id, epoch, holder, fence_level, updated_at) VALUES (1, ?, ?, ?, ?)",
            (fence.epoch, fence.holder, fence.fence_level, utc_now()),
        )

    def _read_fence_sync(self) -> Fence | None:
        if self._lost is not None:
            self._adopt_sync()
        if self._unhealthy is not None:
            self._recover_sync()
        return self._fence(self._main())

    def _check_rescued(self, conn: sqlite3.Connection, fence: Fence | None) -> None:
        """At start-up: a rescue file beside the store means it was lost once; the store must
        cover what was rescued, or a guard would sign below watermarks already used."""
        files = loss.rescue_files(self.path)
        if not files:
            return
        rows = conn.execute(f"SELECT {schema.RECORD_COLUMNS} FROM hwm").fetchall()
        floor = fence.fence_level if fence else 0
        problems = loss.uncovered(loss.read_rescue(files), map(schema.row_to_record, rows), floor)
        if problems:
            raise StoreCorrupt(
                f"SQLite store {self.path} is below the watermarks rescued in "
                f"{', '.join(str(f) for f in files)} when a previous store file was lost "
                f"({'; '.join(problems[:3])}); refusing to serve it. To recover, "
                f"{loss.advice(self.path, files[-1])}"
            )

    # -- guard id lock (I7) -----------------------------------------------------------------
    def lock_path(self, guard_id: str) -> Path:
        return self.path.with_name(f"{self.path.name}.{guard_id}.lock")

    def _lock_sync(self, guard_id: str) -> None:
        if guard_id in self._locks:
            return
        path = self.lock_path(guard_id)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise GuardIdInUse(
                f"another process already serves {self.path} as guard id {guard_id!r} "
                f"(it holds {path}); stop it or give this guard another --guard-id"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._locks[guard_id] = fd

    async def lock_guard_id(self, guard_id: str) -> None:
        if not guard_id or "/" in guard_id or "\0" in guard_id:
            raise ValueError(f"invalid guard id {guard_id!r}: it must be non-empty, without '/'")
        await self._call("lock guard id", lambda: self._lock_sync(guard_id))

    # -- fence ------------------------------------------------------------------------------
    @staticmethod
    def _fence(conn: sqlite3.Connection) -> Fence | None:
        return schema.row_to_fence(conn.execute(_SELECT_FENCE).fetchone())

    @staticmethod
    def _max_level(conn: sqlite3.Connection) -> int | None:
        row = conn.execute("SELECT MAX(level) FROM hwm").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    async def read_fence(self) -> Fence | None:
        """The fence; while the store is unhealthy, first a write check (see `_recover_sync`),
        and after a loss, first an attempt to adopt the file now at the path."""
        return await self._call("read fence", self._read_fence_sync)

    async def claim_initial_fence(self, guard_id: str) -> Fence:
        def body(conn: sqlite3.Connection) -> Fence:
            fence = self._fence(conn)
            self._check_rescued(conn, fence)
            if fence is not None:
                return fence
            fence = Fence(epoch=1, holder=guard_id, fence_level=0, updated_at=utc_now())
            conn.execute(
                "INSERT INTO fence (id, epoch, holder, fence_level, updated_at) "
                "VALUES (1, ?, ?, ?, ?)",
                (fence.epoch, fence.holder, fence.fence_level, fence.updated_at),
            )
            return fence

        def claim() -> Fence:
            if self._unhealthy is not None:  # e.g. a connection opened on a read-only file
                self._recover_sync()
            return self._txn(self._main(), body)

        return await self._call("claim fence", claim)

    async def takeover(
        self, guard_id: str, fence_level: int, keys: Iterable[HWMKey], expected: Fence | None
    ) -> TakeoverResult:
        if fence_level < 0:
            raise ValueError(f"fence level must be >= 0, got {fence_level}")
        wanted = list(dict.fromkeys(keys))

        def body(conn: sqlite3.Connection) -> TakeoverResult:
            old = self._fence(conn)
            if old != expected:
                raise FenceConflict(
                    f"the fence changed since it was read: expected "
                    f"{expected.to_json() if expected else None}, found "
                    f"{old.to_json() if old else None}"
                )
            max_level = self._max_level(conn)
            # Records above the target keep their own (higher) marks: a watermark that moved
            # after the caller's read still blocks every (level, round) it covers.
            levels = [
                lvl for lvl in (max_level, old.fence_level if old else None) if lvl is not None
            ]
            now = utc_now()
            new = Fence(
                epoch=(old.epoch if old else 0) + 1,
                holder=guard_id,
                fence_level=max(old.fence_level if old else 0, fence_level),
                updated_at=now,
            )
            conn.execute(
                "INSERT INTO fence (id, epoch, holder, fence_level, updated_at) "
                "VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch, "
                "holder = excluded.holder, fence_level = excluded.fence_level, "
                "updated_at = excluded.updated_at",
                (new.epoch, new.holder, new.fence_level, new.updated_at),
            )
            raised = conn.execute(
                "UPDATE hwm SET level = ?, round = 0, hash = NULL, signature = NULL, epoch = ?, "
                "updated_at = ? WHERE level < ?",  # below (F, 0): rounds are never negative
                (fence_level, new.epoch, now, fence_level),
            ).rowcount
            for key in wanted:
                raised += conn.execute(
                    "INSERT OR IGNORE INTO hwm "
                    f"({schema.RECORD_COLUMNS}) VALUES (?, ?, ?, ?, 0, NULL, NULL, ?, ?)",
                    (key.chain_id, key.pkh, key.kind, fence_level, new.epoch, now),
                ).rowcount
            return TakeoverResult(
                previous=old,
                fence=new,
                last_level=max(levels) if levels else 0,
                records_raised=raised,
            )

        return await self._call("takeover", lambda: self._txn(self._main(), body))

    async def release(self, guard_id: str) -> Fence:
        def body(conn: sqlite3.Connection) -> Fence:
            old = self._fence(conn)
            if old is None or old.holder != guard_id:
                holder = "nobody (no fence)" if old is None else repr(old.holder or "nobody")
                raise NotHolder(f"guard {guard_id!r} does not hold the fence; holder: {holder}")
            max_level = self._max_level(conn)
            new = Fence(
                epoch=old.epoch,
                holder="",
                fence_level=max(old.fence_level, max_level if max_level is not None else 0),
                updated_at=utc_now(),
            )
            conn.execute(
                "UPDATE fence SET holder = ?, fence_level = ?, updated_at = ? WHERE id = 1",
                (new.holder, new.fence_level, new.updated_at),
            )
            return new

        return await self._call("release", lambda: self._txn(self._main(), body))

    # -- the guarded path -------------------------------------------------------------------
    @staticmethod
    def _record(conn: sqlite3.Connection, key: HWMKey) -> HWMRecord | None:
        row = conn.execute(_SELECT_RECORD, (key.chain_id, key.pkh, key.kind)).fetchone()
        return None if row is None else schema.row_to_record(row)

    @staticmethod
    def _write(conn: sqlite3.Connection, record: HWMRecord) -> None:
        conn.execute(
            _UPSERT,
            (
                record.chain_id, record.pkh, record.kind, record.level, record.round,
                record.hash, record.signature, record.epoch, record.updated_at,
            ),
        )  # fmt: skip

    def _advance_sync(self, intent: SignIntent, guard_id: str, epoch: int | None) -> rule.Decision:
        conn = self._main()
        conn.execute("BEGIN IMMEDIATE")
        try:
            fence = self._fence(conn)
            record = self._record(conn, intent.key)
            decision = rule.decide(intent, record, fence, guard_id, epoch)
            if isinstance(decision, rule.Advance):
                assert epoch is not None  # decide() refuses a missing epoch
                key = intent.key
                self._write(
                    conn,
                    HWMRecord(
                        key.chain_id, key.pkh, key.kind, intent.level, intent.round,
                        intent.hash, None, epoch, utc_now(),
                    ),
                )  # fmt: skip
                conn.execute("COMMIT")  # synchronous=FULL: the WAL is fsynced before this returns
            else:
                conn.execute("ROLLBACK")
        except BaseException:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return decision

    async def advance(self, intent: SignIntent, guard_id: str, epoch: int | None) -> rule.Decision:
        return await self._call("advance", lambda: self._advance_sync(intent, guard_id, epoch))

    def _store_signature_sync(self, intent: SignIntent, signature: str) -> None:
        conn = self._main()
        conn = self._cache_conn if self._cache_conn is not None else conn
        key = intent.key
        conn.execute(
            _CACHE_SIGNATURE,
            (signature, key.chain_id, key.pkh, key.kind, intent.level, intent.round, intent.hash),
        )

    async def store_signature(self, intent: SignIntent, signature: str, epoch: int) -> None:
        """Best effort: the cache is not needed for safety, so failures are logged only."""
        try:
            await self._call(
                "store signature", lambda: self._store_signature_sync(intent, signature)
            )
        except StoreError as exc:
            log.warning("signature cache write skipped: %s", exc)

    # -- operator tools ---------------------------------------------------------------------
    async def list_records(self) -> list[HWMRecord]:
        def read() -> list[HWMRecord]:
            rows = self._main().execute(
                f"SELECT {schema.RECORD_COLUMNS} FROM hwm ORDER BY chain_id, pkh, kind"
            )
            return [schema.row_to_record(row) for row in rows.fetchall()]

        return await self._call("list records", read)

    async def get_record(self, key: HWMKey) -> HWMRecord | None:
        return await self._call("read record", lambda: self._record(self._main(), key))

    async def set_record(
        self, key: HWMKey, level: int, round_: int, *, allow_lower: bool = False
    ) -> SetResult:
        if level < 0 or round_ < 0:
            raise ValueError(f"level and round must be >= 0, got ({level}, {round_})")

        def body(conn: sqlite3.Connection) -> SetResult:
            old = self._record(conn, key)
            if old is not None and not allow_lower and (level, round_) <= (old.level, old.round):
                return SetResult(old=old, new=old, changed=False)
            fence = self._fence(conn)
            new = HWMRecord(
                key.chain_id, key.pkh, key.kind, level, round_, None, None,
                fence.epoch if fence else 0, utc_now(),
            )  # fmt: skip
            self._write(conn, new)
            same = old is not None and (old.level, old.round, old.hash, old.signature) == (
                level, round_, None, None,
            )  # fmt: skip
            return SetResult(old=old, new=new, changed=not same)

        return await self._call("set record", lambda: self._txn(self._main(), body))

    async def merge_records(self, records: Iterable[HWMRecord]) -> int:
        incoming = list(records)

        def body(conn: sqlite3.Connection) -> int:
            fence = self._fence(conn)
            epoch = fence.epoch if fence else 0
            changed = 0
            for rec in incoming:
                if rec.level < 0 or rec.round < 0:
                    raise ValueError(f"negative level or round in imported record {rec.key}")
                old = self._record(conn, rec.key)
                if old is not None and (rec.level, rec.round) <= (old.level, old.round):
                    continue
                self._write(
                    conn,
                    HWMRecord(
                        rec.chain_id, rec.pkh, rec.kind, rec.level, rec.round, rec.hash,
                        rec.signature, epoch, utc_now(),
                    ),
                )  # fmt: skip
                changed += 1
            return changed

        return await self._call("merge records", lambda: self._txn(self._main(), body))


__all__ = ["SqliteStore"]
