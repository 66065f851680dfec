"""HWM and fence stores: SQLite (one host) and etcd (several hosts)."""

from __future__ import annotations

from signer_guard.store.base import Store


def make_store(url: str) -> Store:
    """`PATH`, `sqlite:PATH` or `etcd://H:P[,H:P...]/PREFIX`."""
    if url.startswith("etcd://"):
        from signer_guard.store.etcd import EtcdStore

        return EtcdStore(url)
    from signer_guard.store.sqlite import SqliteStore

    return SqliteStore(url.removeprefix("sqlite:"))
