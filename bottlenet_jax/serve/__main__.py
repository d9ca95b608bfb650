"""The cloud server's command line.

    python -m bottlenet_jax.serve --export EXPORT_DIR [--host 127.0.0.1] [--port 8001]
        [--http-port 8000 | --no-http] [--max-batch 32] [--max-delay-ms 2] [--queue 256]
        [--metrics-port 8002] [--tls-cert server.crt --tls-key server.key [--tls-client-ca ca.crt]]

Triton's ports by default: gRPC on 8001, the REST form on 8000 (serve/rest.py), metrics on 8002
when asked. It prints one line when serving (the export, the model, the addresses, batch sizes,
security); on
SIGTERM/SIGINT it stops accepting requests, finishes the ones in flight, and prints what it served.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from bottlenet_jax.serve.protocol import MODEL, describe_export
from bottlenet_jax.serve.server import start


def main(argv=None):
    p = argparse.ArgumentParser(description="Serve an export's cloud half over the KServe v2 protocol (gRPC and REST).")
    p.add_argument("--export", required=True, help="directory written by python -m bottlenet_jax.export")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001, help="gRPC port (0: any free one)")
    p.add_argument("--http-port", type=int, default=8000, help="the REST form's port (0: any free one)")
    p.add_argument("--no-http", action="store_true", help="gRPC only")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="longest wait for a batch to fill")
    p.add_argument("--queue", type=int, default=256, help="requests waiting at most; more are rejected")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus metrics over HTTP on this port")
    p.add_argument("--tls-cert", default=None, help="PEM certificate (chain) of this server: serve TLS")
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", default=None, help="PEM CA: clients must present a certificate it signed (mTLS)")
    p.add_argument("--dry_run", action="store_true", help="check the arguments (and the export, if here), then stop")
    a = p.parse_args(argv)
    if a.max_batch < 1 or a.queue < 1 or a.max_delay_ms < 0:
        sys.exit("error: --max-batch and --queue must be >= 1, --max-delay-ms >= 0")
    if a.dry_run:
        return print(f"dry run: {describe_export(a.export)}")
    from bottlenet_jax.errors import CheckpointError

    try:
        server = start(
            a.export,
            host=a.host,
            port=a.port,
            max_batch=a.max_batch,
            max_delay=a.max_delay_ms / 1e3,
            queue_size=a.queue,
            tls_cert=a.tls_cert,
            tls_key=a.tls_key,
            tls_client_ca=a.tls_client_ca,
            metrics_port=a.metrics_port,
            http_port=None if a.no_http else a.http_port,
        )
    except (OSError, RuntimeError, ValueError, CheckpointError) as e:
        sys.exit(f"error: {e}")
    m, port, batcher = server.decoder.manifest, server.port, server.batcher
    security = ("TLS" + (" with client certificates" if a.tls_client_ca else "")) if server.tls else "plaintext"
    metrics = f"; metrics on http://{a.host}:{server.metrics_port}/metrics" if server.metrics_port else ""
    http = f"; REST on {'https' if server.tls else 'http'}://{a.host}:{server.http_port}/v2" if server.http_port else ""
    print(
        f"serving {a.export} (RB{m['split_after']}, {m['codec']['name']}, features "
        f"{m['feature_shape']}) as model {MODEL!r} on {a.host}:{port}; batch sizes {server.model.sizes}, "
        f"max delay {a.max_delay_ms} ms, queue {a.queue}; {security}{http}{metrics}",
        flush=True,
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    print("stopping: finishing requests in flight", flush=True)
    server.stop()
    print(
        f"stopped after {batcher.inferences} inferences in {batcher.executions} batches "
        f"(payloads decoded in {server.service.decoding.calls} calls); "
        f"compiles after warm-up: {server.compiles_after_warmup}",
        flush=True,
    )


if __name__ == "__main__":
    main()
