"""Where a TezSign unlock passphrase comes from: a file or an environment variable, never argv."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

DEFAULT_ENV: Final = "TEZSIGN_PASSPHRASE"


def load_passphrase(path: str | os.PathLike[str] | None = None, env: str = DEFAULT_ENV) -> bytes:
    """The passphrase from `path` (one trailing newline stripped) or else from `$env`.

    Raises ValueError when neither gives a non-empty passphrase."""
    if path is not None:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read the passphrase file {os.fspath(path)}: {exc}") from exc
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
        if not data:
            raise ValueError(f"the passphrase file {os.fspath(path)} is empty")
        return data
    value = os.environ.get(env)
    if not value:
        raise ValueError(
            f"no TezSign passphrase: give a passphrase file or set ${env} "
            "(never on the command line)"
        )
    return value.encode()
