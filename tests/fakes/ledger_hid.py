"""A fake `hid` module (hidapi API: `enumerate`, `device()` with `open_path/write/read/close`)
that carries APDUs to an app in 64-byte HID reports (ledger.md §2).

The fake checks what the driver writes (65 bytes, report id 0, channel, tag, sequence, zero
padding) and records any violation in `HidEndpoint.framing_errors`. Tests can unplug/replug an
endpoint and rewrite the response reports (`response_hook`) for negative transport tests.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

VENDOR_ID: Final = 0x2C97
REPORT: Final = 64


class ApduHandler(Protocol):
    def handle(self, apdu: bytes) -> tuple[bytes, float]: ...


def hid_frames(payload: bytes, channel: int = 0x0101, tag: int = 0x05) -> list[bytes]:
    """`payload` (an APDU, or a response `data ‖ SW`) as zero-padded 64-byte reports."""
    rest = struct.pack(">H", len(payload)) + payload
    frames = []
    seq = 0
    while True:
        header = struct.pack(">HBH", channel, tag, seq)
        chunk, rest = rest[: REPORT - 5], rest[REPORT - 5 :]
        frames.append((header + chunk).ljust(REPORT, b"\x00"))
        seq += 1
        if not rest:
            return frames


@dataclass
class HidEndpoint:
    """One Ledger HID interface as the OS shows it."""

    app: ApduHandler
    path: bytes
    product_id: int = 0x5011  # Nano S Plus, generic HID
    serial: str = "0001"
    interface_number: int = 0
    usage_page: int = 0xFFA0
    plugged: bool = True
    generation: int = 0  # bumped on unplug: handles opened before stay dead
    response_hook: Callable[[list[bytes]], list[bytes]] | None = None
    framing_errors: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def entry(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "vendor_id": VENDOR_ID,
            "product_id": self.product_id,
            "serial_number": self.serial,
            "manufacturer_string": "Ledger",
            "product_string": "Nano S Plus",
            "interface_number": self.interface_number,
            "usage_page": self.usage_page,
        }

    def unplug(self) -> None:
        with self.cond:
            self.plugged = False
            self.generation += 1
            self.cond.notify_all()

    def plug(self) -> None:
        with self.cond:
            self.plugged = True
            self.cond.notify_all()


class FakeHidDevice:
    """What `hid.device()` returns."""

    def __init__(self, module: FakeHidModule) -> None:
        self._module = module
        self._endpoint: HidEndpoint | None = None
        self._generation = 0
        self._incoming: list[bytes] = []
        self._expected = 0
        self._outgoing: list[tuple[float, bytes]] = []  # (available at, report)

    def open_path(self, path: bytes) -> None:
        endpoint = self._module.endpoints.get(bytes(path))
        if endpoint is None or not endpoint.plugged:
            raise OSError("open failed")
        self._endpoint = endpoint
        self._generation = endpoint.generation

    def _live(self) -> HidEndpoint:
        if self._endpoint is None:
            raise ValueError("not open")
        if not self._endpoint.plugged or self._endpoint.generation != self._generation:
            raise OSError("read error (device disconnected)")
        return self._endpoint

    def write(self, data: bytes | list[int]) -> int:
        self._module.io_threads.add(threading.current_thread().name)
        endpoint = self._live()
        report = bytes(data)
        errors = endpoint.framing_errors
        if len(report) != REPORT + 1 or report[0] != 0:
            errors.append(f"write of {len(report)} bytes, report id {report[:1].hex()}")
            return len(report)
        frame = report[1:]
        channel, tag, seq = struct.unpack(">HBH", frame[:5])
        if (channel, tag, seq) != (0x0101, 0x05, len(self._incoming)):
            errors.append(f"bad header {frame[:5].hex()} for frame {len(self._incoming)}")
            return len(report)
        if seq == 0:
            (self._expected,) = struct.unpack(">H", frame[5:7])
        self._incoming.append(frame)
        body = self._incoming[0][7:] + b"".join(f[5:] for f in self._incoming[1:])
        if len(body) < self._expected:
            return len(report)
        if any(body[self._expected :]):
            errors.append("non-zero padding after the APDU")
        apdu = body[: self._expected]
        self._incoming = []
        response, delay = endpoint.app.handle(apdu)
        frames = hid_frames(response)
        if endpoint.response_hook is not None:
            frames = endpoint.response_hook(frames)
        ready = time.monotonic() + delay
        with endpoint.cond:
            self._outgoing.extend((ready, f) for f in frames)
            endpoint.cond.notify_all()
        return len(report)

    def read(self, max_length: int, timeout_ms: int = 0) -> list[int]:
        self._module.io_threads.add(threading.current_thread().name)
        endpoint = self._live()
        deadline = time.monotonic() + timeout_ms / 1000
        with endpoint.cond:
            while True:
                if not endpoint.plugged or endpoint.generation != self._generation:
                    raise OSError("read error (device disconnected)")
                now = time.monotonic()
                if self._outgoing and self._outgoing[0][0] <= now:
                    return list(self._outgoing.pop(0)[1][:max_length])
                if now >= deadline:
                    return []
                wake = min(deadline, self._outgoing[0][0]) if self._outgoing else deadline
                endpoint.cond.wait(max(0.0, wake - now))

    def close(self) -> None:
        self._endpoint = None


class FakeHidModule:
    """Stands in for the `hid` module; pass it as `hid_module=`."""

    def __init__(self) -> None:
        self.endpoints: dict[bytes, HidEndpoint] = {}
        self.extra_entries: list[dict[str, Any]] = []  # e.g. the U2F interface of a Ledger
        self.io_threads: set[str] = set()  # names of the threads that called write/read

    def add(self, app: ApduHandler, path: bytes = b"fake-ledger-0", **kwargs: Any) -> HidEndpoint:
        endpoint = HidEndpoint(app=app, path=path, **kwargs)
        self.endpoints[path] = endpoint
        return endpoint

    def enumerate(self, vendor_id: int = 0, product_id: int = 0) -> list[dict[str, Any]]:
        entries = [e.entry() for e in self.endpoints.values() if e.plugged]
        entries += self.extra_entries
        return [
            e
            for e in entries
            if (not vendor_id or e["vendor_id"] == vendor_id)
            and (not product_id or e["product_id"] == product_id)
        ]

    def device(self) -> FakeHidDevice:
        return FakeHidDevice(self)
