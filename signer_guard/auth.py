"""Request authentication (remote-signer-api.md §5): `authentication=` over 0x04 0x01 pkh data."""

from __future__ import annotations

from dataclasses import dataclass

from signer_guard import keys


class AuthError(Exception):
    """Missing or invalid authentication (HTTP 403)."""


@dataclass(frozen=True)
class Authorizer:
    public_keys: tuple[keys.PublicKey, ...]

    @classmethod
    def from_b58(cls, texts: list[str]) -> Authorizer:
        return cls(tuple(keys.PublicKey.from_b58(t) for t in texts))

    @property
    def required(self) -> bool:
        return bool(self.public_keys)

    @property
    def pkhs(self) -> list[str]:
        return [pk.pkh for pk in self.public_keys]

    def check(self, pkh: str, data: bytes, authentication: str | None) -> None:
        if not self.required:
            return
        if not authentication:
            raise AuthError("missing authentication signature field")
        try:
            _, raw = keys.parse_signature(authentication)
        except ValueError:
            raise AuthError("invalid authentication signature") from None
        payload = keys.authentication_payload(pkh, data)
        for pk in self.public_keys:
            if pk.verify(raw, payload):
                return
        raise AuthError("invalid authentication signature")
