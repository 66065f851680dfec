"""Run `signer-guard serve` as a real process for tests; always stopped by PID."""

from __future__ import annotations

import asyncio
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+/)")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(path: Path, values: dict[str, Any]) -> Path:
    lines = []
    tables = []
    for key, value in values.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        for sub, inner in table.items():
            lines.append(f'[{name}."{sub}"]')
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in inner.items())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


class GuardProcess:
    """One `signer-guard serve` child process with its own config file."""

    def __init__(
        self,
        workdir: Path,
        *,
        keys: list[str],
        store: str | None = None,
        guard_id: str = "guard-a",
        name: str = "guard",
        env: dict[str, str] | None = None,
        **config: Any,
    ) -> None:
        self.workdir = workdir
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        values: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "store": store or str(workdir / "store.sqlite"),
            "keys": keys,
            "guard_id": guard_id,
            "journal": str(workdir / f"{name}-journal.jsonl"),
            "log_level": "DEBUG",
        }
        values.update(config)
        self.config = values
        self.config_path = write_config(workdir / f"{name}.toml", values)
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.log_path = workdir / f"{name}.log"

    @property
    def journal(self) -> Path:
        return Path(self.config["journal"])

    def start(self, timeout: float = 20.0, extra_args: tuple[str, ...] = ()) -> GuardProcess:
        env = dict(os.environ)
        env.update(self.env or {})
        log = open(self.log_path, "a")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "signer_guard",
                "serve",
                "--config",
                str(self.config_path),
                *extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            cwd=self.workdir,
        )
        log.close()
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.2):
                if self.proc.poll() is not None:
                    break
                continue
            line = self.proc.stdout.readline()
            if not line:
                break
            m = _LISTENING.search(line)
            if m:
                self.url = m.group(1)
                return self
        code = self.proc.poll()
        self.stop()
        raise RuntimeError(
            f"{self.name} did not start (exit {code}); log:\n" + self.log_path.read_text()[-3000:]
        )

    def kill(self) -> None:
        """SIGKILL: a real crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def log_text(self) -> str:
        return self.log_path.read_text()

    async def astart(self) -> GuardProcess:
        """`start` off the event loop, so in-process fakes on the test's loop keep answering."""
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def __aenter__(self) -> GuardProcess:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    def __enter__(self) -> GuardProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_cli(
    *args: str,
    input_text: str | None = None,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "signer_guard", *args],
        capture_output=True,
        text=True,
        input=input_text,
        timeout=timeout,
        env=full_env,
    )
