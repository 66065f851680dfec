"""TezSign transport and requests against the fake gadget: discovery, readiness, every request,
error codes, out-of-order responses, Retry, keep-alives, garbage, ZLPs and packet sizes."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import usb.core

from drivers.tezsign import admin, client, frames, usbdev
from drivers.tezsign import constants as C
from drivers.tezsign import messages as M
from drivers.tezsign.errors import (
    DeviceError,
    DeviceGone,
    InterfaceBusy,
    NoDevice,
    NotReady,
    ProtocolError,
    RequestTimeout,
)
from drivers.tezsign.transport import Channel
from signer_guard.keys import SecretKey
from tests.fakes.tezsign_gadget import FakeGadget, FakeUsb

SECRET = "BLsk2jjZe6wQH9TwtBzJwL7xLePfEgUxsV6BfwDP8dGfsosgnekSgC"
TZ4 = "tz4AQcKaQU1sUzsmPTX43qnK4ddkCeeknJnf"
PASSPHRASE = b"correct horse battery staple"


def attestation(level: int, rnd: int = 0, size: int = 78) -> bytes:
    """A 0x13 BLS-layout (tag 41) attestation; `size` pads or trims the payload hash."""
    body = bytes([0x13]) + bytes(4) + bytes(32) + bytes([41])
    body += level.to_bytes(4, "big") + rnd.to_bytes(4, "big")
    return (body + bytes(max(0, size - len(body))))[:size]


def block(level: int, rnd: int) -> bytes:
    fitness = b"\x00\x00\x00\x04" + rnd.to_bytes(4, "big")
    head = bytes([0x11]) + bytes(4) + level.to_bytes(4, "big") + bytes(74)
    return head + len(fitness).to_bytes(4, "big") + fitness + bytes(40)


@pytest.fixture
def gadget() -> FakeGadget:
    return FakeGadget(
        {"consensus": SecretKey.from_b58(SECRET), "companion": SecretKey.generate("bls12_381")},
        passphrase=PASSPHRASE,
    )


@contextmanager
def channel(gadget: FakeGadget, ifnum: int = 0, usb: FakeUsb | None = None) -> Iterator[Channel]:
    with (
        admin.open_gadget("*", usb or FakeUsb(gadget)) as dev,
        admin.session(dev, ifnum, read_timeout_ms=20) as ch,
    ):
        yield ch


# ---- discovery and readiness ------------------------------------------------------------------


def test_find_and_select_by_serial() -> None:
    a = FakeGadget(serial="AAAA")
    b = FakeGadget(serial="BBBB")
    devices = usbdev.find_gadgets(FakeUsb(a, b))
    assert [usbdev.serial_of(d) for d in devices] == ["AAAA", "BBBB"]
    assert usbdev.serial_of(usbdev.select(devices, "BBBB")) == "BBBB"
    assert usbdev.serial_of(usbdev.select(devices, "*")) == "AAAA"
    with pytest.raises(NoDevice, match="CCCC"):
        usbdev.select(devices, "CCCC")
    with pytest.raises(NoDevice, match="no TezSign gadget attached"):
        usbdev.select([], "*")


def test_interfaces_from_descriptors(gadget: FakeGadget) -> None:
    (dev,) = usbdev.find_gadgets(FakeUsb(gadget))
    assert usbdev.gadget_interfaces(dev) == [
        usbdev.GadgetInterface(0, 0x81, 0x02, 512),
        usbdev.GadgetInterface(1, 0x83, 0x04, 512),
    ]


def test_readiness_reply_parsing() -> None:
    state = usbdev.parse_readiness(bytes.fromhex("545a534701000100"))
    assert (state.protocol, state.ready) == (1, True)
    assert not usbdev.parse_readiness(b"TZSG\x01\x00\x00").ready
    with pytest.raises(ProtocolError):
        usbdev.parse_readiness(b"NOPE\x01\x00\x01\x00")
    with pytest.raises(ProtocolError):
        usbdev.parse_readiness(b"TZSG\x01\x00")


def test_not_ready_states(gadget: FakeGadget) -> None:
    usb = FakeUsb(gadget)
    gadget.signer_up = False
    with admin.open_gadget("*", usb) as dev, pytest.raises(NotReady, match="not opened"):
        usbdev.open_interface(dev, 0)
    gadget.signer_up, gadget.ready = True, False
    with admin.open_gadget("*", usb) as dev, pytest.raises(NotReady, match="not up"):
        usbdev.open_interface(dev, 0)
    assert gadget.claims == {}


def test_configures_only_when_unconfigured(gadget: FakeGadget) -> None:
    assert gadget.configuration == 0
    with channel(gadget) as ch:
        assert client.version(ch) is not None
    assert gadget.configuration == 1


def test_busy_interface(gadget: FakeGadget) -> None:
    gadget.hold_interface(0)
    with (
        admin.open_gadget("*", FakeUsb(gadget)) as dev,
        pytest.raises(InterfaceBusy, match="tezsign run"),
    ):
        usbdev.open_interface(dev, 0)
    with channel(gadget, 1) as ch:  # IF1 is still free
        assert client.status(ch)


# ---- every request ----------------------------------------------------------------------------


def test_version_and_old_gadget(gadget: FakeGadget) -> None:
    with channel(gadget) as ch:
        info = client.version(ch)
        assert info is not None and info.version == "v0.0.0-fake"
        gadget.version = None
        assert client.version(ch) is None


def test_status_lists_keys(gadget: FakeGadget) -> None:
    with channel(gadget) as ch:
        keys = {k.key_id: k for k in client.status(ch)}
    assert set(keys) == {"consensus", "companion"}
    assert keys["consensus"].tz4 == TZ4 and keys["consensus"].unlocked
    assert keys["consensus"].bl_pubkey.startswith("BLpk")


def test_sign_verifies_and_hwm_is_strict_per_kind(gadget: FakeGadget) -> None:
    pk = SecretKey.from_b58(SECRET).public_key
    with channel(gadget) as ch:
        sig = client.sign(ch, TZ4, attestation(100))
        assert pk.verify(sig, attestation(100))
        for stale in (attestation(100), attestation(99, 5)):
            with pytest.raises(DeviceError) as info:
                client.sign(ch, TZ4, stale)
            assert info.value.code == C.ERR_STALE
        assert pk.verify(client.sign(ch, TZ4, attestation(100, 1)), attestation(100, 1))
        # Other kinds have their own marks.
        assert pk.verify(client.sign(ch, TZ4, block(50, 0)), block(50, 0))
        keys = {k.key_id: k for k in client.status(ch)}
    assert keys["consensus"].marks == {
        "block": (50, 0),
        "preattestation": (0, 0),
        "attestation": (100, 1),
    }


def test_sign_errors(gadget: FakeGadget) -> None:
    with channel(gadget) as ch:
        for data, code in ((b"\x03\x00", C.ERR_BAD_PAYLOAD), (attestation(1, size=40), 34)):
            with pytest.raises(DeviceError) as info:
                client.sign(ch, TZ4, data)
            assert info.value.code == code
        other = SecretKey.generate("bls12_381").pkh
        with pytest.raises(DeviceError) as info:
            client.sign(ch, other, attestation(1))
        assert info.value.code == C.ERR_KEY_NOT_FOUND
        gadget.keys["consensus"].state = "locked"
        with pytest.raises(DeviceError) as info:
            client.sign(ch, TZ4, attestation(1))
        assert info.value.code == C.ERR_KEY_LOCKED
        gadget.keys["consensus"].state = "unlocked"
        gadget.keys["consensus"].corrupted = True
        with pytest.raises(DeviceError) as info:
            client.sign(ch, TZ4, attestation(1))
        assert info.value.code == C.ERR_SIGN_OTHER


def test_interface_rules(gadget: FakeGadget) -> None:
    with channel(gadget, 0) as ch:
        with pytest.raises(DeviceError) as info:
            client.set_level(ch, "consensus", 10)
        assert info.value.code == C.ERR_WRONG_INTERFACE
    with channel(gadget, 1) as ch:
        with pytest.raises(DeviceError) as info:
            client.sign(ch, TZ4, attestation(1))
        assert info.value.code == C.ERR_SIGN_ON_MANAGEMENT


def test_management_requests(gadget: FakeGadget) -> None:
    with channel(gadget, 1) as ch:
        assert [r.ok for r in client.lock(ch, ["consensus"])] == [True]
        keys = {k.key_id: k for k in client.status(ch)}
        assert keys["consensus"].lock_state == "LOCKED"
        (bad,) = client.unlock(ch, ["consensus"], b"wrong")
        assert not bad.ok and "passphrase" in bad.error
        (good,) = client.unlock(ch, ["consensus"], PASSPHRASE)
        assert good.ok
        client.set_level(ch, "consensus", 500)
        with pytest.raises(DeviceError) as info:
            client.set_level(ch, "consensus", 500)  # raise-only, strictly above
        assert info.value.code == C.ERR_SET_LEVEL
        assert client.logs(ch)
        with pytest.raises(DeviceError) as info:
            client.unlock(ch, [], PASSPHRASE)
        assert info.value.code == C.ERR_UNLOCK_NO_IDS
    assert gadget.keys["consensus"].marks["block"] == (500, 0)


def test_admin_helpers(gadget: FakeGadget) -> None:
    usb = FakeUsb(gadget)
    gadget.keys["consensus"].state = "unloaded"
    (result,) = admin.unlock_keys(["consensus"], PASSPHRASE, usb_backend=usb)
    assert result.ok and gadget.keys["consensus"].state == "unlocked"
    admin.set_level("consensus", 42, usb_backend=usb)
    assert gadget.keys["consensus"].marks["attestation"] == (42, 0)
    assert gadget.claims == {}


# ---- flow: ordering, retry, keep-alive, garbage, packets --------------------------------------


def test_out_of_order_responses_are_matched_by_id(gadget: FakeGadget) -> None:
    gadget.delays["sign"] = 0.3
    with channel(gadget) as ch, ThreadPoolExecutor(2) as pool:
        slow = pool.submit(client.sign, ch, TZ4, attestation(7))
        time.sleep(0.05)
        fast = pool.submit(client.status, ch)
        keys = fast.result(timeout=5)
        assert not slow.done()
        sig = slow.result(timeout=5)
    assert {k.key_id for k in keys} == {"consensus", "companion"}
    assert SecretKey.from_b58(SECRET).public_key.verify(sig, attestation(7))
    responses = [
        f for f in gadget.frames_logged("gadget", 0) if f.type == frames.FrameType.RESPONSE
    ]
    requests = [f for f in gadget.frames_logged("host", 0) if f.type == frames.FrameType.REQUEST]
    # The sign was sent before the status but answered after it.
    assert [f.msg_id for f in requests][-2:] == [f.msg_id for f in responses][-2:][::-1]


def test_late_response_to_a_timed_out_request_is_dropped(gadget: FakeGadget) -> None:
    gadget.delays["version"] = 0.3
    with channel(gadget) as ch:
        with pytest.raises(RequestTimeout) as info:
            client.version(ch, timeout=0.05)
        assert info.value.sent
        gadget.delays.clear()
        time.sleep(0.35)  # the late Version response arrives now
        assert {k.key_id for k in client.status(ch)} == {"consensus", "companion"}


def test_retry_resends_unconfirmed_requests(gadget: FakeGadget) -> None:
    gadget.retry_next = 2
    with channel(gadget) as ch:
        sig = client.sign(ch, TZ4, attestation(9))
    assert SecretKey.from_b58(SECRET).public_key.verify(sig, attestation(9))
    requests = [f for f in gadget.frames_logged("host", 0) if f.type == frames.FrameType.REQUEST]
    sign_frames = requests[-3:]
    assert len({f.msg_id for f in sign_frames}) == 1  # the same id, three times
    assert len({f.payload for f in sign_frames}) == 1


def test_accepted_requests_are_not_resent(gadget: FakeGadget) -> None:
    gadget.delays["status"] = 0.2
    with channel(gadget) as ch:
        timer = threading.Timer(0.1, gadget.inject, (0, frames.encode(frames.RETRY)))
        timer.start()
        client.status(ch)
        timer.join()
    requests = [f for f in gadget.frames_logged("host", 0) if f.type == frames.FrameType.REQUEST]
    assert len(requests) == len({f.msg_id for f in requests})


def test_garbage_keepalive_and_unknown_frames_are_ignored(gadget: FakeGadget) -> None:
    with channel(gadget) as ch:
        bad_parity = bytearray(frames.encode(frames.accept(bytes(16))))
        bad_parity[22] ^= 1
        gadget.inject(0, b"\x00\x13garbage\x56\x56" + bytes(bad_parity))
        gadget.inject(0, frames.encode(frames.KEEP_ALIVE))
        gadget.inject(0, frames.encode(frames.Frame(0x09, os.urandom(16), b"??")))
        gadget.inject(0, frames.encode(frames.response(os.urandom(16), b"\x00")))
        assert len(client.status(ch)) == 2


def test_host_sends_keepalive_when_quiet(gadget: FakeGadget) -> None:
    with admin.open_gadget("*", FakeUsb(gadget)) as dev:
        intf = usbdev.open_interface(dev, 0)
        ch = Channel(dev, intf.ep_in, intf.ep_out, 512, read_timeout_ms=10, keepalive_interval=0.02)
        try:
            deadline = time.monotonic() + 2
            while gadget.keepalives < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert client.version(ch) is not None
        finally:
            ch.close()
    assert gadget.keepalives >= 2


def test_transient_read_error_sends_retry(gadget: FakeGadget) -> None:
    usb = FakeUsb(gadget)
    failures = [1]

    def fail_once(name: str) -> None:
        if name == "bulk_read" and failures:
            failures.pop()
            raise usb_core_error(errno.EIO)

    with channel(gadget, usb=usb) as ch:
        usb.on_call = fail_once
        assert client.status(ch)
    assert frames.RETRY in gadget.frames_logged("host", 0)


def usb_core_error(err: int) -> usb.core.USBError:
    return usb.core.USBError("Input/output error", -1, err)


@pytest.mark.parametrize("high_speed", [True, False])
def test_zlp_after_every_frame_and_exact_multiples(high_speed: bool) -> None:
    gadget = FakeGadget({"consensus": SecretKey.from_b58(SECRET)}, high_speed=high_speed)
    mps = gadget.max_packet
    # A sign frame of exactly a multiple of the packet size: only the ZLP completes it.
    size = next(
        n
        for n in range(46, 4 * mps)
        if (23 + len(M.sign_request(TZ4, attestation(3, size=n)))) % mps == 0
    )
    message = attestation(3, size=size)
    with channel(gadget) as ch:
        sig = client.sign(ch, TZ4, message)
        big = client.sign(ch, TZ4, attestation(4, size=3 * mps))  # several packets
    assert SecretKey.from_b58(SECRET).public_key.verify(sig, message)
    assert len(big) == 96
    host_frames = [f for f in gadget.frames_logged("host", 0)]
    assert gadget.zlps == len(host_frames)


def test_unplug_fails_waiting_calls_at_once(gadget: FakeGadget) -> None:
    gadget.delays["sign"] = 2.0
    with channel(gadget) as ch:
        threading.Timer(0.1, gadget.unplug).start()
        started = time.monotonic()
        with pytest.raises(DeviceGone) as info:
            client.sign(ch, TZ4, attestation(11))
        assert time.monotonic() - started < 1.5
        assert info.value.sent
        with pytest.raises(DeviceGone):
            client.status(ch)
