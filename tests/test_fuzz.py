"""Bounded fuzzing (about 30 s in all): the request decoder, the body parser and the whole HTTP
application. Only codec errors and 4xx answers may come out: never another exception, never 500.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from pathlib import Path

import hypothesis.strategies as st
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings

from signer_guard import codec
from signer_guard.cli.serve import build_guard
from signer_guard.config import Config
from signer_guard.forge import forge_block, forge_consensus, forge_generic
from signer_guard.guard import Guard, Refusal
from signer_guard.server import make_app, parse_body
from tests.hostile_http import parse_response

MAINNET = "NetXdQprcVkpaWU"
TZ1_SECRET = "edsk4TjJWEszkHKono7XMnepVqwi37FrpbVt1KCsifJeAGimxheShG"
TZ1 = "tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv"
TZ4_SECRET = "BLsk2jjZe6wQH9TwtBzJwL7xLePfEgUxsV6BfwDP8dGfsosgnekSgC"
TZ4 = "tz4AQcKaQU1sUzsmPTX43qnK4ddkCeeknJnf"

#: The pure targets are fast (about 0.3 ms a case); the HTTP ones about 3 ms.
FAST = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def seeds() -> list[bytes]:
    """Valid requests of every layout, for the mutation fuzzers."""
    out = [
        forge_block(MAINNET, 5, 1),
        forge_consensus("preattestation", 20, MAINNET, 5, 0),
        forge_consensus("attestation", 21, MAINNET, 5, 0),
        forge_consensus("attestation", 23, MAINNET, 5, 0, dal=2048),
        forge_consensus("preattestation", 40, MAINNET, 5, 0),
        forge_consensus("attestation", 41, MAINNET, 5, 0),
        forge_generic(bytes(32), 108, b"\x00" * 12),
    ]
    vectors = Path("fixtures/vectors/requests.json")
    if vectors.exists():
        out += [bytes.fromhex(v["hex"]) for v in json.loads(vectors.read_text()) if "hex" in v]
    return out


SEEDS = seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid request with a few bytes flipped, cut, inserted or appended."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "cut", "insert", "append", "truncate")))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "append":
            data += draw(st.binary(min_size=1, max_size=40))
        else:
            del data[pos:]
    return bytes(data)


def decode_or_codec_error(data: bytes) -> None:
    try:
        req = codec.decode(data)
    except codec.DecodeError:
        return
    assert req.magic == data[0]
    if req.level is not None:
        assert 0 <= req.level < 2**31
    if req.round is not None:
        assert 0 <= req.round < 2**31


@FAST
@given(st.binary(max_size=300))
def test_decoder_arbitrary_bytes(data: bytes) -> None:
    decode_or_codec_error(data)


@FAST
@given(mutated())
def test_decoder_mutated_requests(data: bytes) -> None:
    decode_or_codec_error(data)


json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
).map(json.dumps)
hexish = st.text(alphabet='0123456789abcdefABCDEFxX \n\t"\\gz', max_size=200)
bodies = st.one_of(
    st.binary(max_size=400),
    json_text.map(str.encode),
    hexish.map(lambda t: json.dumps(t).encode()),
    hexish.map(lambda t: f'"{t}"'.encode()),
    mutated().map(lambda d: (json.dumps(d.hex()) + "\n").encode()),
)


@FAST
@given(bodies)
def test_body_parser(raw: bytes) -> None:
    try:
        data = parse_body(raw)
    except Refusal as exc:
        assert exc.status == 400 and exc.message
        return
    assert isinstance(data, bytes) and data


# -- the whole application, in process ------------------------------------------------------
class App:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        guard: Guard,
        client: TestClient[web.Request, web.Application],
    ) -> None:
        self.loop = loop
        self.guard = guard
        self.client = client


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    work = tmp_path_factory.mktemp("fuzz")
    config = Config(
        keys=[f"unencrypted:{TZ1_SECRET}", f"unencrypted:{TZ4_SECRET}"],
        store=str(work / "store.sqlite"),
        journal=str(work / "journal.jsonl"),
        guard_id="fuzz",
        allow_generic=[17],
    )
    loop = asyncio.new_event_loop()
    guard = build_guard(config)

    async def start() -> TestClient[web.Request, web.Application]:
        await guard.start()
        client = TestClient(TestServer(make_app(guard), host="127.0.0.1", port=0))
        await client.start_server()
        return client

    client = loop.run_until_complete(start())
    try:
        yield App(loop, guard, client)
    finally:
        loop.run_until_complete(client.close())
        loop.run_until_complete(guard.close())
        loop.close()


ALLOWED = {200, 400, 403, 404, 408, 409, 413}
segment = st.one_of(
    st.sampled_from(
        ["keys", "status", "healthz", "metrics", "authorized_keys", TZ1, TZ4, "..", "."]
    ),
    st.text(min_size=0, max_size=12),
)
# (a leading "//" would be a network-path URL to the client; test_hostile_input covers it)
paths = st.lists(segment, max_size=4).map(lambda segs: "/" + "/".join(segs).lstrip("/"))
queries = st.dictionaries(
    st.sampled_from(["version", "authentication", "bls_pk", "x"]),
    st.text(max_size=30),
    max_size=3,
)


def check(status: int, body: bytes) -> None:
    assert status in ALLOWED, (status, body[:300])
    if status == 404:
        assert body == b""
    elif status != 200:
        trace = json.loads(body)
        assert isinstance(trace, list) and set(trace[0]) == {"kind", "id", "msg"}


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE"]), path=paths, query=queries)
def test_app_paths_and_queries(app: App, method: str, path: str, query: dict[str, str]) -> None:
    async def go() -> tuple[int, bytes]:
        async with app.client.request(method, path, params=query, data=b'"00"') as resp:
            return resp.status, await resp.read()

    status, body = app.loop.run_until_complete(go())
    if method != "HEAD":
        check(status, body)
    else:
        assert status in ALLOWED


@FUZZ
@given(pkh=st.sampled_from([TZ1, TZ4]), raw=bodies, version=st.sampled_from([None, "1", "3", "9"]))
def test_app_sign_bodies(app: App, pkh: str, raw: bytes, version: str | None) -> None:
    async def go() -> tuple[int, bytes]:
        params = {"version": version} if version else None
        async with app.client.post(f"/keys/{pkh}", data=raw, params=params) as resp:
            return resp.status, await resp.read()

    status, body = app.loop.run_until_complete(go())
    check(status, body)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(min_size=1, max_size=200), st.sampled_from([b"", b"GET ", b"POST /keys/"]))
def test_app_raw_bytes(app: App, junk: bytes, prefix: bytes) -> None:
    """Arbitrary bytes on the socket: any answer is a 4xx (or the connection is closed), and the
    server keeps answering."""

    async def go() -> bytes:
        server = app.client.server
        assert server.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(prefix + junk + b"\r\n\r\n")
            await writer.drain()
            try:
                return await asyncio.wait_for(reader.read(4096), 3)
            except (TimeoutError, ConnectionError):
                return b""
        finally:
            writer.close()

    raw = app.loop.run_until_complete(go())
    if raw.startswith(b"HTTP/"):
        status = parse_response(raw, True).status
        assert status != 500 and status in ALLOWED | {405, 414, 431, 505}, raw[:300]


def test_app_still_answers_after_fuzzing(app: App) -> None:
    rng = random.Random(7)

    async def go() -> int:
        for _ in range(50):
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
            async with app.client.post(f"/keys/{TZ1}", data=junk) as resp:
                assert resp.status in ALLOWED
        async with app.client.get("/healthz") as resp:
            return resp.status

    assert app.loop.run_until_complete(go()) == 200
    assert app.guard.state == "active"
