"""A fake TezSign gadget behind a pyusb backend (`usb.backend.IBackend`), written from tezsign.md.

`FakeUsb(gadget, …)` is passed as `backend=` to `usb.core.find` (or installed with
`drivers.tezsign.set_default_usb_backend`). It emulates:

- descriptors (9997:0001, strings TzC / tezsign-gadget / serial, two vendor interfaces with bulk
  endpoints 0x81/0x02 and 0x83/0x04, 512- or 64-byte packets), unconfigured until
  set_configuration, interfaces absent while the signer is "down";
- the readiness control transfer (bmRequestType 0x81 exactly), other SETUPs stall;
- claims per handle (EBUSY when another handle, or `hold_interface`, holds it);
- OUT transfers complete only on a short packet or a ZLP; reads must be multiples of the packet
  size; IN frames are sent without ZLP;
- frames, Accept at once, each request answered by its own thread (so out of order), Retry,
  keep-alives, duplicate ids in progress ignored;
- Version/Status/Sign/Unlock/Lock/SetLevel/Logs with the error codes of §7 and its own strict
  per-key, per-kind HWM without chain id (§9);
- switches: unplug()/replug(), ready flag, signer up/down, per-request delays, Retry instead of
  the next requests, raw bytes injected into the IN stream, an "old" gadget without Version.
"""

from __future__ import annotations

import array
import errno
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import usb.backend
import usb.core

from drivers.tezsign import frames
from drivers.tezsign import messages as M
from drivers.tezsign.errors import ProtocolError
from signer_guard.keys import SecretKey, signature_b58

VENDOR_ID = 0x9997
PRODUCT_ID = 0x0001
# (interface number, IN endpoint, OUT endpoint, iInterface string index)
INTERFACES = ((0, 0x81, 0x02, 4), (1, 0x83, 0x04, 5))
KINDS = {0x11: "block", 0x12: "preattestation", 0x13: "attestation"}
THROTTLE_ATTEMPTS = 5
THROTTLE_WINDOW = 30.0


def _usb_error(message: str, code: int, err: int) -> usb.core.USBError:
    return usb.core.USBError(message, code, err)


def _no_device() -> usb.core.USBError:
    return _usb_error("No such device (it may have been disconnected)", -4, errno.ENODEV)


@dataclass
class FakeKey:
    key_id: str
    secret: SecretKey
    #: "unloaded" (after a reboot: Sign → 31), "locked" (Sign → 32) or "unlocked"
    state: str = "unlocked"
    marks: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {k: (0, 0) for k in KINDS.values()}
    )
    corrupted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def tz4(self) -> str:
        return self.secret.pkh


@dataclass
class _Desc:
    """A descriptor: pyusb reads its fields as attributes."""

    fields: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None


class FakeGadget:
    """The gadget's state and behaviour; `FakeUsb` is its USB face."""

    def __init__(
        self,
        keys: dict[str, SecretKey] | None = None,
        *,
        serial: str = "000000000000",
        passphrase: bytes = b"correct horse battery staple",
        high_speed: bool = True,
        version: str | None = "v0.0.0-fake",
        locked: Iterable[str] = (),
    ) -> None:
        self.serial = serial
        self.passphrase = passphrase
        self.max_packet = 512 if high_speed else 64
        #: None = an old image that answers Version with 1000.
        self.version = version
        self.keys: dict[str, FakeKey] = {
            key_id: FakeKey(key_id, sk, state="locked" if key_id in locked else "unlocked")
            for key_id, sk in (keys or {}).items()
        }
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.plugged = True
        self.generation = 1
        self.configuration = 0
        self.ready = True
        self.signer_up = True
        #: Seconds each request kind waits before answering (after the HWM step for Sign).
        self.delays: dict[str, float] = {}
        #: Answer the next N request frames with Retry instead of handling them.
        self.retry_next = 0
        #: Do not send Accept frames.
        self.skip_accept = False
        self.claims: dict[int, object] = {}
        self.held: set[int] = set()
        self._out_buf: dict[int, bytearray] = {0: bytearray(), 1: bytearray()}
        self._decoders: dict[int, frames.FrameDecoder] = {}
        self._in: dict[int, deque[bytes]] = {0: deque(), 1: deque()}
        self._in_progress: dict[int, set[bytes]] = {0: set(), 1: set()}
        self._unlock_attempts: deque[float] = deque()
        #: ("host"|"gadget", interface, frame bytes) in order; for fixtures and assertions.
        self.log: list[tuple[str, int, bytes]] = []
        self.zlps = 0
        self.keepalives = 0
        self.requests: list[tuple[int, str | None]] = []
        #: Requests being handled now, and the most ever handled at once, per interface.
        self.active = {0: 0, 1: 0}
        self.max_active = {0: 0, 1: 0}
        self._reset_decoders()

    # ---- switches -------------------------------------------------------------------------------

    def unplug(self) -> None:
        with self.cond:
            self.plugged = False
            self.generation += 1
            self.claims.clear()
            self.cond.notify_all()

    def replug(self, *, reboot: bool = True) -> None:
        """Plug back in. A reboot (the Pi is powered by the port) unloads every key (31)."""
        with self.cond:
            self.plugged = True
            self.generation += 1
            self.configuration = 0
            self.claims.clear()
            for q in self._in.values():
                q.clear()
            for s in self._in_progress.values():
                s.clear()
            self._reset_decoders()
            if reboot:
                for key in self.keys.values():
                    key.state = "unloaded"
            self.cond.notify_all()

    def hold_interface(self, ifnum: int) -> None:
        """Pretend another process claimed `ifnum`."""
        with self.lock:
            self.held.add(ifnum)

    def inject(self, ifnum: int, data: bytes) -> None:
        """Push raw bytes into the IN stream of `ifnum` as one transfer."""
        self._send_transfer(ifnum, data, self.generation)

    def frames_logged(self, direction: str, ifnum: int) -> list[frames.Frame]:
        decoder = frames.FrameDecoder()
        out: list[frames.Frame] = []
        for who, num, data in list(self.log):
            if who == direction and num == ifnum:
                out.extend(decoder.feed(data))
        return out

    def _reset_decoders(self) -> None:
        self._decoders = {0: frames.FrameDecoder(), 1: frames.FrameDecoder()}
        self._out_buf = {0: bytearray(), 1: bytearray()}

    # ---- host → gadget ----------------------------------------------------------------------

    def host_packet(self, ifnum: int, packet: bytes) -> None:
        """One OUT packet; a short packet or a ZLP completes the transfer (FunctionFS read)."""
        with self.lock:
            buf = self._out_buf[ifnum]
            buf += packet
            if len(packet) == self.max_packet:
                return
            if not packet:
                self.zlps += 1
            data = bytes(buf)
            buf.clear()
            generation = self.generation
            found = self._decoders[ifnum].feed(data)
        for frame in found:
            self.log.append(("host", ifnum, frames.encode(frame)))
            self._on_frame(ifnum, frame, generation)

    def _on_frame(self, ifnum: int, frame: frames.Frame, generation: int) -> None:
        if frame.type == frames.FrameType.KEEP_ALIVE:
            self.keepalives += 1
            return
        if frame.type != frames.FrameType.REQUEST:
            return  # Retry: the gadget has no unconfirmed requests of its own
        with self.lock:
            if frame.msg_id in self._in_progress[ifnum]:
                return
            if self.retry_next > 0:
                self.retry_next -= 1
                retry = True
            else:
                retry = False
                self._in_progress[ifnum].add(frame.msg_id)
        if retry:
            self._send_frame(ifnum, frames.RETRY, generation)
            return
        if not self.skip_accept:
            self._send_frame(ifnum, frames.accept(frame.msg_id), generation)
        threading.Thread(target=self._serve, args=(ifnum, frame, generation), daemon=True).start()

    def _serve(self, ifnum: int, frame: frames.Frame, generation: int) -> None:
        with self.lock:
            self.active[ifnum] += 1
            self.max_active[ifnum] = max(self.max_active[ifnum], self.active[ifnum])
        try:
            payload = self.handle(ifnum, frame.payload)
            self._send_frame(ifnum, frames.response(frame.msg_id, payload), generation)
        finally:
            with self.lock:
                self.active[ifnum] -= 1
                self._in_progress[ifnum].discard(frame.msg_id)

    # ---- gadget → host ----------------------------------------------------------------------

    def _send_frame(self, ifnum: int, frame: frames.Frame, generation: int) -> None:
        data = frames.encode(frame)
        if self._send_transfer(ifnum, data, generation):
            self.log.append(("gadget", ifnum, data))

    def _send_transfer(self, ifnum: int, data: bytes, generation: int) -> bool:
        with self.cond:
            if not self.plugged or generation != self.generation:
                return False
            mps = self.max_packet
            # Packets of the transfer; no ZLP after a multiple of the packet size (§11.6).
            for start in range(0, len(data), mps):
                self._in[ifnum].append(data[start : start + mps])
            self.cond.notify_all()
            return True

    def read_packets(self, ifnum: int, size: int, timeout_ms: int, generation: int) -> bytes:
        deadline = time.monotonic() + (timeout_ms / 1000 if timeout_ms else 3600)
        with self.cond:
            while True:
                if not self.plugged or generation != self.generation:
                    raise _no_device()
                if self._in[ifnum]:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT)
                self.cond.wait(left)
            out = bytearray()
            queue = self._in[ifnum]
            while queue and len(out) + len(queue[0]) <= size:
                packet = queue.popleft()
                out += packet
                if len(packet) < self.max_packet:
                    break
            return bytes(out)

    # ---- requests ---------------------------------------------------------------------------

    def _delay(self, kind: str) -> None:
        delay = self.delays.get(kind, 0.0)
        if delay:
            time.sleep(delay)

    def handle(self, ifnum: int, payload: bytes) -> bytes:
        try:
            which, msg = M.parse_request(payload)
        except ProtocolError:
            return M.error_response(1, "bad protobuf")
        with self.lock:
            self.requests.append((ifnum, which))
        if ifnum == 0 and which not in ("sign", "status", "version"):
            return M.error_response(98, "wrong interface: use management (IF1) for this request")
        if ifnum == 1 and which == "sign":
            return M.error_response(1001, "sign is not allowed on the management interface")
        self._delay(which or "")
        if which == "version":
            if self.version is None:
                return M.error_response(1000, "unknown request")
            return M.response(
                "version",
                "VersionResponse",
                version=self.version,
                build_date="2026-04-30T00:00:00Z",
            )
        if which == "status":
            return self._status()
        if which == "sign":
            return self._sign(str(msg.tz4), bytes(msg.message))
        if which == "unlock":
            return self._unlock(list(msg.key_ids), bytes(msg.passphrase))
        if which == "lock":
            return self._lock(list(msg.key_ids))
        if which == "set_level":
            return self._set_level(str(msg.key_id), int(msg.level))
        if which == "logs":
            return M.response("logs", "LogsResponse", lines=["fake gadget log line"])
        return M.error_response(1000, "unknown request")

    def _status(self) -> bytes:
        from drivers.tezsign import schema

        keys = []
        with self.lock:
            for key in sorted(self.keys.values(), key=lambda k: k.key_id):
                unlocked = key.state == "unlocked"
                marks = key.marks if unlocked else {k: (0, 0) for k in KINDS.values()}
                keys.append(
                    schema.new(
                        "KeyStatus",
                        key_id=key.key_id,
                        lock_state=2 if unlocked else 1,
                        tz4=key.tz4,
                        bl_pubkey=key.secret.public_key.b58,
                        pop=signature_b58("bls12_381", key.secret.prove_possession()),
                        last_block_level=marks["block"][0],
                        last_preattestation_level=marks["preattestation"][0],
                        last_attestation_level=marks["attestation"][0],
                        last_block_round=marks["block"][1],
                        last_preattestation_round=marks["preattestation"][1],
                        last_attestation_round=marks["attestation"][1],
                        state_corrupted=key.corrupted,
                    )
                )
        return M.response("status", "StatusResponse", keys=keys)

    @staticmethod
    def decode_level_round(data: bytes) -> tuple[str, int, int] | None:
        """The gadget's own decode (§9): BLS layout assumed for 0x12/0x13, no chain check."""
        if not data or data[0] not in KINDS:
            return None
        try:
            if data[0] == 0x11:
                (level,) = struct.unpack_from(">i", data, 5)
                (fitness,) = struct.unpack_from(">I", data, 83)
                (rnd,) = struct.unpack_from(">i", data, 83 + fitness)
            else:
                level, rnd = struct.unpack_from(">ii", data, 38)
        except struct.error:
            return None
        return KINDS[data[0]], level, rnd

    def _sign(self, tz4: str, data: bytes) -> bytes:
        with self.lock:
            key = next((k for k in self.keys.values() if k.tz4 == tz4), None)
        if key is None or key.state == "unloaded":
            return M.error_response(31, "key not found")
        if key.state == "locked":
            return M.error_response(32, "key locked")
        if key.corrupted:
            return M.error_response(30, "state corrupted")
        decoded = self.decode_level_round(data)
        if decoded is None:
            return M.error_response(34, "bad sign payload")
        kind, level, rnd = decoded
        with key.lock:
            prev_level, prev_round = key.marks[kind]
            if not (level > prev_level or (level == prev_level and rnd > prev_round)):
                return M.error_response(33, "stale level/round")
            key.marks[kind] = (level, rnd)
        self._delay("sign_after_hwm")
        return M.response("sign", "SignResponse", signature=key.secret.sign(data))

    def _unlock(self, key_ids: list[str], passphrase: bytes) -> bytes:
        if not key_ids:
            return M.error_response(10, "no key ids")
        if not passphrase:
            return M.error_response(11, "passphrase required")
        now = time.monotonic()
        with self.lock:
            while self._unlock_attempts and now - self._unlock_attempts[0] > THROTTLE_WINDOW:
                self._unlock_attempts.popleft()
            if len(self._unlock_attempts) >= THROTTLE_ATTEMPTS:
                return M.error_response(12, "too many attempts, try later")
            self._unlock_attempts.append(now)
            results = []
            for key_id in key_ids:
                key = self.keys.get(key_id)
                if key is None:
                    results.append({"key_id": key_id, "ok": False, "error": "key not found"})
                elif passphrase != self.passphrase:
                    results.append({"key_id": key_id, "ok": False, "error": "bad passphrase"})
                else:
                    key.state = "unlocked"
                    results.append({"key_id": key_id, "ok": True, "error": ""})
        from drivers.tezsign import schema

        return M.response(
            "unlock", "UnlockResponse", results=[schema.new("PerKeyResult", **r) for r in results]
        )

    def _lock(self, key_ids: list[str]) -> bytes:
        if not key_ids:
            return M.error_response(20, "no key ids")
        from drivers.tezsign import schema

        results = []
        with self.lock:
            for key_id in key_ids:
                key = self.keys.get(key_id)
                if key is not None:
                    key.state = "locked"
                results.append(
                    schema.new(
                        "PerKeyResult",
                        key_id=key_id,
                        ok=key is not None,
                        error="" if key is not None else "key not found",
                    )
                )
        return M.response("lock", "LockResponse", results=results)

    def _set_level(self, key_id: str, level: int) -> bytes:
        key = self.keys.get(key_id)
        if key is None or key.state != "unlocked":
            return M.error_response(80, f"key {key_id} is not unlocked")
        with key.lock:
            for kind, (current, _) in key.marks.items():
                if level <= current:
                    return M.error_response(
                        80, f"level must be greater than current {kind} level {current}"
                    )
            for kind in key.marks:
                key.marks[kind] = (level, 0)
        return M.response("ok", "Ok", ok=True)


@dataclass
class _Handle:
    gadget: FakeGadget
    generation: int


class FakeUsb(usb.backend.IBackend):  # type: ignore[misc]
    """pyusb backend exposing fake gadgets (the order of `gadgets` is the enumeration order)."""

    def __init__(self, *gadgets: FakeGadget) -> None:
        super().__init__()
        self.gadgets = list(gadgets)
        #: Called with the name of every backend method, before it runs (tests hook failures).
        self.on_call: Callable[[str], None] | None = None

    def _hook(self, name: str) -> None:
        if self.on_call is not None:
            self.on_call(name)

    @staticmethod
    def _live(handle: _Handle) -> FakeGadget:
        gadget = handle.gadget
        if not gadget.plugged or handle.generation != gadget.generation:
            raise _no_device()
        return gadget

    # ---- descriptors ------------------------------------------------------------------------

    def enumerate_devices(self) -> Iterable[_Handle]:
        return [_Handle(g, g.generation) for g in self.gadgets if g.plugged]

    def get_parent(self, dev: _Handle) -> None:
        return None

    def get_device_descriptor(self, dev: _Handle) -> _Desc:
        index = self.gadgets.index(dev.gadget)
        return _Desc(
            {
                "bLength": 18,
                "bDescriptorType": 1,
                "bcdUSB": 0x0200,
                "bDeviceClass": 0,
                "bDeviceSubClass": 0,
                "bDeviceProtocol": 0,
                "bMaxPacketSize0": 64,
                "idVendor": VENDOR_ID,
                "idProduct": PRODUCT_ID,
                "bcdDevice": 0x0100,
                "iManufacturer": 1,
                "iProduct": 2,
                "iSerialNumber": 3,
                "bNumConfigurations": 1,
                "address": 10 + index,
                "bus": 1,
                "port_number": 1 + index,
                "port_numbers": (1 + index,),
                "speed": 3 if dev.gadget.max_packet == 512 else 2,
            }
        )

    def get_configuration_descriptor(self, dev: _Handle, config: int) -> _Desc:
        if config != 0:
            raise IndexError(f"Invalid configuration index {config}")
        up = dev.gadget.signer_up
        return _Desc(
            {
                "bLength": 9,
                "bDescriptorType": 2,
                "wTotalLength": 9 + (2 * (9 + 2 * 7) if up else 0),
                "bNumInterfaces": 2 if up else 0,
                "bConfigurationValue": 1,
                "iConfiguration": 0,
                "bmAttributes": 0x80,
                "bMaxPower": 50,
                "extra_descriptors": [],
            }
        )

    def get_interface_descriptor(self, dev: _Handle, intf: int, alt: int, config: int) -> _Desc:
        if config != 0 or not dev.gadget.signer_up or intf >= len(INTERFACES) or alt != 0:
            raise IndexError(f"Invalid interface index {intf}/{alt}")
        number, _, _, string = INTERFACES[intf]
        return _Desc(
            {
                "bLength": 9,
                "bDescriptorType": 4,
                "bInterfaceNumber": number,
                "bAlternateSetting": 0,
                "bNumEndpoints": 2,
                "bInterfaceClass": 0xFF,
                "bInterfaceSubClass": 0,
                "bInterfaceProtocol": 0,
                "iInterface": string,
                "extra_descriptors": [],
            }
        )

    def get_endpoint_descriptor(
        self, dev: _Handle, ep: int, intf: int, alt: int, config: int
    ) -> _Desc:
        if config != 0 or intf >= len(INTERFACES) or alt != 0 or ep > 1:
            raise IndexError(f"Invalid endpoint index {ep}")
        _, ep_in, ep_out, _ = INTERFACES[intf]
        return _Desc(
            {
                "bLength": 7,
                "bDescriptorType": 5,
                "bEndpointAddress": ep_in if ep == 0 else ep_out,
                "bmAttributes": 0x02,
                "wMaxPacketSize": dev.gadget.max_packet,
                "bInterval": 0,
                "bRefresh": 0,
                "bSynchAddress": 0,
                "extra_descriptors": [],
            }
        )

    # ---- handles, configuration, claims -----------------------------------------------------

    def open_device(self, dev: _Handle) -> _Handle:
        self._hook("open_device")
        self._live(dev)
        return _Handle(dev.gadget, dev.generation)

    def close_device(self, dev_handle: _Handle) -> None:
        gadget = dev_handle.gadget
        with gadget.lock:
            for ifnum, owner in list(gadget.claims.items()):
                if owner is dev_handle:
                    del gadget.claims[ifnum]

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        self._live(dev_handle).configuration = config_value

    def get_configuration(self, dev_handle: _Handle) -> int:
        return self._live(dev_handle).configuration

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        self._live(dev_handle)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        self._hook("claim_interface")
        gadget = self._live(dev_handle)
        with gadget.lock:
            owner = gadget.claims.get(intf)
            if intf in gadget.held or (owner is not None and owner is not dev_handle):
                raise _usb_error("Resource busy", -6, errno.EBUSY)
            gadget.claims[intf] = dev_handle

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        gadget = self._live(dev_handle)
        with gadget.lock:
            if gadget.claims.get(intf) is dev_handle:
                del gadget.claims[intf]

    def _check_claim(self, gadget: FakeGadget, dev_handle: _Handle, intf: int) -> None:
        if gadget.claims.get(intf) is not dev_handle:
            raise _usb_error("Entity not found (interface not claimed)", -5, errno.ENOENT)

    # ---- transfers --------------------------------------------------------------------------

    def bulk_write(
        self, dev_handle: _Handle, ep: int, intf: int, data: array.array[int], timeout: int
    ) -> int:
        self._hook("bulk_write")
        gadget = self._live(dev_handle)
        self._check_claim(gadget, dev_handle, intf)
        if ep != INTERFACES[intf][2]:
            raise _usb_error("Pipe error", -9, errno.EPIPE)
        raw = bytes(data)
        mps = gadget.max_packet
        if not raw:
            gadget.host_packet(intf, b"")
        for start in range(0, len(raw), mps):
            gadget.host_packet(intf, raw[start : start + mps])
        return len(raw)

    def bulk_read(
        self, dev_handle: _Handle, ep: int, intf: int, buff: array.array[int], timeout: int
    ) -> int:
        self._hook("bulk_read")
        gadget = self._live(dev_handle)
        self._check_claim(gadget, dev_handle, intf)
        if ep != INTERFACES[intf][1]:
            raise _usb_error("Pipe error", -9, errno.EPIPE)
        size = len(buff)
        if size == 0 or size % gadget.max_packet:
            raise _usb_error("Overflow (read size not a multiple of the packet size)", -8, 75)
        data = gadget.read_packets(intf, size, timeout, dev_handle.generation)
        buff[: len(data)] = array.array("B", data)
        return len(data)

    def ctrl_transfer(
        self,
        dev_handle: _Handle,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: array.array[int],
        timeout: int,
    ) -> int:
        self._hook("ctrl_transfer")
        gadget = self._live(dev_handle)
        reply: bytes | None = None
        if bmRequestType == 0x80 and bRequest == 6 and wValue >> 8 == 3:
            reply = self._string(gadget, wValue & 0xFF)
        elif bmRequestType == 0x81 and bRequest == 0x5A and wValue == 0 and wIndex in (0, 1):
            reply = b"TZSG" + struct.pack("<H", 1) + bytes([1 if gadget.ready else 0, 0])
        if reply is None:
            raise _usb_error("Pipe error", -9, errno.EPIPE)
        reply = reply[: len(data)]
        data[: len(reply)] = array.array("B", reply)
        return len(reply)

    @staticmethod
    def _string(gadget: FakeGadget, index: int) -> bytes | None:
        if index == 0:
            return bytes([4, 3, 0x09, 0x04])
        text = {
            1: "TzC",
            2: "tezsign-gadget",
            3: gadget.serial,
            4: "tezsign-0",
            5: "tezsign-1",
        }.get(index)
        if text is None:
            return None
        encoded = text.encode("utf-16-le")
        return bytes([2 + len(encoded), 3]) + encoded

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        self._live(dev_handle)

    def reset_device(self, dev_handle: _Handle) -> None:
        self._live(dev_handle)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        return None

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        return None
