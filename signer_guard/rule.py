"""The high-watermark rule, in one place (watermark-rules.md §1).

`decide` is pure: every store calls it inside its one atomic transaction, with the fence and the
record it has just read, and writes the record only when the answer is `Advance`.
"""

from __future__ import annotations

from dataclasses import dataclass

from signer_guard.model import Fence, HWMRecord, SignIntent


@dataclass(frozen=True, slots=True)
class Advance:
    """Write (L, R, hash, signature=None, epoch) durably, then call the backend."""


@dataclass(frozen=True, slots=True)
class Cached:
    """Identical bytes at the recorded (L, R) with a stored signature: answer it, no backend."""

    signature: str


@dataclass(frozen=True, slots=True)
class Refused:
    """Not signed. `status` is the HTTP status (409 watermark/fence level, 503 not the holder)."""

    status: int
    reason: str  # "hwm" | "fence_level" | "not_holder" | "released"
    message: str


Decision = Advance | Cached | Refused


def fence_refusal(fence: Fence | None, guard_id: str, epoch: int | None) -> Refused | None:
    """Step 1: only the holder at its epoch may sign."""
    if fence is None or epoch is None:
        return Refused(503, "not_holder", f"guard {guard_id} does not hold the fence (no fence)")
    if fence.holder == "":
        return Refused(
            503,
            "released",
            f"guard {guard_id} does not hold the fence: it was released (epoch {fence.epoch})",
        )
    if fence.holder != guard_id or fence.epoch != epoch:
        return Refused(
            503,
            "not_holder",
            f"guard {guard_id} does not hold the fence: holder is "
            f"{fence.holder!r} at epoch {fence.epoch} (this guard had epoch {epoch})",
        )
    return None


def decide(
    intent: SignIntent,
    record: HWMRecord | None,
    fence: Fence | None,
    guard_id: str,
    epoch: int | None,
) -> Decision:
    """Apply the rule, steps 1 to 6, to one request."""
    refused = fence_refusal(fence, guard_id, epoch)
    if refused is not None:
        return refused
    assert fence is not None
    kind, lvl, rnd = intent.key.kind, intent.level, intent.round
    where = f"{kind} level {lvl} and round {rnd}"
    if record is not None and (lvl, rnd) == (record.level, record.round):
        # Steps 2 and 3: the same (level, round) as the record.
        if record.hash == intent.hash and record.signature is not None:
            return Cached(record.signature)
        if record.hash is not None and record.hash != intent.hash:
            return Refused(409, "hwm", f"{where} already signed with different data")
        return Refused(
            409, "hwm", f"{where} not above high watermark ({record.level}, {record.round})"
        )
    if lvl <= fence.fence_level:
        return Refused(
            409,
            "fence_level",
            f"{kind} level {lvl} not above fence level {fence.fence_level} (epoch {fence.epoch})",
        )
    if record is not None and (lvl, rnd) < (record.level, record.round):
        if lvl < record.level:
            return Refused(409, "hwm", f"{kind} level {lvl} below high watermark {record.level}")
        return Refused(
            409, "hwm", f"{where} not above high watermark ({record.level}, {record.round})"
        )
    return Advance()
