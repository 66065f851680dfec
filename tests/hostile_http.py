"""Raw HTTP/1.1 for hostile-input tests: bytes exactly as written, no client-side normalisation,
and the state a test compares before and after (`hwm show --json` and the journal's signed
lines)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from signer_guard.cli import main as cli_main


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after this response

    def json(self) -> object:
        return json.loads(self.body)


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def http(
    method: str,
    target: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    host: str | None = "127.0.0.1",
    length: bool = True,
) -> bytes:
    """One request, byte for byte. `length=False` leaves out Content-Length."""
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    hdrs = {"Connection": "close"}
    if body and length:
        hdrs["Content-Length"] = str(len(body))
    hdrs.update(headers or {})
    lines.extend(f"{k}: {v}" for k, v in hdrs.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_response(raw: bytes, closed: bool) -> RawResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    assert len(parts) >= 2 and parts[0].startswith("HTTP/"), f"not an HTTP response: {raw[:200]!r}"
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return RawResponse(int(parts[1]), headers, body, closed)


async def send_raw(port: int, data: bytes, *, timeout: float = 15.0) -> RawResponse:
    """Send `data`, read until the server closes the connection (requests say Connection: close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return parse_response(raw, closed=True)


_CLI_LOCK = threading.Lock()


def _hwm_show_sync(store: str) -> str:
    out = io.StringIO()
    with _CLI_LOCK, contextlib.redirect_stdout(out):
        code = cli_main(["hwm", "show", "--json", "--store", store])
    assert code == 0, f"hwm show failed with exit code {code}"
    return out.getvalue()


async def hwm_show(store: str) -> str:
    """`signer-guard hwm show --json`, run in this process (the real command, without the
    interpreter start-up), off the event loop."""
    return await asyncio.to_thread(_hwm_show_sync, store)


def signed_lines(journal: Path) -> list[str]:
    if not journal.exists():
        return []
    return [
        line
        for line in journal.read_text().splitlines()
        if json.loads(line)["decision"] == "signed"
    ]


async def state(store: str, journal: Path) -> tuple[str, list[str]]:
    return await hwm_show(store), signed_lines(journal)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def assert_trace(resp: RawResponse, fragment: str = "") -> str:
    """The body is the Octez failure trace (one entry) and its msg contains `fragment`."""
    assert resp.headers.get("content-type", "").startswith("application/json"), resp
    body = resp.json()
    assert isinstance(body, list) and len(body) == 1, body
    entry = body[0]
    assert set(entry) == {"kind", "id", "msg"}, entry
    assert entry["kind"] == "temporary" and entry["id"] == "failure", entry
    msg = str(entry["msg"])
    assert fragment in msg, (fragment, msg)
    assert "Traceback" not in msg
    return msg
