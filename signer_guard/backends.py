"""Key URI → backend (spec README, key URIs). Device drivers are imported only when used."""

from __future__ import annotations

from drivers.base import Backend


class KeyUriError(ValueError):
    """A --key URI that no backend understands."""


def make_backend(uri: str, *, upstream_auth_key: str | None = None) -> Backend:
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme == "unencrypted":
        from drivers.software import SoftwareBackend

        return SoftwareBackend(uri)
    if scheme in ("http", "https"):
        from drivers.upstream import UpstreamBackend
        from signer_guard.keys import SecretKey

        auth = SecretKey.from_b58(upstream_auth_key) if upstream_auth_key else None
        return UpstreamBackend(uri, auth_key=auth)
    if scheme == "tezsign":
        from drivers.tezsign import TezSignBackend

        return TezSignBackend(uri)
    if scheme == "ledger":
        from drivers.ledger import LedgerBackend

        return LedgerBackend(uri)
    raise KeyUriError(
        f"unsupported key URI {uri!r}: use http://HOST:PORT/PKH, unencrypted:SECRET, "
        "ledger://ID/CURVE/PATH or tezsign://SERIAL/KEY"
    )
