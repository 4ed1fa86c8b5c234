"""The server's Prometheus metrics, in a registry of their own (two apps in one process never share counts).

Exposed at ``GET /metrics`` in the Prometheus text format:

- ``slimship_requests_total{model, code}``: predict requests answered, by HTTP status;
- ``slimship_request_errors_total{model, code}``: those answered with a 4xx or 5xx;
- ``slimship_request_latency_seconds{model}``: histogram of the time from a request's arrival to its answer;
- ``slimship_batch_size{model}``: histogram of inputs per runtime call (dynamic batching at work);
- ``slimship_images_total{model}``: inputs classified;
- ``slimship_requests_in_flight{model}``, ``slimship_queued_inputs{model}``: gauges.

``model`` is a served model's name; requests for a name that is not served count under ``model=""`` so that no
client can grow the label set.
"""

from __future__ import annotations

from typing import Callable

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self, models: list[str], queued: Callable[[str], int]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no `*_created` series beside every counter: nothing here reads them

        self.registry = CollectorRegistry(auto_describe=True)
        self.models = set(models)
        r = self.registry
        self.requests = Counter("slimship_requests", "Predict requests answered, by HTTP status",
                                ["model", "code"], registry=r)
        self.errors = Counter("slimship_request_errors", "Predict requests answered with a 4xx or 5xx status",
                              ["model", "code"], registry=r)
        self.latency = Histogram("slimship_request_latency_seconds", "Predict request latency, arrival to answer",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("slimship_batch_size", "Inputs per runtime call", ["model"], buckets=BATCH_BUCKETS,
                               registry=r)
        self.images = Counter("slimship_images", "Inputs classified", ["model"], registry=r)
        self.in_flight = Gauge("slimship_requests_in_flight", "Predict requests being answered", ["model"],
                               registry=r)
        queued_gauge = Gauge("slimship_queued_inputs", "Inputs waiting for a batch", ["model"], registry=r)
        for m in models:
            queued_gauge.labels(m).set_function(lambda m=m: queued(m))
            self.in_flight.labels(m)
            self.latency.labels(m)
            self.batch.labels(m)

    def label(self, model: str) -> str:
        return model if model in self.models else ""

    def answered(self, model: str, code: int, seconds: float, images: int) -> None:
        m = self.label(model)
        self.requests.labels(m, str(code)).inc()
        if code >= 400:
            self.errors.labels(m, str(code)).inc()
        else:
            self.images.labels(m).inc(images)
        self.latency.labels(m).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
