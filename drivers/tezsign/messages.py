"""Typed requests and responses of the TezSign protocol (tezsign.md §6) on top of `schema`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from google.protobuf.message import DecodeError

from . import schema
from .errors import DeviceError, ProtocolError

Kind = Literal["block", "preattestation", "attestation"]
KINDS: Final[tuple[Kind, ...]] = ("block", "preattestation", "attestation")
SIGNATURE_SIZE: Final = 96

LOCKED: Final = "LOCKED"
UNLOCKED: Final = "UNLOCKED"


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    build_date: str


@dataclass(frozen=True, slots=True)
class KeyStatus:
    key_id: str
    lock_state: str  # "LOCKED", "UNLOCKED" or "LOCK_STATE_UNSPECIFIED"
    tz4: str
    bl_pubkey: str
    pop: str
    #: (level, round) per kind; the gadget reports zeros for locked keys.
    marks: dict[Kind, tuple[int, int]]
    state_corrupted: bool

    @property
    def unlocked(self) -> bool:
        return self.lock_state == UNLOCKED


@dataclass(frozen=True, slots=True)
class PerKeyResult:
    key_id: str
    ok: bool
    error: str


# ---- requests (host side) -------------------------------------------------------------------


def _request(field: str, type_name: str, /, **fields: Any) -> bytes:
    envelope = schema.new("Request", **{field: schema.new(type_name, **fields)})
    data: bytes = envelope.SerializeToString(deterministic=True)
    return data


def version_request() -> bytes:
    return _request("version", "VersionRequest")


def status_request() -> bytes:
    return _request("status", "StatusRequest")


def sign_request(tz4: str, message: bytes) -> bytes:
    return _request("sign", "SignRequest", tz4=tz4, message=message)


def unlock_request(key_ids: Sequence[str], passphrase: bytes) -> bytes:
    return _request("unlock", "UnlockRequest", key_ids=list(key_ids), passphrase=passphrase)


def lock_request(key_ids: Sequence[str]) -> bytes:
    return _request("lock", "LockRequest", key_ids=list(key_ids))


def set_level_request(key_id: str, level: int) -> bytes:
    return _request("set_level", "SetLevelRequest", key_id=key_id, level=level)


def logs_request(limit: int = 0) -> bytes:
    return _request("logs", "LogsRequest", limit=limit)


# ---- responses (host side) ------------------------------------------------------------------


def _parse(name: str, data: bytes) -> Any:
    try:
        return schema.parse(name, data)
    except DecodeError as exc:
        raise ProtocolError(f"undecodable {name} from the gadget: {exc}") from exc


def expect(data: bytes, field: str) -> Any:
    """The `field` member of a Response; raise DeviceError for an Error, ProtocolError otherwise."""
    envelope = _parse("Response", data)
    which = envelope.WhichOneof("payload")
    if which == "error":
        raise DeviceError(int(envelope.error.code), str(envelope.error.message))
    if which != field:
        raise ProtocolError(f"gadget answered {which or 'nothing'} where {field} was expected")
    return getattr(envelope, field)


def parse_version(data: bytes) -> VersionInfo:
    msg = expect(data, "version")
    return VersionInfo(version=str(msg.version), build_date=str(msg.build_date))


def _key_status(msg: Any) -> KeyStatus:
    return KeyStatus(
        key_id=str(msg.key_id),
        lock_state=schema.LOCK_STATE.get(int(msg.lock_state), "LOCK_STATE_UNSPECIFIED"),
        tz4=str(msg.tz4),
        bl_pubkey=str(msg.bl_pubkey),
        pop=str(msg.pop),
        marks={
            "block": (int(msg.last_block_level), int(msg.last_block_round)),
            "preattestation": (
                int(msg.last_preattestation_level),
                int(msg.last_preattestation_round),
            ),
            "attestation": (int(msg.last_attestation_level), int(msg.last_attestation_round)),
        },
        state_corrupted=bool(msg.state_corrupted),
    )


def parse_status(data: bytes) -> list[KeyStatus]:
    return [_key_status(k) for k in expect(data, "status").keys]


def parse_sign(data: bytes) -> bytes:
    signature = bytes(expect(data, "sign").signature)
    if len(signature) != SIGNATURE_SIZE:
        raise ProtocolError(f"gadget returned a {len(signature)}-byte signature, expected 96")
    return signature


def parse_per_key(
    data: bytes, field: Literal["unlock", "lock", "delete_keys"]
) -> list[PerKeyResult]:
    return [
        PerKeyResult(key_id=str(r.key_id), ok=bool(r.ok), error=str(r.error))
        for r in expect(data, field).results
    ]


def parse_ok(data: bytes) -> bool:
    return bool(expect(data, "ok").ok)


def parse_logs(data: bytes) -> list[str]:
    return [str(line) for line in expect(data, "logs").lines]


# ---- gadget side (used by the test fake and for reading recorded fixtures) -------------------


def parse_request(data: bytes) -> tuple[str | None, Any]:
    """(oneof field name or None, message) of a Request; raises ProtocolError if undecodable."""
    envelope = _parse("Request", data)
    which = envelope.WhichOneof("payload")
    return which, (getattr(envelope, which) if which else None)


def response(field: str, type_name: str, /, **fields: Any) -> bytes:
    envelope = schema.new("Response", **{field: schema.new(type_name, **fields)})
    data: bytes = envelope.SerializeToString(deterministic=True)
    return data


def error_response(code: int, message: str) -> bytes:
    return response("error", "Error", code=code, message=message)
