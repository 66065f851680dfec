"""The upstream backend against the fake octez-signer (tests/fakes/upstream_signer.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from drivers.base import (
    BackendError,
    BackendUnavailable,
    DeviceHWMRefusal,
    NotSupported,
    UnknownOutcome,
)
from drivers.upstream import UpstreamBackend, UpstreamURIError
from signer_guard import b58, keys
from signer_guard.forge import MAINNET, forge_consensus
from tests.fakes.upstream_signer import FakeUpstreamSigner, trace

REPO = Path(__file__).resolve().parent.parent

MakeBackend = Callable[..., Awaitable[UpstreamBackend]]


def attestation(sk: keys.SecretKey, level: int, round_: int = 0, payload: int = 0) -> bytes:
    tag = 41 if sk.curve == "bls12_381" else 21
    return forge_consensus(
        "attestation", tag, MAINNET, level, round_, payload_hash=bytes([payload]) * 32
    )


@pytest.fixture(scope="module")
def secrets() -> dict[keys.Curve, keys.SecretKey]:
    return {curve: keys.SecretKey.generate(curve) for curve in keys.CURVES}


@pytest.fixture
async def fake(secrets: dict[keys.Curve, keys.SecretKey]) -> AsyncIterator[FakeUpstreamSigner]:
    async with FakeUpstreamSigner(list(secrets.values())) as server:
        yield server


@pytest.fixture
async def make_backend() -> AsyncIterator[MakeBackend]:
    made: list[UpstreamBackend] = []

    async def make(
        uri: str,
        *,
        start: bool = True,
        auth_key: keys.SecretKey | None = None,
        sign_timeout: float = 5.0,
        fresh_window: float = 2.0,
    ) -> UpstreamBackend:
        backend = UpstreamBackend(
            uri, auth_key=auth_key, sign_timeout=sign_timeout, fresh_window=fresh_window
        )
        made.append(backend)
        if start:
            await backend.start()
        return backend

    yield make
    for backend in made:
        await backend.close()


def posts(fake: FakeUpstreamSigner) -> list[dict[str, str]]:
    return [r.query for r in fake.requests if r.method == "POST"]


# -- signing --------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", keys.CURVES)
async def test_sign_for_each_key_type_verifies(
    curve: keys.Curve,
    secrets: dict[keys.Curve, keys.SecretKey],
    fake: FakeUpstreamSigner,
    make_backend: MakeBackend,
) -> None:
    sk = secrets[curve]
    backend = await make_backend(fake.key_url(sk.pkh))
    assert backend.public_key == sk.public_key.b58
    assert backend.pkh == sk.pkh
    await backend.ensure_ready()
    data = attestation(sk, 100)
    signature = await backend.sign(data)
    sig_curve, raw = keys.parse_signature(signature)
    assert sig_curve == curve
    assert sk.public_key.verify(raw, data)
    # The upstream received exactly the bytes, as a JSON hex string.
    (body,) = [r.body for r in fake.requests if r.method == "POST"]
    assert json.loads(body) == data.hex()


async def test_base_path_is_kept(secrets: dict[keys.Curve, keys.SecretKey]) -> None:
    sk = secrets["ed25519"]
    async with FakeUpstreamSigner([sk], base="/signer/v1") as fake:
        backend = UpstreamBackend(fake.key_url(sk.pkh))
        try:
            await backend.start()
            data = attestation(sk, 5)
            _, raw = keys.parse_signature(await backend.sign(data))
            assert sk.public_key.verify(raw, data)
        finally:
            await backend.close()
    assert {r.path for r in fake.requests} == {
        f"/signer/v1/keys/{sk.pkh}",
        "/signer/v1/authorized_keys",
    }


async def test_version_is_passed_through_unchanged(
    secrets: dict[keys.Curve, keys.SecretKey], fake: FakeUpstreamSigner, make_backend: MakeBackend
) -> None:
    sk = secrets["bls12_381"]
    backend = await make_backend(fake.key_url(sk.pkh))
    data = attestation(sk, 7)
    _, augmented = keys.parse_signature(await backend.sign(data, version=1))
    _, pop = keys.parse_signature(await backend.sign(data, version=3))
    await backend.sign(data)
    assert [q.get("version") for q in posts(fake)] == ["1", "3", None]
    # Version 1 is the augmented BLS scheme, 3 proof of possession: the upstream used each.
    assert sk.public_key.verify(augmented, data, version=1)
    assert not sk.public_key.verify(augmented, data, version=3)
    assert sk.public_key.verify(pop, data, version=3)


async def test_generic_signature_is_given_the_curve_prefix(
    secrets: dict[keys.Curve, keys.SecretKey], fake: FakeUpstreamSigner, make_backend: MakeBackend
) -> None:
    sk = secrets["ed25519"]
    backend = await make_backend(fake.key_url(sk.pkh))
    data = attestation(sk, 8)
    raw = sk.sign(data)
    fake.behaviour.respond = (200, json.dumps({"signature": b58.encode("sig", raw)}))
    assert await backend.sign(data) == keys.signature_b58("ed25519", raw)


# -- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize("auth_curve", ["ed25519", "bls12_381"])
async def test_authenticates_to_an_upstream_that_requires_it(
    auth_curve: keys.Curve,
    secrets: dict[keys.Curve, keys.SecretKey],
    make_backend: MakeBackend,
) -> None:
    sk = secrets["p256"]
    auth = keys.SecretKey.generate(auth_curve)
    async with FakeUpstreamSigner([sk], require_auth=[auth.public_key]) as fake:
        backend = await make_backend(fake.key_url(sk.pkh), auth_key=auth)
        assert backend.auth_required
        await backend.ensure_ready()
        data = attestation(sk, 9)
        _, raw = keys.parse_signature(await backend.sign(data))
        assert sk.public_key.verify(raw, data)
        (query,) = posts(fake)
        _, auth_raw = keys.parse_signature(query["authentication"])
        assert auth.public_key.verify(auth_raw, keys.authentication_payload(sk.pkh, data))


async def test_upstream_requiring_authentication_without_a_key(
    secrets: dict[keys.Curve, keys.SecretKey], make_backend: MakeBackend
) -> None:
    sk = secrets["ed25519"]
    auth = keys.SecretKey.generate("ed25519")
    async with FakeUpstreamSigner([sk], require_auth=[auth.public_key]) as fake:
        backend = await make_backend(fake.key_url(sk.pkh))
        with pytest.raises(BackendError, match="upstream requires authentication") as ready:
            await backend.ensure_ready()
        assert ready.value.status == 502
        with pytest.raises(BackendError, match="upstream requires authentication"):
            await backend.sign(attestation(sk, 10))
        assert posts(fake) == []  # nothing was sent


async def test_authentication_key_not_listed_by_the_upstream(
    secrets: dict[keys.Curve, keys.SecretKey], make_backend: MakeBackend
) -> None:
    sk = secrets["ed25519"]
    listed = keys.SecretKey.generate("ed25519")
    ours = keys.SecretKey.generate("ed25519")
    async with FakeUpstreamSigner([sk], require_auth=[listed.public_key]) as fake:
        backend = await make_backend(fake.key_url(sk.pkh), auth_key=ours)
        with pytest.raises(BackendError, match=f"not from upstream_auth_key {ours.pkh}"):
            await backend.ensure_ready()
        with pytest.raises(BackendError, match=f"not from upstream_auth_key {ours.pkh}"):
            await backend.sign(attestation(sk, 10))
        assert posts(fake) == []


# -- refusals and errors --------------------------------------------------------------------


async def test_octez_hwm_refusal_maps_to_409(
    secrets: dict[keys.Curve, keys.SecretKey], make_backend: MakeBackend
) -> None:
    sk = secrets["secp256k1"]
    async with FakeUpstreamSigner([sk], hwm=True) as fake:
        backend = await make_backend(fake.key_url(sk.pkh))
        first = await backend.sign(attestation(sk, 20, payload=1))
        # octez-signer answers an identical retry from its own record.
        assert await backend.sign(attestation(sk, 20, payload=1)) == first
        with pytest.raises(DeviceHWMRefusal, match="already signed with different data") as e1:
            await backend.sign(attestation(sk, 20, payload=2))
        assert e1.value.status == 409
        with pytest.raises(DeviceHWMRefusal, match="below high watermark") as e2:
            await backend.sign(attestation(sk, 19))
        assert e2.value.status == 409
        assert len(fake.signatures) == 1


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (409, '{"error":"stale level/round"}', "stale level/round"),
        (409, json.dumps(trace("watermark validation failed")), "watermark validation failed"),
        (500, json.dumps(trace("attestation level 5 below high watermark 6")), "below high"),
    ],
)
async def test_upstream_hwm_refusal_forms(
    status: int,
    body: str,
    expected: str,
    secrets: dict[keys.Curve, keys.SecretKey],
    fake: FakeUpstreamSigner,
    make_backend: MakeBackend,
) -> None:
    sk = secrets["bls12_381"]
    backend = await make_backend(fake.key_url(sk.pkh))
    fake.behaviour.respond = (status, body)
    with pytest.raises(DeviceHWMRefusal, match=expected) as refusal:
        await backend.sign(attestation(sk, 30))
    assert refusal.value.status == 409


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, json.dumps(trace("Ledger device disconnected")), "Ledger device disconnected"),
        (403, '{"error":"key is locked"}', "key is locked"),
        (503, "overloaded, try later", "overloaded, try later"),
        (400, "", "empty body"),
        (404, "", "does not know key"),
    ],
)
async def test_other_upstream_errors_map_to_502_with_the_message(
    status: int,
    body: str,
    expected: str,
    secrets: dict[keys.Curve, keys.SecretKey],
    fake: FakeUpstreamSigner,
    make_backend: MakeBackend,
) -> None:
    sk = secrets["ed25519"]
    backend = await make_backend(fake.key_url(sk.pkh))
    fake.behaviour.respond = (status, body)
    with pytest.raises(BackendError, match=expected) as error:
        await backend.sign(attestation(sk, 40))
    assert not isinstance(error.value, (DeviceHWMRefusal, UnknownOutcome, BackendUnavailable))
    assert error.value.status == 502


async def test_long_upstream_message_is_truncated(
    secrets: dict[keys.Curve, keys.SecretKey], fake: FakeUpstreamSigner, make_backend: MakeBackend
) -> None:
    sk = secrets["ed25519"]
    backend = await make_backend(fake.key_url(sk.pkh))
    fake.behaviour.respond = (500, json.dumps(trace("boom " * 2000)))
    with pytest.raises(BackendError, match="boom") as error:
        await backend.sign(attestation(sk, 41))
    assert len(str(error.value)) < 400


async def test_unusable_200_bodies(
    secrets: dict[keys.Curve, keys.SecretKey], fake: FakeUpstreamSigner, make_backend: MakeBackend
) -> None:
    sk = secrets["ed25519"]
    backend = await make_backend(fake.key_url(sk.pkh))
    fake.behaviour.respond = (200, "<html>proxy page</html>")
    with pytest.raises(UnknownOutcome, match="may have signed"):
        await backend.sign(attestation(sk, 42))
    other = keys.signature_b58("p256", secrets["p256"].sign(b"\x13x"))
    fake.behaviour.respond = (200, json.dumps({"signature": other}))
    with pytest.raises(BackendError, match="p256 signature for ed25519 key"):
        await backend.sign(attestation(sk, 43))


async def test_timeout_after_sending_is_an_unknown_outcome(
    secrets: dict[keys.Curve, keys.SecretKey], fake: FakeUpstreamSigner, make_backend: MakeBackend
) -> None:
    sk = secrets["ed25519"]
    backend = await make_backend(fake.key_url(sk.pkh), sign_timeout=0.3)
    fake.behaviour.delay = 1.0
    with pytest.raises(UnknownOutcome, match="did not answer in time; it may have signed"):
        await backend.sign(attestation(sk, 50))
    # And it had signed: the upstream's own log holds the signature.
    assert [s["data"] for s in fake.signatures] == [attestation(sk, 50).hex()]


async def test_connection_refused_is_unavailable(
    secrets: dict[keys.Curve, keys.SecretKey], fake: FakeUpstreamSigner, make_backend: MakeBackend
) -> None:
    sk = secrets["ed25519"]
    backend = await make_backend(fake.key_url(sk.pkh), fresh_window=0.0)
    await backend.sign(attestation(sk, 60))
    await fake.refuse_connections()
    with pytest.raises(BackendUnavailable, match="unreachable"):
        await backend.ensure_ready()
    with pytest.raises(BackendUnavailable, match="unreachable") as error:
        await backend.sign(attestation(sk, 61))
    assert not isinstance(error.value, UnknownOutcome)
    await fake.accept_connections()
    await backend.ensure_ready()
    await backend.sign(attestation(sk, 62))


async def test_start_against_a_closed_port_is_unavailable(
    secrets: dict[keys.Curve, keys.SecretKey], fake: FakeUpstreamSigner, make_backend: MakeBackend
) -> None:
    sk = secrets["ed25519"]
    url = fake.key_url(sk.pkh)
    await fake.stop()
    backend = await make_backend(url, start=False)
    with pytest.raises(BackendUnavailable, match="unreachable"):
        await backend.start()
    with pytest.raises(BackendUnavailable, match="not started"):
        await backend.ensure_ready()


async def test_ensure_ready_trusts_a_recent_answer(
    secrets: dict[keys.Curve, keys.SecretKey], fake: FakeUpstreamSigner, make_backend: MakeBackend
) -> None:
    sk = secrets["ed25519"]
    backend = await make_backend(fake.key_url(sk.pkh), fresh_window=30.0)
    await fake.refuse_connections()
    await backend.ensure_ready()  # the answers of start() are recent enough
    stale = await make_backend(fake.key_url(sk.pkh), start=False, fresh_window=30.0)
    with pytest.raises(BackendUnavailable):
        await stale.ensure_ready()


# -- start ----------------------------------------------------------------------------------


async def test_wrong_public_key_at_start_is_an_error(
    secrets: dict[keys.Curve, keys.SecretKey], fake: FakeUpstreamSigner, make_backend: MakeBackend
) -> None:
    sk = secrets["ed25519"]
    fake.behaviour.public_key = secrets["secp256k1"].public_key.b58
    backend = await make_backend(fake.key_url(sk.pkh), start=False)
    with pytest.raises(BackendError, match=f"whose hash is {secrets['secp256k1'].pkh}, not"):
        await backend.start()
    with pytest.raises(BackendUnavailable):
        _ = backend.pkh


async def test_unknown_key_at_start_is_an_error(
    fake: FakeUpstreamSigner, make_backend: MakeBackend
) -> None:
    other = keys.SecretKey.generate("ed25519")
    backend = await make_backend(fake.key_url(other.pkh), start=False)
    with pytest.raises(BackendError, match="does not know key"):
        await backend.start()


@pytest.mark.parametrize(
    "uri",
    [
        "ftp://127.0.0.1:1/tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv",
        "http://127.0.0.1:6732/",
        "http://127.0.0.1:6732/keys",
        "http:///tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv",
        "http://127.0.0.1:99999/tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv",
        "http://127.0.0.1:6732/tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv?x=1",
        "http://127.0.0.1:6732/KT1PWx2mnDueood7fEmfbBDKx1D9BAnnXitn",
    ],
)
def test_bad_uris_are_refused(uri: str) -> None:
    with pytest.raises(UpstreamURIError):
        UpstreamBackend(uri)


def test_uri_parts_and_display() -> None:
    backend = UpstreamBackend(
        "https://u:secret@signer.example:443/a/b/tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv"
    )
    assert backend.base == "https://u:secret@signer.example:443/a/b"
    assert backend.uri_pkh == "tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv"
    assert "secret" not in backend.display_uri
    assert backend.display_uri.endswith(
        "signer.example:443/a/b/tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv"
    )
    plain = "http://127.0.0.1:20090/tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv"
    assert UpstreamBackend(plain).display_uri == plain
    assert UpstreamBackend(plain).backend_type == "upstream"


# -- proof of possession --------------------------------------------------------------------


async def test_proof_of_possession_is_passed_through(
    secrets: dict[keys.Curve, keys.SecretKey], fake: FakeUpstreamSigner, make_backend: MakeBackend
) -> None:
    sk = secrets["bls12_381"]
    backend = await make_backend(fake.key_url(sk.pkh))
    for bls_pk in (None, sk.public_key.b58):
        pop = await backend.prove_possession(bls_pk)
        curve, raw = keys.parse_signature(pop)
        assert curve == "bls12_381"
        assert sk.public_key.verify_possession(raw)
    queries = [r.query for r in fake.requests if "bls_prove_possession" in r.path]
    assert queries == [{}, {"bls_pk": sk.public_key.b58}]
    other = keys.SecretKey.generate("bls12_381").public_key.b58
    with pytest.raises(BackendError, match="is not the key of"):
        await backend.prove_possession(other)


async def test_proof_of_possession_for_a_non_bls_key_is_not_supported(
    secrets: dict[keys.Curve, keys.SecretKey], fake: FakeUpstreamSigner, make_backend: MakeBackend
) -> None:
    sk = secrets["ed25519"]
    backend = await make_backend(fake.key_url(sk.pkh))
    with pytest.raises(NotSupported) as error:
        await backend.prove_possession()
    assert error.value.status == 403


# -- the fake as a subprocess ---------------------------------------------------------------


async def test_fake_as_a_subprocess_logs_every_signature(
    secrets: dict[keys.Curve, keys.SecretKey], tmp_path: Path, make_backend: MakeBackend
) -> None:
    sk = secrets["ed25519"]
    log = tmp_path / "signed.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.upstream_signer",
            "--port",
            "0",
            "--key",
            sk.b58,
            "--log",
            str(log),
            "--hwm",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20))
        backend = await make_backend(f"http://127.0.0.1:{port}/{sk.pkh}")
        signature = await backend.sign(attestation(sk, 70))
        with pytest.raises(DeviceHWMRefusal):
            await backend.sign(attestation(sk, 69))
        (line,) = [json.loads(x) for x in log.read_text().splitlines()]
        assert line["pkh"] == sk.pkh
        assert line["data"] == attestation(sk, 70).hex()
        assert line["signature"] == signature
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
