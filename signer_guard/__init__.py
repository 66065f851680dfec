"""signer-guard: a Tezos signing proxy that refuses to double sign."""

__version__ = "0.1.0"
