"""`serve` configuration: a TOML file whose keys mirror the flags; flags override the file.

pydantic validates it and reports every error with its key path.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from signer_guard import b58

DEFAULT_LISTEN = "127.0.0.1:6732"
GenericKind = Literal["block", "preattestation", "attestation", "generic"]


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem with its key path."""


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "signer-guard"


def default_store() -> str:
    return str(state_dir() / "store.sqlite")


def _chain_id(value: str) -> str:
    b58.decode("Net", value)
    return value


ChainId = Annotated[str, AfterValidator(_chain_id)]
Byte = Annotated[int, Field(ge=0, le=255)]


def _baking_kinds() -> list[GenericKind]:
    return ["block", "preattestation", "attestation"]


class KeyPolicy(BaseModel):
    """Per signing key: which kinds it may sign, and which generic (0x03) operation tags."""

    model_config = ConfigDict(extra="forbid")
    kinds: list[GenericKind] = Field(default_factory=_baking_kinds)
    allow_generic: list[Byte] | None = None


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str = DEFAULT_LISTEN
    allow_remote: bool = False
    store: str = Field(default_factory=default_store)
    keys: list[str] = Field(default_factory=list)
    guard_id: str = Field(default_factory=socket.gethostname)
    standby: bool = False
    node: str | None = None
    allowed_magic: list[Byte] = Field(default_factory=lambda: [0x11, 0x12, 0x13])
    allowed_chains: list[ChainId] = Field(default_factory=list)
    allow_generic: list[Byte] = Field(default_factory=list)
    max_levels_ahead: int = Field(default=64, ge=1)
    authorized_keys: list[str] = Field(default_factory=list)
    verify_signatures: bool = True
    sync_device_hwm: bool = True
    accept_device_hwm: bool = False
    upstream_auth_key: str | None = None
    journal: str | None = None
    journal_max_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    journal_backups: int = Field(default=5, ge=0)
    max_body_bytes: int = Field(default=16 * 1024, ge=1024)
    key_policy: dict[str, KeyPolicy] = Field(default_factory=dict)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("key_policy")
    @classmethod
    def _policy_pkhs(cls, value: dict[str, KeyPolicy]) -> dict[str, KeyPolicy]:
        for pkh in value:
            b58.identify(pkh, ("tz1", "tz2", "tz3", "tz4"))
        return value

    @field_validator("guard_id")
    @classmethod
    def _guard_id(cls, value: str) -> str:
        if not value or "/" in value or len(value) > 128:
            raise ValueError("guard_id must be 1..128 characters without '/'")
        return value

    @model_validator(mode="after")
    def _remote(self) -> Config:
        host, _ = split_listen(self.listen)
        if not is_loopback(host):
            if not self.allow_remote:
                raise ValueError(
                    f"listen address {self.listen} is not loopback: set allow_remote = true "
                    "and configure authorized_keys"
                )
            if not self.authorized_keys:
                raise ValueError("allow_remote requires authorized_keys (request authentication)")
        return self

    @property
    def journal_path(self) -> Path:
        if self.journal:
            return Path(self.journal)
        store = self.store.removeprefix("sqlite:")
        if self.store.startswith("etcd://"):
            return state_dir() / "journal.jsonl"
        return Path(store).parent / "journal.jsonl"


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    """A loopback IP literal or `localhost` (a name like `127.evil.example` is not)."""
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {path}: {e['msg']}")
    return "\n".join(lines)


def load(path: str | None, overrides: dict[str, Any]) -> Config:
    """Read the TOML file (if any), apply the flags that were given, validate everything."""
    data: dict[str, Any] = {}
    source = "flags"
    if path:
        source = path
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for key, value in overrides.items():
        if value is None or value == [] or value is False:
            continue
        data[key] = value
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
