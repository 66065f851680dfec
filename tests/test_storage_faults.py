"""Storage faults under a real `serve` process on a real SQLite file, with real kernel faults:
a full file system (ENOSPC), files the kernel refuses to write (immutable), a block device that
fails writes (EIO), a damaged file at start, and the store file deleted or replaced while the
guard runs. The guard must answer 503, show `degraded`, release no signature, and recover by
itself when the fault is gone; a lost file is never silently replaced by a fresh one."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from signer_guard import keys
from signer_guard.forge import forge_consensus
from tests import fs_faults
from tests.fakes.upstream_signer import FakeUpstreamSigner
from tests.guard_proc import GuardProcess, run_cli
from tests.http_client import get_json, sign

MAINNET = "NetXdQprcVkpaWU"
TZ1 = keys.SecretKey.from_b58("edsk4TjJWEszkHKono7XMnepVqwi37FrpbVt1KCsifJeAGimxheShG")


def att(level: int, payload: int = 0) -> bytes:
    return forge_consensus(
        "attestation", 21, MAINNET, level, 0, payload_hash=payload.to_bytes(32, "big")
    )


def msg(body: object) -> str:
    assert isinstance(body, list), body
    return str(body[0]["msg"])


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[FakeUpstreamSigner]:
    async with FakeUpstreamSigner([TZ1], log_path=tmp_path / "upstream.jsonl") as fake:
        yield fake


def guard(tmp_path: Path, fake: FakeUpstreamSigner, store: Path) -> GuardProcess:
    return GuardProcess(tmp_path / "g", keys=[fake.key_url(TZ1.pkh)], store=str(store))


async def status(g: GuardProcess) -> dict[str, Any]:
    code, body = await get_json(g.url + "status")
    assert code == 200
    assert isinstance(body, dict)
    return body


async def wait_state(g: GuardProcess, state: str, timeout: float = 8.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = await status(g)
        if body["state"] == state:
            return body
        assert time.monotonic() < deadline, f"state stayed {body['state']!r}: {body}"
        await asyncio.sleep(0.1)


def record_level(store: Path) -> int | None:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT level FROM hwm WHERE pkh=? AND kind='attestation'", (TZ1.pkh,))
        found = row.fetchone()
    return None if found is None else int(found[0])


async def assert_refused_unsigned(
    g: GuardProcess, fake: FakeUpstreamSigner, level: int, needle: str
) -> dict[str, Any]:
    """503 and `degraded`, and the upstream signed nothing for it."""
    before = len(fake.signatures)
    code, body = await sign(g.url, TZ1.pkh, att(level))
    assert code == 503, body
    assert "store unavailable" in msg(body) and needle in msg(body), msg(body)
    st = await wait_state(g, "degraded", timeout=3)
    assert st["store"]["ok"] is False and needle in st["store"]["error"], st["store"]
    assert len(fake.signatures) == before
    return st


async def test_disk_full_degrades_and_recovers(
    tmp_path: Path, upstream: FakeUpstreamSigner
) -> None:
    with fs_faults.tmpfs(tmp_path / "disk", 1024) as disk:
        g = guard(tmp_path, upstream, disk / "store.sqlite")
        async with g:
            assert (await sign(g.url, TZ1.pkh, att(100)))[0] == 200
            filler = fs_faults.fill(disk)
            await assert_refused_unsigned(g, upstream, 101, "disk is full")
            await assert_refused_unsigned(g, upstream, 102, "disk is full")
            await asyncio.sleep(1.5)  # several fence polls: still degraded while full
            assert (await status(g))["state"] == "degraded"
            filler.unlink()
            await wait_state(g, "active")
            # the failed commits were rolled back: level 101 was never taken
            code, body = await sign(g.url, TZ1.pkh, att(101))
            assert code == 200, body
            assert record_level(disk / "store.sqlite") == 101
            assert [s["data"] for s in upstream.signatures] == [att(100).hex(), att(101).hex()]


async def test_store_files_made_read_only_degrade_and_recover(
    tmp_path: Path, upstream: FakeUpstreamSigner
) -> None:
    store = tmp_path / "s" / "store.sqlite"  # on ext4, which checks the flag on every write
    files = [store, tmp_path / "s" / "store.sqlite-wal"]
    g = guard(tmp_path, upstream, store)
    try:
        async with g:
            assert (await sign(g.url, TZ1.pkh, att(200)))[0] == 200
            fs_faults.set_immutable(files, True)
            await assert_refused_unsigned(g, upstream, 201, "I/O error")
            await asyncio.sleep(1.5)
            assert (await status(g))["state"] == "degraded"
            fs_faults.set_immutable(files, False)
            await wait_state(g, "active")
            assert (await sign(g.url, TZ1.pkh, att(201)))[0] == 200
            assert record_level(store) == 201
    finally:
        fs_faults.set_immutable(files, False)


async def test_read_only_store_at_start_starts_degraded_and_recovers(
    tmp_path: Path, upstream: FakeUpstreamSigner
) -> None:
    """A store prepared with `hwm set` (records, no fence yet) that is read-only when the guard
    starts: the guard cannot claim the fence, serves `degraded`, and claims it once writable."""
    store = tmp_path / "s" / "store.sqlite"
    r = await asyncio.to_thread(
        run_cli, "hwm", "set", "--store", str(store), "--chain", MAINNET, "--pkh", TZ1.pkh,
        "--kind", "attestation", "--level", "250",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    fs_faults.set_immutable([store], True)
    g = guard(tmp_path, upstream, store)
    try:
        async with g:
            st = await status(g)
            assert st["state"] == "degraded" and st["epoch"] is None, st
            assert "read-only" in st["store"]["error"]
            code, body = await sign(g.url, TZ1.pkh, att(251))
            assert code == 503 and "degraded" in msg(body), body
            fs_faults.set_immutable([store], False)
            st = await wait_state(g, "active")
            assert st["epoch"] == 1 and st["holder"] == "guard-a"
            assert (await sign(g.url, TZ1.pkh, att(250)))[0] == 409
            assert (await sign(g.url, TZ1.pkh, att(251)))[0] == 200
    finally:
        fs_faults.set_immutable([store], False)
    assert [s["data"] for s in upstream.signatures] == [att(251).hex()]


async def test_block_device_write_errors_degrade_and_recover(
    tmp_path: Path, upstream: FakeUpstreamSigner
) -> None:
    with fs_faults.failing_block_device(tmp_path / "dev") as (mnt, backing):
        store = mnt / "store.sqlite"
        g = guard(tmp_path, upstream, store)
        async with g:
            assert (await sign(g.url, TZ1.pkh, att(300)))[0] == 200
            filler = fs_faults.fill(backing)
            fs_faults.sync()  # push what is still dirty into the last free backing pages
            fs_faults.fill(backing)
            await assert_refused_unsigned(g, upstream, 301, "I/O error")
            await assert_refused_unsigned(g, upstream, 302, "I/O error")
            filler.unlink()
            await wait_state(g, "active")
            assert (await sign(g.url, TZ1.pkh, att(301)))[0] == 200
        assert record_level(store) == 301  # durable after the guard closed cleanly


def make_store(tmp_path: Path, upstream: FakeUpstreamSigner, levels: int) -> Path:
    """A store with many records (several pages), closed cleanly: no -wal beside it."""
    store = tmp_path / "s" / "store.sqlite"
    records = [
        {"chain_id": MAINNET, "pkh": pkh.pkh, "kind": kind, "level": 1000 + i, "round": 0}
        for i, pkh in enumerate(keys.SecretKey.generate("ed25519") for _ in range(levels))
        for kind in ("block", "preattestation", "attestation")
    ]
    source = tmp_path / "records.json"
    source.write_text(json.dumps(records))
    r = run_cli("hwm", "import", "--store", str(store), "--format", "json", str(source))
    assert r.returncode == 0, r.stderr
    assert not store.with_name("store.sqlite-wal").exists()
    return store


def _damage(store: Path, how: str) -> None:
    data = bytearray(store.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) >= 4 * page
    if how == "zero-filled":
        store.write_bytes(bytes(len(data)))
    elif how == "torn-tail":  # the last page half written, the file cut inside it
        store.write_bytes(bytes(data[: len(data) - page // 2]))
    elif how == "torn-page":  # one b-tree page half zeroes, as after a torn write
        start = 2 * page + page // 2
        data[start : 3 * page] = bytes(3 * page - start)
        store.write_bytes(bytes(data))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["zero-filled", "torn-tail", "torn-page"])
async def test_damaged_store_at_start_refuses_to_start(
    tmp_path: Path, upstream: FakeUpstreamSigner, how: str
) -> None:
    store = make_store(tmp_path, upstream, 120)
    _damage(store, how)
    g = guard(tmp_path, upstream, store)
    r = await asyncio.to_thread(run_cli, "serve", "--config", str(g.config_path), timeout=30)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "refusing to start" in r.stderr and "restore a backup" in r.stderr, r.stderr
    assert upstream.signatures == []


async def test_store_deleted_while_running_stays_degraded_until_covered(
    tmp_path: Path, upstream: FakeUpstreamSigner
) -> None:
    store = tmp_path / "s" / "store.sqlite"
    backup = tmp_path / "backup.sqlite"
    g = guard(tmp_path, upstream, store)
    async with g:
        assert (await sign(g.url, TZ1.pkh, att(500)))[0] == 200
        await asyncio.to_thread(_backup, store, backup)  # an operator's backup at level 500
        assert (await sign(g.url, TZ1.pkh, att(510)))[0] == 200
        store.unlink()
        st = await assert_refused_unsigned(g, upstream, 511, "was deleted")
        rescue = sorted(store.parent.glob("store.sqlite.rescued-*.json"))
        assert len(rescue) == 1
        for words in (str(rescue[0]), "hwm import", "failover --level"):
            assert words in st["store"]["error"]
        await asyncio.sleep(1.5)  # the guard never creates a fresh store by itself
        assert not store.exists()
        assert (await status(g))["state"] == "degraded"

        # the backup is below what was signed since: not adopted
        shutil.copyfile(backup, store)
        await asyncio.sleep(1.5)
        st = await status(g)
        assert st["state"] == "degraded" and "below the rescued" in st["store"]["error"]
        assert (await sign(g.url, TZ1.pkh, att(505, payload=7)))[0] == 503

        # raising the backup with the rescue file makes it safe: adopted without a restart
        r = await asyncio.to_thread(
            run_cli, "hwm", "import", "--store", str(store), "--format", "json", str(rescue[0])
        )
        assert r.returncode == 0, r.stderr
        await wait_state(g, "active")
        code, body = await sign(g.url, TZ1.pkh, att(510, payload=7))
        assert code == 409, body
        assert (await sign(g.url, TZ1.pkh, att(511)))[0] == 200
        assert record_level(store) == 511
    assert [s["data"] for s in upstream.signatures] == [att(lvl).hex() for lvl in (500, 510, 511)]


def _backup(store: Path, target: Path) -> None:
    with sqlite3.connect(store) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


async def test_replaced_store_is_detected_and_a_restart_does_not_lower(
    tmp_path: Path, upstream: FakeUpstreamSigner
) -> None:
    store = tmp_path / "s" / "store.sqlite"
    g = guard(tmp_path, upstream, store)
    async with g:
        assert (await sign(g.url, TZ1.pkh, att(600)))[0] == 200
        fresh = tmp_path / "fresh.sqlite"
        r = await asyncio.to_thread(run_cli, "hwm", "show", "--store", str(fresh))
        assert r.returncode == 0, r.stderr
        fresh.replace(store)  # someone moves an empty store over the live one
        await assert_refused_unsigned(g, upstream, 601, "replaced by another file")
        assert not store.with_name("store.sqlite-wal").exists()  # our WAL was moved aside
    # a restart on the empty file must not sign below the rescued watermark
    r = await asyncio.to_thread(run_cli, "serve", "--config", str(g.config_path), timeout=30)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "below the watermarks rescued" in r.stderr and "hwm import" in r.stderr, r.stderr
    assert [s["data"] for s in upstream.signatures] == [att(600).hex()]
