"""`make bench`: every benchmark, with its table."""

from __future__ import annotations

import asyncio

from bench import guard_latency, store_latency

asyncio.run(store_latency.main(2000))
asyncio.run(guard_latency.main(2000, 10.0))
