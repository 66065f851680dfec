"""The device layer: one module or subpackage per backend.

Drivers may import the pure, I/O-free Tezos primitives of the guard (`signer_guard.b58`,
`signer_guard.keys`, `signer_guard.codec`) and nothing else from `signer_guard`: they never know
about stores, policy or the HTTP server. `tests/test_layering.py` enforces this.
"""
