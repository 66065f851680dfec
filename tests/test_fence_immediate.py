"""A takeover fences the old holder at once, before its 1 s fence poll notices it."""

from __future__ import annotations

from pathlib import Path

from signer_guard.forge import forge_consensus, forge_generic
from signer_guard.model import HWMKey
from signer_guard.store.sqlite import SqliteStore
from tests.guard_proc import GuardProcess
from tests.http_client import sign

MAINNET = "NetXdQprcVkpaWU"
SECRET = "edsk4TjJWEszkHKono7XMnepVqwi37FrpbVt1KCsifJeAGimxheShG"
TZ1 = "tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv"


async def test_takeover_fences_watermarked_and_generic_requests_immediately(tmp_path: Path) -> None:
    async with GuardProcess(tmp_path, keys=[f"unencrypted:{SECRET}"], allow_generic=[17]) as g:
        generic = forge_generic(bytes(32), 17, b"\0\0\0\x05hello")
        assert (await sign(g.url, TZ1, generic))[0] == 200
        assert (await sign(g.url, TZ1, forge_consensus("attestation", 21, MAINNET, 10, 0)))[
            0
        ] == 200
        store = SqliteStore(g.config["store"])
        await store.open()
        try:
            fence = await store.read_fence()
            await store.takeover("guard-b", 20, [HWMKey(MAINNET, TZ1, "attestation")], fence)
        finally:
            await store.close()
        # no sleep: the store step and the generic fence re-read both see the new holder
        status, _ = await sign(g.url, TZ1, forge_consensus("attestation", 21, MAINNET, 30, 0))
        assert status == 503
        status, _ = await sign(g.url, TZ1, forge_generic(bytes(32), 17, b"\0\0\0\x01x"))
        assert status == 503
