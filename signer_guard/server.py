"""The Octez remote-signer HTTP protocol, byte for byte (remote-signer-api.md), plus /status,
/healthz and /metrics. Every 200 body has exactly the documented fields.

Hostile input (docs/safety.md): paths are matched like octez-signer's router does (split on `/`,
empty segments ignored, nothing else normalised, so `..` never climbs); the body must arrive within
`BODY_TIMEOUT_SECONDS` and fit in `max_body` bytes; requests that look like they come from a web
browser (an `Origin` header, or, unless remote access is allowed, a `Host` that is not a loopback
name) are refused before any handler runs. The content type is not looked at (as the spec says),
and bodies are never decompressed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from drivers.base import BackendError
from signer_guard import codec, faults
from signer_guard.faults import crash_point
from signer_guard.guard import Guard, Refusal, UnknownKey

log = logging.getLogger("signer_guard.http")
#: aiohttp's HTTP parser reports malformed requests here, one line each, never a traceback.
protocol_log = logging.getLogger("signer_guard.http.protocol")

#: After its headers, a request's body must be complete within this many seconds (else 408).
BODY_TIMEOUT_SECONDS: Final = 5.0
#: A connection must deliver a request's headers within this many seconds of opening or of its
#: previous response, else it is closed (aiohttp's keep-alive timer; set in `serve`).
HEADER_TIMEOUT_SECONDS: Final = 5.0
#: How long the body of a refused request is still drained before the connection is closed.
LINGER_SECONDS: Final = 1.0
#: Query parameters that mean something; each may appear at most once.
SINGLE_PARAMS: Final = ("version", "authentication", "bls_pk")

GUARD: web.AppKey[Guard] = web.AppKey("guard", Guard)
MAX_BODY: web.AppKey[int] = web.AppKey("max_body", int)
BODY_TIMEOUT: web.AppKey[float] = web.AppKey("body_timeout", float)
ALLOW_REMOTE: web.AppKey[bool] = web.AppKey("allow_remote", bool)
JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PkhHandler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]


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


def closing(resp: web.Response) -> web.Response:
    """The connection is closed after this response (its unread body is not waited for)."""
    resp.force_close()
    return resp


class OneLineErrors(logging.Filter):
    """Turn aiohttp's parser tracebacks into one warning line: a client's malformed bytes are
    not our error, and must not flood the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            detail = " ".join(str(exc).split())[:200]
            record.msg = f"malformed HTTP request refused ({record.getMessage()}): {detail}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


protocol_log.addFilter(OneLineErrors())


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved request: the metrics label of its endpoint and the handler to run."""

    label: str
    call: Handler


ROUTE: web.RequestKey[Route] = web.RequestKey("route", Route)


# -- checks before any handler ------------------------------------------------------------------
def _is_loopback_host(host_header: str) -> bool:
    host = host_header.strip()
    if host.startswith("["):  # [::1]:6732
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _precheck(request: web.Request) -> web.Response | None:
    """Browser and DNS-rebinding protections, duplicated parameters (docs/safety.md)."""
    host = request.headers.get("Host")
    if not request.app[ALLOW_REMOTE] and host is not None and not _is_loopback_host(host):
        return closing(
            trace(
                403,
                f"Host header {host[:64]!r} is not a loopback address; refused "
                "(DNS rebinding protection; set allow_remote to serve other names)",
            )
        )
    if "Origin" in request.headers:
        return closing(trace(403, "requests from web pages (Origin header) are refused"))
    for name in SINGLE_PARAMS:
        if len(request.query.getall(name, ())) > 1:
            return trace(400, f"query parameter {name!r} given more than once")
    return None


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """404 with empty bodies; browser requests refused; never a traceback."""
    guard = request.app[GUARD]
    route = resolve(request.method, request.rel_url.raw_path)
    endpoint = route.label if route is not None else "other"
    try:
        if route is None:
            resp: web.StreamResponse = empty(404)
        else:
            request[ROUTE] = route
            resp = _precheck(request) or await handler(request)
    except web.HTTPException as exc:
        resp = empty(exc.status) if exc.status in (404, 405) else trace(exc.status, exc.reason)
    except Exception:
        log.exception("internal error on %s %r", request.method, request.raw_path[:200])
        resp = trace(500, "internal error in signer-guard (see its log)")
    guard.metrics.requests.labels(endpoint, str(resp.status)).inc()
    return resp


# -- handlers -----------------------------------------------------------------------------------
async def authorized_keys(request: web.Request) -> web.Response:
    guard = request.app[GUARD]
    if not guard.authorizer.required:
        return ok({})
    return ok({"authorized_keys": guard.authorizer.pkhs})


async def get_public_key(request: web.Request, pkh: str) -> web.Response:
    guard = request.app[GUARD]
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


def parse_body(raw: bytes) -> bytes:
    """The request bytes from a body `"<hex>"` (surrounding whitespace allowed); Refusal(400)."""
    not_string = Refusal(400, "malformed", "body is not a JSON string of hex bytes")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise not_string from None
    # Only a JSON string is valid: checking the quotes first also keeps deeply nested JSON
    # (a recursion bomb) away from the parser.
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise not_string
    try:
        value = json.loads(text)
    except ValueError:
        raise not_string from None
    if not isinstance(value, str):
        raise not_string
    if not value.strip():
        raise Refusal(400, "malformed", "empty request: nothing to sign")
    try:
        return codec.parse_hex(value)
    except codec.DecodeError as exc:
        raise Refusal(400, "malformed", f"body is not valid hex: {exc}") from None


class BodyRejected(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


async def _read_body(request: web.Request) -> bytes:
    """The raw body, at most `max_body` bytes, complete within the body deadline."""
    max_body = request.app[MAX_BODY]
    too_large = closing(trace(413, f"request body larger than {max_body} bytes"))
    if request.content_length is not None and request.content_length > max_body:
        raise BodyRejected(too_large)
    timeout = request.app[BODY_TIMEOUT]
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise BodyRejected(
            closing(trace(408, f"request body not received within {timeout:g} s"))
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise BodyRejected(too_large) from None


async def sign(request: web.Request, pkh: str) -> web.Response:
    guard = request.app[GUARD]
    if pkh not in guard.by_pkh:
        return empty(404)
    try:
        version = _parse_version(request)
        data = parse_body(await _read_body(request))
        crash_point("received")
        signature = await guard.sign(
            pkh, data, version=version, authentication=request.query.get("authentication")
        )
    except BodyRejected as exc:
        return exc.response
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


async def prove_possession(request: web.Request, pkh: str) -> web.Response:
    guard = request.app[GUARD]
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


# -- routing: octez-signer's rules, not aiohttp's ---------------------------------------------
# (method, first segment) -> (metrics label, handler); HEAD is served like GET.
_FIXED: Final[dict[tuple[str, str], tuple[str, Handler]]] = {
    ("GET", "authorized_keys"): ("/authorized_keys", authorized_keys),
    ("GET", "status"): ("/status", status),
    ("GET", "healthz"): ("/healthz", healthz),
    ("GET", "metrics"): ("/metrics", metrics),
}
_WITH_PKH: Final[dict[tuple[str, str], tuple[str, PkhHandler]]] = {
    ("GET", "keys"): ("/keys/{pkh}", get_public_key),
    ("POST", "keys"): ("/keys/{pkh}", sign),
    ("GET", "bls_prove_possession"): ("/bls_prove_possession/{pkh}", prove_possession),
}


def resolve(method: str, raw_path: str) -> Route | None:
    """The route of a raw (still percent-encoded) path, as octez-signer matches it: split on
    `/`, empty segments dropped, each segment decoded and compared literally (so `.`, `..`,
    `%2e%2e` and `%2F` match nothing)."""
    method = "GET" if method == "HEAD" else method
    segments = [urllib.parse.unquote(s) for s in raw_path.split("/") if s]
    if len(segments) == 1 and (method, segments[0]) in _FIXED:
        label, handler = _FIXED[(method, segments[0])]
        return Route(label, handler)
    if len(segments) == 2 and (method, segments[0]) in _WITH_PKH:
        label, pkh_handler = _WITH_PKH[(method, segments[0])]
        pkh = segments[1]
        return Route(label, lambda request: pkh_handler(request, pkh))
    return None


async def dispatch(request: web.Request) -> web.StreamResponse:
    """The one aiohttp route: the middleware has resolved our own route already."""
    return await request[ROUTE].call(request)


def make_app(
    guard: Guard,
    *,
    max_body: int = 16 * 1024,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    allow_remote: bool = False,
) -> web.Application:
    """The application. `serve` runs it with `runner_options()` (header timeout, logger)."""
    app = web.Application(client_max_size=max_body, middlewares=[errors_middleware])
    app[GUARD] = guard
    app[MAX_BODY] = max_body
    app[BODY_TIMEOUT] = body_timeout
    app[ALLOW_REMOTE] = allow_remote
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


def runner_options() -> dict[str, object]:
    """AppRunner options: the header/idle timeout, short lingering, one-line parser errors."""
    return {
        "access_log": None,
        "handle_signals": False,
        "keepalive_timeout": HEADER_TIMEOUT_SECONDS,
        "lingering_time": LINGER_SECONDS,
        "logger": protocol_log,
        "max_line_size": 8190,
        "max_field_size": 8190,
        "max_headers": 64,
        "auto_decompress": False,
    }
