"""Prometheus metrics of the gateway (`temper_gateway_` prefix, base units, `_total` counters)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from temper.server.metrics import LATENCY_BUCKETS

OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("temper_gateway_requests", "requests by requested model, serving back end and status",
                                ["model", "backend", "status"], registry=r)
        self.latency = Histogram("temper_gateway_request_duration_seconds", "request received to response end",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("temper_gateway_overhead_seconds",
                                  "time spent in the gateway itself (duration minus waiting for back ends)",
                                  buckets=OVERHEAD_BUCKETS, registry=r)
        self.tokens = Counter("temper_gateway_tokens", "tokens billed by back end", ["backend", "kind"], registry=r)
        self.cost = Counter("temper_gateway_cost_usd", "USD spent, by model, back end and team",
                            ["model", "backend", "team"], registry=r)
        self.cache = Counter("temper_gateway_cache", "cache lookups by kind and result", ["kind", "result"],
                             registry=r)
        self.routes = Counter("temper_gateway_route_decisions", "routing decisions", ["route", "policy", "outcome",
                                                                                       "target"], registry=r)
        self.backend_errors = Counter("temper_gateway_backend_errors", "failed tries by back end and kind",
                                      ["backend", "kind"], registry=r)
        self.rejected = Counter("temper_gateway_rejected", "requests refused by the gateway", ["reason"], registry=r)
        self.backend_up = Gauge("temper_gateway_backend_up", "1 when the last health check passed", ["backend"],
                                registry=r)
        self.in_flight = Gauge("temper_gateway_backend_in_flight", "requests outstanding at each back end",
                               ["backend"], registry=r)
