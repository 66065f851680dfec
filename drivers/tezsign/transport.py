"""One claimed TezSign interface: a reader thread, framed writes, requests matched by id (§5).

`Channel.call` blocks its caller (a driver thread) until the response with the request's id
arrives. Several calls may be in flight; responses are matched by id whatever their order. The
reader thread reads one wMaxPacketSize at a time (§11.6), answers Retry by re-sending every
request the gadget has not yet accepted, ignores keep-alives and unknown frame types, and fails
every waiting call at once when the device disappears.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import usb.core

from . import constants as C
from . import frames
from .errors import DeviceGone, RequestTimeout, WriteFailed
from .usbdev import is_gone

log = logging.getLogger(__name__)

# Read errors after which the host sends a Retry and keeps reading (§5.4).
_TRANSIENT = {
    errno.EAGAIN,
    errno.EINTR,
    errno.EIO,
    errno.EPROTO,
    errno.ESHUTDOWN,
    errno.EBADMSG,
    errno.ETIMEDOUT,
    errno.EPIPE,
    errno.EOVERFLOW,
}
# This many consecutive failed reads close the channel (the watchdog then reconnects).
_MAX_READ_ERRORS = 20


@dataclass(slots=True)
class _Pending:
    payload: bytes
    done: threading.Event = field(default_factory=threading.Event)
    response: bytes | None = None
    error: Exception | None = None
    sent: bool = False


class Channel:
    """Request/response over one claimed interface of an open pyusb device."""

    def __init__(
        self,
        dev: Any,
        ep_in: int,
        ep_out: int,
        max_packet: int,
        *,
        name: str = "tezsign",
        read_timeout_ms: int = C.READ_TIMEOUT_MS,
        keepalive_interval: float | None = None,
        id_factory: Callable[[], bytes] | None = None,
        on_gone: Callable[[str], None] | None = None,
    ) -> None:
        self._dev = dev
        self._ep_in = ep_in
        self._ep_out = ep_out
        self.max_packet = max_packet
        self.name = name
        self._read_timeout_ms = read_timeout_ms
        self._keepalive = keepalive_interval
        self._new_id = id_factory or (lambda: os.urandom(frames.ID_SIZE))
        self._on_gone = on_gone
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pending: dict[bytes, _Pending] = {}
        self._unconfirmed: dict[bytes, bytes] = {}
        self._closed: str | None = None
        self._stop = threading.Event()
        self._last_write = time.monotonic()
        self._decoder = frames.FrameDecoder()
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-reader", daemon=True)
        self._reader.start()

    # ---- public -----------------------------------------------------------------------------

    @property
    def closed(self) -> str | None:
        """Why the channel is closed, or None while it is usable."""
        return self._closed

    def call(self, payload: bytes, timeout: float) -> bytes:
        """Send a request and wait for its response payload.

        Raises DeviceGone, WriteFailed or RequestTimeout; each says whether the request was sent."""
        msg_id = self._new_id()
        pending = _Pending(payload)
        with self._lock:
            if self._closed is not None:
                raise DeviceGone(self._closed)
            self._pending[msg_id] = pending
            self._unconfirmed[msg_id] = payload
        try:
            self._write_frame(frames.request(msg_id, payload))
            pending.sent = True
            if not pending.done.wait(timeout):
                raise RequestTimeout(
                    f"{self.name}: no response within {timeout:g} s", sent=pending.sent
                )
            if pending.error is not None:
                raise pending.error
            assert pending.response is not None
            return pending.response
        except (DeviceGone, WriteFailed) as exc:
            exc.sent = pending.sent
            raise
        finally:
            with self._lock:
                self._pending.pop(msg_id, None)
                self._unconfirmed.pop(msg_id, None)

    def close(self, reason: str = "channel closed", *, wait: bool = True) -> None:
        """Stop the reader and fail every waiting call with DeviceGone(reason)."""
        self._fail_all(reason)
        self._stop.set()
        if wait and threading.current_thread() is not self._reader:
            self._reader.join(timeout=2 + self._read_timeout_ms / 1000)

    # ---- writing ----------------------------------------------------------------------------

    def _write_frame(self, frame: frames.Frame) -> None:
        data = frames.encode(frame)
        with self._write_lock:
            for start in range(0, len(data), self.max_packet):
                self._write_packet(data[start : start + self.max_packet])
            # Always a zero-length packet after the frame (§5.7, §11.7).
            self._write_packet(b"")
            self._last_write = time.monotonic()

    def _write_packet(self, chunk: bytes) -> None:
        for attempt in (1, 2):  # a failed write is retried once (§5.7)
            if self._closed is not None:
                raise DeviceGone(self._closed)
            try:
                written = self._dev.write(self._ep_out, chunk, C.WRITE_TIMEOUT_MS)
            except usb.core.USBError as exc:
                if is_gone(exc):
                    self._gone(f"{self.name}: gadget disconnected ({exc})")
                    raise DeviceGone(f"{self.name}: gadget disconnected ({exc})") from exc
                if attempt == 2:
                    raise WriteFailed(f"{self.name}: write failed twice: {exc}") from exc
                log.debug("%s: write failed (%s), retrying once", self.name, exc)
                continue
            if written == len(chunk):
                return
            if attempt == 2:
                raise WriteFailed(f"{self.name}: short write ({written} of {len(chunk)} bytes)")
        raise AssertionError("unreachable")

    def _send_control(self, frame: frames.Frame) -> None:
        try:
            self._write_frame(frame)
        except (DeviceGone, WriteFailed) as exc:
            log.debug("%s: could not send frame type %d: %s", self.name, frame.type, exc)

    # ---- reading ----------------------------------------------------------------------------

    def _read_loop(self) -> None:
        errors = 0
        while not self._stop.is_set():
            try:
                data = bytes(self._dev.read(self._ep_in, self.max_packet, self._read_timeout_ms))
            except usb.core.USBTimeoutError:
                self._maybe_keepalive()
                continue
            except usb.core.USBError as exc:
                if self._stop.is_set():
                    return
                if is_gone(exc):
                    self._gone(f"{self.name}: gadget disconnected ({exc})")
                    return
                errors += 1
                if errors >= _MAX_READ_ERRORS or exc.errno not in _TRANSIENT:
                    self._gone(f"{self.name}: reading from the gadget failed: {exc}")
                    return
                log.debug("%s: transient read error (%s): sending Retry", self.name, exc)
                self._send_control(frames.RETRY)
                continue
            except Exception as exc:  # a broken backend must not kill callers silently
                self._gone(f"{self.name}: reader failed: {exc!r}")
                return
            errors = 0
            for frame in self._decoder.feed(data):
                self._dispatch(frame)

    def _maybe_keepalive(self) -> None:
        if self._keepalive is not None and time.monotonic() - self._last_write >= self._keepalive:
            self._send_control(frames.KEEP_ALIVE)

    def _dispatch(self, frame: frames.Frame) -> None:
        if frame.type == frames.FrameType.RESPONSE:
            with self._lock:
                pending = self._pending.get(frame.msg_id)
                self._unconfirmed.pop(frame.msg_id, None)
            if pending is None or pending.done.is_set():
                log.debug("%s: dropping response for unknown id %s", self.name, frame.msg_id.hex())
                return
            pending.response = frame.payload
            pending.done.set()
        elif frame.type == frames.FrameType.ACCEPT:
            with self._lock:
                self._unconfirmed.pop(frame.msg_id, None)
        elif frame.type == frames.FrameType.RETRY:
            with self._lock:
                resend = list(self._unconfirmed.items())
            log.debug(
                "%s: gadget asked for a retry: re-sending %d request(s)", self.name, len(resend)
            )
            for msg_id, payload in resend:
                self._send_control(frames.request(msg_id, payload))
        elif frame.type == frames.FrameType.KEEP_ALIVE:
            return
        else:
            log.debug("%s: ignoring frame of unknown type %d", self.name, frame.type)

    def _fail_all(self, reason: str) -> None:
        with self._lock:
            if self._closed is None:
                self._closed = reason
            waiting = list(self._pending.values())
        for pending in waiting:
            if not pending.done.is_set():
                pending.error = DeviceGone(reason, sent=pending.sent)
                pending.done.set()

    def _gone(self, reason: str) -> None:
        first = self._closed is None
        self._fail_all(reason)
        self._stop.set()
        if first and self._on_gone is not None:
            self._on_gone(reason)
