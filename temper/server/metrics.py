"""Prometheus metrics of the server: per-request histograms observed here, engine gauges read at scrape time.

Names follow Prometheus conventions (base units, `_total` counters) under the `temper_` prefix; the engine's
statistics come from `AsyncLLMEngine.stats()` (a snapshot taken after each step), so a scrape never touches the
engine thread.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from temper.engine.outputs import EngineStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0,
                   640.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)


class _EngineCollector(Collector):
    def __init__(self, stats: Callable[[], EngineStats | None]):
        self._stats = stats

    def collect(self) -> Iterator:
        s = self._stats()
        if s is None:  # still loading
            return
        gauges = {
            "temper_num_requests_running": ("sequences in the running batch", s.num_running),
            "temper_num_requests_waiting": ("sequences waiting for their first step or after preemption",
                                            s.num_waiting),
            "temper_kv_cache_usage_ratio": ("KV blocks held by sequences over all blocks", s.kv_usage),
            "temper_kv_cache_utilization_ratio": ("tokens stored over slots of held blocks", s.kv_utilization),
            "temper_prefix_cache_hit_rate": ("prefix-cache block hits over lookups since start", s.prefix_hit_rate),
            "temper_kv_cache_blocks": ("blocks in the KV pool", s.num_blocks),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        counters = {
            "temper_prefix_cache_queries": ("prefix-cache block lookups", s.prefix_queries),
            "temper_prefix_cache_hits": ("prefix-cache block hits", s.prefix_hits),
            "temper_num_preemptions": ("sequences preempted (recomputed later) for lack of blocks",
                                       s.num_preemptions),
            "temper_engine_prompt_tokens": ("prompt tokens computed (prefix-cache hits excluded)", s.prompt_tokens),
            "temper_engine_generation_tokens": ("tokens generated, every sequence", s.generation_tokens),
            "temper_engine_steps": ("engine steps", s.steps),
            "temper_engine_busy_seconds": ("seconds spent in engine steps", s.busy_seconds),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)


class ServerMetrics:
    """One registry per app (tests build several apps in one process)."""

    def __init__(self, stats: Callable[[], EngineStats | None]):
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, open fds...
        self.ttft = Histogram("temper_time_to_first_token_seconds", "request received to first token",
                              ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("temper_time_per_output_token_seconds", "mean gap between output tokens per request",
                              ["endpoint"], buckets=TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("temper_e2e_request_latency_seconds", "request received to last token",
                             ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Histogram("temper_request_queue_time_seconds", "engine arrival to first scheduled step",
                               ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("temper_requests", "finished requests by endpoint and finish reason",
                                ["endpoint", "finish_reason"], registry=r)
        self.prompt_tokens = Counter("temper_prompt_tokens", "prompt tokens of served requests", registry=r)
        self.cached_tokens = Counter("temper_cached_prompt_tokens", "prompt tokens served from the prefix cache",
                                     registry=r)
        self.generation_tokens = Counter("temper_generation_tokens", "completion tokens returned", registry=r)
        self.errors = Counter("temper_errors", "error responses by type", ["type", "status"], registry=r)
        r.register(_EngineCollector(stats))
