"""A reference model of the high-watermark rule, written from watermark-rules.md §1 and
fencing-and-failover.md §1–§3 alone (it does not use signer_guard.rule), for the model tests.

A mark is (level, round, hash, signature, epoch); the fence is (epoch, holder, fence_level).
"""

from __future__ import annotations

from dataclasses import dataclass, field

Key = tuple[str, str, str]  # chain, pkh, kind
Outcome = tuple[str, object]  # ("advance", None) | ("cached", sig) | ("refused", (status, why))


@dataclass
class Mark:
    level: int
    round: int
    hash: bytes | None
    signature: str | None
    epoch: int


@dataclass
class Reference:
    fence: tuple[int, str, int] | None = None
    marks: dict[Key, Mark] = field(default_factory=dict)

    def request(
        self, key: Key, lvl: int, rnd: int, h: bytes, me: str, epoch: int | None
    ) -> Outcome:
        if self.fence is None or epoch is None:  # 1: only the holder at its epoch
            return ("refused", (503, "not_holder"))
        f_epoch, holder, f_level = self.fence
        if holder == "":
            return ("refused", (503, "released"))
        if (holder, f_epoch) != (me, epoch):
            return ("refused", (503, "not_holder"))
        m = self.marks.get(key)
        if m is not None and (lvl, rnd) == (m.level, m.round):
            if m.hash == h and m.signature is not None:  # 2: identical, signature cached
                return ("cached", m.signature)
            return ("refused", (409, "hwm"))  # 3: same (level, round), anything else
        if lvl <= f_level:  # 4
            return ("refused", (409, "fence_level"))
        if m is not None and (lvl, rnd) < (m.level, m.round):  # 5
            return ("refused", (409, "hwm"))
        self.marks[key] = Mark(lvl, rnd, h, None, epoch)  # 6: durable advance
        return ("advance", None)

    def cache(self, key: Key, lvl: int, rnd: int, h: bytes, signature: str) -> None:
        m = self.marks.get(key)
        if m is not None and (m.level, m.round, m.hash) == (lvl, rnd, h):
            m.signature = signature

    def set(self, key: Key, lvl: int, rnd: int, allow_lower: bool) -> None:
        m = self.marks.get(key)
        if m is not None and not allow_lower and (lvl, rnd) <= (m.level, m.round):
            return
        self.marks[key] = Mark(lvl, rnd, None, None, self.fence[0] if self.fence else 0)

    def takeover(self, me: str, level: int, keys: list[Key]) -> int:
        old_epoch, _, old_level = self.fence or (0, "", 0)
        epoch = old_epoch + 1
        self.fence = (epoch, me, max(old_level, level))
        for m in self.marks.values():
            if (m.level, m.round) < (level, 0):
                m.level, m.round, m.hash, m.signature, m.epoch = level, 0, None, None, epoch
        for key in keys:
            self.marks.setdefault(key, Mark(level, 0, None, None, epoch))
        return epoch

    def release(self, me: str) -> bool:
        if self.fence is None or self.fence[1] != me:
            return False
        top = max((m.level for m in self.marks.values()), default=0)
        self.fence = (self.fence[0], "", max(self.fence[2], top))
        return True
