"""Finding a TezSign gadget with pyusb and preparing its interfaces (tezsign.md §2, §3, §11).

All functions here block: call them from the driver's own threads, never from the event loop.

The pyusb backend is injectable: pass `usb_backend=` explicitly, or set a process-wide default with
`set_default_usb_backend` (tests install the fake gadget there; `None` means libusb).
"""

from __future__ import annotations

import errno
import logging
import struct
from dataclasses import dataclass
from typing import Any

import usb.core
import usb.util

from . import constants as C
from .errors import DeviceGone, InterfaceBusy, NoDevice, NotReady, ProtocolError

log = logging.getLogger(__name__)

_default_usb_backend: Any = None

# libusb's LIBUSB_ERROR_NO_DEVICE, for backends that leave errno unset.
_LIBUSB_NO_DEVICE = -4
_LIBUSB_BUSY = -6
_ENDPOINT_BULK = 0x02


def set_default_usb_backend(backend: Any) -> None:
    """Use `backend` (a pyusb IBackend) whenever no backend is passed explicitly; None = libusb."""
    global _default_usb_backend
    _default_usb_backend = backend


def resolve_usb_backend(backend: Any) -> Any:
    return backend if backend is not None else _default_usb_backend


def is_gone(exc: BaseException) -> bool:
    """Whether a pyusb error means the device is no longer there."""
    if not isinstance(exc, usb.core.USBError):
        return False
    code = getattr(exc, "backend_error_code", None)
    return exc.errno == errno.ENODEV or code == _LIBUSB_NO_DEVICE


def is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, usb.core.USBError):
        return False
    return exc.errno == errno.EBUSY or getattr(exc, "backend_error_code", None) == _LIBUSB_BUSY


def find_gadgets(usb_backend: Any = None) -> list[Any]:
    """Every attached TezSign gadget (pyusb Device objects), in enumeration order."""
    try:
        found = usb.core.find(
            find_all=True,
            idVendor=C.VENDOR_ID,
            idProduct=C.PRODUCT_ID,
            backend=resolve_usb_backend(usb_backend),
        )
        return list(found)
    except usb.core.NoBackendError as exc:
        raise NoDevice(
            "no libusb backend for pyusb: install libusb-1.0 (Debian: apt install libusb-1.0-0)"
        ) from exc
    except usb.core.USBError as exc:
        raise NoDevice(f"cannot enumerate USB devices: {exc}") from exc


def serial_of(dev: Any) -> str:
    """The gadget's serial string; raises NoDevice when it cannot be read (often permissions)."""
    try:
        serial = dev.serial_number
    except (usb.core.USBError, ValueError) as exc:
        raise NoDevice(
            f"cannot read the serial number of TezSign gadget at bus {dev.bus} address "
            f"{dev.address} ({exc}); check permissions: install drivers/udev/70-tezsign.rules "
            "and add the user to the plugdev group"
        ) from exc
    return str(serial or "")


def select(devices: list[Any], serial: str) -> Any:
    """Pick the gadget with `serial` ("*" = the first one; a warning when there are several)."""
    if not devices:
        raise NoDevice("no TezSign gadget attached (USB 9997:0001 not found)")
    if serial == "*":
        if len(devices) > 1:
            log.warning(
                "%d TezSign gadgets attached, using the first one; name one by serial in the URI",
                len(devices),
            )
        return devices[0]
    for dev in devices:
        if serial_of(dev) == serial:
            return dev
    raise NoDevice(f"no TezSign gadget with serial {serial!r} attached")


@dataclass(frozen=True, slots=True)
class GadgetInterface:
    number: int
    ep_in: int
    ep_out: int
    max_packet: int


def gadget_interfaces(dev: Any) -> list[GadgetInterface]:
    """Vendor-class interfaces with one bulk IN and one bulk OUT endpoint, by bInterfaceNumber.

    Read from the descriptors before any configuration is selected (§11.2). [0] signs, [1] manages.
    """
    found: dict[int, GadgetInterface] = {}
    try:
        configurations = list(dev)
    except usb.core.USBError as exc:
        if is_gone(exc):
            raise DeviceGone(f"gadget vanished while reading descriptors: {exc}") from exc
        raise NotReady(f"cannot read the gadget's descriptors: {exc}") from exc
    for cfg in configurations:
        for intf in cfg:
            if intf.bInterfaceClass != C.VENDOR_CLASS or intf.bInterfaceNumber in found:
                continue
            ins = [e for e in intf if _is_bulk(e) and _is_in(e)]
            outs = [e for e in intf if _is_bulk(e) and not _is_in(e)]
            if len(ins) == 1 and len(outs) == 1:
                found[intf.bInterfaceNumber] = GadgetInterface(
                    number=int(intf.bInterfaceNumber),
                    ep_in=int(ins[0].bEndpointAddress),
                    ep_out=int(outs[0].bEndpointAddress),
                    max_packet=int(ins[0].wMaxPacketSize),
                )
    return [found[n] for n in sorted(found)]


def _is_bulk(ep: Any) -> bool:
    return bool(usb.util.endpoint_type(ep.bmAttributes) == _ENDPOINT_BULK)


def _is_in(ep: Any) -> bool:
    return bool(usb.util.endpoint_direction(ep.bEndpointAddress) == usb.util.ENDPOINT_IN)


def ensure_configured(dev: Any) -> None:
    """Select the configuration only if the device is unconfigured (§11.3)."""
    try:
        dev.get_active_configuration()
        return
    except usb.core.USBError as exc:
        if is_gone(exc):
            raise DeviceGone(f"gadget vanished: {exc}") from exc
    try:
        dev.set_configuration()
    except usb.core.USBError as exc:
        if is_gone(exc):
            raise DeviceGone(f"gadget vanished: {exc}") from exc
        raise NotReady(f"cannot configure the gadget: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Readiness:
    protocol: int
    ready: bool


def parse_readiness(reply: bytes) -> Readiness:
    """Decode the 8-byte readiness reply (§3): "TZSG", u16 LE protocol version, ready flag."""
    if len(reply) < 7 or not reply.startswith(C.READY_MAGIC):
        raise ProtocolError(f"unexpected readiness reply {reply.hex() or '(empty)'}")
    (protocol,) = struct.unpack_from("<H", reply, 4)
    return Readiness(protocol=protocol, ready=reply[6] == 1)


def probe(dev: Any, ifnum: int) -> Readiness:
    """Send the readiness control transfer for interface `ifnum`."""
    try:
        reply = dev.ctrl_transfer(
            C.READY_REQUEST_TYPE, C.READY_REQUEST, 0, ifnum, C.READY_LENGTH, C.CTRL_TIMEOUT_MS
        )
    except usb.core.USBError as exc:
        if is_gone(exc):
            raise DeviceGone(f"gadget disconnected: {exc}") from exc
        if is_busy(exc):
            raise InterfaceBusy(_busy_message(ifnum)) from exc
        raise NotReady(f"readiness request on interface {ifnum} failed: {exc}") from exc
    return parse_readiness(bytes(reply))


def _busy_message(ifnum: int) -> str:
    if ifnum == C.IF_SIGN:
        return (
            "TezSign sign interface (IF0) is busy: another process holds it "
            "(stop `tezsign run` or the other signer-guard)"
        )
    return (
        "TezSign management interface (IF1) is busy: another process holds it "
        "(a `tezsign` CLI command?); try again"
    )


def claim(dev: Any, ifnum: int) -> None:
    try:
        usb.util.claim_interface(dev, ifnum)
    except usb.core.USBError as exc:
        if is_gone(exc):
            raise DeviceGone(f"gadget disconnected: {exc}") from exc
        if is_busy(exc):
            raise InterfaceBusy(_busy_message(ifnum)) from exc
        raise InterfaceBusy(f"cannot claim TezSign interface {ifnum}: {exc}") from exc


def release(dev: Any, ifnum: int) -> None:
    try:
        usb.util.release_interface(dev, ifnum)
    except (usb.core.USBError, ValueError) as exc:
        log.debug("releasing interface %d failed: %s", ifnum, exc)


def dispose(dev: Any) -> None:
    try:
        usb.util.dispose_resources(dev)
    except (usb.core.USBError, ValueError) as exc:
        log.debug("disposing of the device failed: %s", exc)


def open_interface(dev: Any, ifnum: int) -> GadgetInterface:
    """Walk descriptors, configure if needed, probe readiness on `ifnum`, claim it.

    Raises NotReady, InterfaceBusy or DeviceGone."""
    interfaces = gadget_interfaces(dev)
    if len(interfaces) <= ifnum:
        raise NotReady(
            "gadget not ready: its signer has not opened its USB endpoints yet "
            f"({len(interfaces)} of 2 interfaces); retrying"
        )
    intf = interfaces[ifnum]
    ensure_configured(dev)
    state = probe(dev, intf.number)
    if not state.ready:
        raise NotReady("gadget attached but its signer process is not up yet; retrying")
    claim(dev, intf.number)
    return intf
