"""`signer-guard decode` as a user runs it: a subprocess, its output and its exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "fixtures" / "vectors"
KEYS = ["magic", "kind", "chain_id", "level", "round", "tag", "slot", "payload_hash"]

VALID: list[dict[str, Any]] = json.loads((VECTORS / "requests.json").read_text())
INVALID: list[dict[str, Any]] = json.loads((VECTORS / "invalid_requests.json").read_text())


def run_decode(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "signer_guard", "decode", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def text_line(vector: dict[str, Any]) -> str:
    return " ".join(f"{k}={'null' if vector[k] is None else vector[k]}" for k in KEYS)


def assert_one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 2
    assert proc.stdout == b""
    err = proc.stderr.decode()
    assert "Traceback" not in err
    assert err.endswith("\n")
    assert err.count("\n") == 1
    assert "offset" in err
    return err


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_valid_text_and_json(vector: dict[str, Any]) -> None:
    text = run_decode(vector["hex"])
    assert text.returncode == 0, text.stderr
    assert text.stderr == b""
    assert text.stdout.decode() == text_line(vector) + "\n"

    as_json = run_decode(vector["hex"], "--json")
    assert as_json.returncode == 0, as_json.stderr
    out = as_json.stdout.decode()
    assert out.count("\n") == 1
    assert " " not in out  # compact
    obj = json.loads(out)
    assert list(obj) == KEYS
    assert obj == {k: vector[k] for k in KEYS}


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_exit_2_one_line(vector: dict[str, Any]) -> None:
    assert_one_line_error(run_decode(vector["hex"]))


def test_invalid_with_json_flag_is_also_one_line() -> None:
    err = assert_one_line_error(run_decode("--json", "137a06a770"))
    assert "signer-guard decode:" in err


def test_error_message_names_problem_and_offset() -> None:
    (vector,) = [v for v in INVALID if v["name"] == "block_fitness_level_mismatch"]
    err = assert_one_line_error(run_decode(vector["hex"]))
    assert "fitness level 20879 differs from shell level 20878 at offset 96" in err


def test_stdin_with_prefix_whitespace_and_upper_case() -> None:
    vector = VALID[4]
    proc = run_decode("-", "--json", stdin=f"\n  0X{vector['hex'].upper()}  \n".encode())
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {k: vector[k] for k in KEYS}


def test_stdin_invalid_and_binary_garbage() -> None:
    assert_one_line_error(run_decode("-", stdin=b""))
    assert_one_line_error(run_decode("-", stdin=b"\xff\xfe\x00garbage"))


def test_argument_with_0x_prefix() -> None:
    vector = VALID[0]
    proc = run_decode("0x" + vector["hex"])
    assert proc.returncode == 0
    assert proc.stdout.decode() == text_line(vector) + "\n"
