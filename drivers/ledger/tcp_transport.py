"""APDUs over TCP, as Speculos (`--apdu-port`) and the octez ledger proxy speak (ledger.md §3).

host → app: `u32 BE length(APDU) ‖ APDU`; app → host: `u32 BE length(data) ‖ data ‖ SW1 SW2`
(the length does not count the status word).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from typing import Final

from drivers.ledger.transport import TransportError, TransportTimeout

DEFAULT_PORT: Final = 9999
MAX_RESPONSE: Final = 0x10000


def frame_request(apdu: bytes) -> bytes:
    return struct.pack(">I", len(apdu)) + apdu


def parse_response_header(header: bytes) -> int:
    """The number of bytes that follow the 4-byte header: data plus the 2-byte status word."""
    length = int.from_bytes(header, "big")
    if length > MAX_RESPONSE:
        raise TransportError(f"ledger: TCP response length {length} is not plausible")
    return length + 2


def parse_host_port(text: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`, or `HOST` for port 9999)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or "]" in port_text:
        host, port_text = text, str(DEFAULT_PORT)
    host = host.strip("[]")
    if not host:
        raise ValueError(f"tcp={text!r}: missing host")
    try:
        port = int(port_text)
    except ValueError as exc:
        raise ValueError(f"tcp={text!r}: port {port_text!r} is not a number") from exc
    if not 0 < port < 65536:
        raise ValueError(f"tcp={text!r}: port out of range")
    return host, port


class TcpTransport:
    """One TCP connection to an emulator's APDU port."""

    def __init__(self, sock: socket.socket, host: str, port: int) -> None:
        self._sock: socket.socket | None = sock
        self.description = f"TCP {host}:{port}"

    @classmethod
    def open(cls, host: str, port: int, timeout: float = 5.0) -> TcpTransport:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise TransportError(f"ledger: cannot connect to {host}:{port}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, host, port)

    def exchange(self, apdu: bytes, timeout: float) -> bytes:
        sock = self._sock
        if sock is None:
            raise TransportError("ledger: TCP connection is closed")
        deadline = time.monotonic() + timeout
        try:
            sock.settimeout(timeout)
            sock.sendall(frame_request(apdu))
        except OSError as exc:
            raise TransportError(f"ledger: TCP send failed: {exc}") from exc
        header = self._recv_exact(sock, 4, deadline, timeout)
        body = self._recv_exact(sock, parse_response_header(header), deadline, timeout)
        return body

    def _recv_exact(self, sock: socket.socket, size: int, deadline: float, timeout: float) -> bytes:
        buf = bytearray()
        while len(buf) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportTimeout(
                    f"ledger: no answer from the device within {timeout:g} s", sent=True
                )
            try:
                sock.settimeout(remaining)
                chunk = sock.recv(size - len(buf))
            except TimeoutError as exc:
                raise TransportTimeout(
                    f"ledger: no answer from the device within {timeout:g} s", sent=True
                ) from exc
            except OSError as exc:
                raise TransportError(f"ledger: TCP receive failed: {exc}", sent=True) from exc
            if not chunk:
                raise TransportError("ledger: TCP connection closed by the device", sent=True)
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):  # a vanished device may fail to close
                sock.close()
