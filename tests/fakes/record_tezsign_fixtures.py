"""Record TezSign exchanges (frames as hex) against the fake gadget into fixtures/tezsign/.

Run: `.venv/bin/python -m tests.fakes.record_tezsign_fixtures` (from the repo root). Message ids
come from a counter and BLS signatures are deterministic, so the output is reproducible.
Each file: name, interface, request (how to rebuild the host payload), id, host frames, gadget
frames (accept/retry/response in order) and the expected decoded answer.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.tezsign import admin, client, frames, usbdev
from drivers.tezsign.errors import DeviceError
from drivers.tezsign.transport import Channel
from signer_guard.keys import SecretKey, signature_b58
from tests.fakes.tezsign_gadget import FakeGadget, FakeUsb

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "tezsign"
VECTORS = ROOT.parent / "shared" / "vectors"
# keys.json `taquito_tz4_bls_pop`, so that the recorded PoP matches the published vector.
SECRET = "BLsk2jjZe6wQH9TwtBzJwL7xLePfEgUxsV6BfwDP8dGfsosgnekSgC"
COMPANION_SECRET_SEED = bytes(range(1, 33))
PASSPHRASE = b"correct horse battery staple"
ATTESTATION_HEX = (
    # requests.json `octez_bls_attestation_tag41_mainnet_l1331_r0`
    "137a06a7700e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a829"
    "0000053300000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
)


def fixture_gadget() -> FakeGadget:
    return FakeGadget(
        {
            "consensus": SecretKey.from_b58(SECRET),
            "companion": SecretKey("bls12_381", COMPANION_SECRET_SEED),
        },
        serial="TZSGFIXTURE01",
        passphrase=PASSPHRASE,
    )


def _record(
    gadget: FakeGadget,
    ifnum: int,
    name: str,
    request: dict[str, Any],
    run: Callable[[Channel], Any],
    describe: Callable[[Any], Any],
    counter: itertools.count[int],
) -> dict[str, Any]:
    start = len(gadget.log)
    ids: list[bytes] = []

    def next_id() -> bytes:
        ids.append(next(counter).to_bytes(16, "big"))
        return ids[-1]

    with admin.open_gadget(gadget.serial, FakeUsb(gadget)) as dev:
        intf = usbdev.open_interface(dev, ifnum)
        ch = Channel(
            dev, intf.ep_in, intf.ep_out, intf.max_packet, read_timeout_ms=20, id_factory=next_id
        )
        try:
            try:
                answer = describe(run(ch))
            except DeviceError as exc:
                answer = {"error": {"code": exc.code, "message": exc.message}}
        finally:
            ch.close()
            usbdev.release(dev, intf.number)
    log = gadget.log[start:]
    return {
        "name": name,
        "interface": ifnum,
        "request": request,
        "id": ids[0].hex(),
        "host_frames": [data.hex() for who, _, data in log if who == "host"],
        "gadget_frames": [data.hex() for who, _, data in log if who == "gadget"],
        "expect": answer,
    }


def record() -> list[dict[str, Any]]:
    gadget = fixture_gadget()
    counter = itertools.count(1)
    attestation = bytes.fromhex(ATTESTATION_HEX)
    tz4 = gadget.keys["consensus"].tz4
    out = []

    def keys_json(keys: Any) -> Any:
        return [
            {
                "key_id": k.key_id,
                "lock_state": k.lock_state,
                "tz4": k.tz4,
                "bl_pubkey": k.bl_pubkey,
                "pop": k.pop,
                "marks": {kind: list(mark) for kind, mark in k.marks.items()},
            }
            for k in keys
        ]

    def sig_json(raw: bytes) -> Any:
        return {"signature": signature_b58("bls12_381", raw)}

    def results_json(results: Any) -> Any:
        return [{"key_id": r.key_id, "ok": r.ok, "error": r.error} for r in results]

    out.append(
        _record(
            gadget,
            0,
            "version_if0",
            {"type": "version"},
            client.version,
            lambda v: {"version": v.version, "build_date": v.build_date},
            counter,
        )
    )
    out.append(
        _record(gadget, 0, "status_if0", {"type": "status"}, client.status, keys_json, counter)
    )
    sign_req = {"type": "sign", "tz4": tz4, "message": ATTESTATION_HEX}
    out.append(
        _record(
            gadget,
            0,
            "sign_attestation_l1331_if0",
            sign_req,
            lambda ch: client.sign(ch, tz4, attestation),
            sig_json,
            counter,
        )
    )
    out.append(
        _record(
            gadget,
            0,
            "sign_repeat_stale_if0",
            sign_req,
            lambda ch: client.sign(ch, tz4, attestation),
            sig_json,
            counter,
        )
    )
    gadget.retry_next = 1
    higher = bytearray(attestation)
    higher[38:42] = (1332).to_bytes(4, "big")
    out.append(
        _record(
            gadget,
            0,
            "sign_after_retry_l1332_if0",
            {"type": "sign", "tz4": tz4, "message": higher.hex()},
            lambda ch: client.sign(ch, tz4, bytes(higher)),
            sig_json,
            counter,
        )
    )
    out.append(
        _record(
            gadget,
            0,
            "set_level_on_if0_wrong_interface",
            {"type": "set_level", "key_id": "consensus", "level": 2000},
            lambda ch: client.set_level(ch, "consensus", 2000),
            lambda _: {"ok": True},
            counter,
        )
    )
    out.append(
        _record(
            gadget,
            1,
            "lock_consensus_if1",
            {"type": "lock", "key_ids": ["consensus"]},
            lambda ch: client.lock(ch, ["consensus"]),
            results_json,
            counter,
        )
    )
    out.append(
        _record(
            gadget,
            0,
            "sign_locked_if0",
            sign_req,
            lambda ch: client.sign(ch, tz4, attestation),
            sig_json,
            counter,
        )
    )
    out.append(
        _record(
            gadget,
            1,
            "unlock_consensus_if1",
            {"type": "unlock", "key_ids": ["consensus"], "passphrase": PASSPHRASE.hex()},
            lambda ch: client.unlock(ch, ["consensus"], PASSPHRASE),
            results_json,
            counter,
        )
    )
    out.append(
        _record(
            gadget,
            1,
            "set_level_consensus_2000_if1",
            {"type": "set_level", "key_id": "consensus", "level": 2000},
            lambda ch: client.set_level(ch, "consensus", 2000),
            lambda _: {"ok": True},
            counter,
        )
    )
    return out


def write(exchanges: list[dict[str, Any]], out_dir: Path = OUT) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for exchange in exchanges:
        path = out_dir / f"{exchange['name']}.json"
        path.write_text(json.dumps(exchange, indent=1) + "\n")


def main() -> int:
    write(record())
    print(f"wrote {len(list(OUT.glob('*.json')))} exchanges to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["frames", "record", "write"]
