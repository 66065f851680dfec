"""The signing journal: one JSON line per signing decision, append-only, rotated by size.

Lines are written by one background thread, in the order `record` was called, so the event loop
never waits on the disk. The journal is an audit trail, not a safety mechanism (the store is): it
holds the decoded facts of a request and its outcome, never a secret and never the request body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from signer_guard.model import utc_now

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024
DEFAULT_BACKUPS: Final = 5
#: Longest reason/message kept in a line; longer texts are cut.
MAX_TEXT: Final = 500
_FILE_MODE: Final = 0o600


class JournalError(Exception):
    """The journal cannot be written (or is closed); the message names the file and the cause."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One decision about one request. `decision` is e.g. signed, cached, refused, error."""

    pkh: str
    decision: str
    kind: str | None = None
    chain: str | None = None
    level: int | None = None
    round: int | None = None
    payload_hash: str | None = None
    signature: str | None = None
    reason: str | None = None
    message: str | None = None
    time: str = field(default_factory=utc_now)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "time": self.time,
            "pkh": self.pkh,
            "kind": self.kind,
            "chain": self.chain,
            "level": self.level,
            "round": self.round,
            "payload_hash": self.payload_hash,
            "decision": self.decision,
            "signature": self.signature,
        }
        if self.reason is not None:
            out["reason"] = self.reason[:MAX_TEXT]
        if self.message is not None:
            out["message"] = self.message[:MAX_TEXT]
        return out


def entry_line(entry: JournalEntry | Mapping[str, object]) -> bytes:
    """One JSON line; a mapping is written as given, with its reason/message cut to MAX_TEXT."""
    if isinstance(entry, JournalEntry):
        fields = entry.to_json()
    else:
        fields = dict(entry)
        for name in ("reason", "message"):
            text = fields.get(name)
            if isinstance(text, str):
                fields[name] = text[:MAX_TEXT]
    return (json.dumps(fields, separators=(",", ":"), default=str) + "\n").encode()


# Work items for the writer thread: a line (with the future to resolve), a flush barrier, or stop.
_Done = tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None
_Item = tuple[bytes | None, _Done]
_STOP: Final = (None, None)


class Journal:
    """Append-only JSON-lines journal at `path`, rotated to `path.1` … `path.N` by size.

    An entry is a `JournalEntry` or a plain mapping of JSON values (written as given); either way
    it must hold decoded facts and hashes only, never a secret or the request bytes.

    `record` returns once the line is handed to the OS (and fsynced when `fsync` is set).
    `record_nowait` only queues it; a write error is then logged, and `flush` raises it while
    the journal stays unwritable.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
        fsync: bool = False,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"journal max_bytes must be positive, got {max_bytes}")
        if backups < 0:
            raise ValueError(f"journal backups must be 0 or more, got {backups}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._closed = False
        self._error: JournalError | None = None
        self._fd: int | None = None
        self._size = 0
        self._thread = threading.Thread(target=self._run, name="signer-guard-journal", daemon=True)
        self._thread.start()

    # -- public API (event loop side) --------------------------------------------------------

    async def record(self, entry: JournalEntry | Mapping[str, object]) -> None:
        """Append one line; return when it is written."""
        await self._submit(entry_line(entry))

    def record_nowait(self, entry: JournalEntry | Mapping[str, object]) -> None:
        """Queue one line without waiting for the disk (order is still kept)."""
        if self._closed:
            raise JournalError(f"journal {self.path} is closed")
        self._queue.put((entry_line(entry), None))

    async def flush(self) -> None:
        """Wait until every line recorded so far is written (and fsynced when configured)."""
        await self._submit(None)

    async def close(self) -> None:
        """Write what is queued, close the file and stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    async def _submit(self, line: bytes | None) -> None:
        if self._closed:
            raise JournalError(f"journal {self.path} is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put((line, (loop, done)))
        await done

    # -- writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch = [self._queue.get()]
                while True:  # take what else is queued, so one flush covers many lines
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = self._write_batch(batch)
                if stop:
                    return
        finally:
            self._close_fd()

    def _write_batch(self, batch: list[_Item]) -> bool:
        results: list[tuple[_Done, JournalError | None]] = []
        stop = False
        for line, done in batch:
            if line is None and done is None:
                stop = True
            else:
                results.append((done, self._write_line(line) if line is not None else self._error))
        if self.fsync and self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as e:
                err = self._fail(f"cannot fsync journal {self.path}: {e.strerror or e}")
                results = [(done, old or err) for done, old in results]
        for done, error in results:
            if done is not None:
                _resolve(done, error)
        return stop

    def _write_line(self, line: bytes) -> JournalError | None:
        try:
            if self._fd is None:
                self._open()
            if self._size > 0 and self._size + len(line) > self.max_bytes:
                self._rotate()
            assert self._fd is not None
            view = memoryview(line)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            self._size += len(line)
        except OSError as e:
            self._close_fd()
            return self._fail(f"cannot write journal {self.path}: {e.strerror or e}")
        self._error = None
        return None

    def _fail(self, message: str) -> JournalError:
        if self._error is None or str(self._error) != message:
            log.error("%s", message)
        self._error = JournalError(message)
        return self._error

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
        try:
            os.fchmod(fd, _FILE_MODE)
            self._size = os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def _rotate(self) -> None:
        self._close_fd()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                older = self._backup(i)
                if older.exists():
                    older.replace(self._backup(i + 1))
            self.path.replace(self._backup(1))
        self._open()

    def _backup(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _resolve(
    item: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]], error: Exception | None
) -> None:
    loop, done = item

    def finish() -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(finish)
