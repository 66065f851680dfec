"""Ledger HID (64-byte reports) and TCP (length-prefixed) framing, ledger.md §2, §3, §14."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ledger.hid_transport import (
    FrameAssembler,
    HidDeviceInfo,
    HidTransport,
    enumerate_devices,
    frame_apdu,
    model_name,
)
from drivers.ledger.tcp_transport import TcpTransport, frame_request, parse_host_port
from drivers.ledger.transport import TransportError, TransportTimeout
from tests.fakes.ledger_app import FakeBakingApp, FakeHidModule
from tests.fakes.ledger_hid import hid_frames

SIGN_MESSAGE_APDU = bytes.fromhex(
    "8004810050137a06a770" + "00" * 32 + "1500000000006500000000" + "00" * 32
)
SIGNATURE = bytes.fromhex(
    "1c485f709b2d75c6b25778a7bc4f0d317d9d18b6245bdc65e1603f714fbad9a69bdb9987fe27c4178bfdcac085"
    "65bee182a5e58dafb63b6b7b29ace37fc14405"
)
INFO = HidDeviceInfo(path=b"scripted", product_id=0x5011, serial="1", product="Nano S Plus")


# --- HID framing -------------------------------------------------------------------------


def test_sign_message_apdu_reports_match_the_worked_example() -> None:
    frames = frame_apdu(SIGN_MESSAGE_APDU)
    assert len(SIGN_MESSAGE_APDU) == 85
    assert [f.hex() for f in frames] == [
        "0101050000" + "0055" + SIGN_MESSAGE_APDU[:57].hex(),
        "0101050001" + SIGN_MESSAGE_APDU[57:].hex() + "00" * 31,
    ]
    assert all(len(f) == 64 for f in frames)


def test_response_reports_of_the_worked_example_reassemble_to_signature_and_sw() -> None:
    frame0 = bytes.fromhex("01010500000042") + SIGNATURE[:57]
    frame1 = (bytes.fromhex("0101050001") + SIGNATURE[57:] + b"\x90\x00").ljust(64, b"\x00")
    assembler = FrameAssembler()
    assert not assembler.feed(frame0)
    assert assembler.feed(frame1)
    assert assembler.response == SIGNATURE + b"\x90\x00"


def test_short_apdu_is_one_padded_report() -> None:
    (frame,) = frame_apdu(bytes.fromhex("800b000000"))
    assert frame == bytes.fromhex("01010500000005800b000000").ljust(64, b"\x00")


def test_long_payload_uses_three_reports_with_increasing_sequence() -> None:
    payload = bytes(range(150))
    frames = frame_apdu(payload)
    assert [struct.unpack(">H", f[3:5])[0] for f in frames] == [0, 1, 2]
    assembler = FrameAssembler()
    done = [assembler.feed(f) for f in frames]
    assert done == [False, False, True]
    assert assembler.response == payload


@given(st.binary(min_size=0, max_size=600))
def test_frames_round_trip(payload: bytes) -> None:
    frames = frame_apdu(payload)
    assert all(len(f) == 64 for f in frames)
    assembler = FrameAssembler()
    for frame in frames[:-1]:
        assert not assembler.feed(frame)
    assert assembler.feed(frames[-1])
    assert assembler.response == payload


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: b"\x01\x02" + f[2:], "channel 0x0102"),
        (lambda f: f[:2] + b"\x02" + f[3:], "tag 0x02"),
        (lambda f: f[:3] + b"\x00\x01" + f[5:], "sequence 1 in response, expected 0"),
        (lambda f: f[:40], "short HID report (40 bytes"),
    ],
)
def test_assembler_rejects_bad_first_report(mutate: object, message: str) -> None:
    frame = frame_apdu(b"\x90\x00")[0]
    assert callable(mutate)
    with pytest.raises(TransportError, match=message.replace("(", r"\(")):
        FrameAssembler().feed(mutate(frame))


def test_assembler_rejects_repeated_sequence() -> None:
    frames = frame_apdu(bytes(100))
    assembler = FrameAssembler()
    assembler.feed(frames[0])
    with pytest.raises(TransportError, match="sequence 0 in response, expected 1"):
        assembler.feed(frames[0])


def test_model_names() -> None:
    assert model_name(0x5011) == "Nano S Plus"
    assert model_name(0x4015) == "Nano X"
    assert model_name(0x0001) == "Nano S"
    assert model_name(0x1011) == "Nano S"
    assert model_name(0x6011) == "Stax"


def test_enumeration_keeps_interface_0_or_usage_page_ffa0() -> None:
    hid = FakeHidModule()
    hid.add(FakeBakingApp(), path=b"linux-if0", usage_page=0)
    hid.add(FakeBakingApp(), path=b"macos", interface_number=-1, usage_page=0xFFA0)
    hid.extra_entries.append(
        {
            "path": b"u2f",
            "vendor_id": 0x2C97,
            "product_id": 0x5011,
            "interface_number": 1,
            "usage_page": 0xF1D0,
        }
    )
    assert [d.path for d in enumerate_devices(hid)] == [b"linux-if0", b"macos"]


# --- HID transport with a scripted device -------------------------------------------------


class ScriptedDevice:
    """A hid.device that answers each read from a script: bytes, [] (timeout) or an exception."""

    def __init__(self, reads: Sequence[bytes | Exception], write_error: bool = False) -> None:
        self.reads = list(reads)
        self.written: list[bytes] = []
        self.write_error = write_error
        self.closed = False

    def open_path(self, path: bytes) -> None:
        pass

    def write(self, data: bytes) -> int:
        if self.write_error:
            raise OSError("write error")
        self.written.append(bytes(data))
        return len(data)

    def read(self, max_length: int, timeout_ms: int = 0) -> list[int]:
        if not self.reads:
            return []
        item = self.reads.pop(0)
        if isinstance(item, Exception):
            raise item
        return list(item)

    def close(self) -> None:
        self.closed = True


def test_hid_transport_writes_report_id_and_padded_reports() -> None:
    device = ScriptedDevice(hid_frames(SIGNATURE + b"\x90\x00"))
    transport = HidTransport(device, INFO)
    assert transport.exchange(SIGN_MESSAGE_APDU, 1.0) == SIGNATURE + b"\x90\x00"
    assert [len(w) for w in device.written] == [65, 65]
    assert all(w[0] == 0 for w in device.written)
    assert device.written[1][1:] == frame_apdu(SIGN_MESSAGE_APDU)[1]


def test_hid_transport_skips_empty_reads_until_the_answer() -> None:
    device = ScriptedDevice([b"", b"", *hid_frames(b"\x90\x00")])
    assert HidTransport(device, INFO).exchange(b"\x80\x00\x00\x00\x00", 1.0) == b"\x90\x00"


def test_hid_transport_times_out_on_empty_reads() -> None:
    transport = HidTransport(ScriptedDevice([]), INFO)
    with pytest.raises(TransportTimeout, match=r"no answer from the device within 0\.2 s") as info:
        transport.exchange(b"\x80\x00\x00\x00\x00", 0.2)
    assert info.value.sent


@pytest.mark.parametrize(
    ("reads", "message"),
    [
        ([OSError("read error")], "HID read failed: read error"),
        ([b"\x01\x01\x05\x00\x00\x00\x02\x90"], "short HID report"),
        ([frame_apdu(b"\x90\x00", channel=0x0202)[0]], "channel 0x0202"),
        ([hid_frames(bytes(100))[0], hid_frames(bytes(100))[0]], "sequence 0 in response"),
    ],
)
def test_hid_transport_errors(reads: list[bytes | Exception], message: str) -> None:
    device = ScriptedDevice(reads)
    with pytest.raises(TransportError, match=message) as info:
        HidTransport(device, INFO).exchange(b"\x80\x00\x00\x00\x00", 1.0)
    assert info.value.sent


def test_hid_write_error_is_a_transport_error_before_sending() -> None:
    with pytest.raises(TransportError, match="HID write failed") as info:
        HidTransport(ScriptedDevice([], write_error=True), INFO).exchange(b"\x80\x00", 1.0)
    assert not info.value.sent


def test_close_is_idempotent_and_exchange_after_close_fails() -> None:
    device = ScriptedDevice([])
    transport = HidTransport(device, INFO)
    transport.close()
    transport.close()
    assert device.closed
    with pytest.raises(TransportError, match="closed"):
        transport.exchange(b"\x80\x00\x00\x00\x00", 1.0)


# --- TCP framing ------------------------------------------------------------------------------


def test_tcp_request_framing_matches_the_worked_example() -> None:
    apdu = bytes.fromhex("8004000011048000002c800006c18000000080000000")
    assert frame_request(apdu).hex() == "00000016" + apdu.hex()


def test_parse_host_port() -> None:
    assert parse_host_port("127.0.0.1:9999") == ("127.0.0.1", 9999)
    assert parse_host_port("localhost") == ("localhost", 9999)
    assert parse_host_port("[::1]:40000") == ("::1", 40000)
    with pytest.raises(ValueError, match="not a number"):
        parse_host_port("host:abc")


class ScriptedServer:
    """Accepts one connection, reads one request, answers `reply` bytes raw, then closes."""

    def __init__(self, reply: bytes, *, close_after: bool = True) -> None:
        self.reply = reply
        self.close_after = close_after
        self.received = b""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.release = threading.Event()
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            header = conn.recv(4)
            (length,) = struct.unpack(">I", header)
            while len(self.received) < length:
                self.received += conn.recv(length)
            conn.sendall(self.reply)
            if not self.close_after:
                self.release.wait(5)

    def stop(self) -> None:
        self.release.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def scripted_server() -> Iterator[list[ScriptedServer]]:
    servers: list[ScriptedServer] = []
    yield servers
    for server in servers:
        server.stop()


def test_tcp_response_length_excludes_status_word(scripted_server: list[ScriptedServer]) -> None:
    server = ScriptedServer(b"\x00\x00\x00\x40" + SIGNATURE + b"\x90\x00")
    scripted_server.append(server)
    transport = TcpTransport.open("127.0.0.1", server.port)
    try:
        response = transport.exchange(SIGN_MESSAGE_APDU, 2.0)
    finally:
        transport.close()
    assert response == SIGNATURE + b"\x90\x00"
    assert server.received == SIGN_MESSAGE_APDU


def test_tcp_connection_closed_mid_response(scripted_server: list[ScriptedServer]) -> None:
    server = ScriptedServer(b"\x00\x00\x00\x40" + SIGNATURE[:10])
    scripted_server.append(server)
    transport = TcpTransport.open("127.0.0.1", server.port)
    try:
        with pytest.raises(TransportError, match="closed by the device") as info:
            transport.exchange(SIGN_MESSAGE_APDU, 2.0)
    finally:
        transport.close()
    assert info.value.sent


def test_tcp_timeout(scripted_server: list[ScriptedServer]) -> None:
    server = ScriptedServer(b"\x00\x00", close_after=False)
    scripted_server.append(server)
    transport = TcpTransport.open("127.0.0.1", server.port)
    try:
        with pytest.raises(TransportTimeout, match=r"within 0\.3 s"):
            transport.exchange(b"\x80\x00\x00\x00\x00", 0.3)
    finally:
        transport.close()


def test_tcp_connect_refused_names_the_address() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(TransportError, match=f"cannot connect to 127.0.0.1:{port}"):
        TcpTransport.open("127.0.0.1", port, 1.0)
