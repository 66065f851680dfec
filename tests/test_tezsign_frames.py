"""TezSign frame layer (tezsign.md §4, §13): encoding, parity, resynchronisation, split reads."""

from __future__ import annotations

import struct

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from drivers.tezsign import frames
from drivers.tezsign.frames import Frame, FrameDecoder, FrameType

ID_AA = bytes([0xAA]) * 16
ID_SEQ = bytes(range(16))


def test_spec_worked_frames() -> None:
    assert (
        frames.encode(frames.request(ID_AA, bytes.fromhex("1a00"))).hex()
        == "5601aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa02000000551a00"
    )
    assert frames.encode(frames.accept(ID_SEQ)).hex() == (
        "5603000102030405060708090a0b0c0d0e0f0000000055"
    )
    assert frames.encode(frames.RETRY).hex() == "5604000000000000000000000000000000000000000052"
    assert frames.encode(frames.KEEP_ALIVE).hex() == (
        "5605000000000000000000000000000000000000000053"
    )
    header = frames.encode(frames.request(ID_SEQ, bytes(120)))[: frames.HEADER_SIZE]
    assert header.hex() == "5601000102030405060708090a0b0c0d0e0f780000002f"


def test_decode_spec_status_request() -> None:
    decoded = FrameDecoder().feed(
        bytes.fromhex("5601aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa02000000551a00")
    )
    assert decoded == [Frame(FrameType.REQUEST, ID_AA, b"\x1a\x00")]


def test_size_is_little_endian_and_parity_xor() -> None:
    data = frames.encode(frames.response(ID_SEQ, bytes(300)))
    assert struct.unpack_from("<I", data, 18) == (300,)
    parity = 0
    for byte in data[:22]:
        parity ^= byte
    assert data[22] == parity


def test_bad_parity_drops_one_byte_and_resyncs() -> None:
    good = frames.encode(frames.response(ID_SEQ, b"payload"))
    corrupt = bytearray(good)
    corrupt[22] ^= 0xFF
    decoder = FrameDecoder()
    out = decoder.feed(bytes(corrupt) + good)
    assert out == [Frame(FrameType.RESPONSE, ID_SEQ, b"payload")]
    assert decoder.discarded == len(corrupt)


def test_oversized_header_is_dropped() -> None:
    head = bytes([frames.MAGIC, FrameType.RESPONSE]) + ID_SEQ
    head += struct.pack("<I", frames.MAX_PAYLOAD + 1)
    head += bytes([frames.parity(head)])
    good = frames.encode(frames.accept(ID_AA))
    decoder = FrameDecoder()
    assert decoder.feed(head + good) == [frames.accept(ID_AA)]
    assert decoder.buffered == 0


def test_waits_for_the_payload() -> None:
    data = frames.encode(frames.response(ID_SEQ, b"x" * 40))
    decoder = FrameDecoder()
    assert decoder.feed(data[:30]) == []
    assert decoder.feed(data[30:]) == [frames.response(ID_SEQ, b"x" * 40)]


def test_unknown_types_are_decoded_for_the_caller_to_ignore() -> None:
    odd = Frame(0x42, ID_SEQ, b"?")
    assert FrameDecoder().feed(frames.encode(odd)) == [odd]


def test_frame_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Frame(FrameType.REQUEST, b"short")
    with pytest.raises(ValueError, match="byte"):
        Frame(300, ID_SEQ)


frame_strategy = st.builds(
    Frame,
    st.sampled_from(list(FrameType)),
    st.binary(min_size=16, max_size=16),
    st.binary(max_size=700),
)


@given(
    st.lists(frame_strategy, max_size=6),
    st.lists(st.integers(min_value=1, max_value=600), max_size=30),
)
def test_any_split_of_the_stream_gives_the_same_frames(items: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(frames.encode(f) for f in items)
    decoder = FrameDecoder()
    out: list[Frame] = []
    pos = 0
    for cut in cuts:
        out += decoder.feed(stream[pos : pos + cut])
        pos += cut
    out += decoder.feed(stream[pos:])
    assert out == items


@given(
    st.binary(max_size=200).filter(lambda b: frames.MAGIC not in b),
    st.lists(frame_strategy, min_size=1, max_size=4),
)
def test_garbage_without_magic_is_skipped(garbage: bytes, items: list[Frame]) -> None:
    stream = garbage + b"".join(frames.encode(f) for f in items)
    assert FrameDecoder().feed(stream) == items


@given(st.binary(max_size=300), frame_strategy)
def test_resyncs_after_arbitrary_garbage(garbage: bytes, frame: Frame) -> None:
    """Garbage, magic bytes included, costs nothing unless it forms a header with valid parity."""
    good = frames.encode(frame)
    stream = garbage + good
    spurious = any(
        stream[i] == frames.MAGIC
        and len(stream) - i >= frames.HEADER_SIZE
        and frames.parity(stream[i : i + frames.HEADER_SIZE]) == stream[i + frames.HEADER_SIZE - 1]
        for i in range(len(garbage))
    )
    assume(not spurious)
    decoder = FrameDecoder()
    assert decoder.feed(stream) == [frame]
    assert decoder.discarded == len(garbage)
