"""`make run`: a throwaway software key, a config in the state dir, and `signer-guard serve`."""

from __future__ import annotations

import os
import sys

from signer_guard.config import state_dir
from signer_guard.forge import forge_consensus
from signer_guard.keys import SecretKey

MAINNET = "NetXdQprcVkpaWU"


def main() -> int:
    demo = state_dir() / "demo"
    demo.parent.parent.mkdir(parents=True, exist_ok=True)
    for d in (demo.parent, demo):  # the state dirs are ours alone: 0700
        d.mkdir(exist_ok=True, mode=0o700)
    secret = SecretKey.generate("ed25519")
    pkh = secret.public_key.pkh
    config = demo / "config.toml"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(
            "# written by `make run`: a throwaway key, never use it for real baking\n"
            'listen = "127.0.0.1:6732"\n'
            f'store = "{demo / "store.sqlite"}"\n'
            f'keys = ["unencrypted:{secret.b58}"]\n'
            'guard_id = "demo"\n'
        )
    attestation = forge_consensus("attestation", 21, MAINNET, 1000, 0).hex()
    other = forge_consensus("attestation", 21, MAINNET, 1000, 0, payload_hash=b"\1" * 32).hex()
    url = f"http://127.0.0.1:6732/keys/{pkh}"
    post = "curl -s -X POST -H 'Content-Type: application/json' --data"
    print(f"signer-guard demo: throwaway tz1 key {pkh}")
    print(f"config: {config}")
    print("sign an attestation at level 1000 (run it again: the same signature, from the cache):")
    print(f"  {post} '\"{attestation}\"' {url}")
    print("a different attestation at the same level is refused with 409:")
    print(f"  {post} '\"{other}\"' {url}")
    print("  curl -s http://127.0.0.1:6732/status")
    sys.stdout.flush()
    os.execv(
        sys.executable, [sys.executable, "-m", "signer_guard", "serve", "--config", str(config)]
    )


if __name__ == "__main__":
    sys.exit(main())
