"""The guard in front of an upstream Octez-compatible signer: concurrency, crashes, failures."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from signer_guard import keys
from signer_guard.forge import forge_consensus
from tests.fakes.upstream_signer import FakeUpstreamSigner
from tests.guard_proc import GuardProcess, run_cli
from tests.http_client import get_json, request, sign

MAINNET = "NetXdQprcVkpaWU"
TZ1 = keys.SecretKey.from_b58("edsk4TjJWEszkHKono7XMnepVqwi37FrpbVt1KCsifJeAGimxheShG")
TZ4 = keys.SecretKey.from_b58("BLsk2jjZe6wQH9TwtBzJwL7xLePfEgUxsV6BfwDP8dGfsosgnekSgC")


def att(level: int, round_: int = 0, payload: int = 0, tag: int = 21) -> bytes:
    return forge_consensus(
        "attestation", tag, MAINNET, level, round_, payload_hash=payload.to_bytes(32, "big")
    )


def msg(body: object) -> str:
    assert isinstance(body, list)
    return str(body[0]["msg"])


def record_level(store: str, pkh: str, kind: str = "attestation") -> int | None:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT level FROM hwm WHERE pkh=? AND kind=?", (pkh, kind)).fetchone()
    return None if row is None else int(row[0])


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[FakeUpstreamSigner]:
    async with FakeUpstreamSigner([TZ1, TZ4], log_path=tmp_path / "upstream.jsonl") as fake:
        yield fake


def guard_for(tmp_path: Path, fake: FakeUpstreamSigner, **config: Any) -> GuardProcess:
    return GuardProcess(
        tmp_path / "g", keys=[fake.key_url(TZ1.pkh), fake.key_url(TZ4.pkh)], **config
    )


async def test_50_concurrent_conflicting_requests_one_reaches_backend(
    tmp_path: Path, upstream: FakeUpstreamSigner
) -> None:
    async with guard_for(tmp_path, upstream) as g:
        results = await asyncio.gather(
            *(sign(g.url, TZ1.pkh, att(500, payload=i)) for i in range(50))
        )
        statuses = sorted(s for s, _ in results)
        assert statuses == [200] + [409] * 49
        assert len(upstream.signatures) == 1
        winner = next(b for s, b in results if s == 200)
        assert winner["signature"] == upstream.signatures[0]["signature"]


async def test_sigkill_after_advance_before_backend_reply(
    tmp_path: Path, upstream: FakeUpstreamSigner
) -> None:
    g = guard_for(tmp_path, upstream)
    store = g.config["store"]
    try:
        await g.astart()
        upstream.behaviour.delay = 30.0  # the upstream signs, logs, then sits on the answer
        pending = asyncio.create_task(sign(g.url, TZ1.pkh, att(700)))
        deadline = time.monotonic() + 10
        while record_level(store, TZ1.pkh) != 700:
            assert time.monotonic() < deadline, "the advance never became durable"
            await asyncio.sleep(0.02)
        while not upstream.signatures:
            assert time.monotonic() < deadline, "the request never reached the upstream"
            await asyncio.sleep(0.02)
        g.kill()
        pending.cancel()
        upstream.behaviour.delay = 0.0
        await g.astart()
        status, body = await sign(g.url, TZ1.pkh, att(700, payload=1))
        assert status == 409 and "already signed with different data" in msg(body)
        # identical bytes but no cached signature: refused, never re-sent to the device
        status, body = await sign(g.url, TZ1.pkh, att(700))
        assert status == 409 and "not above high watermark (700, 0)" in msg(body)
        assert len(upstream.signatures) == 1
        assert (await sign(g.url, TZ1.pkh, att(701)))[0] == 200
    finally:
        await g.astop()


async def test_upstream_failures(tmp_path: Path, upstream: FakeUpstreamSigner) -> None:
    async with guard_for(tmp_path, upstream) as g:
        store = g.config["store"]
        upstream.behaviour.hwm_error = True
        status, body = await sign(g.url, TZ1.pkh, att(800))
        assert status == 409 and msg(body).startswith("device high watermark refusal")
        upstream.behaviour.hwm_error = False
        upstream.behaviour.wrong_signature = True
        status, body = await sign(g.url, TZ1.pkh, att(801))
        assert status == 502 and "does not verify" in msg(body)
        upstream.behaviour.wrong_signature = False
        upstream.behaviour.respond = (
            500,
            json.dumps([{"kind": "temporary", "id": "failure", "msg": "device is on fire"}]),
        )
        status, body = await sign(g.url, TZ1.pkh, att(802))
        assert status == 502 and "device is on fire" in msg(body)
        upstream.behaviour.respond = None
        # upstream down: refused before the store step, so the level is not lost
        await upstream.refuse_connections()
        await asyncio.sleep(2.5)  # past the backend's "recently seen" window
        status, body = await sign(g.url, TZ1.pkh, att(900))
        assert status in (502, 503), body
        assert record_level(store, TZ1.pkh) == 802
        await upstream.accept_connections()
        status, body = await sign(g.url, TZ1.pkh, att(900))
        assert status == 200, body


async def test_upstream_timeout_is_unknown_outcome(
    tmp_path: Path, upstream: FakeUpstreamSigner
) -> None:
    async with guard_for(tmp_path, upstream) as g:
        upstream.behaviour.delay = 8.0
        status, body = await sign(g.url, TZ1.pkh, att(1000))
        assert status == 502 and "unknown outcome" in msg(body)
        upstream.behaviour.delay = 0.0
        status, body = await sign(g.url, TZ1.pkh, att(1000))
        assert status == 409
        assert "UNKNOWN OUTCOME" in g.log_text()


async def test_prove_possession_passes_through(
    tmp_path: Path, upstream: FakeUpstreamSigner
) -> None:
    async with guard_for(tmp_path, upstream) as g:
        status, body = await get_json(g.url + f"bls_prove_possession/{TZ4.pkh}")
        assert status == 200 and set(body) == {"bls_prove_possession"}
        _, raw = keys.parse_signature(body["bls_prove_possession"])
        assert TZ4.public_key.verify_possession(raw)
        status, raw_body = await request(
            "GET", g.url + "bls_prove_possession/tz4AQcKaQU1sUzsmPTX43qnK4ddkCeeknJnX"
        )
        assert status == 404 and raw_body == b""


async def test_standby_guard_refuses_everything(
    tmp_path: Path, upstream: FakeUpstreamSigner
) -> None:
    async with guard_for(tmp_path, upstream) as active:
        store = active.config["store"]
        standby = GuardProcess(
            tmp_path / "b",
            keys=[upstream.key_url(TZ1.pkh)],
            store=store,
            guard_id="guard-b",
            standby=True,
        )
        async with standby:
            status, body = await get_json(standby.url + "status")
            assert body["state"] == "standby" and body["epoch"] == 1
            assert (await request("GET", standby.url + "authorized_keys")) == (200, b"{}")
            assert (await get_json(standby.url + f"keys/{TZ1.pkh}"))[0] == 200
            status, body = await sign(standby.url, TZ1.pkh, att(1200))
            assert status == 503 and "standby" in msg(body)
            assert upstream.signatures == []
            assert (await sign(active.url, TZ1.pkh, att(1200)))[0] == 200


async def test_authentication(tmp_path: Path, upstream: FakeUpstreamSigner) -> None:
    vec = next(
        v
        for v in json.loads(Path("fixtures/vectors/keys.json").read_text())
        if v["name"] == "derived_authentication_ed25519"
    )
    data = bytes.fromhex(vec["message_hex"])[23:]
    async with guard_for(tmp_path, upstream, authorized_keys=[vec["public_key"]]) as g:
        status, body = await get_json(g.url + "authorized_keys")
        assert body == {"authorized_keys": [TZ1.pkh]}
        status, body = await sign(g.url, TZ1.pkh, data)
        assert status == 403 and msg(body) == "missing authentication signature field"
        other = keys.SecretKey.generate("ed25519")
        bad = keys.signature_b58("ed25519", other.sign(keys.authentication_payload(TZ1.pkh, data)))
        status, body = await sign(g.url, TZ1.pkh, data, authentication=bad)
        assert status == 403 and msg(body) == "invalid authentication signature"
        status, body = await sign(g.url, TZ1.pkh, data, authentication=vec["signature"])
        assert status == 200, body


def test_non_loopback_listen_needs_allow_remote(tmp_path: Path) -> None:
    r = run_cli("serve", "--listen", "0.0.0.0:0", "--store", str(tmp_path / "s.sqlite"))
    assert r.returncode == 2
    assert "allow_remote" in r.stderr and "Traceback" not in r.stderr
