"""Prometheus metrics of the server (text exposition format on `--metrics-port`), named after
Triton's (nv_inference_*) so the dashboards operators already have read them.

  nv_inference_request_success / _failure{reason}   requests answered OK / with each gRPC status
  nv_inference_count, nv_inference_exec_count        samples inferred, batches executed
  nv_inference_queue_duration_us, nv_inference_compute_infer_duration_us   cumulative, per Triton
  bottlenet_queue_seconds, bottlenet_compute_seconds histograms of the same per request / batch
  bottlenet_batch_size                               histogram of samples per executed batch
  bottlenet_model_restarts                           the model process restarted after dying
  bottlenet_model_ready                              1 while the model process serves
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

MODEL_LABEL = {"model": "bottlenet", "version": "1"}


class Metrics:
    """One registry per server (so tests and several servers in a process do not collide)."""

    def __init__(self, max_batch: int):
        self.registry = r = CollectorRegistry()
        labels = list(MODEL_LABEL)
        self.success = Counter("nv_inference_request_success", "Successful requests", labels, registry=r)
        self.failure = Counter(
            "nv_inference_request_failure", "Failed requests by status", [*labels, "reason"], registry=r
        )
        self.count = Counter("nv_inference_count", "Samples inferred", labels, registry=r)
        self.exec_count = Counter("nv_inference_exec_count", "Batches executed", labels, registry=r)
        self.queue_us = Counter("nv_inference_queue_duration_us", "Cumulative queue time", labels, registry=r)
        self.compute_us = Counter(
            "nv_inference_compute_infer_duration_us", "Cumulative compute time", labels, registry=r
        )
        self.queue_s = Histogram("bottlenet_queue_seconds", "Queue time per request", labels, registry=r)
        self.compute_s = Histogram("bottlenet_compute_seconds", "Compute time per batch", labels, registry=r)
        buckets = sorted({1, 2, 4, 8, 16, 32, 64, 128, max_batch})
        self.batch = Histogram(
            "bottlenet_batch_size", "Samples per executed batch", labels, buckets=buckets, registry=r
        )
        self.restarts = Counter("bottlenet_model_restarts", "Model process restarts", labels, registry=r)
        self.ready = Gauge("bottlenet_model_ready", "1 while the model process serves", labels, registry=r)

    def request(self, status: str) -> None:
        """One answered request: status "OK" or a gRPC status name."""
        if status == "OK":
            self.success.labels(**MODEL_LABEL).inc()
        else:
            self.failure.labels(**MODEL_LABEL, reason=status).inc()

    def observe(self, event: str, value: float) -> None:
        """The batcher's events (batcher.Batcher's `observe`)."""
        if event == "batch":
            self.exec_count.labels(**MODEL_LABEL).inc()
            self.count.labels(**MODEL_LABEL).inc(value)
            self.batch.labels(**MODEL_LABEL).observe(value)
        elif event == "queue_s":
            self.queue_us.labels(**MODEL_LABEL).inc(value * 1e6)
            self.queue_s.labels(**MODEL_LABEL).observe(value)
        elif event == "compute_s":
            self.compute_us.labels(**MODEL_LABEL).inc(value * 1e6)
            self.compute_s.labels(**MODEL_LABEL).observe(value)

    def restarted(self) -> None:
        self.restarts.labels(**MODEL_LABEL).inc()

    def serve(self, host: str, port: int):
        """HTTP /metrics on host:port (a daemon thread); returns the (server, thread) pair."""
        return start_http_server(port, addr=host, registry=self.registry)
