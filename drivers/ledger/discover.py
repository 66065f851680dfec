"""Ledger devices for `signer-guard devices`: model, path, app, authorized key, HWMs.

Blocking (HID I/O): call it from a thread when an event loop is running. Sends only queries that
need no button press.
"""

from __future__ import annotations

from typing import Any

from drivers.ledger import apdu
from drivers.ledger.apdu import ApduFormatError, StatusWordError
from drivers.ledger.client import BakingAppClient
from drivers.ledger.hid_transport import (
    HidDeviceInfo,
    HidModule,
    HidTransport,
    default_hid_module,
    enumerate_devices,
)
from drivers.ledger.tcp_transport import TcpTransport
from drivers.ledger.transport import Transport, TransportError

_ERRORS = (TransportError, StatusWordError, ApduFormatError)


def _probe(transport: Transport, report: dict[str, Any], timeout: float) -> None:
    client = BakingAppClient(transport, timeout=timeout)
    version = client.version()
    report["app"] = "Tezos Baking" if version.is_baking else f"Tezos (class {version.app_class})"
    report["app_version"] = f"{version.major}.{version.minor}.{version.patch}"
    report["git"] = client.git()
    report["device_id"] = client.device_id()
    if not version.is_baking:
        return
    auth = client.query_auth_key_with_curve()
    if auth.authorized and auth.curve is not None:
        report["authorized_key"] = {
            "curve": auth.curve.uri_name,
            "path": apdu.format_path(auth.path),
            "pkh": client.get_public_key(auth.curve, auth.path).pkh,
        }
    else:
        report["authorized_key"] = None
    hwm = client.query_all_hwm()
    report["hwm"] = {
        "main": {"level": hwm.main_level, "round": hwm.main_round},
        "test": {"level": hwm.test_level, "round": hwm.test_round},
        "main_chain_id": hwm.main_chain_id.hex(),
    }


def _error_text(exc: BaseException) -> str:
    return str(exc) if str(exc).startswith("ledger") else f"ledger: {exc}"


def describe_hid_device(
    hid: HidModule, info: HidDeviceInfo, timeout: float = 3.0
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "type": "ledger",
        "model": info.model,
        "product_id": f"0x{info.product_id:04x}",
        "serial": info.serial,
        "path": info.path.decode(errors="replace"),
    }
    try:
        transport = HidTransport.open(hid, info)
    except TransportError as exc:
        report["error"] = _error_text(exc)
        return report
    try:
        _probe(transport, report, timeout)
    except _ERRORS as exc:
        report["error"] = _error_text(exc)
    finally:
        transport.close()
    return report


def list_devices(
    hid_module: HidModule | None = None,
    *,
    tcp: tuple[str, int] | None = None,
    timeout: float = 3.0,
) -> list[dict[str, Any]]:
    """One JSON-ready dict per Ledger found (plus the emulator at `tcp`, when given).

    Keys: type, model, path, serial, app, app_version, git, device_id (the tz1 that
    `ledger://ID/…` names), authorized_key {curve, path, pkh} or None, hwm {main, test,
    main_chain_id}; `error` (with an operator hint) when the device could not be queried."""
    reports: list[dict[str, Any]] = []
    if hid_module is not None or tcp is None:
        try:
            hid = hid_module or default_hid_module()
            infos = enumerate_devices(hid)
        except (TransportError, OSError) as exc:
            reports.append({"type": "ledger", "error": _error_text(exc)})
        else:
            reports.extend(describe_hid_device(hid, info, timeout) for info in infos)
    if tcp is not None:
        host, port = tcp
        report: dict[str, Any] = {
            "type": "ledger",
            "model": "emulator",
            "path": f"tcp={host}:{port}",
        }
        try:
            transport = TcpTransport.open(host, port, timeout)
        except TransportError as exc:
            report["error"] = _error_text(exc)
        else:
            try:
                _probe(transport, report, timeout)
            except _ERRORS as exc:
                report["error"] = _error_text(exc)
            finally:
                transport.close()
        reports.append(report)
    return reports


def format_device(report: dict[str, Any]) -> str:
    """One human-readable line for `signer-guard devices`."""
    parts = [f"ledger {report.get('model', '?')} {report.get('path', '')}".rstrip()]
    if report.get("serial"):
        parts.append(f"serial {report['serial']}")
    if "app" in report:
        parts.append(f"{report['app']} {report.get('app_version', '')}".rstrip())
    if report.get("device_id"):
        parts.append(f"id {report['device_id']}")
    if "authorized_key" in report:
        key = report["authorized_key"]
        parts.append(
            "no baking key authorized"
            if key is None
            else f"baking key {key['pkh']} ({key['curve']} {key['path']})"
        )
    if "hwm" in report:
        main, test = report["hwm"]["main"], report["hwm"]["test"]
        parts.append(
            f"HWM main {main['level']}/{main['round']} test {test['level']}/{test['round']}"
        )
    if "error" in report:
        parts.append(f"error: {report['error']}")
    return "; ".join(parts)
