"""signer_guard.keys against the key vectors (fixtures/vectors/keys.json, a copy of
shared/vectors/keys.json; signing-requests.md §11–§13)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from signer_guard import b58, keys

VECTORS_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "vectors" / "keys.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text())
BY_NAME = {v["name"]: v for v in VECTORS}
SIGNING = [v for v in VECTORS if v["curve"] != "bls12_381"]
DETERMINISTIC = [v for v in SIGNING if v["deterministic"]]
ECDSA = [v for v in SIGNING if v["curve"] in ("secp256k1", "p256")]
BLS = BY_NAME["taquito_tz4_bls_pop"]

ORDER = {
    "secp256k1": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}
# octez_bls_attestation_tag41_mainnet_l1331_r0 (signing-requests.md §13.1)
TAG41 = bytes.fromhex(
    "137a06a7700e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a829000005330000"
    "00000000000000000000000000000000000000000000000000000000000000000000"
)
# The tz4 vector key signing TAG41; the same bytes come out of blspy 2.0.3 (PopSchemeMPL /
# AugSchemeMPL) and py_ecc 8.0.0 (G2ProofOfPossession / G2MessageAugmentation).
TAG41_POP_SIG = bytes.fromhex(
    "8721912874cfe0af796eeb84d490b4650036ac6182ef02199909ad9d2a304486ea05a260cadbd13756962c0cb3fc"
    "7a65013726b58c42edcac7d5c08fff8884b14e609cdf5143f09b08c144551bde9a5b9fc89be406cea6b3ed61e57c"
    "ba823dcc"
)
TAG41_AUG_SIG = bytes.fromhex(
    "964cf5f0f0fe9a5483942b2d5730e5fd946507d65827e373f3898d1fa1192db4809d8d18797f9562599bf1764eb7"
    "62370d7daddb4f02166c73c30e872510a7a1c4bae46668dc3578963a263150d352295fe9a4d751054f2098eac48b"
    "92a70b10"
)


def _ids(vs: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vs]


def _secret(v: dict[str, Any]) -> keys.SecretKey:
    return keys.SecretKey.from_b58(v["secret_key"])


# ------------------------------------------------------------------------- derivation ------


@pytest.mark.parametrize("v", VECTORS, ids=_ids(VECTORS))
def test_secret_key_derives_public_key_and_pkh(v: dict[str, Any]) -> None:
    sk = _secret(v)
    assert sk.curve == v["curve"]
    assert sk.public_key.b58 == v["public_key"]
    assert sk.pkh == v["pkh"]
    assert sk.b58 == v["secret_key"]


@pytest.mark.parametrize("v", VECTORS, ids=_ids(VECTORS))
def test_public_key_parses_and_hashes(v: dict[str, Any]) -> None:
    pk = keys.PublicKey.from_b58(v["public_key"])
    assert pk.curve == v["curve"]
    assert len(pk.raw) == {"ed25519": 32, "secp256k1": 33, "p256": 33, "bls12_381": 48}[pk.curve]
    assert pk.b58 == v["public_key"]
    assert pk.pkh == v["pkh"]
    assert keys.pkh_curve(v["pkh"]) == v["curve"]
    assert pk == keys.PublicKey(pk.curve, pk.raw)


def test_edsk_long_form_is_the_same_key() -> None:
    v = BY_NAME["taquito_tz1_ed25519"]
    seed = b58.decode("edsk", v["secret_key"])
    pk = b58.decode("edpk", v["public_key"])
    long_form = b58.b58check_encode(b58.PREFIXES["edsk64"][0] + seed + pk)
    assert len(long_form) == 98
    sk = keys.SecretKey.from_b58(long_form)
    assert sk.pkh == v["pkh"]
    assert sk.sign(bytes.fromhex(v["message_hex"])).hex() == v["signature_hex"]


# ------------------------------------------------------------------------- signatures ------


@pytest.mark.parametrize("v", DETERMINISTIC, ids=_ids(DETERMINISTIC))
def test_deterministic_signatures_reproduce(v: dict[str, Any]) -> None:
    raw = _secret(v).sign(bytes.fromhex(v["message_hex"]))
    assert raw.hex() == v["signature_hex"]
    assert keys.signature_b58(v["curve"], raw) == v["signature"]


@pytest.mark.parametrize("v", SIGNING, ids=_ids(SIGNING))
def test_vector_signatures_verify(v: dict[str, Any]) -> None:
    pk = keys.PublicKey.from_b58(v["public_key"])
    msg = bytes.fromhex(v["message_hex"])
    curve, raw = keys.parse_signature(v["signature"])
    assert curve == v["curve"]
    assert raw.hex() == v["signature_hex"]
    assert pk.verify(raw, msg)
    if "message_blake2b256" in v:
        assert keys.blake2b_256(msg).hex() == v["message_blake2b256"]


@pytest.mark.parametrize("v", [v for v in VECTORS if "signature_generic" in v])
def test_generic_signature_form(v: dict[str, Any]) -> None:
    curve, raw = keys.parse_signature(v["signature_generic"])
    assert curve is None
    assert raw.hex() == v["signature_hex"]


@pytest.mark.parametrize("v", ECDSA, ids=_ids(ECDSA))
def test_own_ecdsa_signatures_verify_and_are_low_s(v: dict[str, Any]) -> None:
    sk = _secret(v)
    for i in range(8):
        msg = bytes.fromhex(v["message_hex"]) + bytes([i])
        raw = sk.sign(msg)
        assert len(raw) == 64
        assert int.from_bytes(raw[32:], "big") <= ORDER[v["curve"]] // 2
        assert sk.public_key.verify(raw, msg)


@pytest.mark.parametrize("v", ECDSA, ids=_ids(ECDSA))
def test_ecdsa_is_rfc6979_and_reproduces_the_vector(v: dict[str, Any]) -> None:
    # RFC 6979 nonces plus low-S give exactly the signature Taquito produced.
    assert _secret(v).sign(bytes.fromhex(v["message_hex"])).hex() == v["signature_hex"]


@pytest.mark.parametrize("curve", ["secp256k1", "p256"])
def test_normalize_signature_gives_low_s(curve: keys.Curve) -> None:
    v = next(v for v in ECDSA if v["curve"] == curve)
    pk = keys.PublicKey.from_b58(v["public_key"])
    msg = bytes.fromhex(v["message_hex"])
    raw = bytes.fromhex(v["signature_hex"])
    n = ORDER[curve]
    high = raw[:32] + (n - int.from_bytes(raw[32:], "big")).to_bytes(32, "big")
    assert keys.normalize_signature(curve, high) == raw
    assert keys.normalize_signature(curve, raw) == raw
    # secp256k1 must be low-S to verify (as in Octez); P-256 has no such rule.
    assert pk.verify(high, msg) is (curve == "p256")
    assert pk.verify(keys.normalize_signature(curve, high), msg)


def test_normalize_signature_is_identity_for_ed25519_and_bls() -> None:
    raw = bytes.fromhex(BY_NAME["taquito_tz1_ed25519"]["signature_hex"])
    assert keys.normalize_signature("ed25519", raw) == raw
    assert keys.normalize_signature("bls12_381", TAG41_POP_SIG) == TAG41_POP_SIG


@pytest.mark.parametrize("curve", keys.CURVES)
def test_generated_keys_sign_and_verify(curve: keys.Curve) -> None:
    sk = keys.SecretKey.generate(curve)
    again = keys.SecretKey.from_b58(sk.b58)
    assert again.public_key == sk.public_key
    assert keys.pkh_curve(sk.pkh) == curve
    raw = sk.sign(TAG41)
    assert sk.public_key.verify(raw, TAG41)
    assert not sk.public_key.verify(raw, TAG41 + b"\x00")


@pytest.mark.parametrize("v", SIGNING, ids=_ids(SIGNING))
def test_tampered_signature_or_message_fails(v: dict[str, Any]) -> None:
    pk = keys.PublicKey.from_b58(v["public_key"])
    msg = bytes.fromhex(v["message_hex"])
    raw = bytes.fromhex(v["signature_hex"])
    flipped = bytes([raw[0] ^ 1]) + raw[1:]
    assert not pk.verify(flipped, msg)
    assert not pk.verify(raw, msg[:-1] + bytes([msg[-1] ^ 1]))
    assert not pk.verify(raw[:-1], msg)
    assert not pk.verify(b"", msg)
    other = keys.SecretKey.generate(pk.curve).public_key
    assert not other.verify(raw, msg)


# ------------------------------------------------------------------------- BLS -------------


def test_bls_proof_of_possession_reproduces() -> None:
    sk = _secret(BLS)
    pop = sk.prove_possession()
    assert pop.hex() == BLS["signature_hex"]
    assert keys.signature_b58("bls12_381", pop) == BLS["signature"]
    assert keys.parse_signature(BLS["signature"]) == ("bls12_381", pop)
    pk = keys.PublicKey.from_b58(BLS["public_key"])
    assert pk.verify_possession(pop)
    # A proof of possession is not a signature of the public key bytes (different DST).
    assert not pk.verify(pop, pk.raw)


def test_bls_signatures_reproduce_for_pop_and_aug() -> None:
    sk = _secret(BLS)
    assert sk.sign(TAG41) == TAG41_POP_SIG
    assert sk.sign(TAG41, version=2) == TAG41_POP_SIG
    assert sk.sign(TAG41, version=3) == TAG41_POP_SIG
    assert sk.sign(TAG41, version=1) == TAG41_AUG_SIG


@pytest.mark.parametrize("version", [None, 1, 2, 3])
def test_bls_round_trip(version: int | None) -> None:
    sk = _secret(BLS)
    pk = sk.public_key
    sig = sk.sign(TAG41, version=version)
    assert len(sig) == 96
    assert pk.verify(sig, TAG41, version=version)
    assert not pk.verify(sig, TAG41 + b"\x00", version=version)
    assert not pk.verify(bytes([sig[0]]) + bytes([sig[1] ^ 1]) + sig[2:], TAG41, version=version)
    # The scheme matters: a PoP-scheme signature is not an augmented one and vice versa.
    other_version = 1 if version != 1 else 2
    assert not pk.verify(sig, TAG41, version=other_version)


def test_bls_version_zero_refused() -> None:
    sk = _secret(BLS)
    with pytest.raises(ValueError, match="version 0"):
        sk.sign(TAG41, version=0)
    assert not sk.public_key.verify(TAG41_POP_SIG, TAG41, version=0)


def test_unknown_version_refused_and_ignored_by_other_curves() -> None:
    ed = _secret(BY_NAME["taquito_tz1_ed25519"])
    with pytest.raises(ValueError, match="version 7"):
        ed.sign(TAG41, version=7)
    assert ed.sign(TAG41, version=0) == ed.sign(TAG41, version=1) == ed.sign(TAG41)


def test_prove_possession_only_for_bls() -> None:
    with pytest.raises(ValueError, match="only for BLS"):
        _secret(BY_NAME["taquito_tz1_ed25519"]).prove_possession()
    ed_pk = keys.PublicKey.from_b58(BY_NAME["taquito_tz1_ed25519"]["public_key"])
    assert not ed_pk.verify_possession(bytes.fromhex(BLS["signature_hex"]))


def test_bls_points_outside_the_subgroup_are_rejected() -> None:
    # On the curve but not in the prime-order subgroup (x = 4 on G1; x = 1 + u on G2).
    g1 = bytes.fromhex("80" + "00" * 46 + "04")
    g2 = bytes.fromhex("a0" + "00" * 46 + "01" + "00" * 47 + "01")
    with pytest.raises(keys.KeyFormatError, match="G1 subgroup"):
        keys.PublicKey("bls12_381", g1)
    pk = keys.PublicKey.from_b58(BLS["public_key"])
    assert not pk.verify(g2, TAG41)
    with pytest.raises(keys.KeyFormatError, match="infinity"):
        keys.PublicKey("bls12_381", bytes.fromhex("c0" + "00" * 47))


# ------------------------------------------------------------------------- authentication --


def test_authentication_vector_reproduces() -> None:
    v = BY_NAME["derived_authentication_ed25519"]
    request = bytes.fromhex(BY_NAME["derived_ed25519_octez_attestation_tag21"]["message_hex"])
    payload = keys.authentication_payload(v["pkh"], request)
    assert payload.hex() == v["message_hex"]
    raw = _secret(v).sign(payload)
    assert keys.signature_b58("ed25519", raw) == v["signature"]
    assert keys.PublicKey.from_b58(v["public_key"]).verify(raw, payload)


@pytest.mark.parametrize(
    ("name", "tag"),
    [("taquito_tz1_ed25519", 0), ("taquito_tz2_secp256k1", 1), ("taquito_tz3_p256", 2),
     ("taquito_tz4_bls_pop", 3)],
)  # fmt: skip
def test_pkh_binary(name: str, tag: int) -> None:
    v = BY_NAME[name]
    binary = keys.pkh_binary(v["pkh"])
    assert len(binary) == 21
    assert binary[0] == tag
    assert binary[1:] == keys.blake2b_160(keys.PublicKey.from_b58(v["public_key"]).raw)


def test_tz5_has_a_binary_form_but_no_curve() -> None:
    tz5 = b58.encode("tz5", bytes(range(20)))
    assert keys.pkh_binary(tz5) == b"\x04" + bytes(range(20))
    with pytest.raises(keys.KeyFormatError, match="tz5"):
        keys.pkh_curve(tz5)


def test_hashes() -> None:
    assert keys.blake2b_256(b"").hex() == (
        "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
    )
    assert len(keys.blake2b_160(b"x")) == 20


# ------------------------------------------------------------------------- malformed input -


def _corrupt_last_char(text: str) -> str:
    return text[:-1] + ("1" if text[-1] != "1" else "2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("edsk4TjJWEszkHKono7XMnepVqwi37FrpbVt1KCsifJeAGimxheSh", "checksum"),
        (_corrupt_last_char(BY_NAME["taquito_tz1_ed25519"]["secret_key"]), "checksum"),
        (_corrupt_last_char(BLS["secret_key"]), "checksum"),
        ("spsk2rBDDeUqakQ42nBHDGQTtP3GErb6AahHPwF9bhca3Q5KA5HES0", "base58 alphabet"),
        ("edesk1GXwWk4Wm7R6mTT7TwnTXPn7oBRpVbDF6SRRQdgZEyMJVKAbDM", "encrypted"),
        (BY_NAME["taquito_tz1_ed25519"]["public_key"], "not a secret key"),
        ("", "empty secret key"),
        (BY_NAME["taquito_tz1_ed25519"]["pkh"], "not a secret key"),
    ],
)
def test_malformed_secret_keys(text: str, message: str) -> None:
    with pytest.raises(keys.KeyFormatError, match=message) as err:
        keys.SecretKey.from_b58(text)
    if len(text) > 12:
        assert text[4:12] not in str(err.value)


@pytest.mark.parametrize(
    ("name", "size", "message"),
    [
        ("spsk", 31, "spsk secret key must be 54 characters"),
        ("p2sk", 33, "p2sk secret key must be 54 characters"),
        ("BLsk", 16, "BLsk secret key must be 54 characters"),
        ("edsk", 48, "edsk secret key must be 54 or 98 characters"),
    ],
)
def test_secret_with_wrong_payload_length(name: str, size: int, message: str) -> None:
    text = b58.b58check_encode(b58.PREFIXES[name][0] + b"\x01" * size)
    with pytest.raises(keys.KeyFormatError, match=message):
        keys.SecretKey.from_b58(text)


@pytest.mark.parametrize(
    ("curve", "secret", "message"),
    [
        ("secp256k1", b"\x00" * 32, "out of range"),
        ("p256", b"\xff" * 32, "out of range"),
        ("bls12_381", b"\x00" * 32, "out of range"),
        ("bls12_381", b"\xff" * 32, "out of range"),
        ("ed25519", b"\x01" * 31, "32 bytes"),
    ],
)
def test_secret_scalars_out_of_range(curve: keys.Curve, secret: bytes, message: str) -> None:
    with pytest.raises(keys.KeyFormatError, match=message):
        keys.SecretKey(curve, secret)


def test_edsk_long_form_with_mismatched_public_key() -> None:
    v = BY_NAME["taquito_tz1_ed25519"]
    seed = b58.decode("edsk", v["secret_key"])
    wrong = b58.b58check_encode(b58.PREFIXES["edsk64"][0] + seed + b"\x00" * 32)
    with pytest.raises(keys.KeyFormatError, match="does not match"):
        keys.SecretKey.from_b58(wrong)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_corrupt_last_char(BY_NAME["taquito_tz1_ed25519"]["public_key"]), "checksum"),
        ("tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv", "not a public key"),
        (b58.b58check_encode(b58.PREFIXES["sppk"][0] + b"\x04" + b"\x00" * 32), "compressed"),
        (b58.b58check_encode(b58.PREFIXES["sppk"][0] + b"\x02" * 32), "payload bytes"),
        (b58.b58check_encode(b58.PREFIXES["p2pk"][0] + b"\x02" + b"\xff" * 32), "not a point"),
        (b58.b58check_encode(b58.PREFIXES["BLpk"][0] + b"\x80" + b"\x00" * 46 + b"\x04"), "G1"),
    ],
)
def test_malformed_public_keys(text: str, message: str) -> None:
    with pytest.raises(keys.KeyFormatError, match=message):
        keys.PublicKey.from_b58(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        _corrupt_last_char(BY_NAME["taquito_tz1_ed25519"]["signature"]),
        BY_NAME["taquito_tz1_ed25519"]["public_key"],
        "edsig0",
    ],
)
def test_malformed_signatures(text: str) -> None:
    with pytest.raises(keys.KeyFormatError, match="invalid signature"):
        keys.parse_signature(text)


def test_signature_b58_length_checked() -> None:
    with pytest.raises(keys.KeyFormatError, match="64 bytes"):
        keys.signature_b58("ed25519", b"\x00" * 63)


@pytest.mark.parametrize(
    "text", ["", "tz1", "KT1BEqzn5Wx8uJrZNvuS9DVHmLvG9td3fDLi", _corrupt_last_char(BLS["pkh"])]
)
def test_malformed_pkh(text: str) -> None:
    with pytest.raises(keys.KeyFormatError, match="public key hash"):
        keys.pkh_binary(text)
    with pytest.raises(keys.KeyFormatError):
        keys.pkh_curve(text)


def test_secret_key_repr_hides_the_secret() -> None:
    sk = _secret(BY_NAME["taquito_tz1_ed25519"])
    assert sk.b58 not in repr(sk)
    assert sk.b58 not in str(sk)
    assert sk.pkh in repr(sk)
