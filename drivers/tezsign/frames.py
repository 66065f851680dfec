"""The TezSign frame layer (tezsign.md §4): 23-byte header, XOR parity, stream resynchronisation.

offset 0  magic 0x56
       1  type (FrameType)
       2  message id, 16 bytes (zeros for retry and keep-alive)
      18  payload size, u32 little-endian
      22  parity = XOR of bytes 0..21
      23  payload
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

MAGIC: Final = 0x56
HEADER_SIZE: Final = 23
ID_SIZE: Final = 16
#: MAX_MESSAGE_PAYLOAD: a larger announced size is a corrupt header.
MAX_PAYLOAD: Final = 25 * 1024 * 1024
ZERO_ID: Final = bytes(ID_SIZE)


class FrameType(enum.IntEnum):
    UNKNOWN = 0x00
    REQUEST = 0x01
    RESPONSE = 0x02
    ACCEPT = 0x03
    RETRY = 0x04
    KEEP_ALIVE = 0x05


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame. `type` stays an int so that unknown types can be seen (and ignored)."""

    type: int
    msg_id: bytes
    payload: bytes = b""

    def __post_init__(self) -> None:
        if len(self.msg_id) != ID_SIZE:
            raise ValueError(f"frame id must be {ID_SIZE} bytes, got {len(self.msg_id)}")
        if not 0 <= self.type <= 0xFF:
            raise ValueError(f"frame type {self.type} does not fit in a byte")


def parity(header: bytes | bytearray) -> int:
    """XOR of the first 22 header bytes."""
    value = 0
    for byte in header[: HEADER_SIZE - 1]:
        value ^= byte
    return value


def encode(frame: Frame) -> bytes:
    """The bytes of `frame` on the wire."""
    if len(frame.payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(frame.payload)} bytes exceeds {MAX_PAYLOAD}")
    head = bytes([MAGIC, frame.type]) + frame.msg_id + struct.pack("<I", len(frame.payload))
    return head + bytes([parity(head)]) + frame.payload


def request(msg_id: bytes, payload: bytes) -> Frame:
    return Frame(FrameType.REQUEST, msg_id, payload)


def response(msg_id: bytes, payload: bytes) -> Frame:
    return Frame(FrameType.RESPONSE, msg_id, payload)


def accept(msg_id: bytes) -> Frame:
    return Frame(FrameType.ACCEPT, msg_id)


RETRY: Final = Frame(FrameType.RETRY, ZERO_ID)
KEEP_ALIVE: Final = Frame(FrameType.KEEP_ALIVE, ZERO_ID)


class FrameDecoder:
    """Turns a byte stream (arbitrary splits, garbage included) into frames.

    Rules (§4): scan for the magic byte; with a full header, a bad parity drops one byte; an
    announced size above MAX_PAYLOAD drops the whole header; otherwise wait for the payload.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        #: Bytes thrown away while resynchronising (for logs and tests).
        self.discarded = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Append `data`; return every frame now complete, in stream order."""
        self._buf += data
        frames: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _drop(self, count: int) -> None:
        del self._buf[:count]
        self.discarded += count

    def _next(self) -> Frame | None:
        buf = self._buf
        while buf:
            start = buf.find(MAGIC)
            if start < 0:
                self._drop(len(buf))
                return None
            if start:
                self._drop(start)
            if len(buf) < HEADER_SIZE:
                return None
            if parity(buf) != buf[HEADER_SIZE - 1]:
                self._drop(1)
                continue
            (size,) = struct.unpack_from("<I", buf, 18)
            if size > MAX_PAYLOAD:
                self._drop(HEADER_SIZE)
                continue
            end = HEADER_SIZE + size
            if len(buf) < end:
                return None
            frame = Frame(buf[1], bytes(buf[2:18]), bytes(buf[HEADER_SIZE:end]))
            del buf[:end]
            return frame
        return None
