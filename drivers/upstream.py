"""Upstream backend: any Octez-compatible HTTP remote signer (octez-signer, `tezsign run`,
Signatory, another guard), as in remote-signer-api.md.

Key URI: `http(s)://HOST:PORT[/base]/PKH`. The last path component is the pkh; everything before it
is the base, so the backend calls `<base>/keys/<PKH>`, `<base>/authorized_keys` and
`<base>/bls_prove_possession/<PKH>`.

Outcome classes of a sign call (the guard never re-sends bytes, see drivers/base.py):
- the connection could not be made (refused, connect timeout, DNS, TLS): nothing was sent →
  `BackendUnavailable`;
- anything that goes wrong after the request may have been sent (timeout, disconnect, a 200
  without a usable signature) → `UnknownOutcome`;
- an HTTP error answer → `DeviceHWMRefusal` for the upstream's HWM refusals, else `BackendError`.
aiohttp never retries a POST by itself, so one `sign` is at most one request upstream.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Final

import aiohttp
import yarl

from drivers.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    DeviceHWMRefusal,
    NotSupported,
    UnknownOutcome,
)
from signer_guard import b58, keys

DEFAULT_CONNECT_TIMEOUT: Final = 1.0
DEFAULT_SIGN_TIMEOUT: Final = 5.0
DEFAULT_PROBE_TIMEOUT: Final = 1.0
#: A successful answer this recent makes `ensure_ready` skip its probe.
DEFAULT_FRESH_WINDOW: Final = 2.0
#: Longest upstream message carried into our errors.
MAX_MESSAGE: Final = 300
#: Keep idle connections shorter than common server idle timeouts (TezSign's Go server: 10 s), so a
#: POST is not written into a connection the server is closing.
KEEPALIVE_TIMEOUT: Final = 5.0
_JSON_HEADERS: Final = {"Content-Type": "application/json"}

_HWM_MARKERS: Final = ("high watermark", "already signed with different data")
_POP_REFUSED: Final = "prove possession is not allowed"
_PKH_PREFIXES: Final = ("tz1", "tz2", "tz3", "tz4")


class UpstreamURIError(ValueError):
    """A key URI that is not `http(s)://HOST:PORT[/base]/PKH`."""


def parse_upstream_uri(uri: str) -> tuple[str, str]:
    """Split a key URI into (base URL without trailing slash, pkh)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.lower() not in ("http", "https"):
        raise UpstreamURIError(f"upstream key URI must start with http:// or https://: {uri!r}")
    if not parts.hostname:
        raise UpstreamURIError(f"upstream key URI has no host: {uri!r}")
    if parts.query or parts.fragment:
        raise UpstreamURIError(f"upstream key URI must not have a query or fragment: {uri!r}")
    try:
        _ = parts.port  # raises on a malformed port
    except ValueError:
        raise UpstreamURIError(f"upstream key URI has an invalid port: {uri!r}") from None
    base_path, _, pkh = parts.path.rstrip("/").rpartition("/")
    if not pkh:
        raise UpstreamURIError(f"upstream key URI must end with the key's pkh (…/tz1…): {uri!r}")
    try:
        b58.identify(pkh, _PKH_PREFIXES)
    except b58.Base58Error as e:
        raise UpstreamURIError(
            f"last path component of upstream key URI {uri!r} is not a tz1/tz2/tz3/tz4 pkh: {e}"
        ) from None
    base = urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc, base_path, "", ""))
    return base, pkh


def upstream_message(status: int, text: str) -> str:
    """The upstream's error text: an Octez trace's `msg`s, TezSign's `error`, or plain text."""
    message = ""
    try:
        body: object = json.loads(text)
    except ValueError:
        message = text.strip()
    else:
        if isinstance(body, list):
            parts = []
            for item in body:
                if isinstance(item, dict):
                    found = item.get("msg") or item.get("id") or item.get("kind")
                    if found:
                        parts.append(str(found))
            message = "; ".join(parts)
        elif isinstance(body, dict) and body.get("error"):
            message = str(body["error"])
        if not message:
            message = text.strip()
    message = " ".join(message.split())  # one line, whatever the server sent
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return message or f"HTTP {status} with an empty body"


def is_hwm_refusal(status: int, message: str) -> bool:
    """An upstream HWM refusal: any 409, or octez-signer's 500 with an HWM trace."""
    if status == 409:
        return True
    lowered = message.lower()
    return status == 500 and any(marker in lowered for marker in _HWM_MARKERS)


class UpstreamBackend(Backend):
    """One key served by an Octez-compatible HTTP signer."""

    backend_type = "upstream"

    def __init__(
        self,
        uri: str,
        *,
        auth_key: keys.SecretKey | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        sign_timeout: float = DEFAULT_SIGN_TIMEOUT,
        probe_timeout: float = DEFAULT_PROBE_TIMEOUT,
        fresh_window: float = DEFAULT_FRESH_WINDOW,
    ) -> None:
        super().__init__(uri)
        self.base, self.uri_pkh = parse_upstream_uri(uri)
        self.auth_key = auth_key
        self.connect_timeout = connect_timeout
        self.sign_timeout = max(sign_timeout, connect_timeout)
        self._sign_timeout = aiohttp.ClientTimeout(total=self.sign_timeout, connect=connect_timeout)
        self._sign_urls: dict[int | None, yarl.URL] = {}
        self.probe_timeout = probe_timeout
        self.fresh_window = fresh_window
        self._session: aiohttp.ClientSession | None = None
        self._public_key_obj: keys.PublicKey | None = None
        #: pkhs the upstream accepts authentication from; None = no authentication required.
        self._authorized: list[str] | None = None
        self._last_ok: float | None = None

    # -- Backend interface ---------------------------------------------------------------

    @property
    def display_uri(self) -> str:
        parts = urllib.parse.urlsplit(self.uri)
        if parts.password is None and parts.username is None:
            return self.uri
        host = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))

    @property
    def auth_required(self) -> bool:
        """Whether the upstream's last `/authorized_keys` answer asked for authentication."""
        return self._authorized is not None

    async def start(self) -> None:
        body = await self._get_json(f"/keys/{self.uri_pkh}", self.sign_timeout, "public key")
        text = body.get("public_key") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise BackendError(
                f"upstream {self.display_uri}: GET /keys/{self.uri_pkh} did not return a public_key"
            )
        try:
            public_key = keys.PublicKey.from_b58(text)
        except ValueError as e:
            raise BackendError(
                f"upstream {self.display_uri} returned an invalid public key {text[:16]!r}: {e}"
            ) from None
        if public_key.pkh != self.uri_pkh:
            raise BackendError(
                f"upstream {self.display_uri} returned public key {public_key.b58} whose hash is "
                f"{public_key.pkh}, not {self.uri_pkh}"
            )
        await self._refresh_authorized(self.sign_timeout)
        self._public_key_obj = public_key
        self._public_key = public_key.b58
        self._pkh = public_key.pkh

    async def ensure_ready(self) -> None:
        if self._public_key_obj is None:
            raise BackendUnavailable(f"upstream {self.display_uri} not started")
        if self._last_ok is None or time.monotonic() - self._last_ok > self.fresh_window:
            try:
                await self._refresh_authorized(self.probe_timeout)
            except BackendUnavailable:
                raise
            except BackendError as e:
                raise BackendUnavailable(str(e)) from None
        problem = self._auth_problem()
        if problem is not None:
            raise BackendError(problem)

    async def sign(self, data: bytes, *, version: int | None = None) -> str:
        public_key = self._public_key_obj
        if public_key is None:
            raise BackendUnavailable(f"upstream {self.display_uri} not started")
        url = self._sign_url(version)
        if self._authorized is not None:
            url = url.update_query(authentication=self._authentication(data))
        try:
            async with self._client().post(
                url,
                data=f'"{data.hex()}"',
                headers=_JSON_HEADERS,
                timeout=self._sign_timeout,
            ) as resp:
                status = resp.status
                text = (await resp.read()).decode("utf-8", errors="replace")
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
            self._last_ok = None
            raise BackendUnavailable(f"upstream {self.display_uri} unreachable: {e}") from None
        except TimeoutError:
            self._last_ok = None
            raise UnknownOutcome(
                f"upstream {self.display_uri} did not answer in time; it may have signed"
            ) from None
        except aiohttp.ClientError as e:
            self._last_ok = None
            raise UnknownOutcome(
                f"upstream {self.display_uri} connection failed during the request "
                f"({type(e).__name__}: {e}); it may have signed"
            ) from None
        if status != 200:
            self._raise_for_status(status, text, "sign")
        self._last_ok = time.monotonic()
        return self._signature_from(text, public_key)

    async def prove_possession(self, bls_pk: str | None = None) -> str:
        if not self.uri_pkh.startswith("tz4"):
            raise NotSupported("Request to prove possession is not allowed.")
        path = f"/bls_prove_possession/{self.uri_pkh}"
        params = {"bls_pk": bls_pk} if bls_pk is not None else {}
        body = await self._get_json(path, self.sign_timeout, "proof of possession", params)
        pop = body.get("bls_prove_possession") if isinstance(body, dict) else None
        if not isinstance(pop, str) or not pop.startswith("BLsig"):
            raise BackendError(
                f"upstream {self.display_uri}: GET {path} did not return a BLsig proof"
            )
        return pop

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- helpers -------------------------------------------------------------------------

    def _sign_url(self, version: int | None) -> yarl.URL:
        """`<base>/keys/<pkh>[?version=N]`, parsed once per version (the hot path)."""
        url = self._sign_urls.get(version)
        if url is None:
            url = yarl.URL(f"{self.base}/keys/{self.uri_pkh}")
            if version is not None:
                url = url.with_query(version=str(version))
            self._sign_urls[version] = url
        return url

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_TIMEOUT)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def _refresh_authorized(self, total: float) -> None:
        body = await self._get_json("/authorized_keys", total, "authorized keys")
        if not isinstance(body, dict):
            raise BackendError(
                f"upstream {self.display_uri}: /authorized_keys did not return a JSON object"
            )
        listed = body.get("authorized_keys")
        if listed is None:
            self._authorized = None
        elif isinstance(listed, list) and all(isinstance(x, str) for x in listed):
            self._authorized = [str(x) for x in listed]
        else:
            raise BackendError(
                f"upstream {self.display_uri}: /authorized_keys has an unexpected shape"
            )

    async def _get_json(
        self, path: str, total: float, what: str, params: dict[str, str] | None = None
    ) -> object:
        """GET `<base><path>`; connection problems and timeouts → BackendUnavailable."""
        timeout = aiohttp.ClientTimeout(total=total, connect=min(self.connect_timeout, total))
        try:
            async with self._client().get(
                self.base + path, params=params or {}, timeout=timeout
            ) as resp:
                status = resp.status
                text = await resp.text(errors="replace")
        except TimeoutError:
            raise BackendUnavailable(
                f"upstream {self.display_uri} did not answer GET {path} within {total:g} s"
            ) from None
        except aiohttp.ClientError as e:
            raise BackendUnavailable(f"upstream {self.display_uri} unreachable: {e}") from None
        if status != 200:
            self._raise_for_status(status, text, what)
        self._last_ok = time.monotonic()
        try:
            return json.loads(text)
        except ValueError:
            raise BackendError(
                f"upstream {self.display_uri}: GET {path} did not return JSON"
            ) from None

    def _raise_for_status(self, status: int, text: str, what: str) -> None:
        message = upstream_message(status, text)
        if what == "sign" and is_hwm_refusal(status, message):
            raise DeviceHWMRefusal(f"upstream refused (HTTP {status}): {message}")
        if what == "proof of possession" and _POP_REFUSED in message.lower():
            raise NotSupported(message)
        if status == 404:
            raise BackendError(
                f"upstream {self.display_uri} does not know key {self.uri_pkh} (HTTP 404)"
            )
        raise BackendError(f"upstream {what} failed (HTTP {status}): {message}")

    def _auth_problem(self) -> str | None:
        """Why a sign call cannot authenticate as the upstream asks, or None."""
        if self._authorized is None:
            return None
        if self.auth_key is None:
            return f"upstream {self.display_uri}: upstream requires authentication"
        if self.auth_key.pkh not in self._authorized:
            return (
                f"upstream {self.display_uri} accepts authentication only from "
                f"{', '.join(self._authorized) or 'no key'}, not from upstream_auth_key "
                f"{self.auth_key.pkh}"
            )
        return None

    def _authentication(self, data: bytes) -> str:
        problem = self._auth_problem()
        if problem is not None or self.auth_key is None:
            raise BackendError(problem or "upstream requires authentication")
        raw = self.auth_key.sign(keys.authentication_payload(self.uri_pkh, data))
        return keys.signature_b58(self.auth_key.curve, raw)

    def _signature_from(self, text: str, public_key: keys.PublicKey) -> str:
        """The b58 signature of a 200 body, with the key's curve-specific prefix."""
        try:
            body: object = json.loads(text)
        except ValueError:
            body = None
        sig = body.get("signature") if isinstance(body, dict) else None
        if not isinstance(sig, str):
            raise UnknownOutcome(
                f"upstream {self.display_uri} answered 200 without a signature "
                f"({upstream_message(200, text)}); it may have signed"
            )
        try:
            curve, raw = keys.parse_signature(sig)
        except ValueError as e:
            raise UnknownOutcome(
                f"upstream {self.display_uri} returned an unreadable signature: {e}"
            ) from None
        if curve is not None and curve != public_key.curve:
            raise BackendError(
                f"upstream {self.display_uri} returned a {curve} signature for "
                f"{public_key.curve} key {self.uri_pkh}"
            )
        if curve is not None:
            return sig  # already carries the key's own prefix (checked above)
        try:
            return keys.signature_b58(public_key.curve, raw)
        except ValueError as e:
            raise BackendError(
                f"upstream {self.display_uri} returned a signature of the wrong size: {e}"
            ) from None
