"""`LedgerBackend`: one baking key on a Ledger Tezos Baking app, over HID or TCP (ledger.md).

All device I/O runs in one worker thread (one APDU exchange at a time, never on the event loop).
After the device goes away, a monitor task reconnects by itself (1 s period); until then
`ensure_ready` raises BackendUnavailable (503). The backend never sends SETUP, RESET, AUTHORIZE or
DEAUTHORIZE on its own; `reset_hwm` exists for `failover` to call explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, TypeVar

from drivers.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    DeviceHWM,
    DeviceHWMRefusal,
    NotSupported,
    UnknownOutcome,
)
from drivers.ledger import apdu
from drivers.ledger.apdu import AllHWM, ApduFormatError, StatusWordError
from drivers.ledger.client import BakingAppClient, SignatureMismatch, key_curve
from drivers.ledger.hid_transport import (
    HidModule,
    HidTransport,
    default_hid_module,
    enumerate_devices,
)
from drivers.ledger.tcp_transport import TcpTransport
from drivers.ledger.transport import Transport, TransportError, TransportTimeout
from drivers.ledger.uri import LedgerURI, parse_uri
from signer_guard import keys

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Module hook: when set, every LedgerBackend without an explicit `hid_module` uses this one.
HID_MODULE: HidModule | None = None

RECONNECT_INTERVAL: Final = 1.0
_OUTER_SLACK: Final = 2.0  # the worker's own timeouts fire first; this only catches a stuck call
_KINDS: Final = ("block", "preattestation", "attestation")


class _NotUsable(Exception):
    """The device answers but cannot serve this key (wrong app, key not authorized, …)."""


@dataclass(frozen=True)
class DeviceInfo:
    description: str
    version: apdu.AppVersion
    git: str
    device_id: str | None  # tz1 of 44'/1729' ed25519, when the URI named one


def _hint(exc: BaseException) -> str:
    return str(exc) if str(exc).startswith("ledger") else f"ledger: {exc}"


class LedgerBackend(Backend):
    backend_type = "ledger"

    def __init__(
        self,
        uri: str,
        *,
        hid_module: HidModule | None = None,
        timeout: float = 5.0,
        sign_timeout: float = 5.0,
        prompt_timeout: float = 120.0,
        reconnect_interval: float = RECONNECT_INTERVAL,
    ) -> None:
        super().__init__(uri)
        # A bad URI raises LedgerURIError (a ValueError), as make_backend's callers expect.
        self.target: LedgerURI = parse_uri(uri)
        self._hid_module = hid_module
        self.timeout = timeout
        self.sign_timeout = sign_timeout
        self.prompt_timeout = prompt_timeout
        self.reconnect_interval = reconnect_interval
        self._executor: ThreadPoolExecutor | None = None
        self._client: BakingAppClient | None = None  # touched only in the worker thread
        self._ready = False
        self._reason = "not started"
        self._fatal: str | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._closed = False
        self.device: DeviceInfo | None = None

    # ------------------------------------------------------------------ worker plumbing -------

    async def _call(self, fn: Callable[[], T], timeout: float) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="ledger-io")
        future = asyncio.wrap_future(self._executor.submit(fn))
        try:
            return await asyncio.wait_for(future, timeout + _OUTER_SLACK)
        except TimeoutError:
            raise TransportTimeout(
                f"ledger: no answer from the device within {timeout:g} s", sent=True
            ) from None

    def _hid(self) -> HidModule:
        return self._hid_module or HID_MODULE or default_hid_module()

    def _open_transport(self) -> tuple[Transport, BakingAppClient, str | None]:
        """Open the device named by the URI (worker thread)."""
        if self.target.tcp is not None:
            host, port = self.target.tcp
            transport: Transport = TcpTransport.open(host, port, self.timeout)
            client = self._new_client(transport)
            return transport, client, self._check_device_id(client)
        hid = self._hid()
        infos = enumerate_devices(hid)
        if not infos:
            raise TransportError("ledger: no Ledger device found (plugged in and unlocked?)")
        problems: list[str] = []
        for info in infos:
            try:
                transport = HidTransport.open(hid, info)
            except TransportError as exc:
                problems.append(str(exc))
                continue
            client = self._new_client(transport)
            try:
                return transport, client, self._check_device_id(client)
            except (TransportError, StatusWordError, ApduFormatError, _NotUsable) as exc:
                transport.close()
                problems.append(_hint(exc))
        if self.target.device_id is None:
            raise TransportError("; ".join(problems))
        raise _NotUsable(
            f"ledger: no device with id {self.target.device_id} found"
            + (f" ({'; '.join(problems)})" if problems else "")
        )

    def _new_client(self, transport: Transport) -> BakingAppClient:
        return BakingAppClient(
            transport,
            timeout=self.timeout,
            sign_timeout=self.sign_timeout,
            prompt_timeout=self.prompt_timeout,
        )

    def _check_device_id(self, client: BakingAppClient) -> str | None:
        if self.target.device_id is None:
            return None
        found = client.device_id()
        if found != self.target.device_id:
            raise _NotUsable(f"ledger: device id is {found}, not {self.target.device_id}")
        return found

    def _connect_sync(self) -> tuple[keys.PublicKey, DeviceInfo]:
        """Open, check the app, the key and its authorization (ledger.md §11 start-up checks)."""
        self._drop_sync()
        transport, client, device_id = self._open_transport()
        try:
            version = client.version()
            if not version.is_baking:
                raise _NotUsable(
                    f"ledger: the open app is {version}, not Tezos Baking; "
                    "open the Tezos Baking app"
                )
            git = client.git()
            curve, path = self.target.curve, self.target.path
            public_key = client.get_public_key(curve, path)
            auth = client.query_auth_key_with_curve()
            if not auth.authorized:
                raise _NotUsable(
                    "ledger: no baking key authorized on the device; authorize "
                    f"{curve.uri_name} {self.target.path_text} "
                    "(octez-client setup ledger to bake for …)"
                )
            if auth.curve != curve or auth.path != path:
                other = auth.curve.uri_name if auth.curve is not None else "?"
                raise _NotUsable(
                    f"ledger: the authorized baking key is {other} {apdu.format_path(auth.path)}, "
                    f"not {curve.uri_name} {self.target.path_text}; authorize this key "
                    "(octez-client setup ledger to bake for …)"
                )
            client.query_all_hwm()  # must answer 20 bytes (an app that keeps no round is refused)
        except BaseException:
            transport.close()
            raise
        self._client = client
        info = DeviceInfo(transport.description, version, git, device_id)
        return public_key, info

    def _drop_sync(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _need_client(self) -> BakingAppClient:
        if self._client is None:
            raise TransportError("ledger: device not connected")
        return self._client

    # ------------------------------------------------------------------ connection state ------

    def _learn(self, public_key: keys.PublicKey, info: DeviceInfo) -> None:
        if self._public_key is not None and public_key.b58 != self._public_key:
            self._fatal = (
                f"ledger: the device now returns {public_key.pkh} for "
                f"{self.target.curve.uri_name} {self.target.path_text}, not {self._pkh} "
                "(another device or seed); this key is disabled until restart"
            )
            log.error("%s: %s", self.display_uri, self._fatal)
            return
        self._public_key, self._pkh = public_key.b58, public_key.pkh
        self.device = info
        self._ready, self._reason = True, ""
        log.info(
            "%s: %s on %s (git %s), key %s",
            self.display_uri,
            info.version,
            info.description,
            info.git or "?",
            public_key.pkh,
        )

    def _mark_unready(self, reason: str, *, drop: bool) -> None:
        if self._ready:
            log.warning("%s: not ready: %s", self.display_uri, reason)
        self._ready, self._reason = False, reason
        if drop and self._executor is not None:
            self._executor.submit(self._drop_sync)
        if self._wake is not None:
            self._wake.set()

    async def _try_connect(self) -> None:
        try:
            public_key, info = await self._call(self._connect_sync, self.timeout * 4)
        except (TransportError, StatusWordError, ApduFormatError, _NotUsable) as exc:
            self._ready, self._reason = False, _hint(exc)
            return
        self._learn(public_key, info)

    async def _monitor_loop(self) -> None:
        assert self._wake is not None
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.reconnect_interval)
            self._wake.clear()
            if self._closed:
                return
            if self._ready or self._fatal is not None:
                continue
            await self._try_connect()
            if self._closed:
                return
            if self._ready:
                log.info("%s: reconnected", self.display_uri)

    @property
    def ready(self) -> bool:
        return self._ready and self._fatal is None

    @property
    def not_ready_reason(self) -> str:
        return self._fatal or self._reason

    # ------------------------------------------------------------------ Backend API -----------

    async def start(self) -> None:
        if self._monitor is not None:
            return
        if self._closed:
            raise BackendUnavailable(f"{self.display_uri}: closed")
        try:
            public_key, info = await self._call(self._connect_sync, self.timeout * 4)
        except TransportError as exc:
            raise BackendUnavailable(f"{_hint(exc)} ({self.display_uri})") from None
        except (StatusWordError, ApduFormatError, _NotUsable) as exc:
            raise BackendError(f"{_hint(exc)} ({self.display_uri})") from None
        self._learn(public_key, info)
        self._wake = asyncio.Event()
        self._monitor = asyncio.create_task(self._monitor_loop())

    async def ensure_ready(self) -> None:
        if self._fatal is not None:
            raise BackendUnavailable(self._fatal)
        if not self._ready:
            raise BackendUnavailable(f"{self._reason}; reconnecting to the Ledger")

    async def sign(self, data: bytes, *, version: int | None = None) -> str:
        await self.ensure_ready()
        if len(data) > apdu.MAX_DATA:
            raise BackendError(f"ledger: request longer than {apdu.MAX_DATA} bytes")
        curve, path = self.target.curve, self.target.path

        def work() -> bytes:
            return self._need_client().sign(curve, path, data)

        try:
            raw = await self._call(work, self.timeout + self.sign_timeout)
        except StatusWordError as exc:
            raise self._status_error(exc) from None
        except TransportTimeout as exc:
            self._mark_unready(str(exc), drop=True)
            raise UnknownOutcome(f"{exc}; the request may have been signed") from None
        except TransportError as exc:
            self._mark_unready(str(exc), drop=True)
            if exc.sent:
                raise UnknownOutcome(
                    f"{exc} (device lost during signing; the request may have been signed)"
                ) from None
            raise BackendError(str(exc)) from None
        except SignatureMismatch as exc:
            raise BackendError(str(exc)) from None
        public_key = keys.PublicKey.from_b58(self.public_key)
        if not public_key.verify(raw, data):
            raise BackendError("ledger: the device returned a signature that does not verify")
        return keys.signature_b58(key_curve(curve), raw)

    def _status_error(self, exc: StatusWordError) -> BackendError:
        signing = exc.ins in (apdu.Ins.SIGN, apdu.Ins.SIGN_WITH_HASH) and exc.p1 & 0x80
        if exc.sw == apdu.SW_HWM_REFUSAL and signing:
            return DeviceHWMRefusal(f"device high watermark refusal: Ledger 0x{exc.sw:04X}")
        message = f"ledger: {apdu.describe_status(exc.sw)}"
        if exc.sw in apdu.DEVICE_STATE_SWS:
            self._mark_unready(message, drop=False)
        return BackendError(message)

    async def _query(self, fn: Callable[[BakingAppClient], T], timeout: float) -> T:
        await self.ensure_ready()
        try:
            return await self._call(lambda: fn(self._need_client()), timeout)
        except StatusWordError as exc:
            raise self._status_error(exc) from None
        except TransportError as exc:
            self._mark_unready(str(exc), drop=True)
            raise BackendUnavailable(str(exc)) from None
        except ApduFormatError as exc:
            raise BackendError(f"ledger: {exc}") from None

    async def prove_possession(self, bls_pk: str | None = None) -> str:
        raise NotSupported("Request to prove possession is not allowed.")

    async def all_hwm(self) -> AllHWM:
        """QUERY_ALL_HWM: both chain slots and the main chain id (for `failover`)."""
        return await self._query(lambda c: c.query_all_hwm(), self.timeout)

    async def device_hwm(self) -> DeviceHWM:
        """The main chain slot; the app keeps one mark for all kinds, reported for each kind."""
        hwm = await self.all_hwm()
        mark = (hwm.main_level, hwm.main_round)
        return {"block": mark, "preattestation": mark, "attestation": mark}

    async def reset_hwm(self, level: int) -> None:
        """RESET: main and test HWM := (level, 0). Prompts on the device (up to prompt_timeout).

        Only for `failover`, which decides whether to call it (ledger.md §12). A rejection raises
        BackendError naming 0x6985; a timeout raises UnknownOutcome."""
        if not 0 <= level <= apdu.MAX_LEVEL:
            raise BackendError(f"ledger: level {level} out of range for RESET")
        await self.ensure_ready()
        log.warning("%s: confirm RESET to level %d on the device", self.display_uri, level)
        try:
            await self._call(
                lambda: self._need_client().reset(level), self.prompt_timeout + self.timeout
            )
        except StatusWordError as exc:
            raise self._status_error(exc) from None
        except TransportTimeout as exc:
            self._mark_unready(str(exc), drop=True)
            raise UnknownOutcome(f"{exc} (RESET not confirmed in time)") from None
        except TransportError as exc:
            self._mark_unready(str(exc), drop=True)
            raise BackendError(str(exc)) from None

    async def close(self) -> None:
        self._closed = True
        if self._wake is not None:
            self._wake.set()
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        self._ready, self._reason = False, "closed"
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.submit(self._drop_sync)
            await asyncio.to_thread(executor.shutdown, wait=True)
