"""The HWM rule (watermark-rules.md §1, §1.3 and the signer-guard column of §5.1)."""

from __future__ import annotations

import hashlib
import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signer_guard import rule
from signer_guard.model import KINDS, Fence, HWMKey, HWMRecord, Kind, SignIntent

CHAIN = "NetXdQprcVkpaWU"
CHAIN_B = "NetXnHfVqm9iesp"
TZ1 = "tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv"
TZ4_CONSENSUS = "tz4AQcKaQU1sUzsmPTX43qnK4ddkCeeknJnf"
TZ4_COMPANION = "tz4Companion0000000000000000000000"  # the rule never decodes pkhs
ME = "bake-a"
FENCE = Fence(epoch=3, holder=ME, fence_level=100, updated_at="2026-01-01T00:00:00Z")


def h(data: str) -> bytes:
    return hashlib.blake2b(data.encode(), digest_size=32).digest()


def intent(level: int, round_: int, data: str = "x", kind: Kind = "attestation",
           pkh: str = TZ1, chain: str = CHAIN) -> SignIntent:  # fmt: skip
    return SignIntent(HWMKey(chain, pkh, kind), level, round_, h(data))


def record(level: int, round_: int, data: str | None = "x", signature: str | None = None,
           kind: Kind = "attestation") -> HWMRecord:  # fmt: skip
    return HWMRecord(
        CHAIN, TZ1, kind, level, round_, h(data) if data is not None else None, signature, 3, ""
    )


def decide(i: SignIntent, r: HWMRecord | None, fence: Fence | None = FENCE,
           epoch: int | None = 3) -> rule.Decision:  # fmt: skip
    return rule.decide(i, r, fence, ME, epoch)


# -- step 1: the fence -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fence", "epoch", "reason"),
    [
        (None, 3, "not_holder"),
        (FENCE, None, "not_holder"),
        (Fence(3, "bake-b", 100, ""), 3, "not_holder"),
        (Fence(4, ME, 100, ""), 3, "not_holder"),
        (Fence(3, "", 100, ""), 3, "released"),
    ],
)
def test_fence_refusals_are_503(fence: Fence | None, epoch: int | None, reason: str) -> None:
    got = decide(intent(200, 0), None, fence, epoch)
    assert isinstance(got, rule.Refused)
    assert (got.status, got.reason) == (503, reason)
    assert ME in got.message


def test_fence_is_checked_before_the_cache() -> None:
    cached = record(200, 0, "x", signature="edsigCACHED")
    got = decide(intent(200, 0, "x"), cached, Fence(4, "bake-b", 100, ""), 3)
    assert isinstance(got, rule.Refused) and got.status == 503


# -- steps 2 and 3: the same (L, R) ----------------------------------------------------------------
def test_identical_bytes_with_signature_answer_the_cache() -> None:
    got = decide(intent(200, 1, "x"), record(200, 1, "x", signature="edsigCACHED"))
    assert got == rule.Cached("edsigCACHED")


def test_different_data_at_the_same_level_and_round() -> None:
    got = decide(intent(200, 1, "y"), record(200, 1, "x", signature="edsigCACHED"))
    assert isinstance(got, rule.Refused)
    assert got.status == 409
    assert got.message == "attestation level 200 and round 1 already signed with different data"


def test_same_data_without_cached_signature_is_refused() -> None:
    got = decide(intent(200, 1, "x", kind="block"), record(200, 1, "x", kind="block"))
    assert isinstance(got, rule.Refused)
    assert got.status == 409
    assert got.message == "block level 200 and round 1 not above high watermark (200, 1)"


def test_same_level_round_after_takeover_record_without_hash_is_refused() -> None:
    got = decide(intent(200, 0, "x"), record(200, 0, None))
    assert isinstance(got, rule.Refused) and got.status == 409


def test_cache_is_checked_before_the_fence_level() -> None:
    # Step 2 comes before step 4: an identical retry of the last signed request is answered.
    got = decide(intent(100, 0, "x"), record(100, 0, "x", signature="edsigCACHED"))
    assert got == rule.Cached("edsigCACHED")


# -- step 4: the fence level -----------------------------------------------------------------------
@pytest.mark.parametrize("level", [1, 99, 100])
def test_not_above_fence_level(level: int) -> None:
    got = decide(intent(level, 5, kind="preattestation"), None)
    assert isinstance(got, rule.Refused)
    assert (got.status, got.reason) == (409, "fence_level")
    assert got.message == f"preattestation level {level} not above fence level 100 (epoch 3)"


def test_fence_level_applies_even_above_the_record() -> None:
    got = decide(intent(100, 3), record(50, 0))
    assert isinstance(got, rule.Refused) and got.reason == "fence_level"


# -- step 5: below the record ----------------------------------------------------------------------
def test_level_below_high_watermark() -> None:
    got = decide(intent(150, 9, kind="preattestation"), record(160, 0, kind="preattestation"))
    assert isinstance(got, rule.Refused)
    assert got.status == 409
    assert got.message == "preattestation level 150 below high watermark 160"
    # The wording tezt greps for.
    assert re.search(r"preattestation level ([\d]+) below high watermark ([\d]+)", got.message)


def test_round_below_high_watermark() -> None:
    got = decide(intent(160, 1), record(160, 2))
    assert isinstance(got, rule.Refused)
    assert got.message == "attestation level 160 and round 1 not above high watermark (160, 2)"


# -- step 6: advance -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("level", "round_", "existing"),
    [(101, 0, None), (161, 0, (160, 5)), (160, 3, (160, 2)), (2**30 - 1, 0, (160, 2))],
)
def test_above_everything_advances(
    level: int, round_: int, existing: tuple[int, int] | None
) -> None:
    rec = record(*existing) if existing else None
    assert decide(intent(level, round_), rec) == rule.Advance()


# -- §5.1 arrival orders, through a small in-memory store ------------------------------------------
class Sim:
    """Applies `decide` and writes on Advance, like a store; signs by caching a signature."""

    def __init__(self) -> None:
        self.records: dict[HWMKey, HWMRecord] = {}

    def sign(self, i: SignIntent) -> rule.Decision:
        got = decide(i, self.records.get(i.key))
        if isinstance(got, rule.Advance):
            k = i.key
            self.records[k] = HWMRecord(
                k.chain_id, k.pkh, k.kind, i.level, i.round, i.hash, f"sig-{i.hash.hex()}", 3, ""
            )
        return got


def signed(d: rule.Decision) -> bool:
    return isinstance(d, rule.Advance)


@pytest.mark.parametrize("order", list(itertools.permutations(KINDS)))
def test_all_kind_orders_sign_for_a_tz1_key(order: tuple[Kind, ...]) -> None:
    sim = Sim()
    assert [signed(sim.sign(intent(500, 2, f"op-{k}", kind=k))) for k in order] == [True] * 3


@pytest.mark.parametrize("order", list(itertools.permutations(KINDS)))
def test_tz4_consensus_and_companion_identical_bytes(order: tuple[Kind, ...]) -> None:
    sim = Sim()
    results = []
    for kind in order:
        for pkh in (TZ4_CONSENSUS, TZ4_COMPANION):
            results.append(signed(sim.sign(intent(500, 0, f"tag41-{kind}", kind=kind, pkh=pkh))))
    assert results == [True] * 6


def test_attestation_then_preattestation() -> None:
    sim = Sim()
    assert signed(sim.sign(intent(500, 0, "att", kind="attestation")))
    assert signed(sim.sign(intent(500, 0, "pre", kind="preattestation")))


def test_identical_attestation_again_is_cached() -> None:
    sim = Sim()
    assert signed(sim.sign(intent(500, 0, "att")))
    assert sim.sign(intent(500, 0, "att")) == rule.Cached(f"sig-{h('att').hex()}")


def test_tag21_then_tag23_is_refused() -> None:
    sim = Sim()
    assert signed(sim.sign(intent(500, 0, "tag21-attestation")))
    got = sim.sign(intent(500, 0, "tag23-attestation-with-dal"))
    assert isinstance(got, rule.Refused)
    assert got.message == "attestation level 500 and round 0 already signed with different data"


def test_round_one_then_round_zero_is_refused() -> None:
    sim = Sim()
    assert signed(sim.sign(intent(500, 1, "r1")))
    got = sim.sign(intent(500, 0, "r0"))
    assert isinstance(got, rule.Refused) and got.status == 409


def test_two_chains_are_independent() -> None:
    sim = Sim()
    assert signed(sim.sign(intent(500, 0, "a", chain=CHAIN)))
    assert signed(sim.sign(intent(400, 0, "b", chain=CHAIN_B)))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(KINDS), st.integers(101, 105), st.integers(0, 2), st.integers(0, 2)
        ),
        max_size=30,
    )
)
def test_never_two_payloads_at_one_level_and_round(
    requests: list[tuple[Kind, int, int, int]],
) -> None:
    """Whatever arrives, at most one payload is signed per (key, L, R), and marks only rise."""
    sim = Sim()
    signed_payloads: dict[tuple[HWMKey, int, int], set[bytes]] = {}
    last: dict[HWMKey, tuple[int, int]] = {}
    for kind, level, round_, payload in requests:
        i = intent(level, round_, f"p{payload}", kind=kind)
        if signed(sim.sign(i)):
            signed_payloads.setdefault((i.key, level, round_), set()).add(i.hash)
            assert (level, round_) > last.get(i.key, (-1, -1))
            last[i.key] = (level, round_)
    assert all(len(v) == 1 for v in signed_payloads.values())
