"""The signing journal: append-only JSON lines, size rotation, private file mode, order."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from signer_guard.journal import Journal, JournalEntry, JournalError, entry_line


def _entry(level: int, decision: str = "signed", **extra: str) -> JournalEntry:
    return JournalEntry(
        pkh="tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv",
        decision=decision,
        kind="attestation",
        chain="NetXdQprcVkpaWU",
        level=level,
        round=0,
        payload_hash="vh1hqtJCryS2Uzb8KDU2PAp33U1nDCeUB4g9yWKTjgVhiy4x9pQA",
        signature="edsigtest" if decision == "signed" else None,
        **extra,
    )


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_lines_append_with_all_fields(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    try:
        await journal.record(_entry(10))
        # Written when record returns, before any flush or close.
        assert len(_lines(path)) == 1
        await journal.record(
            _entry(9, decision="refused", reason="hwm", message="attestation level 9 below")
        )
    finally:
        await journal.close()
    first, second = _lines(path)
    assert first["level"] == 10 and first["decision"] == "signed"
    assert first["signature"] == "edsigtest"
    assert set(first) == {
        "time",
        "pkh",
        "kind",
        "chain",
        "level",
        "round",
        "payload_hash",
        "decision",
        "signature",
    }
    assert second["decision"] == "refused"
    assert second["reason"] == "hwm"
    assert second["message"] == "attestation level 9 below"
    assert second["signature"] is None


async def test_existing_journal_is_appended_not_truncated(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    for level in (1, 2):
        journal = Journal(path)
        await journal.record(_entry(level))
        await journal.close()
    assert [line["level"] for line in _lines(path)] == [1, 2]


async def test_file_mode_is_0600_even_for_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text("")
    path.chmod(0o644)
    journal = Journal(path, max_bytes=400, backups=1)
    try:
        for level in range(20):  # forces a rotation: the new file is private too
            await journal.record(_entry(level))
    finally:
        await journal.close()
    for p in (path, tmp_path / "journal.jsonl.1"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600


async def test_rotation_keeps_n_backups_and_every_recent_line_in_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    line_size = len(entry_line(_entry(100)))
    journal = Journal(path, max_bytes=line_size * 3, backups=2)
    try:
        for level in range(100, 120):
            await journal.record(_entry(level))
    finally:
        await journal.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["journal.jsonl", "journal.jsonl.1", "journal.jsonl.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= line_size * 3
    kept = [
        line["level"]
        for p in (path.with_name("journal.jsonl.2"), path.with_name("journal.jsonl.1"), path)
        for line in _lines(p)
    ]
    # Oldest backup first, current file last: one contiguous run ending at the last record.
    assert kept == list(range(120 - len(kept), 120))
    assert len(kept) >= 7


async def test_zero_backups_keeps_only_the_current_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    line_size = len(entry_line(_entry(100)))
    journal = Journal(path, max_bytes=line_size * 2, backups=0)
    try:
        for level in range(100, 110):
            await journal.record(_entry(level))
    finally:
        await journal.close()
    assert [p.name for p in tmp_path.iterdir()] == ["journal.jsonl"]
    assert [line["level"] for line in _lines(path)] == [108, 109]


async def test_order_preserved_under_concurrent_records(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    try:
        await asyncio.gather(*(journal.record(_entry(level)) for level in range(500)))
        for level in range(500, 600):
            journal.record_nowait(_entry(level))
        await journal.flush()
        assert [line["level"] for line in _lines(path)] == list(range(600))
    finally:
        await journal.close()


async def test_messages_are_truncated(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    try:
        await journal.record(_entry(1, decision="error", message="x" * 10_000))
    finally:
        await journal.close()
    (line,) = _lines(path)
    assert isinstance(line["message"], str) and 0 < len(line["message"]) <= 500


async def test_unwritable_path_raises_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    journal = Journal(blocker / "journal.jsonl")
    try:
        with pytest.raises(JournalError, match="cannot write journal"):
            await journal.record(_entry(1))
    finally:
        await journal.close()


async def test_mapping_entries_are_written_as_given(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    try:
        await journal.record(
            {"key": "tz1x", "level": 5, "decision": "signed", "message": "m" * 900}
        )
        journal.record_nowait({"key": "tz1x", "level": 6, "decision": "hwm_refused"})
        await journal.flush()
    finally:
        await journal.close()
    first, second = _lines(path)
    assert first["key"] == "tz1x" and first["level"] == 5
    assert first["message"] == "m" * 500
    assert second == {"key": "tz1x", "level": 6, "decision": "hwm_refused"}


async def test_record_after_close_is_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    await journal.close()
    await journal.close()  # idempotent
    with pytest.raises(JournalError, match="closed"):
        await journal.record(_entry(1))


async def test_fsync_mode_writes_lines(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, fsync=True)
    try:
        await asyncio.gather(*(journal.record(_entry(level)) for level in range(20)))
    finally:
        await journal.close()
    assert [line["level"] for line in _lines(path)] == list(range(20))
