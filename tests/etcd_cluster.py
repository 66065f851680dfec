"""A real 3-member etcd cluster on 127.0.0.1 for tests and benchmarks.

Each member gets free client and peer ports and a data directory under one temporary directory.
Tests may SIGKILL, pause (SIGSTOP/SIGCONT) and restart single members; `stop` ends every member by
its PID. The etcd binary comes from $ETCD_BIN, PATH, or `scripts/install-etcd.sh`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = ROOT / "scripts" / "install-etcd.sh"


def etcd_binary() -> str:
    """Find etcd (>= 3.4), installing it through scripts/install-etcd.sh if needed."""
    for candidate in (os.environ.get("ETCD_BIN"), shutil.which("etcd"), "/usr/bin/etcd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    done = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=300, check=False
    )
    path = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not path:
        raise RuntimeError(f"no etcd binary: {INSTALL_SCRIPT} failed: {done.stderr.strip()}")
    return path


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (all bound at once, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    member_id: str | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class EtcdCluster:
    """Three etcd members on loopback. Use as a context manager, or call start() and stop()."""

    def __init__(self, size: int = 3, binary: str | None = None) -> None:
        self.binary = binary or etcd_binary()
        self._tmp = Path(tempfile.mkdtemp(prefix="sg-etcd-"))
        ports = free_ports(2 * size)
        self.members = [
            Member(
                name=f"m{i}",
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                data_dir=self._tmp / f"m{i}.etcd",
                log_path=self._tmp / f"m{i}.log",
            )
            for i in range(size)
        ]
        self._token = f"sg-test-{os.getpid()}-{ports[0]}"

    # -- addresses ---------------------------------------------------------------------------
    def hostports(self, first: int | None = None) -> str:
        """`127.0.0.1:P1,…` with member `first` (if given) listed first."""
        order = list(self.members)
        if first is not None:
            order.insert(0, order.pop(first))
        return ",".join(f"127.0.0.1:{m.client_port}" for m in order)

    def store_url(self, prefix: str, first: int | None = None) -> str:
        return f"etcd://{self.hostports(first)}/{prefix}"

    # -- life cycle --------------------------------------------------------------------------
    def _launch(self, member: Member, state: str) -> None:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        args = [
            self.binary,
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={self._token}",
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=10000",
        ]
        log = member.log_path.open("ab")
        try:
            member.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        finally:
            log.close()
        member.paused = False

    def start(self, timeout: float = 20.0) -> EtcdCluster:
        try:
            for member in self.members:
                self._launch(member, "new")
            self.wait_healthy(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def healthy(self, member: Member) -> bool:
        try:
            with urllib.request.urlopen(f"{member.client_url}/health", timeout=0.5) as answer:
                return bool(json.loads(answer.read()).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, members: list[Member] | None = None, timeout: float = 20.0) -> None:
        """Wait until every given (default: every running, unpaused) member reports health."""
        targets = members if members is not None else [
            m for m in self.members if m.running and not m.paused
        ]  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            pending = [m for m in targets if not self.healthy(m)]
            if not pending:
                return
            dead = [m.name for m in pending if not m.running]
            if dead:
                raise RuntimeError(f"etcd member(s) {dead} exited; see logs under {self._tmp}")
            if time.monotonic() > deadline:
                names = [m.name for m in pending]
                raise TimeoutError(f"etcd member(s) {names} not healthy after {timeout} s")
            time.sleep(0.1)

    @staticmethod
    def _status(member: Member) -> dict[str, object] | None:
        """POST /v3/maintenance/status to one member; None when it does not answer."""
        if not member.running or member.paused:
            return None
        request = urllib.request.Request(
            f"{member.client_url}/v3/maintenance/status", data=b"{}", method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=0.5) as answer:
                status = json.loads(answer.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None
        return status if isinstance(status, dict) else None

    def _member_id(self, member: Member) -> str:
        if member.member_id is None:
            status = self._status(member)
            header = status.get("header") if status else None
            if isinstance(header, dict) and "member_id" in header:
                member.member_id = str(header["member_id"])
        return member.member_id or ""

    def leader_index(self) -> int | None:
        """The index of the current leader, as the first reachable member reports it."""
        for member in self.members:
            status = self._status(member)
            if status is None:
                continue
            ids = {self._member_id(m): i for i, m in enumerate(self.members)}
            leader = str(status.get("leader", ""))
            if leader in ids:
                return ids[leader]
        return None

    def follower_indexes(self) -> list[int]:
        leader = self.leader_index()
        if leader is None:
            raise RuntimeError("the etcd cluster has no leader")
        return [i for i in range(len(self.members)) if i != leader]

    def kill(self, index: int) -> None:
        """SIGKILL one member and reap it."""
        member = self.members[index]
        if member.process is not None and member.running:
            member.process.send_signal(signal.SIGKILL)
            member.process.wait(timeout=10)
        member.paused = False

    def pause(self, index: int) -> None:
        member = self.members[index]
        if member.process is not None and member.running:
            member.process.send_signal(signal.SIGSTOP)
            member.paused = True

    def resume(self, index: int) -> None:
        member = self.members[index]
        if member.process is not None and member.running:
            member.process.send_signal(signal.SIGCONT)
        member.paused = False

    def restart(self, index: int, wait: bool = True) -> None:
        """Start a killed member again on its data directory."""
        member = self.members[index]
        if member.running:
            self.resume(index)
            return
        self._launch(member, "existing")
        if wait:
            self.wait_healthy([member])

    def ensure_all_up(self, timeout: float = 20.0) -> None:
        """Bring every member back (resume paused, restart dead) and wait for health."""
        for index, member in enumerate(self.members):
            if member.paused:
                self.resume(index)
            if not member.running:
                self.restart(index, wait=False)
        self.wait_healthy(list(self.members), timeout=timeout)

    def stop(self) -> None:
        """End every member by its PID and remove the data directories."""
        for member in self.members:
            process = member.process
            if process is None:
                continue
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                    process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
            member.process = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
