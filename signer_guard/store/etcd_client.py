"""A small client for etcd's v3 JSON gateway over aiohttp (fencing-and-failover.md §5).

Only `/v3/` paths; keys and values are base64; int64 values are sent as strings and enum values by
name; every request carries `Grpc-Metadata-hasleader: true` so that a member without a leader
answers at once instead of hanging. Reads are always linearizable.

Endpoint rotation: a request that certainly did not reach etcd (connection refused, connect timeout)
or that etcd refused before proposing it (`no leader`) is tried on the next endpoint. A timeout or
a dropped connection after sending makes a write's outcome unknown: `EtcdUnavailable` is raised at
once, and the next request starts on another endpoint.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from signer_guard.store.base import StoreUnavailable

JSON = dict[str, Any]

DEFAULT_TIMEOUT = 1.0
_HEADERS = {"Grpc-Metadata-hasleader": "true", "Content-Type": "application/json"}


class EtcdUnavailable(StoreUnavailable):
    """etcd could not be reached, refused the request, or the outcome of a write is unknown."""


@dataclass(frozen=True, slots=True)
class KV:
    key: bytes
    value: bytes
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int  # header.revision: the revision of every put of a successful txn
    ranges: list[list[KV]]  # the kvs of each request_range, in order (others: empty lists)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix` (last byte incremented)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        raise ValueError("a prefix of 0xff bytes has no range end")
    return stripped[:-1] + bytes([stripped[-1] + 1])


# -- request builders (proto3 JSON as the gateway takes it) -------------------------------------


def cmp_mod(key: bytes, result: str, revision: int) -> JSON:
    """Compare a key's mod_revision (`result` is EQUAL, LESS, GREATER or NOT_EQUAL)."""
    return {"key": b64(key), "target": "MOD", "result": result, "mod_revision": str(revision)}


def cmp_mod_range(start: bytes, end: bytes, result: str, revision: int) -> JSON:
    return {**cmp_mod(start, result, revision), "range_end": b64(end)}


def cmp_absent(key: bytes) -> JSON:
    return {"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}


def cmp_present_or_absent(key: bytes, mod_revision: int) -> JSON:
    """Unchanged since read: mod_revision equal, or still absent when it was absent (0)."""
    return cmp_absent(key) if mod_revision == 0 else cmp_mod(key, "EQUAL", mod_revision)


def cmp_lease(key: bytes, lease: int) -> JSON:
    return {"key": b64(key), "target": "LEASE", "result": "EQUAL", "lease": str(lease)}


def op_put(key: bytes, value: bytes, lease: int = 0) -> JSON:
    body: JSON = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def op_range(key: bytes, end: bytes | None = None) -> JSON:
    body: JSON = {"key": b64(key)}
    if end is not None:
        body["range_end"] = b64(end)
    return {"request_range": body}


# -- response decoding ---------------------------------------------------------------------------


def _int(value: object) -> int:
    """proto3 JSON: int64 as a string, and an absent field means 0."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise EtcdUnavailable(f"etcd answered a malformed integer: {value!r}")
    return int(value)


def _kvs(range_response: Mapping[str, Any]) -> list[KV]:
    out = []
    for kv in range_response.get("kvs") or []:
        out.append(
            KV(
                key=base64.b64decode(kv.get("key", "")),
                value=base64.b64decode(kv.get("value", "")),
                mod_revision=_int(kv.get("mod_revision")),
                version=_int(kv.get("version")),
                lease=_int(kv.get("lease")),
            )
        )
    return out


def _revision(response: Mapping[str, Any]) -> int:
    header = response.get("header") or {}
    return _int(header.get("revision"))


class EtcdClient:
    """Requests to a list of gateway endpoints (`http://host:port`), one at a time in rotation."""

    def __init__(self, endpoints: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> None:
        if not endpoints:
            raise ValueError("etcd: no endpoint given")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._current = 0
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=64)
            self._session = aiohttp.ClientSession(connector=connector, headers=_HEADERS)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _rotate(self, failed: int) -> None:
        if self._current == failed:
            self._current = (failed + 1) % len(self.endpoints)

    async def call(self, path: str, body: JSON, *, timeout: float | None = None) -> JSON:
        """POST `body` to `/v3/<path>`; return the decoded JSON answer.

        Safe to use for writes: it retries on another endpoint only when the request certainly
        was not applied, and raises `EtcdUnavailable` when the outcome is unknown.
        """
        if self._session is None:
            raise EtcdUnavailable("etcd client is not started")
        limit = self.timeout if timeout is None else timeout
        errors: list[str] = []
        for _ in range(len(self.endpoints)):
            index = self._current
            url = f"{self.endpoints[index]}/v3/{path}"
            try:
                async with self._session.post(
                    url,
                    data=json.dumps(body),
                    timeout=aiohttp.ClientTimeout(total=limit),
                ) as response:
                    raw = await response.read()
                    status = response.status
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # Never reached etcd: try the next member.
                errors.append(f"{self.endpoints[index]}: {exc.__class__.__name__}: {exc}")
                self._rotate(index)
                continue
            except (TimeoutError, aiohttp.ClientError) as exc:
                self._rotate(index)
                what = "timed out" if isinstance(exc, TimeoutError) else f"failed ({exc})"
                raise EtcdUnavailable(
                    f"etcd request {path} to {self.endpoints[index]} {what} after "
                    f"{limit:g} s: outcome unknown"
                ) from exc
            answer = _decode(raw, url, status)
            if status == 200:
                return answer
            message = str(answer.get("message") or answer.get("error") or raw[:200])
            if "no leader" in message:
                # Refused before being proposed (hasleader): safe to try another member.
                errors.append(f"{self.endpoints[index]}: {message}")
                self._rotate(index)
                continue
            if status >= 500:
                self._rotate(index)
            raise EtcdUnavailable(
                f"etcd {path} on {self.endpoints[index]} answered HTTP {status}: {message}"
            )
        raise EtcdUnavailable("no etcd member is usable: " + "; ".join(errors))

    # -- typed helpers ---------------------------------------------------------------------------

    async def range(self, key: bytes, end: bytes | None = None) -> tuple[int, list[KV]]:
        """A linearizable range read: (header.revision, kvs)."""
        body: JSON = {"key": b64(key)}
        if end is not None:
            body["range_end"] = b64(end)
        answer = await self.call("kv/range", body)
        return _revision(answer), _kvs(answer)

    async def txn(self, compare: list[JSON], success: list[JSON], failure: list[JSON]) -> TxnResult:
        answer = await self.call(
            "kv/txn", {"compare": compare, "success": success, "failure": failure}
        )
        ranges = [_kvs(item.get("response_range") or {}) for item in answer.get("responses") or []]
        return TxnResult(bool(answer.get("succeeded", False)), _revision(answer), ranges)

    async def read_many(self, ops: list[JSON]) -> TxnResult:
        """Several range reads at one revision (a txn with no compare runs its success branch)."""
        return await self.txn([], ops, [])

    async def lease_grant(self, ttl: int) -> tuple[int, int]:
        answer = await self.call("lease/grant", {"TTL": str(ttl), "ID": "0"})
        if answer.get("error"):
            raise EtcdUnavailable(f"etcd refused a lease: {answer['error']}")
        return _int(answer.get("ID")), _int(answer.get("TTL"))

    async def lease_keepalive(self, lease: int) -> int:
        """Refresh a lease; return its TTL, 0 when the lease is gone."""
        answer = await self.call("lease/keepalive", {"ID": str(lease)})
        result = answer.get("result") or {}
        return _int(result.get("TTL"))

    async def lease_revoke(self, lease: int) -> None:
        await self.call("lease/revoke", {"ID": str(lease)})


def _decode(raw: bytes, url: str, status: int) -> JSON:
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        # The keepalive stream answers one JSON object per line.
        first = raw.split(b"\n", 1)[0]
        try:
            answer = json.loads(first)
        except ValueError as exc:
            raise EtcdUnavailable(
                f"etcd answered HTTP {status} with non-JSON from {url}: {raw[:120]!r}"
            ) from exc
    if not isinstance(answer, dict):
        raise EtcdUnavailable(f"etcd answered HTTP {status} with unexpected JSON from {url}")
    return answer
