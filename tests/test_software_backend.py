"""drivers.software: the in-process `unencrypted:SECRET` backend."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from drivers.base import BackendUnavailable, NotSupported
from drivers.software import SoftwareBackend, parse_unencrypted_uri
from signer_guard import keys

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "vectors" / "keys.json").read_text()
)
BY_CURVE = {v["curve"]: v for v in reversed(VECTORS)}  # first vector of each curve
BY_NAME = {v["name"]: v for v in VECTORS}
# octez_attestation_tag21_mainnet_l1331_r0 and its tz4 form (tag 41), signing-requests.md §13.1
TAG21 = bytes.fromhex(BY_NAME["derived_ed25519_octez_attestation_tag21"]["message_hex"])
TAG41 = bytes.fromhex(
    "137a06a7700e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a829000005330000"
    "00000000000000000000000000000000000000000000000000000000000000000000"
)


async def _started(v: dict[str, Any]) -> SoftwareBackend:
    backend = SoftwareBackend("unencrypted:" + v["secret_key"])
    await backend.start()
    return backend


@pytest.mark.parametrize("curve", keys.CURVES)
async def test_start_exposes_public_key_and_pkh(
    curve: keys.Curve, caplog: pytest.LogCaptureFixture
) -> None:
    v = BY_CURVE[curve]
    backend = SoftwareBackend("unencrypted:" + v["secret_key"])
    with pytest.raises(BackendUnavailable):
        _ = backend.pkh
    with caplog.at_level(logging.WARNING, logger="drivers.software"):
        await backend.start()
    try:
        assert backend.backend_type == "software"
        assert backend.public_key == v["public_key"]
        assert backend.pkh == v["pkh"]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert any("memory" in r.getMessage() for r in warnings)
        await backend.ensure_ready()
        assert await backend.device_hwm() is None
    finally:
        await backend.close()


@pytest.mark.parametrize("curve", keys.CURVES)
async def test_secret_never_shown(curve: keys.Curve, caplog: pytest.LogCaptureFixture) -> None:
    v = BY_CURVE[curve]
    secret = v["secret_key"]
    with caplog.at_level(logging.DEBUG):
        backend = await _started(v)
    assert backend.display_uri == f"unencrypted:<{v['pkh']}>"
    for text in (backend.display_uri, backend.uri, repr(backend), caplog.text):
        assert secret not in text
        assert secret[4:14] not in text


@pytest.mark.parametrize("v", [v for v in VECTORS if v["curve"] != "bls12_381"])
async def test_signs_vectors(v: dict[str, Any]) -> None:
    backend = await _started(v)
    msg = bytes.fromhex(v["message_hex"])
    signature = await backend.sign(msg)
    assert signature == v["signature"]  # ECDSA is RFC 6979 + low-S, so tz2/tz3 match too
    curve, raw = keys.parse_signature(signature)
    assert curve == v["curve"]
    assert keys.PublicKey.from_b58(backend.public_key).verify(raw, msg)


@pytest.mark.parametrize("curve", keys.CURVES)
async def test_signs_attestation_for_every_curve(curve: keys.Curve) -> None:
    backend = await _started(BY_CURVE[curve])
    data = TAG41 if curve == "bls12_381" else TAG21
    pk = keys.PublicKey.from_b58(backend.public_key)
    for version in (None, 1, 2, 3):
        got_curve, raw = keys.parse_signature(await backend.sign(data, version=version))
        assert got_curve == curve
        assert pk.verify(raw, data, version=version)


async def test_bls_versions_pick_the_scheme() -> None:
    backend = await _started(BY_CURVE["bls12_381"])
    pk = keys.PublicKey.from_b58(backend.public_key)
    pop = keys.parse_signature(await backend.sign(TAG41, version=2))[1]
    aug = keys.parse_signature(await backend.sign(TAG41, version=1))[1]
    assert pop != aug
    assert await backend.sign(TAG41) == await backend.sign(TAG41, version=3)
    assert pk.verify(aug, TAG41, version=1)
    assert not pk.verify(aug, TAG41, version=2)


async def test_bls_version_zero_not_supported() -> None:
    backend = await _started(BY_CURVE["bls12_381"])
    with pytest.raises(NotSupported, match="version 0") as err:
        await backend.sign(TAG41, version=0)
    assert err.value.status == 403


async def test_version_zero_is_fine_for_other_curves() -> None:
    backend = await _started(BY_CURVE["ed25519"])
    assert await backend.sign(TAG21, version=0) == await backend.sign(TAG21)


@pytest.mark.parametrize("curve", keys.CURVES)
async def test_unknown_version_not_supported(curve: keys.Curve) -> None:
    backend = await _started(BY_CURVE[curve])
    with pytest.raises(NotSupported, match="version 4"):
        await backend.sign(TAG21, version=4)


async def test_prove_possession() -> None:
    v = BY_CURVE["bls12_381"]
    backend = await _started(v)
    assert await backend.prove_possession() == v["signature"]
    assert await backend.prove_possession(v["public_key"]) == v["signature"]
    other = keys.SecretKey.generate("bls12_381").public_key.b58
    with pytest.raises(NotSupported, match="own key"):
        await backend.prove_possession(other)


@pytest.mark.parametrize("curve", ["ed25519", "secp256k1", "p256"])
async def test_prove_possession_not_supported_for_other_curves(curve: keys.Curve) -> None:
    backend = await _started(BY_CURVE[curve])
    with pytest.raises(NotSupported, match="BLS"):
        await backend.prove_possession()


@pytest.mark.parametrize("curve", keys.CURVES)
async def test_generated_keys_work(curve: keys.Curve) -> None:
    sk = keys.SecretKey.generate(curve)
    backend = SoftwareBackend("unencrypted:" + sk.b58)
    await backend.start()
    assert backend.pkh == sk.pkh
    _, raw = keys.parse_signature(await backend.sign(TAG21))
    assert sk.public_key.verify(raw, TAG21)


def test_parse_unencrypted_uri() -> None:
    v = BY_CURVE["secp256k1"]
    assert parse_unencrypted_uri("unencrypted:" + v["secret_key"]).pkh == v["pkh"]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("encrypted:" + BY_CURVE["ed25519"]["secret_key"], "unencrypted:SECRET"),
        ("unencrypted:", "empty secret key"),
        ("unencrypted:" + BY_CURVE["ed25519"]["secret_key"][:-1] + "X", "checksum"),
        ("unencrypted:" + BY_CURVE["ed25519"]["public_key"], "not a secret key"),
    ],
)
def test_bad_uris_fail_without_quoting_the_secret(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        SoftwareBackend(uri)
    secret_part = uri.split(":", 1)[1]
    if secret_part:
        assert secret_part[4:14] not in str(err.value)
