"""The drop-in endpoint over real HTTP against a running `signer-guard serve`, real SQLite."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from signer_guard import keys
from signer_guard.forge import forge_block, forge_consensus, forge_generic
from tests.guard_proc import GuardProcess, run_cli
from tests.http_client import get_json, request, sign

MAINNET = "NetXdQprcVkpaWU"
GHOSTNET = "NetXnHfVqm9iesp"
TZ1_SECRET = "edsk4TjJWEszkHKono7XMnepVqwi37FrpbVt1KCsifJeAGimxheShG"
TZ1 = "tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv"
TZ4_SECRET = "BLsk2jjZe6wQH9TwtBzJwL7xLePfEgUxsV6BfwDP8dGfsosgnekSgC"
TZ4 = "tz4AQcKaQU1sUzsmPTX43qnK4ddkCeeknJnf"
COMPANION = keys.SecretKey.generate("bls12_381")
TZ2 = keys.SecretKey.generate("secp256k1")


def trace_msg(body: object) -> str:
    assert isinstance(body, list) and len(body) == 1
    entry = body[0]
    assert set(entry) == {"kind", "id", "msg"}
    assert entry["kind"] == "temporary" and entry["id"] == "failure"
    return str(entry["msg"])


def att(
    level: int, round_: int = 0, *, tag: int = 21, payload: int = 0, chain: str = MAINNET
) -> bytes:
    return forge_consensus(
        "attestation",
        tag,
        chain,
        level,
        round_,
        payload_hash=bytes([payload]) * 32,
        dal=2048 if tag == 23 else None,
    )


def pre(level: int, round_: int = 0, *, tag: int = 20, payload: int = 0) -> bytes:
    return forge_consensus(
        "preattestation", tag, MAINNET, level, round_, payload_hash=bytes([payload]) * 32
    )


def block(level: int, round_: int = 0, *, payload: int = 0) -> bytes:
    return forge_block(MAINNET, level, round_, payload_hash=bytes([payload]) * 32)


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardProcess]:
    work = tmp_path_factory.mktemp("guard")
    keys_ = [
        f"unencrypted:{TZ1_SECRET}",
        f"unencrypted:{TZ4_SECRET}",
        f"unencrypted:{COMPANION.b58}",
        f"unencrypted:{TZ2.b58}",
    ]
    with GuardProcess(
        work,
        keys=keys_,
        allow_generic=[17],
        key_policy={TZ1: {"kinds": ["block", "preattestation", "attestation"]}},
    ) as g:
        yield g


def verify(
    pkh_secret: str | keys.SecretKey, data: bytes, signature: str, version: int | None = None
) -> bool:
    sk = (
        pkh_secret
        if isinstance(pkh_secret, keys.SecretKey)
        else keys.SecretKey.from_b58(pkh_secret)
    )
    _, raw = keys.parse_signature(signature)
    return sk.public_key.verify(raw, data, version=version)


async def test_authorized_keys_is_exactly_empty_object(guard: GuardProcess) -> None:
    status, raw = await request("GET", guard.url + "authorized_keys")
    assert (status, raw) == (200, b"{}")


async def test_public_key_and_unknown_key(guard: GuardProcess) -> None:
    status, body = await get_json(guard.url + f"keys/{TZ1}")
    assert status == 200 and body == {
        "public_key": "edpkuhmrbunxumoiVdQuxBZUPMmwkPt7yLtY5Qnua3VJVTLWr3vXXa"
    }
    status, raw = await request("GET", guard.url + "keys/tz1Ke2h7sDdakHJQh8WX4Z372du1KChsksyU")
    assert (status, raw) == (404, b"")
    status, raw = await request("GET", guard.url + "keys/not-a-pkh")
    assert (status, raw) == (404, b"")
    status, raw = await request("GET", guard.url + "no/such/path")
    assert (status, raw) == (404, b"")


async def test_sign_cache_and_conflicts(guard: GuardProcess) -> None:
    data = att(100)
    status, body = await sign(guard.url, TZ1, data, version="2")
    assert status == 200 and set(body) == {"signature"}
    sig = body["signature"]
    assert sig.startswith("edsig") and verify(TZ1_SECRET, data, sig)
    # identical retry: the cached signature
    assert await sign(guard.url, TZ1, data) == (200, {"signature": sig})
    # different payload, same (level, round)
    status, body = await sign(guard.url, TZ1, att(100, payload=7))
    assert status == 409
    assert trace_msg(body) == "attestation level 100 and round 0 already signed with different data"
    # tag 23 at the same (level, round) shares the attestation record
    status, body = await sign(guard.url, TZ1, att(100, tag=23))
    assert status == 409
    # lower level, lower round
    status, body = await sign(guard.url, TZ1, att(99))
    assert status == 409 and trace_msg(body) == "attestation level 99 below high watermark 100"
    assert (await sign(guard.url, TZ1, att(101, 2)))[0] == 200
    status, body = await sign(guard.url, TZ1, att(101, 1))
    assert status == 409
    assert trace_msg(body) == "attestation level 101 and round 1 not above high watermark (101, 2)"


async def test_every_arrival_order_tz1(guard: GuardProcess) -> None:
    base = 1000
    for i, order in enumerate(itertools.permutations(("block", "pre", "att"))):
        level = base + i
        for what in order:
            data = {"block": block(level), "pre": pre(level), "att": att(level)}[what]
            status, body = await sign(guard.url, TZ1, data)
            assert status == 200, (order, what, body)
            assert verify(TZ1_SECRET, data, body["signature"])


async def test_every_arrival_order_tz4_consensus_and_companion(guard: GuardProcess) -> None:
    base = 2000
    for i, order in enumerate(itertools.permutations(("block", "pre", "att", "companion"))):
        level = base + i
        att41 = att(level, tag=41)
        for what in order:
            cases: dict[str, tuple[str, bytes, str | keys.SecretKey]] = {
                "block": (TZ4, block(level), TZ4_SECRET),
                "pre": (TZ4, pre(level, tag=40), TZ4_SECRET),
                "att": (TZ4, att41, TZ4_SECRET),
                "companion": (COMPANION.public_key.pkh, att41, COMPANION),
            }
            pkh, data, sk = cases[what]
            status, body = await sign(guard.url, pkh, data, version="3")
            assert status == 200, (order, what, body)
            assert body["signature"].startswith("BLsig")
            assert verify(sk, data, body["signature"], version=3)


async def test_tz2_signature_is_low_s_and_verifies(guard: GuardProcess) -> None:
    data = att(3000)
    status, body = await sign(guard.url, TZ2.public_key.pkh, data)
    assert status == 200 and body["signature"].startswith("spsig1")
    _, raw = keys.parse_signature(body["signature"])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    assert int.from_bytes(raw[32:], "big") <= n // 2
    assert verify(TZ2, data, body["signature"])


async def test_policy_refusals_are_403(guard: GuardProcess) -> None:
    cases = [
        (TZ4, att(4000, tag=21), "tz4 key signs only BLS-mode"),
        (TZ1, att(4000, tag=41), "tz4 keys only"),
        (TZ1, att(2**30), "absurd"),
        (TZ1, att(4001, 2**30), "absurd"),
        (TZ1, forge_generic(bytes(32), 108, b"\x00" * 10), "generic operation with tag 108"),
    ]
    for pkh, data, fragment in cases:
        status, body = await sign(guard.url, pkh, data)
        assert status == 403, (fragment, body)
        assert fragment in trace_msg(body)
    # key_policy limits TZ1 to the three baking kinds: even an allow_generic tag is refused
    status, body = await sign(guard.url, TZ1, forge_generic(bytes(32), 17, b"\0\0\0\0"))
    assert status == 403
    # the refused absurd level did not advance anything
    assert (await sign(guard.url, TZ1, att(4002)))[0] == 200


async def test_malformed_requests_are_400_and_change_nothing(guard: GuardProcess) -> None:
    vectors = json.loads(Path("fixtures/vectors/invalid_requests.json").read_text())
    before = run_cli("hwm", "show", "--json", "--store", guard.config["store"]).stdout
    for vec in vectors:
        status, raw = await request(
            "POST", guard.url + f"keys/{TZ1}", body=json.dumps(vec["hex"]) + "\n"
        )
        assert status == 400, vec["name"]
        assert trace_msg(json.loads(raw))
    for body in (b"not json", b"{}", b"123", b'"zz"', b'""', b"[1,2]"):
        status, raw = await request("POST", guard.url + f"keys/{TZ1}", body=body)
        assert status == 400 and trace_msg(json.loads(raw)), body
    status, raw = await request(
        "POST", guard.url + f"keys/{TZ1}", body=json.dumps(att(5000).hex()), params={"version": "9"}
    )
    assert status == 400
    status, raw = await request("POST", guard.url + f"keys/{TZ1}", body=json.dumps("00" * 40_000))
    assert status == 413
    after = run_cli("hwm", "show", "--json", "--store", guard.config["store"]).stdout
    assert before == after


async def test_status_healthz_metrics(guard: GuardProcess) -> None:
    status, body = await get_json(guard.url + "status")
    assert status == 200
    assert body["state"] == "active" and body["guard_id"] == "guard-a"
    assert body["epoch"] == 1 and body["fence_level"] == 0
    by_pkh = {k["pkh"]: k for k in body["keys"]}
    assert set(by_pkh) == {TZ1, TZ4, COMPANION.public_key.pkh, TZ2.public_key.pkh}
    assert "unencrypted:" not in json.dumps(body).replace("unencrypted:<", "")
    assert TZ1_SECRET not in json.dumps(body)
    assert await get_json(guard.url + "healthz") == (200, {"ok": True})
    status, raw = await request("GET", guard.url + "metrics")
    text = raw.decode()
    assert status == 200
    assert 'signer_guard_sign_total{kind="attestation",pkh="' + TZ1 + '",result="signed"}' in text
    assert 'signer_guard_state{state="active"} 1.0' in text
    assert "signer_guard_store_commit_seconds_bucket" in text
    assert TZ1_SECRET not in text


async def test_journal_records_decisions(guard: GuardProcess) -> None:
    data = att(6000)
    status, body = await sign(guard.url, TZ1, data)
    assert status == 200
    await sign(guard.url, TZ1, att(6000, payload=3))
    await asyncio.sleep(0.2)
    lines = [json.loads(x) for x in guard.journal.read_text().splitlines()]
    signed = [x for x in lines if x["level"] == 6000 and x["decision"] == "signed"]
    refused = [x for x in lines if x["level"] == 6000 and x["decision"] == "hwm_refused"]
    assert len(signed) == 1 and signed[0]["signature"] == body["signature"]
    assert signed[0]["pkh"] == TZ1 and signed[0]["chain"] == MAINNET
    assert len(refused) == 1 and "already signed" in refused[0]["message"]
    assert (guard.journal.stat().st_mode & 0o777) == 0o600


async def test_hwm_set_while_running_takes_effect(guard: GuardProcess) -> None:
    r = run_cli(
        "hwm",
        "set",
        "--store",
        guard.config["store"],
        "--chain",
        MAINNET,
        "--pkh",
        TZ1,
        "--kind",
        "block",
        "--level",
        "7000",
    )
    assert r.returncode == 0, r.stderr
    status, body = await sign(guard.url, TZ1, block(7000))
    assert status == 409 and "7000" in trace_msg(body)
    assert (await sign(guard.url, TZ1, block(7001)))[0] == 200
    # lowering needs --allow-lower --yes
    r = run_cli(
        "hwm",
        "set",
        "--store",
        guard.config["store"],
        "--chain",
        MAINNET,
        "--pkh",
        TZ1,
        "--kind",
        "block",
        "--level",
        "5",
        "--allow-lower",
    )
    assert r.returncode == 3
    status, body = await sign(guard.url, TZ1, block(6999))
    assert status == 409


async def test_chains_are_separate_records(guard: GuardProcess) -> None:
    assert (await sign(guard.url, TZ1, att(9000, chain=GHOSTNET)))[0] == 200
    assert (await sign(guard.url, TZ1, att(8999, chain=MAINNET)))[0] == 200
