"""Prometheus metrics (remote-signer-api.md §8); one registry per guard, so tests run several."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STATES = ("active", "standby", "fenced", "degraded")
_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "signer_guard_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.sign = Counter(
            "signer_guard_sign",
            "Signing requests by key, kind and outcome",
            ["pkh", "kind", "result"],
            registry=r,
        )
        self.state = Gauge(
            "signer_guard_state", "1 for the guard's current state", ["state"], registry=r
        )
        self.epoch = Gauge("signer_guard_epoch", "Fence epoch held (0 if none)", registry=r)
        self.fence_level = Gauge("signer_guard_fence_level", "Fence level", registry=r)
        self.fenced = Counter("signer_guard_fenced", "Times this guard lost the fence", registry=r)
        self.hwm_level = Gauge(
            "signer_guard_hwm_level", "High watermark level", ["chain", "pkh", "kind"], registry=r
        )
        self.device_hwm_level = Gauge(
            "signer_guard_device_hwm_level", "Device HWM level", ["pkh", "kind"], registry=r
        )
        self.store_seconds = Histogram(
            "signer_guard_store_commit_seconds",
            "Store check-and-advance latency",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_seconds = Histogram(
            "signer_guard_backend_sign_seconds",
            "Backend sign latency",
            ["backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.last_commit = Gauge(
            "signer_guard_last_durable_commit_timestamp_seconds",
            "Unix time of the last durable HWM advance",
            registry=r,
        )
        self.set_state("standby")

    def set_state(self, state: str) -> None:
        for s in STATES:
            self.state.labels(state=s).set(1 if s == state else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
