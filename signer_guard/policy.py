"""Policy (step 3): which requests a key may sign at all, before any watermark is looked at.

Every refusal here is HTTP 403 and changes no state.
"""

from __future__ import annotations

from dataclasses import dataclass

from signer_guard.codec import SigningRequest
from signer_guard.config import Config

#: Levels and rounds at or above this are refused always (watermark-rules.md §2).
ABSURD = 2**30

BLS_TAGS = frozenset({40, 41})
SLOT_TAGS = frozenset({20, 21, 23})


class PolicyRefusal(Exception):
    """The request is not allowed for this key (HTTP 403)."""


@dataclass(frozen=True, slots=True)
class Policy:
    allowed_magic: frozenset[int]
    allowed_chains: frozenset[str]
    allow_generic: frozenset[int]
    max_levels_ahead: int
    key_kinds: dict[str, frozenset[str]]
    key_generic: dict[str, frozenset[int]]

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        return cls(
            allowed_magic=frozenset(config.allowed_magic),
            allowed_chains=frozenset(config.allowed_chains),
            allow_generic=frozenset(config.allow_generic),
            max_levels_ahead=config.max_levels_ahead,
            key_kinds={pkh: frozenset(p.kinds) for pkh, p in config.key_policy.items()},
            key_generic={
                pkh: frozenset(p.allow_generic)
                for pkh, p in config.key_policy.items()
                if p.allow_generic is not None
            },
        )

    def check(self, pkh: str, req: SigningRequest, node_head: int | None) -> None:
        """Raise PolicyRefusal naming the key and the reason, or return."""
        who = f"key {pkh}"
        if req.kind == "generic":
            tags = self.key_generic.get(pkh, self.allow_generic)
            kinds = self.key_kinds.get(pkh)
            if (kinds is not None and "generic" not in kinds) or req.tag not in tags:
                raise PolicyRefusal(
                    f"{who}: generic operation with tag {req.tag} is not allowed (allow_generic)"
                )
            return
        if req.magic not in self.allowed_magic or req.hwm_kind is None:
            raise PolicyRefusal(f"{who}: magic byte 0x{req.magic:02x} ({req.kind}) not allowed")
        kinds = self.key_kinds.get(pkh)
        if kinds is not None and req.hwm_kind not in kinds:
            raise PolicyRefusal(f"{who}: kind {req.hwm_kind} not allowed for this key")
        if self.allowed_chains and req.chain_id not in self.allowed_chains:
            raise PolicyRefusal(f"{who}: chain {req.chain_id} not allowed (allowed_chains)")
        if req.tag is not None:
            if pkh.startswith("tz4") and req.tag not in BLS_TAGS:
                raise PolicyRefusal(
                    f"{who}: a tz4 key signs only BLS-mode consensus operations (tags 40/41), "
                    f"not tag {req.tag}"
                )
            if not pkh.startswith("tz4") and req.tag not in SLOT_TAGS:
                raise PolicyRefusal(
                    f"{who}: tag {req.tag} is for tz4 keys only; {pkh[:3]} keys sign tags 20/21/23"
                )
        level, round_ = req.level or 0, req.round or 0
        if level >= ABSURD or round_ >= ABSURD:
            raise PolicyRefusal(
                f"{who}: {req.hwm_kind} level {level} round {round_} is absurd "
                f"(≥ 2^30); refused so it cannot lock the key"
            )
        if node_head is not None and level > node_head + self.max_levels_ahead:
            raise PolicyRefusal(
                f"{who}: {req.hwm_kind} level {level} is more than {self.max_levels_ahead} "
                f"levels above the node head {node_head}"
            )
