"""Operator commands as subprocesses: config errors, hwm export/import round trips, status."""

from __future__ import annotations

import json
from pathlib import Path

from tests.guard_proc import run_cli, write_config

MAINNET = "NetXdQprcVkpaWU"
TZ1 = "tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv"
TZ4 = "tz4AQcKaQU1sUzsmPTX43qnK4ddkCeeknJnf"
OCTEZ_ATTESTATION = {
    MAINNET: {
        TZ1: {
            "level": 1331,
            "round": 0,
            "hash": "22a4661cd4823a14313384e510544af380ce40c3c44d3026319b191718356f4a",
            "signature": "edsigtz4tHwXevjmqk5FLxbQGAMpXHzPSZeiVFx6sJc3z9Y1FQidLg4jSBkkPzsxXSbat"
            "q5rPicZVNyTrFQatAQk3nEBUX1GiGy",
        }
    }
}


def test_config_errors_name_every_key_path(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "bad.toml",
        {
            "listen": "127.0.0.1:6732",
            "max_levels_ahead": 0,
            "allowed_chains": ["NetXbogus"],
            "no_such_key": 1,
            "key_policy": {TZ1: {"kinds": ["blocks"]}},
        },
    )
    r = run_cli("serve", "--config", str(cfg), "--store", str(tmp_path / "s.sqlite"))
    assert r.returncode == 2
    for path in (
        "max_levels_ahead",
        "allowed_chains.0",
        "no_such_key",
        f"key_policy.{TZ1}.kinds.0",
    ):
        assert path in r.stderr, (path, r.stderr)
    assert "Traceback" not in r.stderr
    (tmp_path / "notoml.toml").write_text("listen = [")
    r = run_cli("serve", "--config", str(tmp_path / "notoml.toml"))
    assert r.returncode == 2 and "not valid TOML" in r.stderr


def test_octez_import_export_round_trip(tmp_path: Path) -> None:
    store = str(tmp_path / "store.sqlite")
    src = tmp_path / "octez"
    src.mkdir()
    (src / "attestation_high_watermarks").write_text(json.dumps(OCTEZ_ATTESTATION))
    (src / "block_high_watermarks").write_text(
        json.dumps({MAINNET: {TZ4: {"level": 900, "round": 2, "hash": "00" * 32}}})
    )
    r = run_cli("hwm", "import", "--format", "octez", "--store", store, str(src))
    assert r.returncode == 0, r.stderr
    shown = json.loads(run_cli("hwm", "show", "--json", "--store", store).stdout)
    assert {(x["pkh"], x["kind"], x["level"], x["round"]) for x in shown} == {
        (TZ1, "attestation", 1331, 0),
        (TZ4, "block", 900, 2),
    }
    out = tmp_path / "out"
    r = run_cli("hwm", "export", "--format", "octez", "--store", store, str(out))
    assert r.returncode == 0, r.stderr
    exported = json.loads((out / "attestation_high_watermarks").read_text())
    assert exported == OCTEZ_ATTESTATION
    assert (out / "preattestation_high_watermarks").exists()
    # re-importing what we exported into a fresh store gives the same records
    store2 = str(tmp_path / "store2.sqlite")
    assert (
        run_cli("hwm", "import", "--format", "octez", "--store", store2, str(out)).returncode == 0
    )
    shown2 = json.loads(run_cli("hwm", "show", "--json", "--store", store2).stdout)
    strip = [{k: v for k, v in x.items() if k not in ("updated_at", "epoch")} for x in shown]
    strip2 = [{k: v for k, v in x.items() if k not in ("updated_at", "epoch")} for x in shown2]
    assert strip == strip2
    # import never lowers
    (src / "attestation_high_watermarks").write_text(
        json.dumps({MAINNET: {TZ1: {"level": 5, "round": 0, "hash": "11" * 32}}})
    )
    assert run_cli("hwm", "import", "--format", "octez", "--store", store, str(src)).returncode == 0
    again = json.loads(run_cli("hwm", "show", "--json", "--store", store).stdout)
    assert next(x for x in again if x["kind"] == "attestation")["level"] == 1331


def test_json_export_import_and_status_without_a_guard(tmp_path: Path) -> None:
    store = str(tmp_path / "store.sqlite")
    assert (
        run_cli(
            "hwm",
            "set",
            "--store",
            store,
            "--chain",
            MAINNET,
            "--pkh",
            TZ1,
            "--kind",
            "preattestation",
            "--level",
            "77",
            "--round",
            "3",
        ).returncode
        == 0
    )
    dump = tmp_path / "dump.json"
    assert run_cli("hwm", "export", "--format", "json", "--store", store, str(dump)).returncode == 0
    records = json.loads(dump.read_text())
    assert records[0]["level"] == 77 and records[0]["round"] == 3
    store2 = str(tmp_path / "other.sqlite")
    r = run_cli("hwm", "import", "--format", "json", "--store", store2, str(dump))
    assert r.returncode == 0, r.stderr
    r = run_cli("status", "--json", "--store", store2, "--url", "http://127.0.0.1:9/")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["state"] == "not running"
    assert st["records"][0]["level"] == 77
    r = run_cli(
        "hwm",
        "set",
        "--store",
        store,
        "--chain",
        "bogus",
        "--pkh",
        TZ1,
        "--kind",
        "block",
        "--level",
        "1",
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
