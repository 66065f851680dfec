"""Hostile input against a running `signer-guard serve` (real process, real SQLite store).

Every case checks the status, the body (the Octez error trace, or empty for 404), that nothing
changed (`hwm show --json` and the journal's signed lines) and that the guard still answers
`/healthz`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import pytest

from signer_guard import keys
from signer_guard.forge import forge_block, forge_consensus, forge_generic
from tests.guard_proc import GuardProcess
from tests.hostile_http import (
    RawResponse,
    assert_trace,
    http,
    open_fds,
    parse_response,
    port_of,
    send_raw,
    state,
)

MAINNET = "NetXdQprcVkpaWU"
TZ1_SECRET = "edsk4TjJWEszkHKono7XMnepVqwi37FrpbVt1KCsifJeAGimxheShG"
TZ1 = "tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv"
TZ4_SECRET = "BLsk2jjZe6wQH9TwtBzJwL7xLePfEgUxsV6BfwDP8dGfsosgnekSgC"
TZ4 = "tz4AQcKaQU1sUzsmPTX43qnK4ddkCeeknJnf"
UNKNOWN_TZ1 = "tz1Ke2h7sDdakHJQh8WX4Z372du1KChsksyU"
AUTH = keys.SecretKey.generate("ed25519")  # the one authorized client key of the auth guard
STRANGER = keys.SecretKey.generate("ed25519")  # a key the auth guard does not know
MAX_BODY = 16 * 1024
SIGNED_LEVEL = 100  # signed by the fixture, so retries and conflicts have a record to hit

Body = Literal["trace", "empty", "json", "parser"]


def att(level: int, round_: int = 0, *, tag: int = 21, payload: int = 0) -> bytes:
    return forge_consensus(
        "attestation",
        tag,
        MAINNET,
        level,
        round_,
        payload_hash=bytes([payload]) * 32,
        dal=2048 if tag == 23 else None,
    )


def hexbody(data: bytes) -> bytes:
    return (json.dumps(data.hex()) + "\n").encode()


def post(pkh: str, data: bytes, *, query: str = "", headers: dict[str, str] | None = None) -> bytes:
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    return http("POST", f"/keys/{pkh}{query}", body=hexbody(data), headers=hdrs)


def post_raw(body: bytes, headers: dict[str, str] | None = None, pkh: str = TZ1) -> bytes:
    return http("POST", f"/keys/{pkh}", body=body, headers=headers)


def auth_sig(signer: keys.SecretKey, pkh: str, data: bytes) -> str:
    raw = signer.sign(keys.authentication_payload(pkh, data))
    return keys.signature_b58(signer.curve, raw)


def chunked(body: bytes, size: int = 4096) -> bytes:
    out = b""
    for i in range(0, len(body), size):
        piece = body[i : i + size]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\n\r\n"


@dataclass(frozen=True)
class Case:
    name: str
    request: bytes
    status: int
    body: Body
    fragment: str = ""
    guard: Literal["main", "auth"] = "main"
    closes: bool = field(default=False)  # the server must close the connection itself


GOOD = att(SIGNED_LEVEL)
A201 = att(201)
BLOCK = forge_block(MAINNET, 300, 0)
LONG_PATH = "/keys/" + "a" * 7000
CASES: list[Case] = [
    # -- content types and encodings: the type is not looked at, the body must still be valid
    Case(
        "text_plain_not_json",
        post_raw(b"hello", {"Content-Type": "text/plain"}),
        400,
        "trace",
        "not a JSON string",
    ),
    Case(
        "form_urlencoded",
        post_raw(
            b"data=" + GOOD.hex().encode(), {"Content-Type": "application/x-www-form-urlencoded"}
        ),
        400,
        "trace",
        "not a JSON string",
    ),
    Case(
        "multipart",
        post_raw(
            b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n"00"\r\n--b--\r\n',
            {"Content-Type": "multipart/form-data; boundary=b"},
        ),
        400,
        "trace",
    ),
    Case(
        "json_object_body",
        post_raw(json.dumps({"data": GOOD.hex()}).encode()),
        400,
        "trace",
        "not a JSON string",
    ),
    Case("json_number_body", post_raw(b"1234"), 400, "trace"),
    Case("json_array_body", post_raw(json.dumps([GOOD.hex()]).encode()), 400, "trace"),
    Case("two_json_strings", post_raw(b'"00" "11"'), 400, "trace"),
    Case("invalid_utf8", post_raw(b'"\xff\xfe"'), 400, "trace"),
    Case("nested_json_bomb", post_raw(b"[" * 15000 + b"]" * 1000), 400, "trace"),
    Case(
        "gzip_is_not_decompressed",
        post_raw(b"\x1f\x8b\x08\x00" + b"\x00" * 20, {"Content-Encoding": "gzip"}),
        400,
        "trace",
    ),
    Case("empty_body", post_raw(b""), 400, "trace"),
    Case("empty_string", post_raw(b'""\n'), 400, "trace", "empty request"),
    Case("whitespace_string", post_raw(b'"   "'), 400, "trace", "empty request"),
    Case("escaped_nul", post_raw(b'"\\u0000\\u0000"'), 400, "trace", "not valid hex"),
    # -- sizes
    Case(
        "body_over_limit",
        post_raw(json.dumps("00" * (MAX_BODY // 2)).encode()),
        413,
        "trace",
        f"larger than {MAX_BODY} bytes",
        closes=True,
    ),
    Case(
        "chunked_body_over_limit",
        http(
            "POST",
            f"/keys/{TZ1}",
            body=chunked(json.dumps("00" * MAX_BODY).encode()),
            headers={"Transfer-Encoding": "chunked"},
            length=False,
        ),
        413,
        "trace",
        "larger than",
        closes=True,
    ),
    Case(
        "content_length_lies_huge",
        http("POST", f"/keys/{TZ1}", headers={"Content-Length": str(10**12)}),
        413,
        "trace",
        "larger than",
        closes=True,
    ),
    Case(
        "content_length_not_a_number",
        http("POST", f"/keys/{TZ1}", body=b'"00"', headers={"Content-Length": "abc"}, length=False),
        400,
        "parser",
    ),
    Case("header_too_large", http("GET", "/healthz", headers={"X-Big": "a" * 9000}), 400, "parser"),
    Case(
        "too_many_headers",
        http("GET", "/healthz", headers={f"X-H{i}": "1" for i in range(200)}),
        400,
        "parser",
    ),
    # -- hex and the decoder
    Case(
        "non_hex",
        post_raw(b'"zz' + GOOD.hex()[2:].encode() + b'"'),
        400,
        "trace",
        "not hexadecimal",
    ),
    Case(
        "odd_length", post_raw(b'"' + GOOD.hex()[:-1].encode() + b'"'), 400, "trace", "odd number"
    ),
    Case("truncated_attestation", post(TZ1, GOOD[:-1]), 400, "trace", "expected 80"),
    Case("overlong_attestation", post(TZ1, GOOD + b"\x00"), 400, "trace", "expected 80"),
    Case("truncated_block", post(TZ1, BLOCK[:-1]), 400, "trace", "cannot decode"),
    Case("overlong_block", post(TZ1, BLOCK + b"\x00"), 400, "trace", "trailing"),
    Case("unknown_tag_22", post(TZ1, GOOD[:37] + b"\x16" + GOOD[38:]), 400, "trace", "tag 22"),
    Case(
        "negative_level",
        post(TZ1, GOOD[:40] + b"\xff\xff\xff\xff" + GOOD[44:]),
        400,
        "trace",
        "negative",
    ),
    Case("auth_magic_0x04", post(TZ1, b"\x04" + GOOD[1:]), 400, "trace", "reserved"),
    Case("magic_not_allowed", post(TZ1, b"\x05" + GOOD[1:]), 403, "trace", "not allowed"),
    Case("legacy_magic_0x01", post(TZ1, b"\x01" + GOOD[1:]), 403, "trace", "not allowed"),
    Case(
        "generic_not_allowed",
        post(TZ1, forge_generic(bytes(32), 108, b"\0" * 8)),
        403,
        "trace",
        "generic",
    ),
    Case("level_absurd", post(TZ1, att(2**30)), 403, "trace", "absurd"),
    Case("round_absurd", post(TZ1, att(500, 2**30)), 403, "trace", "absurd"),
    # -- tags against key types
    Case("tz1_with_bls_tag_41", post(TZ1, att(500, tag=41)), 403, "trace", "tz4 keys only"),
    Case("tz4_with_tag_21", post(TZ4, att(500, tag=21)), 403, "trace", "BLS-mode"),
    Case("tz4_with_tag_23", post(TZ4, att(500, tag=23)), 403, "trace", "BLS-mode"),
    # -- watermarks: conflicts refused, identical retries answered from the cache
    Case(
        "conflicting_payload",
        post(TZ1, att(SIGNED_LEVEL, payload=9)),
        409,
        "trace",
        "different data",
    ),
    Case("below_watermark", post(TZ1, att(SIGNED_LEVEL - 1)), 409, "trace", "below high watermark"),
    Case("identical_retry_is_cached", post(TZ1, GOOD), 200, "json"),
    # -- pkhs
    Case("unknown_pkh", post(UNKNOWN_TZ1, GOOD), 404, "empty"),
    Case("malformed_pkh", post("tz1notapkh", GOOD), 404, "empty"),
    Case("contract_address", post("KT1PWx2mnDueood7fEmfbBDKx1D9BAnnXitn", GOOD), 404, "empty"),
    Case(
        "public_key_as_pkh",
        http("GET", "/keys/edpkuhmrbunxumoiVdQuxBZUPMmwkPt7yLtY5Qnua3VJVTLWr3vXXa"),
        404,
        "empty",
    ),
    Case("pkh_with_suffix", post(TZ1 + "x", GOOD), 404, "empty"),
    Case("pkh_percent_unicode", http("GET", f"/keys/{TZ1}%E2%82%AC"), 404, "empty"),
    Case("pkh_percent_nul", http("GET", f"/keys/{TZ1}%00"), 404, "empty"),
    # -- path tricks
    Case("dotdot_to_status", http("GET", "/keys/../status"), 404, "empty"),
    Case("encoded_dotdot", http("GET", "/keys/%2e%2e/status"), 404, "empty"),
    Case("encoded_dotdot_upper", http("GET", "/keys/%2E%2E/status"), 404, "empty"),
    Case("dot_segment", http("GET", "/./healthz"), 404, "empty"),
    Case(
        "dotdot_between_keys",
        http("POST", f"/keys/../keys/{TZ1}", body=hexbody(att(600))),
        404,
        "empty",
    ),
    Case("encoded_slash", http("GET", f"/keys%2F{TZ1}"), 404, "empty"),
    Case("extra_segment", http("GET", f"/keys/{TZ1}/extra"), 404, "empty"),
    Case("double_slashes_like_octez", http("GET", f"//keys//{TZ1}"), 200, "json"),
    Case("very_long_path", http("GET", LONG_PATH), 404, "empty"),
    Case("path_over_line_limit", http("GET", "/keys/" + "a" * 20000), 400, "parser"),
    Case(
        "raw_utf8_in_path", "GET /kéys HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(), 400, "parser"
    ),
    Case("unknown_method", http("PUT", f"/keys/{TZ1}", body=hexbody(att(601))), 404, "empty"),
    Case("known_path_wrong_method", http("POST", "/status", body=b"{}"), 404, "empty"),
    Case("not_http", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400, "parser"),
    # -- browser protections
    Case(
        "origin_header",
        post(TZ1, att(700), headers={"Origin": "http://evil.example"}),
        403,
        "trace",
        "Origin",
    ),
    Case(
        "dns_rebinding_host",
        http("POST", f"/keys/{TZ1}", body=hexbody(att(701)), host="evil.example:6732"),
        403,
        "trace",
        "DNS rebinding",
    ),
    Case("rebinding_on_status", http("GET", "/status", host="evil.example"), 403, "trace", "Host"),
    # -- query parameters
    Case("version_9", post(TZ1, att(800), query="?version=9"), 400, "trace", "unsupported version"),
    Case(
        "version_huge", post(TZ1, att(800), query="?version=" + "9" * 400), 400, "trace", "version"
    ),
    Case("version_negative", post(TZ1, att(800), query="?version=-1"), 400, "trace", "version"),
    Case("version_empty", post(TZ1, att(800), query="?version="), 400, "trace", "version"),
    Case(
        "version_duplicated",
        post(TZ1, att(800), query="?version=2&version=9"),
        400,
        "trace",
        "more than once",
    ),
    Case(
        "version_duplicated_same",
        post(TZ1, att(800), query="?version=2&version=2"),
        400,
        "trace",
        "more than once",
    ),
    # -- authentication (the auth guard lists AUTH's key in authorized_keys)
    Case("auth_missing", post(TZ1, A201), 403, "trace", "missing authentication", guard="auth"),
    Case(
        "auth_garbage",
        post(TZ1, A201, query="?authentication=edsigXXXX"),
        403,
        "trace",
        "invalid authentication",
        guard="auth",
    ),
    Case(
        "auth_for_other_bytes",
        post(TZ1, A201, query="?authentication=" + auth_sig(AUTH, TZ1, att(202))),
        403,
        "trace",
        "invalid authentication",
        guard="auth",
    ),
    Case(
        "auth_for_other_pkh",
        post(TZ1, A201, query="?authentication=" + auth_sig(AUTH, TZ4, A201)),
        403,
        "trace",
        "invalid authentication",
        guard="auth",
    ),
    Case(
        "auth_by_unlisted_key",
        post(TZ1, A201, query="?authentication=" + auth_sig(STRANGER, TZ1, A201)),
        403,
        "trace",
        "invalid authentication",
        guard="auth",
    ),
    Case(
        "auth_of_the_bare_request",  # a signature over the data alone, without 0x04 0x01 pkh
        post(
            TZ1,
            A201,
            query="?authentication=" + keys.signature_b58("ed25519", AUTH.sign(A201)),
        ),
        403,
        "trace",
        "invalid authentication",
        guard="auth",
    ),
    Case(
        "auth_duplicated",
        post(
            TZ1,
            A201,
            query=f"?authentication={auth_sig(AUTH, TZ1, A201)}&authentication=edsigXXXX",
        ),
        400,
        "trace",
        "more than once",
        guard="auth",
    ),
]


@dataclass
class Guards:
    main: GuardProcess
    auth: GuardProcess
    signature: str = ""  # of GOOD, signed by the main guard before the cases run

    def of(self, which: str) -> GuardProcess:
        return self.main if which == "main" else self.auth


@pytest.fixture(scope="module")
def guards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guards]:
    work = tmp_path_factory.mktemp("hostile")
    main = GuardProcess(
        work / "main",
        keys=[f"unencrypted:{TZ1_SECRET}", f"unencrypted:{TZ4_SECRET}"],
        max_body_bytes=MAX_BODY,
        log_level="INFO",
    )
    auth = GuardProcess(
        work / "auth",
        keys=[f"unencrypted:{TZ1_SECRET}"],
        authorized_keys=[AUTH.public_key.b58],
        name="auth",
        log_level="INFO",
    )
    try:
        main.start()
        auth.start()
        resp = asyncio.run(send_raw(port_of(main.url), post(TZ1, GOOD)))
        assert resp.status == 200, resp
        body = resp.json()
        assert isinstance(body, dict)
        yield Guards(main, auth, str(body["signature"]))
    finally:
        main.stop()
        auth.stop()
    for g in (main, auth):
        assert "Traceback" not in g.log_text(), g.log_text()[-3000:]


async def healthy(guard: GuardProcess) -> None:
    resp = await send_raw(port_of(guard.url), http("GET", "/healthz"))
    assert (resp.status, resp.json()) == (200, {"ok": True})


def check_response(case: Case, resp: RawResponse, signature: str) -> None:
    assert resp.status == case.status, (case.name, resp)
    if case.body == "trace":
        assert_trace(resp, case.fragment)
    elif case.body == "empty":
        assert resp.body == b"", resp
    elif case.body == "json":
        body = resp.json()
        assert isinstance(body, dict) and len(body) == 1, body
        if "signature" in body:
            assert body["signature"] == signature
    else:  # rejected by the HTTP parser before any handler: short text, no traceback
        assert b"Traceback" not in resp.body and len(resp.body) < 1000, resp
    assert resp.closed


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_hostile_request(guards: Guards, case: Case) -> None:
    guard = guards.of(case.guard)
    before = await state(guard.config["store"], guard.journal)
    resp = await send_raw(port_of(guard.url), case.request)
    check_response(case, resp, guards.signature)
    await healthy(guard)
    await asyncio.sleep(0.05)  # let the journal thread write whatever it was given
    assert await state(guard.config["store"], guard.journal) == before


async def test_valid_authentication_is_accepted(guards: Guards) -> None:
    """The control for the authentication cases: the same request, correctly authenticated."""
    data = att(900)
    query = "?authentication=" + auth_sig(AUTH, TZ1, data)
    resp = await send_raw(port_of(guards.auth.url), post(TZ1, data, query=query))
    assert resp.status == 200, resp


async def slow_send(
    port: int, pieces: list[bytes], delay: float
) -> tuple[float, RawResponse | None]:
    """Send `pieces` with `delay` between them until the server closes; (elapsed, response)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        for piece in pieces:
            writer.write(piece)
            try:
                await writer.drain()
                data = await asyncio.wait_for(reader.read(65536), delay)
            except TimeoutError:
                continue
            except ConnectionError:
                return time.monotonic() - started, None
            rest = data + await asyncio.wait_for(reader.read(), 5) if data else b""
            return time.monotonic() - started, parse_response(rest, True) if rest else None
        raise AssertionError("the server never cut the slow client off")
    finally:
        writer.close()


async def test_slow_clients_are_cut_off(guards: Guards) -> None:
    """Headers dripped one byte a second: closed by the header timeout (5 s). A body dripped
    after complete headers: 408 from the body deadline (5 s). Others are served meanwhile."""
    guard = guards.main
    port = port_of(guard.url)
    before = await state(guard.config["store"], guard.journal)
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    slow_head = [bytes([b]) for b in head + b"a" * 60]
    body = hexbody(att(1000))
    post_head = http("POST", f"/keys/{TZ1}", body=body)[: -len(body)]
    slow_body = [post_head] + [bytes([b]) for b in body]

    async def others() -> None:
        for _ in range(10):
            await healthy(guard)
            await asyncio.sleep(0.3)

    (t_head, r_head), (t_body, r_body), _ = await asyncio.gather(
        slow_send(port, slow_head, 0.5), slow_send(port, slow_body, 0.5), others()
    )
    assert 4.0 <= t_head <= 9.0 and r_head is None, (t_head, r_head)
    assert 4.0 <= t_body <= 9.0 and r_body is not None, (t_body, r_body)
    assert r_body.status == 408
    assert_trace(r_body, "not received within 5 s")
    await healthy(guard)
    assert await state(guard.config["store"], guard.journal) == before


async def test_thousand_concurrent_connections(guards: Guards) -> None:
    """1,000 connections at once: cached retries, conflicts, malformed bodies and health checks.
    Every one gets its answer; nothing changes; no descriptor is left open afterwards."""
    guard = guards.main
    assert guard.proc is not None
    port = port_of(guard.url)
    before = await state(guard.config["store"], guard.journal)
    fds_before = open_fds(guard.proc.pid)
    kinds: list[tuple[bytes, int]] = [
        (post(TZ1, GOOD), 200),
        (post(TZ1, att(SIGNED_LEVEL, payload=5)), 409),
        (post_raw(b'"zz"'), 400),
        (http("GET", "/healthz"), 200),
    ]
    jobs = [kinds[i % len(kinds)] for i in range(1000)]
    results = await asyncio.gather(
        *(send_raw(port, req, timeout=60) for req, _ in jobs), return_exceptions=True
    )
    failures = [
        (want, got)
        for (_, want), got in zip(jobs, results, strict=True)
        if isinstance(got, BaseException) or got.status != want
    ]
    assert not failures, failures[:5]
    await healthy(guard)
    assert await state(guard.config["store"], guard.journal) == before
    deadline = time.monotonic() + 5
    while open_fds(guard.proc.pid) > fds_before + 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert open_fds(guard.proc.pid) <= fds_before + 2
