"""Crash injection for the crash-matrix tests, enabled only by an environment variable.

`SIGNER_GUARD_CRASH_AT=STEP[:N]` makes the guard SIGKILL itself the N-th time (default 1st) it
reaches STEP. Without the variable every `crash_point` is a no-op: one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from typing import Final

ENV: Final = "SIGNER_GUARD_CRASH_AT"
STEPS: Final = (
    "received",  # the POST body was read
    "decoded",  # the request decoded and passed policy
    "advanced",  # the store committed the advance
    "backend_called",  # just before the bytes go to the backend
    "backend_replied",  # the backend answered, before verification
    "signature_stored",  # the signature cache write committed
    "response_sent",  # the 200 answer was written to the socket
)


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    step, _, count = value.partition(":")
    if step not in STEPS:
        raise SystemExit(f"{ENV}={value!r}: unknown step (one of {', '.join(STEPS)})")
    return step, int(count) if count else 1


_TARGET: Final = _parse(os.environ.get(ENV))
_seen: dict[str, int] = {}


def crash_point(step: str) -> None:
    if _TARGET is None or step != _TARGET[0]:
        return
    _seen[step] = _seen.get(step, 0) + 1
    if _seen[step] >= _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)


def enabled() -> bool:
    return _TARGET is not None
