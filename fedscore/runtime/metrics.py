"""A party's metrics for Prometheus (`prometheus-client`), served on its metrics port.

What is counted (names are `fedscore_*`):
- `calls_total{method, reason}`: every call a server handled, by outcome ("OK" or the
  refusal's reason code), rate-limited calls included (reason RATE_LIMITED);
- `call_seconds{method}`: how long calls took (a histogram);
- `rate_limited_total{caller}`: calls refused for their rate, by calling participant;
- `batch_questions`: questions per batch a node answered or a coordinator sent (histogram);
- whatever a party's own collector adds at each scrape (log entries, checkpoint age,
  status-list time left, privacy budget left, readiness): see `fedscore.apps.party_metrics`.

Invariants:
- No personal data, and bounded label values: labels hold only method names, reason
  codes and participant ids (as many as the registry lists), never a token, a
  pseudonym, a national ID or a query id.
- One registry per process (`REGISTRY`), not prometheus-client's global default, so a
  test process running several parties' code does not mix what it counts by accident.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.registry import Collector

from fedscore.runtime import calls

REGISTRY = CollectorRegistry(auto_describe=True)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

CALLS = Counter(
    "fedscore_calls", "Calls a server handled, by method and outcome", ("method", "reason"),
    registry=REGISTRY,
)  # fmt: skip
CALL_SECONDS = Histogram(
    "fedscore_call_seconds", "Time to handle a call", ("method",),
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
RATE_LIMITED = Counter(
    "fedscore_rate_limited", "Calls refused for their rate, by caller", ("caller",),
    registry=REGISTRY,
)  # fmt: skip
BATCH_QUESTIONS = Histogram(
    "fedscore_batch_questions", "Questions in one batch", buckets=BATCH_BUCKETS,
    registry=REGISTRY,
)  # fmt: skip


def _count(outcome: calls.CallOutcome) -> None:
    CALLS.labels(outcome.method, outcome.reason).inc()
    if outcome.reason == "RATE_LIMITED":
        RATE_LIMITED.labels(outcome.caller or "unknown").inc()
    else:
        CALL_SECONDS.labels(outcome.method).observe(outcome.seconds)


def observe_batch(questions: int) -> None:
    """A batch of `questions` was answered (node) or sent (coordinator)."""
    BATCH_QUESTIONS.observe(questions)


def serve_metrics(host: str, port: int, collector: Collector | None = None) -> int:
    """Count every call from now on and serve /metrics on host:port; the port bound."""
    if collector is not None:
        REGISTRY.register(collector)
    calls.observe_calls(_count)
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return int(server.server_port)
