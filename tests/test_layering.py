"""drivers/ is the device layer: it may use the guard's pure Tezos primitives, nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

ALLOWED = {
    "signer_guard",
    "signer_guard.b58",
    "signer_guard.keys",
    "signer_guard.codec",
    "signer_guard.bls",
    "signer_guard.model",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if node.module == "signer_guard"
            )
    return found


def test_drivers_never_import_the_server_store_or_cli() -> None:
    files = sorted(Path("drivers").rglob("*.py"))
    assert files, "no driver modules found"
    offenders = {
        str(f): sorted(
            m for m in imported_modules(f) if m.startswith("signer_guard") and m not in ALLOWED
        )
        for f in files
    }
    assert {f: m for f, m in offenders.items() if m} == {}
