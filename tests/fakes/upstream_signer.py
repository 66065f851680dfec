"""A fake octez-signer: the Octez remote-signer HTTP protocol (remote-signer-api.md) backed by
software keys, for tests of the upstream backend and of whole guards.

In-process::

    async with FakeUpstreamSigner([secret]) as fake:
        backend = UpstreamBackend(fake.key_url(secret.public_key.pkh))

As a subprocess (prints its port on stdout when ready, stops on SIGTERM/SIGINT)::

    python -m tests.fakes.upstream_signer --port 0 --key edsk… --log signed.jsonl [--hwm]
        [--require-auth edpk…] [--delay 0.5] [--base /signer]

Every signature it hands out is first appended to the JSON-lines log (`pkh`, `data` hex,
`signature`, `version`, `at`): crash tests read it as the backend's own record of what it signed.
`behaviour` makes it misbehave: answer slowly, answer an octez HWM refusal, return a wrong
signature, answer any status and body; `refuse_connections()` closes its port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiohttp import web

from signer_guard import codec, keys

_HWM_KINDS = {0x11: "block", 0x12: "preattestation", 0x13: "attestation"}


@dataclass
class Behaviour:
    """How the fake misbehaves; tests change the fields while it runs."""

    #: Seconds to wait after signing (and logging) before answering.
    delay: float = 0.0
    #: Answer every POST with octez-signer's 500 HWM trace, signing nothing.
    hwm_error: bool = False
    #: Answer with a well-formed signature over other bytes.
    wrong_signature: bool = False
    #: Answer every POST with this (status, raw JSON body), signing nothing.
    respond: tuple[int, str] | None = None
    #: Answer GET /keys/<pkh> with this public key instead of the key's own.
    public_key: str | None = None


@dataclass(frozen=True)
class Received:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, str]
    body: str


@dataclass
class _Mark:
    level: int
    round: int
    digest: bytes
    signature: str


def trace(msg: str) -> list[dict[str, str]]:
    """octez's error trace for a `failure`."""
    return [{"kind": "temporary", "id": "failure", "msg": msg}]


@dataclass
class FakeUpstreamSigner:
    secrets: Sequence[keys.SecretKey]
    log_path: Path | None = None
    require_auth: Sequence[keys.PublicKey] = ()
    hwm: bool = False
    base: str = ""
    port: int = 0
    behaviour: Behaviour = field(default_factory=Behaviour)
    requests: list[Received] = field(default_factory=list)
    signatures: list[dict[str, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base = self.base.rstrip("/")
        self._keys = {sk.public_key.pkh: sk for sk in self.secrets}
        self._marks: dict[tuple[str, str, str], _Mark] = {}
        self._lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL: `http://127.0.0.1:PORT[/base]`."""
        return f"http://127.0.0.1:{self.port}{self.base}"

    def key_url(self, pkh: str) -> str:
        return f"{self.url}/{pkh}"

    async def start(self) -> None:
        app = web.Application()
        b = self.base
        app.router.add_get(b + "/authorized_keys", self._authorized_keys)
        app.router.add_get(b + "/keys/{pkh}", self._public_key)
        app.router.add_post(b + "/keys/{pkh}", self._sign)
        app.router.add_get(b + "/bls_prove_possession/{pkh}", self._prove_possession)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def refuse_connections(self) -> None:
        """Close the port and every open connection (connections are then refused)."""
        await self.stop()

    async def accept_connections(self) -> None:
        """Listen again on the same port."""
        if self._runner is None:
            await self.start()

    async def __aenter__(self) -> FakeUpstreamSigner:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- handlers ----------------------------------------------------------------------------

    def _note(self, request: web.Request, body: str = "") -> None:
        self.requests.append(Received(request.method, request.path, dict(request.query), body))

    async def _not_found(self, request: web.Request) -> web.Response:
        self._note(request)
        return web.Response(status=404)

    async def _authorized_keys(self, request: web.Request) -> web.Response:
        self._note(request)
        if not self.require_auth:
            return web.json_response({})
        return web.json_response({"authorized_keys": [pk.pkh for pk in self.require_auth]})

    async def _public_key(self, request: web.Request) -> web.Response:
        self._note(request)
        sk = self._keys.get(request.match_info["pkh"])
        if sk is None:
            return web.Response(status=404)
        return web.json_response({"public_key": self.behaviour.public_key or sk.public_key.b58})

    async def _prove_possession(self, request: web.Request) -> web.Response:
        self._note(request)
        pkh = request.match_info["pkh"]
        sk = self._keys.get(pkh)
        if sk is None:
            return web.Response(status=404)
        if not sk.public_key.pkh.startswith("tz4"):
            return web.json_response(
                trace("Request to prove possession is not allowed."), status=500
            )
        # The fake proves only the key it holds: a different bls_pk is refused.
        target = request.query.get("bls_pk")
        if target is not None and target != sk.public_key.b58:
            return web.json_response(trace(f"bls_pk {target} is not the key of {pkh}"), status=500)
        pop = keys.signature_b58("bls12_381", sk.prove_possession())
        return web.json_response({"bls_prove_possession": pop})

    async def _sign(self, request: web.Request) -> web.Response:
        text = await request.text()
        self._note(request, text)
        pkh = request.match_info["pkh"]
        sk = self._keys.get(pkh)
        if sk is None:
            return web.Response(status=404)
        version: int | None = None
        if "version" in request.query:
            raw_version = request.query["version"]
            if raw_version not in ("0", "1", "2", "3"):
                return web.json_response(trace(f"invalid version {raw_version!r}"), status=400)
            version = int(raw_version)
        try:
            hex_text = json.loads(text)
            if not isinstance(hex_text, str):
                raise ValueError("body is not a JSON string")
            data = codec.parse_hex(hex_text)
        except ValueError as e:
            return web.json_response(trace(f"bad request body: {e}"), status=400)
        if self.require_auth:
            refusal = self._check_auth(pkh, data, request.query.get("authentication"))
            if refusal is not None:
                return web.json_response(trace(refusal), status=500)
        behaviour = self.behaviour
        if behaviour.respond is not None:
            status, body = behaviour.respond
            return web.Response(status=status, text=body, content_type="application/json")
        if behaviour.hwm_error:
            return web.json_response(trace(_hwm_text(data)), status=500)
        async with self._lock:
            try:
                signature = await self._sign_locked(sk, pkh, data, version)
            except _Refused as e:
                return web.json_response(trace(str(e)), status=500)
            except ValueError as e:
                return web.json_response(trace(f"signing failed: {e}"), status=500)
        if behaviour.delay > 0:
            await asyncio.sleep(behaviour.delay)
        return web.json_response({"signature": signature})

    def _check_auth(self, pkh: str, data: bytes, authentication: str | None) -> str | None:
        if not authentication:
            return "missing authentication signature field"
        try:
            _, raw = keys.parse_signature(authentication)
        except ValueError:
            return "invalid authentication signature"
        payload = keys.authentication_payload(pkh, data)
        if any(pk.verify(raw, payload) for pk in self.require_auth):
            return None
        return "invalid authentication signature"

    async def _sign_locked(
        self, sk: keys.SecretKey, pkh: str, data: bytes, version: int | None
    ) -> str:
        mark_key: tuple[str, str, str] | None = None
        request: codec.SigningRequest | None = None
        if self.hwm and data[:1] and data[0] in _HWM_KINDS:
            try:
                request = codec.decode(data)
            except codec.DecodeError as e:
                raise _Refused(f"cannot decode the request: {e}") from None
            kind = request.hwm_kind
            assert kind is not None and request.chain_id is not None
            assert request.level is not None and request.round is not None
            mark_key = (kind, request.chain_id, pkh)
            mark = self._marks.get(mark_key)
            if mark is not None:
                if (request.level, request.round) == (mark.level, mark.round):
                    if request.digest == mark.digest:
                        return mark.signature  # octez-signer answers an identical retry
                    raise _Refused(
                        f"{kind} level {request.level} and round {request.round} "
                        "already signed with different data"
                    )
                if request.level < mark.level:
                    raise _Refused(
                        f"{kind} level {request.level} below high watermark {mark.level}"
                    )
                if request.level == mark.level and request.round < mark.round:
                    raise _Refused(
                        f"{kind} level {request.level} and round {request.round} not above "
                        f"high watermark ({mark.level},{mark.round})"
                    )
        signed = data + b"\x00" if self.behaviour.wrong_signature else data
        raw = sk.sign(signed, version=version)
        signature = keys.signature_b58(sk.public_key.curve, raw)
        line: dict[str, object] = {
            "at": time.time(),
            "pkh": pkh,
            "data": data.hex(),
            "signature": signature,
            "version": version,
        }
        self.signatures.append(line)
        if self.log_path is not None:
            await asyncio.to_thread(_append_line, self.log_path, line)
        if mark_key is not None and request is not None:
            assert request.level is not None and request.round is not None
            self._marks[mark_key] = _Mark(request.level, request.round, request.digest, signature)
        return signature


class _Refused(Exception):
    """The fake's own HWM refused (octez-signer: 500 with a trace)."""


def _hwm_text(data: bytes) -> str:
    kind = _HWM_KINDS.get(data[0], "request") if data else "request"
    try:
        request = codec.decode(data)
    except codec.DecodeError:
        return f"{kind} level below high watermark"
    return (
        f"{kind} level {request.level} and round {request.round} already signed with different data"
    )


def _append_line(path: Path, line: dict[str, object]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


# -- subprocess entry point ------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.fakes.upstream_signer")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    p.add_argument("--key", action="append", default=[], required=True, help="secret key (b58)")
    p.add_argument("--log", type=Path, help="JSON-lines log of every signature handed out")
    p.add_argument("--require-auth", action="append", default=[], help="authorized public key")
    p.add_argument("--hwm", action="store_true", help="octez-like high watermark per kind")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to wait before answering")
    p.add_argument("--base", default="", help="base path prefix, e.g. /signer")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeUpstreamSigner(
        [keys.SecretKey.from_b58(s) for s in args.key],
        log_path=args.log,
        require_auth=[keys.PublicKey.from_b58(pk) for pk in args.require_auth],
        hwm=args.hwm,
        base=args.base,
        port=args.port,
        behaviour=Behaviour(delay=args.delay),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await fake.start()
    try:
        print(fake.port, flush=True)
        await stop.wait()
    finally:
        await fake.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except (ValueError, OSError) as e:
        print(f"fake upstream signer: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
