"""Real storage faults for tests (Linux, as root): small tmpfs mounts, a loop-mounted ext2 whose
block device fails writes, files made immutable. Every mount is undone in a `finally`."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


def _run(*args: str) -> str:
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()} — the storage fault "
            "tests need root with mount, losetup and mke2fs"
        )
    return r.stdout.strip()


@contextlib.contextmanager
def tmpfs(path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of `size_kib` KiB mounted at `path` (created): a disk that really fills up."""
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@contextlib.contextmanager
def failing_block_device(path: Path) -> Iterator[tuple[Path, Path]]:
    """An ext2 file system on a loop device whose sparse backing file lives on a small tmpfs.

    Yields (mount point, backing tmpfs). Filling the backing tmpfs makes the block device fail
    writes: the kernel logs "Buffer I/O error" and fsync returns EIO, as on a dying disk.
    Freeing it makes writes succeed again. `errors=continue` keeps the file system mounted
    read-write through the errors."""
    back, mnt = path / "backing", path / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    with tmpfs(back, 6 * 1024):
        image = back / "disk.img"
        with image.open("wb") as f:
            f.truncate(32 * 1024 * 1024)
        _run("mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", str(image))
        loop = _run("losetup", "--find", "--show", str(image))
        try:
            _run("mount", "-t", "ext2", "-o", "errors=continue", loop, str(mnt))
            try:
                yield mnt, back
            finally:
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)
        finally:
            subprocess.run(["losetup", "-d", loop], capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system says ENOSPC; return it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            chunk = b"\xa5" * size
            with contextlib.suppress(OSError):
                while os.write(fd, chunk) > 0:
                    pass
    finally:
        os.close(fd)
    return filler


def set_immutable(paths: list[Path], on: bool) -> None:
    """chattr ±i: the kernel then refuses every write, even root's, even through open files."""
    for p in paths:
        if p.exists():
            _run("chattr", "+i" if on else "-i", str(p))


def sync() -> None:
    os.sync()
