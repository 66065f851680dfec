"""`failover` with a directly attached Ledger (the fake Baking app over the TCP APDU transport):
the device's HWM is a source of the last level, and RESET raises it to the fence level."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signer_guard.failover import FailoverOptions, FailoverResult, failover
from signer_guard.model import KINDS
from signer_guard.store.sqlite import SqliteStore
from tests.fakes.ledger_rig import Rig, make_rig, set_up

MAINNET = "NetXdQprcVkpaWU"


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    made = make_rig("tcp")
    set_up(made.app, level=500)
    try:
        yield made
    finally:
        await made.close()


async def run(tmp_path: Path, rig: Rig, *, terminal: bool) -> tuple[FailoverResult, SqliteStore]:
    store = SqliteStore(tmp_path / "store.sqlite")
    await store.open()
    await store.claim_initial_fence("old-primary")

    async def yes(question: str) -> bool:
        return True

    lines: list[str] = []
    result = await failover(
        store,
        FailoverOptions(
            guard_id="backup",
            keys=[rig.uri()],
            allowed_chains=[MAINNET],
            margin=10,
            yes=not terminal,
            confirm=yes if terminal else None,
            emit=lines.append,
        ),
    )
    assert lines == result.lines
    return result, store


async def test_ledger_hwm_is_a_source_and_is_reset_on_a_terminal(tmp_path: Path, rig: Rig) -> None:
    result, store = await run(tmp_path, rig, terminal=True)
    try:
        assert result.code == 0, result.lines
        rep = result.report
        pkh = rep["devices_raised"][0]
        assert rep["sources"]["devices"] == {pkh: 500}
        assert (rep["last_level"], rep["fence_level"]) == (500, 510)
        assert "waiting for confirmation on the Ledger… (RESET" in "\n".join(result.lines)
        assert rig.app.prompts[-1] == "reset 510"
        assert (rig.app.main.level, rig.app.main.round) == (510, 0)
        records = await store.list_records()
        assert {(r.chain_id, r.pkh, r.kind, r.level) for r in records} == {
            (MAINNET, pkh, kind, 510) for kind in KINDS
        }
    finally:
        await store.close()


async def test_without_a_terminal_the_ledger_is_left_behind_with_a_warning(
    tmp_path: Path, rig: Rig
) -> None:
    result, store = await run(tmp_path, rig, terminal=False)
    await store.close()
    assert result.code == 0, result.lines
    assert result.report["devices_raised"] == []
    assert result.report["fence_level"] == 510
    assert any(w.startswith("device_hwm_behind: Ledger") for w in result.report["warnings"])
    assert rig.app.main.level == 500 and not any(p.startswith("reset") for p in rig.app.prompts)
