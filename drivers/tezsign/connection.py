"""One TezSign gadget held open by this process: IF0 for signing, IF1 on demand, a watchdog.

Several backends (the consensus key and its companion key) usually live on one gadget, and only
one handle may claim IF0, so connections are shared through `acquire`/`release`.

Threads: the watchdog re-probes readiness every second, refreshes Status every 5 s and
reconnects every 0.5 s while the gadget is away (§11.8). Requests run on the connection's two
single-worker executors (`sign_executor` for IF0, `mgmt_executor` for IF1), so there is one
request at a time per interface and nothing blocks the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from . import client, usbdev
from . import constants as C
from .errors import DeviceGone, NotReady, TezSignError
from .messages import KeyStatus, VersionInfo
from .transport import Channel

log = logging.getLogger(__name__)
T = TypeVar("T")


class GadgetConnection:
    def __init__(
        self,
        serial: str = "*",
        usb_backend: Any = None,
        *,
        watchdog_interval: float = C.WATCHDOG_INTERVAL,
        reconnect_interval: float = C.RECONNECT_INTERVAL,
        status_interval: float = C.STATUS_INTERVAL,
        read_timeout_ms: int = C.READ_TIMEOUT_MS,
        keepalive_interval: float | None = None,
        id_factory: Callable[[], bytes] | None = None,
    ) -> None:
        self.serial = serial
        self._usb_backend = usb_backend
        self._watchdog_interval = watchdog_interval
        self._reconnect_interval = reconnect_interval
        self._status_interval = status_interval
        self._read_timeout_ms = read_timeout_ms
        self._keepalive = keepalive_interval
        self._id_factory = id_factory
        self._state_lock = threading.RLock()
        self._sign_lock = threading.Lock()
        self._mgmt_lock = threading.Lock()
        self._dev: Any = None
        self._sign: Channel | None = None
        self._status: list[KeyStatus] | None = None
        self._status_at = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.sign_executor = ThreadPoolExecutor(1, thread_name_prefix="tezsign-if0")
        self.mgmt_executor = ThreadPoolExecutor(1, thread_name_prefix="tezsign-if1")
        #: Why the gadget is not connected (None while connected).
        self.last_error: str | None = "not connected yet"
        self.device_serial: str | None = None
        self.version: VersionInfo | None = None
        #: Incremented on every successful connect.
        self.generation = 0

    # ---- state ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        ch = self._sign
        return ch is not None and ch.closed is None

    def cached_status(self) -> tuple[list[KeyStatus] | None, float]:
        """The last Status answer and its time.monotonic() stamp (None before the first one)."""
        return self._status, self._status_at

    # ---- lifecycle --------------------------------------------------------------------------

    def start_watchdog(self) -> None:
        with self._state_lock:
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, name="tezsign-watchdog", daemon=True
                )
                self._watchdog.start()

    def connect(self) -> None:
        """Connect now if not connected (blocking). Raises NoDevice, NotReady, InterfaceBusy…"""
        with self._state_lock:
            if self.connected:
                return
            if self._sign is not None:
                self._disconnect(self._sign.closed or "channel closed")
            try:
                self._connect()
            except TezSignError as exc:
                self.last_error = str(exc)
                raise

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=5)
        with self._state_lock:
            self._disconnect("connection closed", quiet=True)
        self.sign_executor.shutdown(wait=False, cancel_futures=True)
        self.mgmt_executor.shutdown(wait=False, cancel_futures=True)

    def _connect(self) -> None:
        dev = usbdev.select(usbdev.find_gadgets(self._usb_backend), self.serial)
        try:
            intf = usbdev.open_interface(dev, C.IF_SIGN)
        except TezSignError:
            usbdev.dispose(dev)
            raise
        try:
            serial = usbdev.serial_of(dev)
        except TezSignError:
            serial = None
        channel = Channel(
            dev,
            intf.ep_in,
            intf.ep_out,
            intf.max_packet,
            name=f"tezsign[{serial or self.serial}]/if0",
            read_timeout_ms=self._read_timeout_ms,
            keepalive_interval=self._keepalive,
            id_factory=self._id_factory,
            on_gone=self._on_channel_gone,
        )
        self._dev, self._sign, self.device_serial = dev, channel, serial
        try:
            with self._sign_lock:
                self.version = client.version(channel)
                keys = client.status(channel)
        except TezSignError as exc:
            self._disconnect(f"gadget did not answer Version/Status: {exc}", quiet=True)
            raise NotReady(f"gadget did not answer Version/Status: {exc}") from exc
        self._status, self._status_at = keys, time.monotonic()
        self.generation += 1
        self.last_error = None
        log.info(
            "TezSign gadget %s connected (version %s, %d key(s))",
            serial,
            self.version.version if self.version else "unknown",
            len(keys),
        )

    def _disconnect(self, reason: str, *, quiet: bool = False) -> None:
        ch, dev = self._sign, self._dev
        self._sign, self._dev = None, None
        if ch is not None:
            ch.close(reason)
        if dev is not None:
            usbdev.release(dev, C.IF_SIGN)
            usbdev.dispose(dev)
        if ch is not None or dev is not None:
            self.last_error = reason
            if not quiet:
                log.warning("TezSign gadget %s disconnected: %s", self.device_serial, reason)

    def _on_channel_gone(self, reason: str) -> None:
        self._wake.set()

    # ---- watchdog ---------------------------------------------------------------------------

    def _watch(self) -> None:
        last_failure: str | None = None
        while not self._stop.is_set():
            if self.connected:
                self._wake.wait(self._watchdog_interval)
                self._wake.clear()
                if self._stop.is_set():
                    return
                self._check()
                continue
            try:
                self.connect()
                last_failure = None
            except TezSignError as exc:
                if str(exc) != last_failure:
                    log.info("TezSign gadget %s: not connected: %s", self.serial, exc)
                    last_failure = str(exc)
            except Exception as exc:  # the watchdog must survive anything
                log.exception("TezSign watchdog: unexpected error while connecting: %r", exc)
            if not self.connected:
                self._stop.wait(self._reconnect_interval)

    def _check(self) -> None:
        with self._state_lock:
            ch, dev = self._sign, self._dev
            if ch is None or dev is None:
                return
            if ch.closed is not None:
                self._disconnect(ch.closed)
                return
            try:
                state = usbdev.probe(dev, C.IF_SIGN)
            except TezSignError as exc:
                self._disconnect(f"readiness probe failed: {exc}")
                return
            if not state.ready:
                self._disconnect("gadget reports its signer is not ready")
                return
        if time.monotonic() - self._status_at >= self._status_interval:
            try:
                self.status(max_age=0)
            except TezSignError as exc:
                log.info("TezSign gadget %s: status refresh failed: %s", self.device_serial, exc)

    # ---- requests ---------------------------------------------------------------------------

    def on_sign_interface(self, fn: Callable[[Channel], T]) -> T:
        """Run `fn` with the IF0 channel, one request at a time. Raises DeviceGone if away."""
        with self._sign_lock:
            ch = self._sign
            if ch is None or ch.closed is not None:
                raise DeviceGone(f"gadget not connected ({self.last_error or 'reconnecting'})")
            return fn(ch)

    def status(self, max_age: float = 0.0) -> list[KeyStatus]:
        """Key status from the cache if younger than `max_age` seconds, else from the gadget."""
        keys, stamp = self._status, self._status_at
        if keys is not None and max_age > 0 and time.monotonic() - stamp < max_age:
            return keys
        keys = self.on_sign_interface(client.status)
        self._status, self._status_at = keys, time.monotonic()
        return keys

    def note_key_state(self, key_id: str, lock_state: str) -> None:
        """Record a lock state learned from a Sign error (31/32) until the next Status."""
        keys = self._status
        if keys is None:
            return
        self._status = [
            KeyStatus(
                key_id=k.key_id,
                lock_state=lock_state,
                tz4=k.tz4,
                bl_pubkey=k.bl_pubkey,
                pop=k.pop,
                marks=k.marks,
                state_corrupted=k.state_corrupted,
            )
            if k.key_id == key_id
            else k
            for k in keys
        ]

    @contextmanager
    def management(self) -> Iterator[Channel]:
        """Claim IF1 for the duration of the block, then release it at once (§7)."""
        with self._mgmt_lock:
            with self._state_lock:
                dev = self._dev
                if dev is None or not self.connected:
                    raise DeviceGone(f"gadget not connected ({self.last_error or 'reconnecting'})")
                intf = usbdev.open_interface(dev, C.IF_MANAGEMENT)
            channel = Channel(
                dev,
                intf.ep_in,
                intf.ep_out,
                intf.max_packet,
                name=f"tezsign[{self.device_serial}]/if1",
                read_timeout_ms=self._read_timeout_ms,
                id_factory=self._id_factory,
            )
            try:
                yield channel
            finally:
                channel.close("management session ended")
                usbdev.release(dev, intf.number)


# ---- sharing one connection per gadget ----------------------------------------------------------

_registry_lock = threading.Lock()
_registry: dict[tuple[int, str], tuple[GadgetConnection, int]] = {}


def acquire(serial: str, usb_backend: Any = None, **options: Any) -> GadgetConnection:
    """The shared connection to gadget `serial` ("*" = first), created on first use.

    A "*" URI and one naming the serial of the same gadget share a connection when that can be
    told (the other one exists already). `options` (GadgetConnection keyword arguments) only
    apply when the connection is created."""
    backend = usbdev.resolve_usb_backend(usb_backend)
    with _registry_lock:
        mine = [(key, entry) for key, entry in _registry.items() if key[0] == id(backend)]
        found = next((key for key, _ in mine if key[1] == serial), None)
        if found is None and serial == "*" and len(mine) == 1:
            found = mine[0][0]
        if found is None and serial != "*":
            found = next(
                (key for key, (c, _) in mine if key[1] == "*" and c.device_serial == serial), None
            )
        if found is not None:
            conn, refs = _registry[found]
            _registry[found] = (conn, refs + 1)
            return conn
        conn = GadgetConnection(serial, backend, **options)
        _registry[(id(backend), serial)] = (conn, 1)
        return conn


def release(conn: GadgetConnection) -> None:
    """Drop one reference; the last one closes the connection."""
    with _registry_lock:
        for key, (known, refs) in list(_registry.items()):
            if known is conn:
                if refs > 1:
                    _registry[key] = (known, refs - 1)
                    return
                del _registry[key]
                break
    conn.close()
