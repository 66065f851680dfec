"""The Octez remote-signer HTTP protocol, byte for byte (remote-signer-api.md), plus /status,
/healthz and /metrics. Every 200 body has exactly the documented fields."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from drivers.base import BackendError
from signer_guard import b58, codec, faults
from signer_guard.faults import crash_point
from signer_guard.guard import Guard, Refusal, UnknownKey

log = logging.getLogger("signer_guard.http")

GUARD: web.AppKey[Guard] = web.AppKey("guard", Guard)
JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def ok(body: dict[str, object]) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), content_type=JSON)


def trace(status: int, msg: str) -> web.Response:
    """The Octez `failure` error trace used for every refusal."""
    body = [{"kind": "temporary", "id": "failure", "msg": msg}]
    return web.Response(
        status=status, body=json.dumps(body, separators=(",", ":")).encode(), content_type=JSON
    )


def empty(status: int) -> web.Response:
    return web.Response(status=status, body=b"")


def _valid_pkh(text: str) -> bool:
    try:
        b58.identify(text, ("tz1", "tz2", "tz3", "tz4"))
    except ValueError:
        return False
    return True


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """404/405 with empty bodies; oversized bodies 413; never a traceback."""
    guard = request.app[GUARD]
    endpoint = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "other"
    )
    try:
        resp = await handler(request)
    except web.HTTPRequestEntityTooLarge:
        resp = trace(413, f"request body larger than {request.app['max_body']} bytes")
    except web.HTTPException as exc:
        resp = empty(exc.status) if exc.status in (404, 405) else trace(exc.status, exc.reason)
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        resp = trace(500, "internal error in signer-guard (see its log)")
    guard.metrics.requests.labels(endpoint, str(resp.status)).inc()
    return resp


async def authorized_keys(request: web.Request) -> web.Response:
    guard = request.app[GUARD]
    if not guard.authorizer.required:
        return ok({})
    return ok({"authorized_keys": guard.authorizer.pkhs})


async def get_public_key(request: web.Request) -> web.Response:
    guard = request.app[GUARD]
    pkh = request.match_info["pkh"]
    try:
        slot = guard.slot_for(pkh)
    except UnknownKey:
        return empty(404)
    return ok({"public_key": slot.backend.public_key})


def _parse_version(request: web.Request) -> int | None:
    raw = request.query.get("version")
    if raw is None:
        return None
    if raw not in ("0", "1", "2", "3"):
        raise Refusal(400, "malformed", f"unsupported version {raw[:16]!r} (expected 0..3)")
    return int(raw)


async def _read_hex_body(request: web.Request) -> bytes:
    raw = await request.read()
    try:
        text = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Refusal(400, "malformed", "body is not a JSON string of hex bytes") from None
    if not isinstance(text, str):
        raise Refusal(400, "malformed", "body is not a JSON string of hex bytes")
    if not text.strip():
        raise Refusal(400, "malformed", "empty request: nothing to sign")
    try:
        return codec.parse_hex(text)
    except codec.DecodeError as exc:
        raise Refusal(400, "malformed", f"body is not valid hex: {exc}") from None


async def sign(request: web.Request) -> web.Response:
    guard = request.app[GUARD]
    pkh = request.match_info["pkh"]
    if pkh not in guard.by_pkh:
        return empty(404)
    try:
        version = _parse_version(request)
        data = await _read_hex_body(request)
        crash_point("received")
        signature = await guard.sign(
            pkh, data, version=version, authentication=request.query.get("authentication")
        )
    except UnknownKey:
        return empty(404)
    except Refusal as exc:
        return trace(exc.status, exc.message)
    resp = ok({"signature": signature})
    if faults.enabled():  # write the answer now, so a crash can follow it
        await resp.prepare(request)
        await resp.write_eof()
        crash_point("response_sent")
    return resp


async def prove_possession(request: web.Request) -> web.Response:
    guard = request.app[GUARD]
    pkh = request.match_info["pkh"]
    try:
        slot = guard.slot_for(pkh)
    except UnknownKey:
        return empty(404)
    try:
        pop = await slot.backend.prove_possession(request.query.get("bls_pk"))
    except BackendError as exc:
        return trace(exc.status, str(exc))
    return ok({"bls_prove_possession": pop})


async def status(request: web.Request) -> web.Response:
    return ok(await request.app[GUARD].status())


async def healthz(request: web.Request) -> web.Response:
    return ok({"ok": True})


async def metrics(request: web.Request) -> web.Response:
    guard = request.app[GUARD]
    return web.Response(
        body=guard.metrics.render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def not_found(request: web.Request) -> web.Response:
    return empty(404)


def make_app(guard: Guard, *, max_body: int = 16 * 1024) -> web.Application:
    app = web.Application(client_max_size=max_body, middlewares=[errors_middleware])
    app[GUARD] = guard
    app["max_body"] = max_body
    app.router.add_get("/authorized_keys", authorized_keys)
    app.router.add_get("/keys/{pkh}", get_public_key)
    app.router.add_post("/keys/{pkh}", sign)
    app.router.add_get("/bls_prove_possession/{pkh}", prove_possession)
    app.router.add_get("/status", status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
