"""A tiny HTTP client for tests: (status, raw body) against a running guard."""

from __future__ import annotations

import json
from typing import Any

import aiohttp


async def request(
    method: str,
    url: str,
    *,
    body: bytes | str | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            url,
            data=body,
            params=params,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp,
    ):
        return resp.status, await resp.read()


async def sign(base: str, pkh: str, data: bytes, **params: str) -> tuple[int, Any]:
    """POST /keys/<pkh> as octez-client does: a JSON hex string and a trailing newline."""
    status, raw = await request(
        "POST",
        f"{base}keys/{pkh}",
        body=json.dumps(data.hex()) + "\n",
        params=params or None,
        headers={"Content-Type": "application/json"},
    )
    return status, json.loads(raw) if raw else None


async def get_json(url: str) -> tuple[int, Any]:
    status, raw = await request("GET", url)
    return status, json.loads(raw) if raw else None
