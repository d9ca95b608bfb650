"""Load test of the split-inference server: dynamic batching vs none, closed loop, loopback only.

    python benchmarks/serve_load.py --export EXPORT_DIR          # e.g. the demo's, exported
    python benchmarks/serve_load.py --export A --versus B        # and A's req/s against B's, same run
    python benchmarks/serve_load.py --smoke                      # CI: a random-init export, seconds

Starts `python -m bottlenet_jax.serve` twice on this machine, once batching (`--max-batch`,
`--max-delay-ms`) and once not (max batch 1), and sweeps closed-loop concurrency (C clients, each
sending one image's payload per request and the next as soon as the answer arrives) for `--seconds`
per level. The clients are coroutines on one grpc.aio channel using the protocol's own stubs with
requests built beforehand, so the load generator takes as little of the shared cores as Python
allows; when nghttp2's `h2load` is installed (apt-get install nghttp2-client) the same sweep is
measured again by it, a C client, as a second opinion (it counts HTTP status only, so the request
it repeats is first checked to succeed). Per level: throughput, p50/p95/p99
latency, mean batch fill (the server's ModelStatistics: inferences / executions), rejects. Payloads
are real: the export's edge half and codec on random-content images. Bytes on the wire per request
are counted by a TCP relay between one client and the server (both directions' TCP payload: HTTP/2,
gRPC and protobuf framing included), next to the payload itself, for the unary RPC (ModelInfer)
and for the bidirectional stream (ModelStreamInfer, what the edge client uses). `--tls` repeats
the 64-client level with both servers behind TLS (certificates made here by the openssl CLI):
the batched/unbatched ratio and p95 with TLS on, beside the plaintext figures of the same run.
`--versus B`: the batching server of each export in turn, A B A B, at the highest level: req/s and
p95 of each, and A's req/s over B's (e.g. an entropy-coded export against a JPEG one). Images: the
first Fashion-MNIST test images when the export takes 28x28x1 and the files are here, else random.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bottlenet_jax.serve.certs import make_certs  # noqa: E402


def random_export(out):
    """An export of a random-init model of the demo's config (figures meaningless: for --smoke)."""
    from bottlenet_jax.checkpoint import Checkpoints, write_json
    from bottlenet_jax.export import export_workdir
    from bottlenet_jax.models import build_model
    from bottlenet_jax.train_lib import create_train_state
    from configs import fashion_mnist_demo

    cfg = fashion_mnist_demo.get_config()
    state, _ = create_train_state(cfg, build_model(cfg), 1, 10, 10)
    wd = os.path.join(out, "wd")
    os.makedirs(wd)
    write_json(os.path.join(wd, "config.json"), cfg.to_dict())
    ckpt = Checkpoints(wd)
    ckpt.save(state, {"step": 0})
    ckpt.close()
    export_workdir(wd, os.path.join(out, "export"))
    return os.path.join(out, "export")


def start_server(export, max_batch, delay_ms, queue, tls=None):
    """The server CLI in its own process on ports the system chooses: (process, gRPC port); the
    process's `http_port` is its REST port."""
    cmd = [sys.executable, "-m", "bottlenet_jax.serve", "--export", export, "--port", "0", "--http-port", "0"]
    cmd += ["--max-batch", str(max_batch), "--max-delay-ms", str(delay_ms), "--queue", str(queue)]
    if tls:
        cmd += ["--tls-cert", tls["server.crt"], "--tls-key", tls["server.key"]]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = p.stdout.readline()
    if "serving" not in line:
        raise RuntimeError(f"server did not start: {line}{p.stdout.read()[-2000:]}")
    from bottlenet_jax.serve.server import listening_http_port, listening_port

    p.http_port = listening_http_port(line)
    return p, listening_port(line)


def stats(addr, tls=None):
    import tritonclient.grpc as tc

    c = tc.InferenceServerClient(addr, **({"ssl": True, "root_certificates": tls["ca.crt"]} if tls else {}))
    s = c.get_inference_statistics("bottlenet", as_json=True)["model_stats"][0]
    c.close()
    return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))


def infer_requests(payloads):
    """One ModelInferRequest per payload, as a KServe v2 client builds it (BYTES [1], output CLASS)."""
    from tritonclient.grpc import service_pb2 as pb

    t, o = pb.ModelInferRequest.InferInputTensor, pb.ModelInferRequest.InferRequestedOutputTensor
    return [
        pb.ModelInferRequest(
            model_name="bottlenet",
            outputs=[o(name="CLASS")],
            inputs=[
                t(name="PAYLOAD", datatype="BYTES", shape=[1], contents=pb.InferTensorContents(bytes_contents=[p]))
            ],
        )
        for p in payloads
    ]


def export_images(m, n):
    """`n` inputs for an export (manifest `m`), normalised as its edge expects: the first
    Fashion-MNIST test images when it takes 28x28x1 and the files are here, else random ones."""
    if tuple(m["input_shape"]) == (28, 28, 1):
        try:
            from bottlenet_jax.data.fashion_mnist import local_dir, read_idx
            from bottlenet_jax.steps import normalize

            u8 = read_idx(os.path.join(local_dir(), "t10k-images-idx3-ubyte.gz"))[:n, :, :, None]
            return np.asarray(normalize(u8, m["mean"], m["std"]))
        except (ImportError, TypeError, OSError):
            pass  # no local Fashion-MNIST
    return np.random.default_rng(0).normal(size=(n, *m["input_shape"])).astype(np.float32)


def export_requests(export, n=64):
    """(manifest, framed payloads, ModelInferRequests) of `n` images through the export's edge and codec."""
    from bottlenet_jax.export import Half, load_codec, load_manifest
    from bottlenet_jax.serve.protocol import frame

    m = load_manifest(export)
    edge, (codec, state) = Half(export, "edge"), load_codec(export)
    framed = [frame(b) for b in codec.encode(np.asarray(edge(export_images(m, n))), state=state)]
    return m, framed, infer_requests(framed)


def print_in_turn(runs: dict, names: dict, errors: bool = False) -> dict:
    """Print runs measured in turn ({key: [run dicts]}, each labelled `names[key]`); returns each
    key's mean req/s."""
    for k, rs in runs.items():
        err = lambda r: f", {r['errors']} errors" if errors else ""  # noqa: E731
        print(f"  {names[k]}: " + ", ".join(f"{r['rps']:.0f} req/s (p95 {r['p95']:.1f} ms{err(r)})" for r in rs))
    return {k: np.mean([r["rps"] for r in rs]) for k, rs in runs.items()}


def versus(a, b, concurrency, seconds, args):
    """Batching servers of exports a and b in turn (a b a b) at one concurrency: {export: [runs]}."""
    runs = {a: [], b: []}
    reqs = {e: export_requests(e)[2] for e in (a, b)}
    for e in (a, b, a, b):
        proc, port = start_server(e, args.max_batch, args.max_delay_ms, args.queue)
        try:
            closed_loop(f"127.0.0.1:{port}", reqs[e], 4, 0.5)  # warm-up
            runs[e].append(closed_loop(f"127.0.0.1:{port}", reqs[e], concurrency, seconds))
        finally:
            proc.terminate()
            proc.communicate(timeout=60)
    return runs


def closed_loop(addr, requests, concurrency, seconds, tls=None):
    """`concurrency` clients on one gRPC channel (grpc.aio, one event loop: the load generator must
    not eat the cores the server is measured on), each sending its next request when answered."""
    import asyncio

    import grpc
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    lat, codes = [], {}

    def open_channel():
        if not tls:
            return grpc.aio.insecure_channel(addr)
        with open(tls["ca.crt"], "rb") as f:
            return grpc.aio.secure_channel(addr, grpc.ssl_channel_credentials(f.read()))

    async def run():
        async with open_channel() as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            stop = time.perf_counter() + seconds

            async def client(k):
                i = k
                while time.perf_counter() < stop:
                    t = time.perf_counter()
                    try:
                        await stub.ModelInfer(requests[i % len(requests)], timeout=60)
                        lat.append(time.perf_counter() - t)
                    except grpc.aio.AioRpcError as e:
                        codes[e.code().name] = codes.get(e.code().name, 0) + 1
                    i += concurrency

            t0 = time.perf_counter()
            await asyncio.gather(*(client(k) for k in range(concurrency)))
            return time.perf_counter() - t0

    n0, e0 = stats(addr, tls)
    wall = asyncio.run(run())
    n1, e1 = stats(addr, tls)
    ms = np.array(lat) * 1e3
    rejects = codes.pop("RESOURCE_EXHAUSTED", 0)
    return {
        "rps": len(lat) / wall,
        "p50": np.percentile(ms, 50),
        "p95": np.percentile(ms, 95),
        "p99": np.percentile(ms, 99),
        "fill": (n1 - n0) / max(1, e1 - e0),
        "rejects": rejects,
        "errors": sum(codes.values()),
        "n": len(lat),
        "ms": ms,
    }


def h2load(port, request, concurrency, n):
    """The same closed loop measured by nghttp2's h2load (C; one connection, `concurrency` streams),
    posting one gRPC-framed request: a second, independent client. None when h2load is missing."""
    import shutil

    if not shutil.which("h2load"):
        return None
    import grpc
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:  # h2load would count a gRPC error as a success
        pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(request, timeout=60)
    with tempfile.TemporaryDirectory() as d:
        body, log = os.path.join(d, "body"), os.path.join(d, "log")
        msg = request.SerializeToString()
        with open(body, "wb") as f:
            f.write(b"\0" + len(msg).to_bytes(4, "big") + msg)  # gRPC message prefix: uncompressed, length
        out = subprocess.run(
            [
                "h2load",
                "-n",
                str(n),
                "-c",
                "1",
                "-m",
                str(concurrency),
                "-d",
                body,
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "--log-file",
                log,
                f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        ).stdout
        with open(log) as f:
            rows = [line.split("\t") for line in f.read().splitlines()]
    ok = [int(r[2]) / 1e3 for r in rows if r[1] == "200"]
    rps = float(out.split(" req/s")[0].rsplit(" ", 1)[1])
    return {
        "rps": rps,
        "p50": np.percentile(ok, 50),
        "p95": np.percentile(ok, 95),
        "p99": np.percentile(ok, 99),
        "failed": len(rows) - len(ok),
    }


class Relay:
    """127.0.0.1:listen -> 127.0.0.1:target, counting bytes each way (TCP payload); the client's bytes
    are kept too, so that its HTTP/2 frames can be told apart (plaintext only)."""

    def __init__(self, target):
        self.target, self.up, self.down, self.sent = target, 0, 0, bytearray()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            a, _ = self.sock.accept()
            b = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(a, b, "up"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(b, a, "down"), daemon=True).start()

    def _pipe(self, src, dst, way):
        try:
            while data := src.recv(65536):
                setattr(self, way, getattr(self, way) + len(data))
                if way == "up":
                    self.sent += data
                dst.sendall(data)
        except OSError:  # the other side closed
            pass


H2_FRAMES = {0: "DATA", 1: "HEADERS", 4: "SETTINGS", 6: "PING", 8: "WINDOW_UPDATE"}


def http2_frame_bytes(sent: bytes, start: int, end: int) -> dict:
    """Bytes of the client's HTTP/2 stream in [start, end) by what carries them: each frame's 9-byte
    header under DATA/HEADERS/..., the HEADERS/PING/WINDOW_UPDATE/SETTINGS frames' bodies under their
    type, DATA bodies (gRPC messages) left out: they are counted as message and prefix."""
    out, i = {}, 24 if sent.startswith(b"PRI * HTTP/2.0") else 0  # the connection preface
    while i + 9 <= min(len(sent), end):
        length, kind = int.from_bytes(sent[i : i + 3], "big"), H2_FRAMES.get(sent[i + 3], "other")
        if i >= start:
            out[kind] = out.get(kind, 0) + 9 + (0 if kind == "DATA" else length)
        i += 9 + length
    return out


def wire_bytes(port, requests, n=200):
    """Mean bytes per request each way on one TCP connection (HPACK tables warm after 20 requests)."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    relay = Relay(port)
    with grpc.insecure_channel(f"127.0.0.1:{relay.port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        for k in range(20):
            stub.ModelInfer(requests[k % len(requests)])
        time.sleep(0.2)
        up0, down0 = relay.up, relay.down
        for k in range(n):
            stub.ModelInfer(requests[k % len(requests)])
        time.sleep(0.2)
        up, down = relay.up - up0, relay.down - down0
        frames = http2_frame_bytes(relay.sent, up0, relay.up)
    sent = [requests[k % len(requests)] for k in range(n)]
    return {
        "up": up / n,
        "down": down / n,
        "frames": {k: v / n for k, v in frames.items()},
        "payload": float(np.mean([len(r.inputs[0].contents.bytes_contents[0]) for r in sent])),
        "message": float(np.mean([r.ByteSize() for r in sent])),
    }


def wire_bytes_stream(port, payloads, n=200):
    """The same count over one ModelStreamInfer stream as the edge client opens it
    (stream.Stream, protocol.stream_request: the payload as a raw BYTES tensor, no outputs named),
    one request in flight at a time."""
    from bottlenet_jax.serve.protocol import stream_request
    from bottlenet_jax.serve.stream import Stream

    relay = Relay(port)
    stream = Stream(f"127.0.0.1:{relay.port}")
    for k in range(20):  # HPACK and flow-control windows warm
        stream.infer([payloads[k % len(payloads)]]).result(timeout=60)
    time.sleep(0.2)
    up0, down0 = relay.up, relay.down
    for k in range(20, 20 + n):
        stream.infer([payloads[k % len(payloads)]]).result(timeout=60)
    time.sleep(0.2)
    up, down = relay.up - up0, relay.down - down0
    frames = http2_frame_bytes(relay.sent, up0, relay.up)
    stream.close()
    sent = [stream_request([payloads[k % len(payloads)]], str(k + 1)) for k in range(20, 20 + n)]
    return {
        "up": up / n,
        "down": down / n,
        "frames": {k: v / n for k, v in frames.items()},
        "payload": float(np.mean([len(payloads[k % len(payloads)]) for k in range(20, 20 + n)])),
        "message": float(np.mean([r.ByteSize() for r in sent])),
    }


def print_sweep(results, levels, label):
    """One row per concurrency (batched | unbatched | ratios), then the peak-to-peak line."""
    for c in levels:
        b, u = results["batched"][c], results["unbatched"][c]
        fill = f"{b['fill']:5.1f}" if "fill" in b else f"{'':5s}"
        print(
            f"{c:4d} | {b['rps']:13.0f} {b['p50']:6.1f} {b['p95']:6.1f} {b['p99']:6.1f} {fill} "
            f"{b.get('rejects', b.get('failed', 0)):4d} | {u['rps']:15.0f} {u['p50']:6.1f} {u['p95']:6.1f} "
            f"{u['p99']:6.1f} | {b['rps'] / u['rps']:5.2f} {b['p95'] / u['p95']:5.2f}"
        )
    best_b = max(results["batched"].values(), key=lambda r: r["rps"])
    best_u = max(results["unbatched"].values(), key=lambda r: r["rps"])
    print(
        f"{label}: batched {best_b['rps']:.0f} req/s (p95 {best_b['p95']:.1f} ms) vs unbatched "
        f"{best_u['rps']:.0f} req/s (p95 {best_u['p95']:.1f} ms): {best_b['rps'] / best_u['rps']:.2f}x"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", default=None)
    p.add_argument("--concurrency", default="1,2,4,8,16,32,64")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-delay-ms", type=float, default=2.0)
    p.add_argument("--queue", type=int, default=256)
    p.add_argument("--tls", action="store_true", help="also the highest level with both servers behind TLS")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--versus", default=None, help="a second export: both servers' req/s at the highest level")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="serve_load_")
    if a.smoke:
        a.concurrency, a.seconds = "1,8", 1.0
    export = a.export or random_export(tmp)
    from bottlenet_jax.export import load_manifest

    m, framed, requests = export_requests(export)
    levels = [int(c) for c in a.concurrency.split(",")]
    results, second, secure = {}, {}, {}
    certs = make_certs(tmp, days=2) if a.tls else None
    for name, mb, delay in (("batched", a.max_batch, a.max_delay_ms), ("unbatched", 1, 0.0)):
        proc, port = start_server(export, mb, delay, a.queue)
        try:
            closed_loop(f"127.0.0.1:{port}", requests, 4, 0.5)  # warm-up
            results[name] = {c: closed_loop(f"127.0.0.1:{port}", requests, c, a.seconds) for c in levels}
            second[name] = {
                c: h2load(port, requests[0], c, max(c, int(results[name][c]["rps"] * a.seconds))) for c in levels
            }
            if name == "batched":
                wire = wire_bytes(port, requests, 40 if a.smoke else 200)
                wire_stream = wire_bytes_stream(port, framed, 40 if a.smoke else 200)
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=60)
        print(f"[{name} server] {out.strip().splitlines()[-1]}")
        if certs:
            proc, port = start_server(export, mb, delay, a.queue, tls=certs)
            try:
                closed_loop(f"127.0.0.1:{port}", requests, 4, 0.5, tls=certs)  # warm-up
                secure[name] = {levels[-1]: closed_loop(f"127.0.0.1:{port}", requests, levels[-1], a.seconds, certs)}
            finally:
                proc.terminate()
                proc.communicate(timeout=60)
    print(
        f"# {os.cpu_count()} host cores | export {export} (RB{m['split_after']}, {m['codec']['name']}, features "
        f"{m['feature_shape']}) | closed loop, {a.seconds:g} s per level, loopback | batched: max batch "
        f"{a.max_batch}, max delay {a.max_delay_ms:g} ms, queue {a.queue}"
    )
    print(
        f"{'conc':>4s} | {'batched req/s':>13s} {'p50':>6s} {'p95':>6s} {'p99':>6s} {'fill':>5s} {'rej':>4s} | "
        f"{'unbatched req/s':>15s} {'p50':>6s} {'p95':>6s} {'p99':>6s} | {'thr x':>5s} {'p95 x':>5s}"
    )
    print_sweep(results, levels, "peak")
    if all(second[k][c] for k in second for c in levels):
        print("second measurement, h2load (C, one connection, C streams; same request each time):")
        print_sweep(second, levels, "h2load peak")
    else:
        print("second measurement: h2load not found (apt-get install nghttp2-client)")
    if secure:
        c = levels[-1]
        print(f"with TLS, {c} clients (same run; plaintext above):")
        print_sweep(secure, [c], "TLS")
    for label, w in (("unary ModelInfer", wire), ("stream ModelStreamInfer", wire_stream)):
        print(
            f"wire, {label}, per request, client->server (TCP payload through a counting relay): {w['up']:.1f} B = "
            f"payload {w['payload']:.1f} B ({m['codec']['name']} bytes + 4 B CRC) + framing "
            f"{w['up'] - w['payload']:.1f} B: KServe protobuf {w['message'] - w['payload']:.1f}, gRPC prefix 5, "
            f"HTTP/2 frames and headers {w['up'] - w['message'] - 5:.1f}; server->client {w['down']:.1f} B"
        )
        print(
            "  its HTTP/2 part by frame (headers + non-DATA bodies, per request): "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(w["frames"].items(), key=lambda kv: -kv[1]))
        )
    if a.versus:
        c = levels[-1]
        runs = versus(export, a.versus, c, a.seconds, a)
        print(f"versus, batching servers in turn (A B A B), {c} clients, {a.seconds:g} s each:")
        mean = print_in_turn(runs, {e: f"{e} ({load_manifest(e)['codec']['name']})" for e in runs})
        print(f"  {export} / {a.versus}: {mean[export] / mean[a.versus]:.2f}x req/s (means of two runs each)")
    errors = sum(r["errors"] for res in results.values() for r in res.values())
    if errors:
        print(f"ERRORS: {errors} requests failed with something other than RESOURCE_EXHAUSTED")


if __name__ == "__main__":
    main()
