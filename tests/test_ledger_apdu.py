"""Ledger APDU building and parsing, signature conversion and key URIs (ledger.md §4–§10)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from drivers.ledger import apdu
from drivers.ledger.apdu import ApduFormatError, Curve, StatusWordError
from drivers.ledger.uri import LedgerURIError, parse_uri

H = apdu.HARDENED
PATH = (44 | H, 1729 | H, 0 | H, 0 | H)


def test_path_encoding_matches_the_spec_example() -> None:
    assert apdu.encode_path(PATH).hex() == "048000002c800006c18000000080000000"
    assert apdu.decode_path(apdu.encode_path(PATH) + b"rest") == (PATH, b"rest")
    assert apdu.format_path(PATH) == "m/44'/1729'/0'/0'"


def test_apdus_of_the_worked_example() -> None:
    chain = bytes.fromhex("7a06a770")
    assert apdu.setup(Curve.ED25519, PATH, chain, 100, 0).hex() == (
        "800a00001d7a06a7700000006400000000048000002c800006c18000000080000000"
    )
    assert apdu.query_all_hwm().hex() == "800b000000"
    assert apdu.sign_path(Curve.ED25519, PATH, with_hash=False).hex() == (
        "8004000011048000002c800006c18000000080000000"
    )
    assert apdu.reset(110).hex() == "80060000040000006e"
    assert apdu.version().hex() == "8000000000"
    assert apdu.git().hex() == "8009000000"
    assert apdu.deauthorize().hex() == "800c000000"
    assert apdu.get_public_key(Curve.ED25519, apdu.TEZOS_ROOT).hex() == (
        "8002000009028000002c800006c1"
    )


def test_data_longer_than_235_bytes_is_refused() -> None:
    assert len(apdu.sign_message(bytes(235))) == 240
    with pytest.raises(ValueError, match="235-byte limit"):
        apdu.sign_message(bytes(236))


def test_levels_with_top_bits_set_are_refused() -> None:
    with pytest.raises(ValueError, match="top two bits"):
        apdu.reset(1 << 30)


def test_parse_responses() -> None:
    version = apdu.parse_version(bytes([1, 2, 5, 1]))
    assert version.is_baking and str(version) == "Tezos Baking 2.5.1"
    assert apdu.parse_git(b"abc123\x00") == "abc123"
    auth = apdu.parse_auth_key_with_curve(bytes([1]) + apdu.encode_path(PATH))
    assert (auth.curve, auth.path, auth.authorized) == (Curve.SECP256K1, PATH, True)
    assert not apdu.parse_auth_key_with_curve(b"\x00\x00").authorized
    hwm = apdu.parse_all_hwm(bytes.fromhex("000000640000000200000005000000007a06a770"))
    assert (hwm.main_level, hwm.main_round, hwm.test_level, hwm.test_round) == (100, 2, 5, 0)
    assert hwm.main_chain_id.hex() == "7a06a770" and not hwm.chain_unset


def test_legacy_12_byte_hwm_is_refused_with_a_hint() -> None:
    with pytest.raises(ApduFormatError, match="too old"):
        apdu.parse_all_hwm(bytes(12))


def test_public_key_compression() -> None:
    x, y_odd = bytes(range(1, 33)), bytes(31) + b"\x03"
    assert apdu.tezos_public_key(Curve.P256, b"\x04" + x + y_odd) == b"\x03" + x
    assert apdu.tezos_public_key(Curve.SECP256K1, b"\x04" + x + bytes(32)) == b"\x02" + x
    assert apdu.tezos_public_key(Curve.ED25519, b"\x02" + x) == x
    with pytest.raises(ApduFormatError):
        apdu.tezos_public_key(Curve.ED25519, x)


@given(
    st.integers(1, apdu.SECP256K1_N - 1),
    st.integers(1, apdu.SECP256K1_N - 1),
    st.booleans(),
)
def test_der_with_parity_bit_to_low_s_raw(r: int, s: int, parity: bool) -> None:
    der = bytearray(encode_dss_signature(r, s))
    der[0] |= int(parity)
    raw = apdu.der_to_raw(Curve.SECP256K1, bytes(der))
    assert len(raw) == 64
    assert int.from_bytes(raw[:32], "big") == r
    low_s = int.from_bytes(raw[32:], "big")
    assert low_s <= apdu.SECP256K1_N // 2
    assert low_s in (s, apdu.SECP256K1_N - s)


@pytest.mark.parametrize(
    "der",
    [
        b"",
        b"\x31\x00",
        bytes.fromhex("300702010102010100"),  # trailing byte inside the sequence
        bytes.fromhex("3006020100020101"),  # empty INTEGER
        bytes.fromhex("3006020101020100"),  # s = 0
    ],
)
def test_malformed_der_is_refused(der: bytes) -> None:
    with pytest.raises(ApduFormatError):
        apdu.der_to_raw(Curve.P256, der)


@pytest.mark.parametrize(
    ("sw", "text"),
    [
        (0x6A80, "device high watermark, or an invalid level, path or message (0x6A80)"),
        (0x6985, "rejected on the device (0x6985)"),
        (0x6982, "key not authorized for baking or device locked"),
        (0x6E00, "Tezos Baking app not open"),
        (0x6E01, "Tezos Baking app not open"),
        (0x5515, "device locked; unlock it with the PIN"),
        (0x6D00, "wrong app or app version"),
        (0x9405, "could not parse the request"),
        (0x917E, "driver bug"),
        (0x6A88, "no baking key authorized"),
        (0x1234, "unexpected status word (0x1234)"),
    ],
)
def test_status_word_descriptions(sw: int, text: str) -> None:
    assert text in apdu.describe_status(sw)
    error = StatusWordError(sw, apdu.Ins.SIGN_WITH_HASH)
    assert str(error).startswith("ledger: SIGN_WITH_HASH: ")
    assert text in str(error)


def test_uri_star_with_tcp() -> None:
    uri = parse_uri("ledger://*/ed25519/0h/0h?tcp=127.0.0.1:9999")
    assert uri.device_id is None and uri.curve is Curve.ED25519
    assert uri.path == PATH and uri.tcp == ("127.0.0.1", 9999)


def test_uri_with_device_tz1_and_other_curves() -> None:
    uri = parse_uri("ledger://tz1dyX3B1CFYa2DfdFLyPtiJCfQRUgPVME6E/secp256k1/0'/1")
    assert uri.device_id == "tz1dyX3B1CFYa2DfdFLyPtiJCfQRUgPVME6E"
    assert uri.curve is Curve.SECP256K1 and uri.path == (44 | H, 1729 | H, H, 1)
    assert parse_uri("ledger://*/P-256/0h").curve is Curve.P256
    assert parse_uri("ledger://*/bip25519/0h").curve is Curve.BIP25519


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ledger://majestic-gull-bouncy-lobster/ed25519/0h/0h", "animal ids"),
        ("ledger://*/bls/0h", "unknown curve"),
        ("ledger://*/ed25519/zero", "not a number"),
        ("ledger://*/ed25519/" + "/".join(["0h"] * 9), "at most 8 path components"),
        ("ledger://*/ed25519/0h?tcp=host:port", "not a number"),
        ("ledger://*/ed25519/0h?usb=1", "unknown query parameter"),
        ("tezsign://*/x", "not a ledger"),
    ],
)
def test_bad_uris(text: str, message: str) -> None:
    with pytest.raises(LedgerURIError, match=message):
        parse_uri(text)
