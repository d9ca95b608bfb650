"""The server's two protocols and its behaviour under a hostile flood, measured in one run.

    python benchmarks/serve_protocols.py --export EXPORT_DIR     # e.g. an export of the demo's hyperprior
    python benchmarks/serve_protocols.py --smoke                 # CI: a random-init export, seconds

1. REST vs gRPC: one batching server (`python -m bottlenet_jax.serve`, gRPC and REST on one event
   loop, one queue and batcher), closed loop at `--clients` (64) for `--seconds` per run, the two
   protocols in turn (gRPC REST gRPC REST): req/s and p95 of each, and REST's req/s over gRPC's
   (means of the two runs each). The clients are coroutines of one process, each sending its next
   request when answered, built beforehand: gRPC's on one grpc.aio channel (serve_load.py's),
   REST's in one aiohttp session of `--clients` keep-alive connections, the binary tensor
   extension as tritonclient.http sends it. Payloads: the export's edge half and codec on test
   images (serve_load.export_requests).
2. Flood: a good client alone (one request at a time, gRPC) for `--seconds`: its p95; then again
   while `--flood-clients` others, in a process of their own, send random payloads with a valid
   CRC, one of every length from 1 byte to the largest the server accepts (the export's float32
   feature bytes + 4 KiB + CRC), in random order: every one must be refused with
   INVALID_ARGUMENT, the good client's p95 during the flood over its p95 alone, and the server's
   "compiles after warm-up" at shutdown (0: no payload made it compile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import serve_load  # noqa: E402


def rest_bodies(framed):
    """One binary-extension infer body per payload (BYTES [1], output CLASS binary), as
    tritonclient.http builds it: (body, JSON header length)."""
    out = []
    for p in framed:
        raw = len(p).to_bytes(4, "little") + p
        head = json.dumps(
            {
                "inputs": [
                    {"name": "PAYLOAD", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
                ],
                "outputs": [{"name": "CLASS", "parameters": {"binary_data": True}}],
            }
        ).encode()
        out.append((head + raw, len(head)))
    return out


def rest_closed_loop(http_addr, bodies, concurrency, seconds):
    """`concurrency` REST clients (aiohttp, keep-alive), each sending its next request when answered."""
    import aiohttp

    lat, codes = [], {}

    async def run():
        url = f"http://{http_addr}/v2/models/bottlenet/infer"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            stop = time.perf_counter() + seconds

            async def client(k):
                i = k
                while time.perf_counter() < stop:
                    body, n = bodies[i % len(bodies)]
                    t = time.perf_counter()
                    async with session.post(url, data=body, headers={"Inference-Header-Content-Length": str(n)}) as r:
                        await r.read()
                        if r.status == 200:
                            lat.append(time.perf_counter() - t)
                        else:
                            codes[r.status] = codes.get(r.status, 0) + 1
                    i += concurrency

            t0 = time.perf_counter()
            await asyncio.gather(*(client(k) for k in range(concurrency)))
            return time.perf_counter() - t0

    wall = asyncio.run(run())
    ms = np.array(lat) * 1e3
    return {"rps": len(lat) / wall, "p95": np.percentile(ms, 95), "errors": sum(codes.values()), "n": len(lat)}


def protocols(export, requests, bodies, args):
    proc, port = serve_load.start_server(export, args.max_batch, args.max_delay_ms, args.queue)
    addr, http_addr = f"127.0.0.1:{port}", f"127.0.0.1:{proc.http_port}"
    runs = {"gRPC": [], "REST": []}
    try:
        serve_load.closed_loop(addr, requests, 4, 0.5)  # warm-up, both
        rest_closed_loop(http_addr, bodies, 4, 0.5)
        for name in ("gRPC", "REST", "gRPC", "REST"):
            if name == "gRPC":
                runs[name].append(serve_load.closed_loop(addr, requests, args.clients, args.seconds))
            else:
                runs[name].append(rest_closed_loop(http_addr, bodies, args.clients, args.seconds))
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    return runs


def flood_worker(addr, most, clients, seed):
    """Random payloads (valid CRC) of every length 1..most, in random order, from `clients`
    coroutines; prints {status code: count} as JSON."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    from bottlenet_jax.serve.protocol import frame, stream_request

    rng = np.random.default_rng(seed)
    lengths = rng.permutation(np.arange(1, most + 1))
    codes = {}

    async def run():
        async with grpc.aio.insecure_channel(addr) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)

            async def client(k):
                for n in lengths[k::clients]:
                    n = int(n)
                    element = frame(rng.bytes(n - 4)) if n > 4 else rng.bytes(n)
                    try:
                        await stub.ModelInfer(stream_request([element], "flood"), timeout=60)
                        codes["OK"] = codes.get("OK", 0) + 1
                    except grpc.aio.AioRpcError as e:
                        codes[e.code().name] = codes.get(e.code().name, 0) + 1

            await asyncio.gather(*(client(k) for k in range(clients)))

    t = time.perf_counter()
    asyncio.run(run())
    print(json.dumps({"codes": codes, "seconds": time.perf_counter() - t}), flush=True)


def flood(export, requests, m, args):
    most = 4 * int(np.prod(m["feature_shape"])) + 4096 + 4  # PayloadDecoder.max_payload + CRC
    proc, port = serve_load.start_server(export, args.max_batch, args.max_delay_ms, args.queue)
    addr = f"127.0.0.1:{port}"
    try:
        serve_load.closed_loop(addr, requests, 1, 0.5)  # warm-up
        alone = serve_load.closed_loop(addr, requests, 1, args.seconds)
        worker = subprocess.Popen(
            [sys.executable, __file__, "--flood-worker", addr, str(most), str(args.flood_clients)],
            stdout=subprocess.PIPE,
            text=True,
        )
        during = []
        while worker.poll() is None:  # the good client, in runs of a second, until every length was sent
            during.append(serve_load.closed_loop(addr, requests, 1, 1.0))
        sent = json.loads(worker.stdout.read())
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    last = out.strip().splitlines()[-1]
    return alone, np.concatenate([r["ms"] for r in during]), sent, most, last


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", default=None)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--flood-clients", type=int, default=4)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-delay-ms", type=float, default=2.0)
    p.add_argument("--queue", type=int, default=256)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--flood-worker", nargs=3, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.flood_worker:
        return flood_worker(a.flood_worker[0], int(a.flood_worker[1]), int(a.flood_worker[2]), 0)
    if a.smoke:
        a.clients, a.seconds = 8, 1.0
    export = a.export or serve_load.random_export(tempfile.mkdtemp(prefix="serve_protocols_"))
    m, framed, requests = serve_load.export_requests(export)
    print(
        f"# {os.cpu_count()} host cores | export {export} ({m['codec']['name']}, features {m['feature_shape']}) | "
        f"max batch {a.max_batch}, max delay {a.max_delay_ms:g} ms, queue {a.queue} | loopback"
    )
    runs = protocols(export, requests, rest_bodies(framed), a)
    print(f"REST vs gRPC, one batching server, {a.clients} clients, {a.seconds:g} s per run, in turn:")
    mean = serve_load.print_in_turn(runs, {k: f"{k:4s}" for k in runs}, errors=True)
    print(f"  REST / gRPC: {mean['REST'] / mean['gRPC']:.2f}x req/s (means of two runs each)")
    alone, during, sent, most, last = flood(export, requests, m, a)
    p95 = np.percentile(during, 95)
    refused = sent["codes"].get("INVALID_ARGUMENT", 0)
    others = {k: v for k, v in sent["codes"].items() if k != "INVALID_ARGUMENT"}
    print(
        f"flood: {sum(sent['codes'].values())} random payloads (valid CRC), every length 1..{most} B, from "
        f"{a.flood_clients} clients in {sent['seconds']:.1f} s: {refused} refused INVALID_ARGUMENT, others {others}"
    )
    print(
        f"  a good client's p95: alone {alone['p95']:.1f} ms ({alone['n']} requests); during the flood "
        f"{p95:.1f} ms ({len(during)} requests): {p95 / alone['p95']:.2f}x"
    )
    print(f"  server at shutdown: {last}")


if __name__ == "__main__":
    main()
