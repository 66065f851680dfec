"""Where `failover` learns things over HTTP (fencing-and-failover.md §7 steps 2, 4 and 9): a
guard's `/status`, the node head, and a TzKT indexer's view of what a baker signed last.

Every call has its own short timeout; failures raise `SourceError` with a one-line reason.
"""

from __future__ import annotations

from typing import Any, Final

import aiohttp

from signer_guard.node import fetch_head

PROBE_TIMEOUT: Final = 2.0


class SourceError(Exception):
    """A source did not answer usefully; the message says why."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


async def get_status(
    session: aiohttp.ClientSession, url: str, timeout: float = PROBE_TIMEOUT
) -> dict[str, Any] | None:
    """GET URL/status; None when nothing usable answers (down, refused, not a guard)."""
    try:
        async with session.get(
            url.rstrip("/") + "/status", timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            if resp.status != 200:
                return None
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return body if isinstance(body, dict) else None


async def node_head(
    session: aiohttp.ClientSession, node: str, timeout: float = PROBE_TIMEOUT
) -> tuple[int, str | None]:
    """The node's head (level, chain_id): `GET NODE/chains/main/blocks/head/header`."""
    try:
        return await fetch_head(session, node, timeout)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise SourceError(f"node {node}: {_reason(exc)}") from None


# TzKT API (baking-bad/tzkt, Tzkt.Api/Controllers/OperationsController.cs and
# BlocksController.cs; documented at https://api.tzkt.io/): list endpoints filter by account
# (`delegate=` for consensus operations, `producer=` for blocks), sort with `sort.desc=level`,
# cut with `limit=1`, and `select=level` makes the answer an array of bare values, e.g. `[5123456]`.
# An operation's `level` is the level of the block that included it, which is at or above the
# level it (pre)attested: an over-estimate, the safe side for a failover margin.
TZKT_QUERIES: Final = (
    ("attestations", "/v1/operations/attestations", "delegate"),
    ("preattestations", "/v1/operations/preattestations", "delegate"),
    ("blocks", "/v1/blocks", "producer"),
)


async def _tzkt_last(
    session: aiohttp.ClientSession, url: str, params: dict[str, str], timeout: float
) -> int | None:
    try:
        async with session.get(
            url, params=params, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            if resp.status != 200:
                raise SourceError(f"{url} answered HTTP {resp.status}")
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise SourceError(f"{url}: {_reason(exc)}") from None
    if not isinstance(body, list):
        raise SourceError(f"{url}: expected a JSON array of levels, got {type(body).__name__}")
    if not body:
        return None
    level = body[0]
    if isinstance(level, dict):  # an indexer that ignores `select` returns whole operations
        level = level.get("level")
    if not isinstance(level, int) or isinstance(level, bool) or level < 0:
        raise SourceError(f"{url}: not a level: {body[0]!r}")
    return level


async def tzkt_last_level(
    session: aiohttp.ClientSession, base: str, pkh: str, timeout: float = PROBE_TIMEOUT
) -> tuple[int | None, dict[str, int | None]]:
    """The highest level TzKT shows for `pkh` over blocks, attestations and preattestations,
    and each endpoint's answer. SourceError only when no endpoint answered."""
    per_kind: dict[str, int | None] = {}
    errors: list[str] = []
    for name, path, account in TZKT_QUERIES:
        params = {account: pkh, "sort.desc": "level", "limit": "1", "select": "level"}
        try:
            per_kind[name] = await _tzkt_last(session, base.rstrip("/") + path, params, timeout)
        except SourceError as exc:
            errors.append(str(exc))
    if not per_kind:
        raise SourceError(f"TzKT {base} for {pkh}: " + "; ".join(errors))
    levels = [lvl for lvl in per_kind.values() if lvl is not None]
    return (max(levels) if levels else None), per_kind
