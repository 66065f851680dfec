"""APDUs over USB HID: 64-byte reports with channel, tag and sequence (ledger.md §1–§2).

The `hid` module (PyPI `hidapi`) is injectable, so tests pass a fake one.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

from drivers.ledger.transport import TransportError, TransportTimeout

VENDOR_ID: Final = 0x2C97
USAGE_PAGE: Final = 0xFFA0
REPORT_SIZE: Final = 64
CHANNEL: Final = 0x0101
TAG_APDU: Final = 0x05
_FIRST_HEADER: Final = 7  # channel(2) tag(1) seq(2) length(2)
_NEXT_HEADER: Final = 5  # channel(2) tag(1) seq(2)

_LEGACY_MODELS: Final = {
    0x0001: "Nano S",
    0x0004: "Nano X",
    0x0005: "Nano S Plus",
    0x0006: "Stax",
    0x0007: "Flex",
    0x0008: "Apex",
}
_MODELS: Final = {
    0x10: "Nano S",
    0x40: "Nano X",
    0x50: "Nano S Plus",
    0x60: "Stax",
    0x70: "Flex",
    0x80: "Apex",
}


class HidDevice(Protocol):
    def open_path(self, path: bytes) -> None: ...
    def write(self, data: bytes) -> int: ...
    def read(self, max_length: int, timeout_ms: int = 0) -> Sequence[int]: ...
    def close(self) -> None: ...


class HidModule(Protocol):
    def enumerate(self, vendor_id: int = 0, product_id: int = 0) -> list[dict[str, Any]]: ...
    def device(self) -> HidDevice: ...


def default_hid_module() -> HidModule:
    """The real `hid` module (hidapi); a clear error when it is missing."""
    try:
        import hid
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise TransportError(
            "ledger: the 'hidapi' Python package is not installed (pip install hidapi)"
        ) from exc
    return cast(HidModule, hid)


def model_name(product_id: int) -> str:
    """Ledger model from the USB product id: legacy table first, then `pid >> 8`."""
    return _LEGACY_MODELS.get(product_id) or _MODELS.get(product_id >> 8, f"0x{product_id:04x}")


@dataclass(frozen=True)
class HidDeviceInfo:
    path: bytes
    product_id: int
    serial: str
    product: str

    @property
    def model(self) -> str:
        return model_name(self.product_id)


def enumerate_devices(hid_module: HidModule) -> list[HidDeviceInfo]:
    """Ledger HID interfaces to open: interface 0, or usage page 0xffa0 (macOS)."""
    found: list[HidDeviceInfo] = []
    seen: set[bytes] = set()
    for entry in hid_module.enumerate(VENDOR_ID, 0):
        if entry.get("vendor_id", VENDOR_ID) != VENDOR_ID:
            continue
        if entry.get("interface_number") != 0 and entry.get("usage_page") != USAGE_PAGE:
            continue
        raw_path = entry.get("path", b"")
        path = raw_path.encode() if isinstance(raw_path, str) else bytes(raw_path)
        if path in seen:
            continue
        seen.add(path)
        found.append(
            HidDeviceInfo(
                path=path,
                product_id=int(entry.get("product_id", 0)),
                serial=str(entry.get("serial_number") or ""),
                product=str(entry.get("product_string") or ""),
            )
        )
    return found


# --- framing ---------------------------------------------------------------------------------


def frame_apdu(apdu: bytes, channel: int = CHANNEL) -> list[bytes]:
    """Split one APDU into 64-byte reports (without the report-id byte), zero padded."""
    if len(apdu) > 0xFFFF:
        raise ValueError("APDU too long for HID framing")
    frames: list[bytes] = []
    rest = struct.pack(">H", len(apdu)) + apdu
    seq = 0
    while True:
        header = struct.pack(">HBH", channel, TAG_APDU, seq)
        room = REPORT_SIZE - len(header)
        chunk, rest = rest[:room], rest[room:]
        frames.append((header + chunk).ljust(REPORT_SIZE, b"\x00"))
        seq += 1
        if not rest:
            return frames


class FrameAssembler:
    """Reassembles one response from reports, checking channel, tag, sequence and size."""

    def __init__(self, channel: int = CHANNEL) -> None:
        self.channel = channel
        self._expected: int | None = None
        self._data = bytearray()
        self._seq = 0

    @property
    def complete(self) -> bool:
        return self._expected is not None and len(self._data) >= self._expected

    @property
    def response(self) -> bytes:
        if self._expected is None or not self.complete:
            raise TransportError("ledger: HID response not complete")
        return bytes(self._data[: self._expected])

    def feed(self, report: bytes) -> bool:
        """Add one report; return True when the response is complete."""
        if self.complete:
            raise TransportError("ledger: HID report after a complete response")
        if len(report) != REPORT_SIZE:
            raise TransportError(
                f"ledger: short HID report ({len(report)} bytes, expected {REPORT_SIZE})"
            )
        channel, tag, seq = struct.unpack(">HBH", report[:5])
        if channel != self.channel:
            raise TransportError(
                f"ledger: HID channel 0x{channel:04x} in response, expected 0x{self.channel:04x}"
            )
        if tag != TAG_APDU:
            raise TransportError(f"ledger: HID tag 0x{tag:02x} in response, expected 0x05")
        if seq != self._seq:
            raise TransportError(f"ledger: HID sequence {seq} in response, expected {self._seq}")
        if seq == 0:
            (self._expected,) = struct.unpack(">H", report[5:7])
            self._data += report[_FIRST_HEADER:]
        else:
            self._data += report[_NEXT_HEADER:]
        self._seq += 1
        return self.complete


# --- transport -------------------------------------------------------------------------------


class HidTransport:
    """One opened Ledger HID interface."""

    def __init__(self, device: HidDevice, info: HidDeviceInfo) -> None:
        self._device: HidDevice | None = device
        self.info = info
        self.description = f"{info.model} (HID {info.path.decode(errors='replace')})"

    @classmethod
    def open(cls, hid_module: HidModule, info: HidDeviceInfo) -> HidTransport:
        device = hid_module.device()
        try:
            device.open_path(info.path)
        except (OSError, ValueError) as exc:
            raise TransportError(
                f"ledger: cannot open {info.model} at {info.path.decode(errors='replace')}: {exc} "
                "(on Linux, install drivers/udev/70-ledger.rules and join the plugdev group)"
            ) from exc
        return cls(device, info)

    def exchange(self, apdu: bytes, timeout: float) -> bytes:
        device = self._device
        if device is None:
            raise TransportError("ledger: HID device is closed")
        deadline = time.monotonic() + timeout
        frames = frame_apdu(apdu)
        for index, frame in enumerate(frames):
            try:
                written = device.write(b"\x00" + frame)
            except (OSError, ValueError) as exc:
                raise TransportError(f"ledger: HID write failed: {exc}", sent=index > 0) from exc
            if written < 0:
                raise TransportError("ledger: HID write failed (device gone?)", sent=index > 0)
        assembler = FrameAssembler()
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise TransportTimeout(
                    f"ledger: no answer from the device within {timeout:g} s", sent=True
                )
            try:
                report = bytes(device.read(REPORT_SIZE, remaining_ms))
            except (OSError, ValueError) as exc:
                raise TransportError(f"ledger: HID read failed: {exc}", sent=True) from exc
            if not report:
                continue  # the read timed out; the deadline check above decides
            try:
                done = assembler.feed(report)
            except TransportError as exc:
                exc.sent = True
                raise
            if done:
                return assembler.response

    def close(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            with contextlib.suppress(Exception):  # a vanished device may fail to close
                device.close()
