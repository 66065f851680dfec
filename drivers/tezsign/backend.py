"""`TezSignBackend`: one tz4 key on a TezSign gadget over USB (`tezsign://SERIAL/KEY`).

All USB I/O runs on the shared connection's threads (connection.py); coroutines here only await
them. Device errors map onto the guard's errors as tezsign.md §7 says.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Final, TypeVar

from drivers.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    DeviceHWM,
    DeviceHWMRefusal,
    NotSupported,
    UnknownOutcome,
)
from signer_guard import b58

from . import client, connection
from . import constants as C
from .errors import (
    DeviceError,
    DeviceGone,
    InterfaceBusy,
    NoDevice,
    NotReady,
    RequestTimeout,
    TezSignError,
    TransportError,
)
from .messages import LOCKED, KeyStatus
from .uri import parse_uri

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A locked key is re-checked with a fresh Status at most this often (seconds).
LOCK_RECHECK: Final = 1.0


class TezSignBackend(Backend):
    backend_type = "tezsign"

    def __init__(
        self,
        uri: str,
        *,
        usb_backend: Any = None,
        connection_options: dict[str, Any] | None = None,
        sign_timeout: float = C.TIMEOUT_SIGN,
    ) -> None:
        """`usb_backend`: a pyusb backend (tests pass the fake gadget; None = the module default,
        see usbdev.set_default_usb_backend). `connection_options`: GadgetConnection keywords.
        `sign_timeout`: seconds before a Sign counts as an unknown outcome (§8: 5 s)."""
        super().__init__(uri)
        parsed = parse_uri(uri)
        self.serial = parsed.serial
        self.key = parsed.key
        self._usb_backend = usb_backend
        self._options = connection_options or {}
        self._conn: connection.GadgetConnection | None = None
        self._key_id: str | None = None
        self._pop: str | None = None
        self._unusable: str | None = None
        self._last_recheck = 0.0
        self._sign_timeout = sign_timeout

    # ---- plumbing -----------------------------------------------------------------------------

    async def _run(self, executor: Executor, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, functools.partial(fn, *args))
        except RuntimeError as exc:  # executor shut down: the backend was closed
            raise BackendUnavailable(f"{self.display_uri}: backend closed") from exc

    def _connection(self) -> connection.GadgetConnection:
        if self._conn is None:
            raise BackendUnavailable(f"{self.display_uri}: backend not started")
        return self._conn

    @property
    def key_id(self) -> str:
        return self._key_id or self.key

    def _unlock_hint(self) -> str:
        return (
            f"unlock it on this host with `tezsign unlock {self.key_id}` "
            "(or signer-guard's TezSign unlock command), then retry"
        )

    def _find(self, keys: list[KeyStatus]) -> KeyStatus | None:
        for key in keys:
            if self._key_id is not None:
                if key.key_id == self._key_id:
                    return key
            elif self.key in (key.key_id, key.tz4):
                return key
        return None

    def _unavailable(self, exc: TezSignError) -> BackendUnavailable:
        return BackendUnavailable(f"{self.display_uri}: {exc}")

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._conn is None:
            self._conn = connection.acquire(self.serial, self._usb_backend, **self._options)
        conn = self._conn
        try:
            await self._run(conn.sign_executor, conn.connect)
            keys = await self._run(conn.sign_executor, conn.status, 0.0)
        except (NoDevice, NotReady, InterfaceBusy, TransportError) as exc:
            raise self._unavailable(exc) from exc
        except TezSignError as exc:
            raise BackendError(f"{self.display_uri}: {exc}") from exc
        finally:
            conn.start_watchdog()
        key = self._find(keys)
        if key is None:
            known = ", ".join(f"{k.key_id} ({k.tz4})" for k in keys) or "none"
            raise BackendError(
                f"{self.display_uri}: no key {self.key!r} on TezSign gadget "
                f"{conn.device_serial}; keys on it: {known}"
            )
        try:
            b58.decode("tz4", key.tz4)
            b58.decode("BLpk", key.bl_pubkey)
        except b58.Base58Error as exc:
            raise BackendError(f"{self.display_uri}: gadget reported a bad key: {exc}") from exc
        if self._pkh is not None and self._pkh != key.tz4:
            self._unusable = (
                f"{self.display_uri}: key {key.key_id} changed from {self._pkh} to {key.tz4} "
                "(another gadget?); backend disabled"
            )
            raise BackendError(self._unusable)
        self._key_id, self._pkh, self._public_key = key.key_id, key.tz4, key.bl_pubkey
        self._pop = key.pop or None
        if not key.unlocked:
            log.warning(
                "%s: key %s (%s) is locked: %s", self.display_uri, key.key_id, key.tz4,
                self._unlock_hint(),
            )  # fmt: skip

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(connection.release, conn)

    # ---- readiness ----------------------------------------------------------------------------

    def _check_key(self, key: KeyStatus | None) -> KeyStatus:
        if key is None:
            raise BackendError(
                f"{self.display_uri}: key {self.key_id} is no longer listed by the gadget"
            )
        if self._pkh is not None and key.tz4 != self._pkh:
            self._unusable = (
                f"{self.display_uri}: key {key.key_id} is now {key.tz4}, was {self._pkh} "
                "(another gadget?); backend disabled"
            )
            raise BackendError(self._unusable)
        if key.state_corrupted:
            raise BackendError(
                f"{self.display_uri}: the gadget's high-watermark state of key {key.key_id} is "
                "corrupted; it refuses to sign until it is repaired (check the gadget, then "
                "raise its level with set-level)"
            )
        if not key.unlocked:
            raise BackendError(
                f"{self.display_uri}: key {key.key_id} is locked: {self._unlock_hint()}"
            )
        return key

    async def ensure_ready(self) -> None:
        if self._unusable is not None:
            raise BackendError(self._unusable)
        conn = self._connection()
        if self._pkh is None:
            raise BackendUnavailable(f"{self.display_uri}: not started (public key unknown)")
        if not conn.connected:
            raise BackendUnavailable(
                f"{self.display_uri}: TezSign gadget disconnected "
                f"({conn.last_error or 'unknown reason'}); reconnecting"
            )
        keys, _ = conn.cached_status()
        key = self._find(keys or [])
        now = time.monotonic()
        if (key is None or not key.unlocked) and now - self._last_recheck >= LOCK_RECHECK:
            self._last_recheck = now
            try:
                keys = await self._run(conn.sign_executor, conn.status, 0.0)
            except TransportError as exc:
                raise self._unavailable(exc) from exc
            except TezSignError as exc:
                raise BackendError(f"{self.display_uri}: status failed: {exc}") from exc
            key = self._find(keys)
        self._check_key(key)

    # ---- signing ------------------------------------------------------------------------------

    async def sign(self, data: bytes, *, version: int | None = None) -> str:
        if version in (0, 1):
            raise NotSupported(
                f"{self.display_uri}: TezSign signs with the BLS proof-of-possession scheme only "
                f"(version={version} asks for {'no BLS' if version == 0 else 'augmented'})"
            )
        if self._unusable is not None:
            raise BackendError(self._unusable)
        conn = self._connection()
        tz4 = self.pkh
        sign = functools.partial(client.sign, tz4=tz4, message=data, timeout=self._sign_timeout)
        try:
            raw = await self._run(conn.sign_executor, conn.on_sign_interface, sign)
        except RequestTimeout as exc:
            log.error(
                "%s: sign not answered within %g s: unknown outcome (the gadget may have signed "
                "and advanced its own high watermark)", self.display_uri, self._sign_timeout,
            )  # fmt: skip
            raise UnknownOutcome(
                f"{self.display_uri}: TezSign did not answer the sign request in time: "
                "unknown outcome (it may have signed)"
            ) from exc
        except DeviceGone as exc:
            if exc.sent:
                log.error("%s: gadget disconnected during sign: unknown outcome", self.display_uri)
                raise UnknownOutcome(
                    f"{self.display_uri}: TezSign gadget disconnected during the sign request: "
                    f"unknown outcome ({exc})"
                ) from exc
            raise BackendError(
                f"{self.display_uri}: TezSign gadget disconnected, not signed ({exc})"
            ) from exc
        except TransportError as exc:
            raise BackendError(
                f"{self.display_uri}: sign request failed, not signed: {exc}"
            ) from exc
        except DeviceError as exc:
            raise self._sign_error(conn, exc) from exc
        except TezSignError as exc:
            raise BackendError(f"{self.display_uri}: bad answer from the gadget: {exc}") from exc
        return b58.encode("BLsig", raw)

    def _sign_error(self, conn: connection.GadgetConnection, exc: DeviceError) -> BackendError:
        where = f"{self.display_uri}: tezsign"
        code = exc.code
        if code == C.ERR_STALE:
            return DeviceHWMRefusal("device high watermark refusal: tezsign stale level/round")
        if code in (C.ERR_KEY_NOT_FOUND, C.ERR_KEY_LOCKED):
            conn.note_key_state(self.key_id, LOCKED)
            what = "key not loaded (unlock needed)" if code == C.ERR_KEY_NOT_FOUND else "key locked"
            return BackendError(f"{where}: {what}: key {self.key_id}: {self._unlock_hint()}")
        if code == C.ERR_BAD_PAYLOAD:
            return BackendError(
                f"{where}: the gadget rejected the request bytes as a bad sign payload "
                f"({exc.message}) although the guard decoded them; report this disagreement"
            )
        if code == C.ERR_SIGN_OTHER:
            return BackendError(f"{where}: the gadget failed to sign: {exc.message}")
        if code in (C.ERR_WRONG_INTERFACE, C.ERR_SIGN_ON_MANAGEMENT, C.ERR_BAD_PROTOBUF):
            return BackendError(
                f"{where}: the gadget refused the request ({code}: {exc.message}); this is a "
                "driver bug or a protocol change: check the gadget version"
            )
        return BackendError(f"{where}: error {code}: {exc.message}")

    # ---- key material and the device's own HWM ------------------------------------------------

    async def _fresh_key(self) -> KeyStatus:
        conn = self._connection()
        try:
            keys = await self._run(conn.sign_executor, conn.status, 0.0)
        except TransportError as exc:
            raise self._unavailable(exc) from exc
        except TezSignError as exc:
            raise BackendError(f"{self.display_uri}: status failed: {exc}") from exc
        key = self._find(keys)
        if key is None:
            raise BackendError(f"{self.display_uri}: key {self.key_id} is not on the gadget")
        return key

    async def prove_possession(self, bls_pk: str | None = None) -> str:
        if bls_pk is not None and bls_pk != self.public_key:
            raise NotSupported(
                f"{self.display_uri}: TezSign only proves possession of its own key "
                f"{self.public_key}"
            )
        pop = self._pop
        if not pop:
            pop = (await self._fresh_key()).pop or None
        if not pop:
            raise BackendError(
                f"{self.display_uri}: the gadget reported no proof of possession for key "
                f"{self.key_id}"
            )
        try:
            b58.decode("BLsig", pop)
        except b58.Base58Error as exc:
            raise BackendError(f"{self.display_uri}: bad proof of possession: {exc}") from exc
        self._pop = pop
        return pop

    async def device_hwm(self) -> DeviceHWM | None:
        """The gadget's marks for this key; None while the key is locked (it reports zeros)."""
        key = await self._fresh_key()
        if not key.unlocked:
            return None
        return {kind: (level, rnd) for kind, (level, rnd) in key.marks.items()}

    async def raise_device_hwm(self, level: int) -> None:
        """SetLevel over IF1: every kind to (level, 0). Raise-only; no-op when already there."""
        if level < 0:
            raise BackendError(f"{self.display_uri}: cannot set a negative level ({level})")
        key = self._check_key(await self._fresh_key())
        if all(lvl >= level for lvl, _ in key.marks.values()):
            return
        conn = self._connection()
        try:
            await self._run(conn.mgmt_executor, self._set_level, conn, key.key_id, level)
        except DeviceError as exc:
            if exc.code == C.ERR_SET_LEVEL:
                raise BackendError(
                    f"{self.display_uri}: the gadget refused to raise key {key.key_id} to level "
                    f"{level}: {exc.message} (it only raises, strictly above every kind)"
                ) from exc
            if exc.code in (C.ERR_KEY_NOT_FOUND, C.ERR_KEY_LOCKED):
                raise BackendError(
                    f"{self.display_uri}: key {key.key_id} is locked: {self._unlock_hint()}"
                ) from exc
            raise BackendError(f"{self.display_uri}: set-level failed: {exc}") from exc
        except InterfaceBusy as exc:
            raise BackendError(f"{self.display_uri}: {exc}") from exc
        except TransportError as exc:
            raise BackendError(f"{self.display_uri}: set-level failed: {exc}") from exc
        except TezSignError as exc:
            raise BackendError(f"{self.display_uri}: set-level failed: {exc}") from exc

    @staticmethod
    def _set_level(conn: connection.GadgetConnection, key_id: str, level: int) -> None:
        with conn.management() as ch:
            client.set_level(ch, key_id, level)

    async def unlock(self, passphrase: bytes) -> None:
        """Unlock this key over IF1 (the passphrase comes from passphrase.load_passphrase)."""
        conn = self._connection()
        try:
            results = await self._run(
                conn.mgmt_executor, self._unlock, conn, self.key_id, passphrase
            )
        except DeviceError as exc:
            raise BackendError(
                f"{self.display_uri}: unlock refused: {exc.message} ({exc.code})"
            ) from exc
        except TezSignError as exc:
            raise BackendError(f"{self.display_uri}: unlock failed: {exc}") from exc
        failed = [r for r in results if not r.ok]
        if failed or not results:
            detail = "; ".join(f"{r.key_id}: {r.error}" for r in failed) or "no result"
            raise BackendError(f"{self.display_uri}: unlock failed: {detail}")
        self._last_recheck = 0.0
        await self._fresh_key()

    @staticmethod
    def _unlock(conn: connection.GadgetConnection, key_id: str, passphrase: bytes) -> list[Any]:
        with conn.management() as ch:
            return client.unlock(ch, [key_id], passphrase)
