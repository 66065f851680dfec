"""HWM interchange formats (watermark-rules.md §7)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from signer_guard import hwm_io
from signer_guard.hwm_io import HWMFormatError
from signer_guard.model import WHOLE_LEVEL_ROUND, HWMKey, HWMRecord, Kind
from signer_guard.store.sqlite import SqliteStore

MAINNET = "NetXdQprcVkpaWU"
GHOSTNET = "NetXnHfVqm9iesp"
TZ1 = "tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv"
TZ4 = "tz4AQcKaQU1sUzsmPTX43qnK4ddkCeeknJnf"
HASH_HEX = "22a4661cd4823a14313384e510544af380ce40c3c44d3026319b191718356f4a"
SIG = (
    "edsigtz4tHwXevjmqk5FLxbQGAMpXHzPSZeiVFx6sJc3z9Y1FQidLg4jSBkkPzsxXSbatq5rPi"
    "cZVNyTrFQatAQk3nEBUX1GiGy"
)

OCTEZ_EXAMPLE = """{ "NetXdQprcVkpaWU":
    { "tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv":
        { "level": 1331, "round": 0,
          "hash": "22a4661cd4823a14313384e510544af380ce40c3c44d3026319b191718356f4a",
          "signature": "edsigtz4tHwXevjmqk5FLxbQGAMpXHzPSZeiVFx6sJc3z9Y1FQidLg4jSBkkPzsxXSbatq5rPicZVNyTrFQatAQk3nEBUX1GiGy" } } }
"""  # noqa: E501 (the exact file from watermark-rules.md §7.1)

SIGNATORY_EXAMPLE = """{ "tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv":
    { "attestation": { "level": 1331, "round": 0, "hash": "vh1wP14jnn3cgqvUDeihqeLqzH1JR4mdawt1RrhKX63B6s64LxoZ" } } }
"""  # noqa: E501 (watermark-rules.md §7.2)


def rec(
    kind: Kind,
    level: int,
    round_: int,
    hash_: bytes | None = None,
    signature: str | None = None,
    pkh: str = TZ1,
    chain: str = MAINNET,
) -> HWMRecord:
    return HWMRecord(chain, pkh, kind, level, round_, hash_, signature, 0, "")


def essentials(records: list[HWMRecord]) -> set[tuple[object, ...]]:
    return {(r.chain_id, r.pkh, r.kind, r.level, r.round, r.hash, r.signature) for r in records}


SAMPLE = [
    rec("attestation", 1331, 0, bytes.fromhex(HASH_HEX), SIG),
    rec("preattestation", 1331, 0, bytes(range(32))),
    rec("block", 1330, 2),
    rec("block", 77, WHOLE_LEVEL_ROUND, pkh=TZ4, chain=GHOSTNET),
]


# -- octez-signer -------------------------------------------------------------------------------
def test_octez_round_trip(tmp_path: Path) -> None:
    written = hwm_io.export_octez(SAMPLE, tmp_path / "signer")
    assert sorted(p.name for p in written) == sorted(hwm_io.OCTEZ_FILES.values())
    assert sorted(p.name for p in (tmp_path / "signer").iterdir()) == sorted(
        hwm_io.OCTEZ_FILES.values()
    )  # no temp file left behind
    assert essentials(hwm_io.read_octez(tmp_path / "signer")) == essentials(SAMPLE)


def test_octez_export_file_contents(tmp_path: Path) -> None:
    hwm_io.export_octez(SAMPLE, tmp_path)
    text = (tmp_path / "block_high_watermarks").read_text()
    assert "\n  " in text  # pretty-printed
    block = json.loads(text)
    assert block[MAINNET][TZ1] == {"level": 1330, "round": 2, "hash": "0" * 64}
    pre = json.loads((tmp_path / "preattestation_high_watermarks").read_text())
    assert "signature" not in pre[MAINNET][TZ1]
    att = json.loads((tmp_path / "attestation_high_watermarks").read_text())
    assert att[MAINNET][TZ1] == {"level": 1331, "round": 0, "hash": HASH_HEX, "signature": SIG}


def test_octez_export_writes_all_three_files_even_when_empty(tmp_path: Path) -> None:
    hwm_io.export_octez([], tmp_path)
    for name in hwm_io.OCTEZ_FILES.values():
        assert json.loads((tmp_path / name).read_text()) == {}


def test_octez_example_from_the_spec(tmp_path: Path) -> None:
    (tmp_path / "attestation_high_watermarks").write_text(OCTEZ_EXAMPLE)
    [got] = hwm_io.read_octez(tmp_path)
    assert (got.chain_id, got.pkh, got.kind, got.level, got.round) == (
        MAINNET, TZ1, "attestation", 1331, 0,
    )  # fmt: skip
    assert got.hash == bytes.fromhex(HASH_HEX)
    assert got.signature == SIG


def test_octez_legacy_marks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "block_high_watermarks").write_text(
        json.dumps({MAINNET: {TZ1: {"level": 900, "hash": HASH_HEX}}})
    )
    (tmp_path / "endorsement_high_watermarks").write_text(
        json.dumps({MAINNET: {TZ1: {"level": 900, "hash": HASH_HEX}}})
    )
    with caplog.at_level(logging.WARNING):
        records = hwm_io.read_octez(tmp_path)
    assert essentials(records) == {
        (MAINNET, TZ1, "block", 900, WHOLE_LEVEL_ROUND, bytes.fromhex(HASH_HEX), None)
    }
    assert "endorsement_high_watermarks" in caplog.text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"NetXbad": {TZ1: {"level": 1, "round": 0}}}, "bad chain id 'NetXbad'"),
        ({MAINNET: {"tz1nope": {"level": 1, "round": 0}}}, "bad pkh 'tz1nope'"),
        ({MAINNET: {TZ1: {"level": -1, "round": 0}}}, f"pkh {TZ1}: level -1 is out of range"),
        ({MAINNET: {TZ1: {"level": "5", "round": 0}}}, "level must be an integer"),
        ({MAINNET: {TZ1: {"round": 0}}}, "level is missing"),
        ({MAINNET: {TZ1: {"level": 1, "round": 0, "hash": "abcd"}}}, "hash must be 64 hex"),
        ({MAINNET: {TZ1: {"level": 1, "round": 0, "signature": "edsigX"}}}, "bad signature"),
        ([1, 2], "the file must be a JSON object"),
    ],
)
def test_octez_validation_names_file_and_entry(
    tmp_path: Path, content: object, expected: str
) -> None:
    path = tmp_path / "preattestation_high_watermarks"
    path.write_text(json.dumps(content))
    with pytest.raises(HWMFormatError) as err:
        hwm_io.read_octez(tmp_path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_octez_directory_without_files(tmp_path: Path) -> None:
    with pytest.raises(HWMFormatError, match="no octez-signer high watermark file"):
        hwm_io.read_octez(tmp_path)
    (tmp_path / "attestation_high_watermarks").write_text("{not json")
    with pytest.raises(HWMFormatError, match="not valid JSON"):
        hwm_io.read_octez(tmp_path)


# -- Signatory ----------------------------------------------------------------------------------
def test_signatory_example_from_the_spec(tmp_path: Path) -> None:
    wm = tmp_path / "watermark_v2"
    wm.mkdir()
    (wm / f"{MAINNET}.json").write_text(SIGNATORY_EXAMPLE)
    for source in (wm, wm / f"{MAINNET}.json"):
        [got] = hwm_io.read_signatory(source)
        assert (got.chain_id, got.pkh, got.kind, got.level, got.round) == (
            MAINNET, TZ1, "attestation", 1331, 0,
        )  # fmt: skip
        assert got.hash == bytes.fromhex(HASH_HEX)  # the same request as the octez example
        assert got.signature is None


def test_signatory_dal_merges_into_attestation_and_unknown_kinds_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = {
        TZ4: {
            "attestation": {"level": 50, "round": 3},
            "attestation_with_dal": {"level": 51, "round": 0},
            "preattestation": {"level": 52, "round": 1},
            "generic": {"level": 9, "round": 0},
        }
    }
    (tmp_path / f"{GHOSTNET}.json").write_text(json.dumps(data))
    (tmp_path / f"{MAINNET}.json").write_text(json.dumps({TZ1: {"block": {"level": 7}}}))
    with caplog.at_level(logging.WARNING):
        records = hwm_io.read_signatory(tmp_path)
    assert essentials(records) == {
        (GHOSTNET, TZ4, "attestation", 51, 0, None, None),
        (GHOSTNET, TZ4, "preattestation", 52, 1, None, None),
        (MAINNET, TZ1, "block", 7, WHOLE_LEVEL_ROUND, None, None),
    }
    assert "generic" in caplog.text


def test_signatory_validation(tmp_path: Path) -> None:
    bad_name = tmp_path / "mainnet.json"
    bad_name.write_text(SIGNATORY_EXAMPLE)
    with pytest.raises(HWMFormatError, match="bad chain id 'mainnet'"):
        hwm_io.read_signatory(bad_name)
    bad_hash = tmp_path / f"{MAINNET}.json"
    bad_hash.write_text(json.dumps({TZ1: {"block": {"level": 1, "round": 0, "hash": HASH_HEX}}}))
    with pytest.raises(HWMFormatError, match=rf"{TZ1}, kind block: bad hash"):
        hwm_io.read_signatory(bad_hash)
    with pytest.raises(HWMFormatError, match="no such file"):
        hwm_io.read_signatory(tmp_path / "missing")


# -- signer-guard JSON --------------------------------------------------------------------------
def test_json_round_trip() -> None:
    records = [
        HWMRecord(MAINNET, TZ1, "attestation", 1331, 0, bytes.fromhex(HASH_HEX), SIG, 4, "t1"),
        HWMRecord(MAINNET, TZ4, "block", 12, 1, None, None, 2, "t2"),
    ]
    text = hwm_io.export_json(records)
    assert json.loads(text)[0]["hash"] == HASH_HEX
    assert hwm_io.read_json(text) == records


def test_json_minimal_records_and_unknown_kinds(caplog: pytest.LogCaptureFixture) -> None:
    text = json.dumps(
        [
            {"chain_id": MAINNET, "pkh": TZ1, "kind": "block", "level": 5, "round": 1},
            {"chain_id": MAINNET, "pkh": TZ1, "kind": "endorsement", "level": 5, "round": 1},
        ]
    )
    with caplog.at_level(logging.WARNING):
        records = hwm_io.read_json(text, source="in.json")
    assert essentials(records) == {(MAINNET, TZ1, "block", 5, 1, None, None)}
    assert "endorsement" in caplog.text


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"chain_id": MAINNET, "pkh": TZ1, "kind": "block", "level": 5}, "missing field(s) round"),
        ({"chain_id": MAINNET, "pkh": TZ1, "kind": "block", "level": -5, "round": 0}, "level -5"),
        ({"chain_id": "Net", "pkh": TZ1, "kind": "block", "level": 5, "round": 0}, "chain id"),
    ],
)
def test_json_validation(item: dict[str, object], expected: str) -> None:
    with pytest.raises(HWMFormatError) as err:
        hwm_io.read_json(json.dumps([item]), source="in.json")
    assert "in.json: record 0" in str(err.value)
    assert expected in str(err.value)


# -- importing is a max-merge -------------------------------------------------------------------
async def test_import_never_lowers(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    await store.open()
    try:
        await store.set_record(HWMKey(MAINNET, TZ1, "attestation"), 2000, 0)
        (tmp_path / "octez").mkdir()
        (tmp_path / "octez" / "attestation_high_watermarks").write_text(OCTEZ_EXAMPLE)
        (tmp_path / "octez" / "block_high_watermarks").write_text(
            json.dumps({MAINNET: {TZ1: {"level": 1331, "round": 1, "hash": HASH_HEX}}})
        )
        assert await store.merge_records(hwm_io.read_octez(tmp_path / "octez")) == 1
        att = await store.get_record(HWMKey(MAINNET, TZ1, "attestation"))
        block = await store.get_record(HWMKey(MAINNET, TZ1, "block"))
        assert att is not None and (att.level, att.hash, att.signature) == (2000, None, None)
        assert block is not None and (block.level, block.round) == (1331, 1)
        # Re-importing the same data changes nothing.
        assert await store.merge_records(hwm_io.read_octez(tmp_path / "octez")) == 0
        # Exporting and importing into the same store is a no-op as well.
        hwm_io.export_octez(await store.list_records(), tmp_path / "out")
        assert await store.merge_records(hwm_io.read_octez(tmp_path / "out")) == 0
    finally:
        await store.close()
