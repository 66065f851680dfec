"""A TCP APDU server on 127.0.0.1 (port 0) with the Speculos / octez-proxy framing (ledger.md §3).

host → app: `u32 BE len ‖ APDU`; app → host: `u32 BE len(data) ‖ data ‖ SW` (length without SW).
Threads only; `stop()` closes every socket and joins every thread it started.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Protocol


class ApduHandler(Protocol):
    def handle(self, apdu: bytes) -> tuple[bytes, float]: ...


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    buf = b""
    while len(buf) < size:
        chunk = conn.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class FakeTcpServer:
    def __init__(self, app: ApduHandler) -> None:
        self.app = app
        self.available = True  # False: connections are accepted and closed at once
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.port = 0

    def start(self) -> FakeTcpServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.05)  # so that the accept loop notices stop()
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            if not self.available:
                conn.close()
                continue
            with self._lock:
                self._conns.append(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            while not self._stopped.is_set():
                header = _recv_exact(conn, 4)
                if header is None:
                    return
                (length,) = struct.unpack(">I", header)
                apdu = _recv_exact(conn, length)
                if apdu is None:
                    return
                response, delay = self.app.handle(apdu)
                if delay and self._stopped.wait(delay):
                    return
                data, sw = response[:-2], response[-2:]
                conn.sendall(struct.pack(">I", len(data)) + data + sw)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def disconnect_all(self) -> None:
        """Drop every open connection (the emulator went away)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    def stop(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        self.disconnect_all()
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=5)

    def __enter__(self) -> FakeTcpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
