"""The cloud server: the KServe v2 / Open Inference Protocol over gRPC, with a dynamic batcher.

    python -m bottlenet_jax.serve --export EXPORT_DIR [--host 127.0.0.1] [--port 8001]
        [--max-batch 32] [--max-delay-ms 2] [--queue 256]

It speaks the protocol's gRPC service (`inference.GRPCInferenceService`, the stubs tritonclient
ships), so `tritonclient.grpc` and Triton's tools talk to it: ServerLive/Ready/Metadata,
ModelReady/Metadata/Config/Statistics and ModelInfer. One model, `bottlenet` (version 1):

  input  PAYLOAD  BYTES [n]              one framed payload per sample: the codec's `encode` output
                                         followed by its CRC-32 (runtime.frame)
  output LOGITS   FP32  [n, classes]      (both unless the request names the outputs it wants)
         CLASS    INT32 [n]

Each request's payloads are checked and decoded on the gRPC thread that received it; a bad one
ends that request with INVALID_ARGUMENT naming the problem and never reaches a batch. Good requests
wait in a bounded queue for the batcher (RESOURCE_EXHAUSTED when it is full). SIGTERM/SIGINT stop
accepting requests, finish the ones in flight, then exit.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct
import sys
import threading

import grpc
import numpy as np
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from bottlenet_jax.serve.runtime import Batcher, ModelProcess, PayloadDecoder, PayloadError, QueueFull

MODEL, VERSION = "bottlenet", "1"
MAX_MESSAGE = 64 * 1024 * 1024


def bytes_elements(tensor, raw: bytes | None) -> list[bytes]:
    """A BYTES tensor's elements: `contents.bytes_contents`, or raw_input_contents as the protocol
    serialises it (each element: uint32 little-endian length, then the bytes)."""
    if raw is None:
        return list(tensor.contents.bytes_contents)
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise PayloadError("raw BYTES tensor: truncated length prefix")
        (n,), i = struct.unpack_from("<I", raw, i), i + 4
        if i + n > len(raw):
            raise PayloadError(f"raw BYTES tensor: element of {n} bytes overruns the {len(raw)}-byte buffer")
        out.append(raw[i : i + n])
        i += n
    return out


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, decoder: PayloadDecoder, model: ModelProcess, batcher: Batcher):
        self.decoder, self.model, self.batcher = decoder, model, batcher
        self.failures = 0

    # -- health and metadata
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=request.name == MODEL and request.version in ("", VERSION))

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="bottlenet-jax", version="0.1.0", extensions=["statistics"])

    @staticmethod
    async def _check_model(name, version, context):
        if name != MODEL or version not in ("", VERSION):
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model {name!r} version {version!r}: this server has {MODEL!r} version {VERSION}",
            )

    async def ModelMetadata(self, request, context):
        await self._check_model(request.name, request.version, context)
        t = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=MODEL,
            versions=[VERSION],
            platform="jax",
            inputs=[t(name="PAYLOAD", datatype="BYTES", shape=[-1])],
            outputs=[
                t(name="LOGITS", datatype="FP32", shape=[-1, self.model.num_classes]),
                t(name="CLASS", datatype="INT32", shape=[-1]),
            ],
        )

    async def ModelConfig(self, request, context):
        await self._check_model(request.name, request.version, context)
        return pb.ModelConfigResponse(
            config=mc.ModelConfig(
                name=MODEL,
                platform="jax",
                max_batch_size=self.batcher.max_batch,
                input=[mc.ModelInput(name="PAYLOAD", data_type=mc.TYPE_STRING, dims=[1])],
                output=[
                    mc.ModelOutput(name="LOGITS", data_type=mc.TYPE_FP32, dims=[self.model.num_classes]),
                    mc.ModelOutput(name="CLASS", data_type=mc.TYPE_INT32, dims=[1]),
                ],
                dynamic_batching=mc.ModelDynamicBatching(
                    preferred_batch_size=self.model.sizes,
                    max_queue_delay_microseconds=int(self.batcher.max_delay * 1e6),
                ),
            )
        )

    async def ModelStatistics(self, request, context):
        if request.name:
            await self._check_model(request.name, request.version, context)
        b, d = self.batcher, pb.StatisticDuration
        stats = pb.ModelStatistics(
            name=MODEL,
            version=VERSION,
            inference_count=b.inferences,
            execution_count=b.executions,
            inference_stats=pb.InferStatistics(
                success=d(count=b.inferences),
                fail=d(count=self.failures),
                queue=d(count=b.inferences, ns=b.queue_ns),
                compute_infer=d(count=b.executions, ns=b.exec_ns),
            ),
        )
        return pb.ModelStatisticsResponse(model_stats=[stats])

    # -- inference
    async def ModelInfer(self, request, context):
        await self._check_model(request.model_name, request.model_version, context)
        try:
            wanted = [o.name for o in request.outputs] or ["LOGITS", "CLASS"]
            unknown = [n for n in wanted if n not in ("LOGITS", "CLASS")]
            if unknown:
                raise PayloadError(f"requested outputs {unknown}: this model has LOGITS and CLASS")
            elements = self._payloads(request)
            features = np.stack([self.decoder.decode_one(e) for e in elements])
            logits = await asyncio.wrap_future(self.batcher.submit(features))
        except PayloadError as e:
            self.failures += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except QueueFull as e:
            self.failures += 1
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        out, n = pb.ModelInferResponse.InferOutputTensor, len(logits)
        tensors = {
            "LOGITS": (out(name="LOGITS", datatype="FP32", shape=[n, logits.shape[1]]), logits.astype("<f4").tobytes()),
            "CLASS": (out(name="CLASS", datatype="INT32", shape=[n]), np.argmax(logits, -1).astype("<i4").tobytes()),
        }
        return pb.ModelInferResponse(
            model_name=MODEL,
            model_version=VERSION,
            id=request.id,
            outputs=[tensors[k][0] for k in wanted],
            raw_output_contents=[tensors[k][1] for k in wanted],
        )

    def _payloads(self, request) -> list[bytes]:
        inputs = list(request.inputs)
        if len(inputs) != 1 or inputs[0].name != "PAYLOAD" or inputs[0].datatype != "BYTES":
            got = ", ".join(f"{t.name} {t.datatype}{list(t.shape)}" for t in inputs) or "none"
            raise PayloadError(f"inputs: expected one BYTES tensor PAYLOAD [n], got {got}")
        t = inputs[0]
        if len(t.shape) != 1 or t.shape[0] < 1:
            raise PayloadError(f"PAYLOAD shape {list(t.shape)}: expected [n], n >= 1 (one payload per sample)")
        raw = request.raw_input_contents[0] if request.raw_input_contents else None
        elements = bytes_elements(t, raw)
        if len(elements) != t.shape[0]:
            raise PayloadError(f"PAYLOAD shape {list(t.shape)} but {len(elements)} elements sent")
        return elements


class Server:
    """The gRPC server (grpc.aio, on its own event-loop thread) + batcher + model, started.

    One event loop serves every connection: a request waiting for its batch is a suspended
    coroutine, not a blocked thread, so thousands can wait without thread switching."""

    def __init__(
        self,
        export_dir: str,
        host: str = "127.0.0.1",
        port: int = 8001,
        max_batch: int = 32,
        max_delay: float = 0.002,
        queue_size: int = 256,
    ):
        from bottlenet_jax.export import load_manifest

        self.decoder = PayloadDecoder(load_manifest(export_dir))
        self.model = ModelProcess(export_dir, max_batch)
        self.batcher = Batcher(self.model, max_batch, max_delay, queue_size)
        self.service = InferenceService(self.decoder, self.model, self.batcher)
        self._loop = asyncio.new_event_loop()
        self._started: asyncio.Future | None = None
        ready, failure = threading.Event(), []

        async def serve():
            self._grpc = grpc.aio.server(
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE),
                    ("grpc.max_send_message_length", MAX_MESSAGE),
                ]
            )
            pb_grpc.add_GRPCInferenceServiceServicer_to_server(self.service, self._grpc)
            try:
                self.port = self._grpc.add_insecure_port(f"{host}:{port}")
            except RuntimeError:
                self.port = 0
            if not self.port:
                failure.append(OSError(f"{host}:{port}: cannot listen there (in use?)"))
                return
            await self._grpc.start()

        def run():
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(serve())
            except Exception as e:  # reported to the caller of __init__
                failure.append(e)
            ready.set()
            if not failure:
                self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="grpc-aio", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self.batcher.close()
            self.model.close()
            raise failure[0]

    def stop(self, grace: float = 30.0):
        """Stop accepting requests, let those in flight finish (up to `grace` s), then stop the batcher."""
        asyncio.run_coroutine_threadsafe(self._grpc.stop(grace), self._loop).result()
        self.batcher.close()
        self.compiles_after_warmup = self.model.compiles_since_warmup
        self.model.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def start(export_dir: str, **options) -> Server:
    """Load the export, compile, and serve (returns at once; `.stop()` drains and ends it).
    `options`: Server's host, port, max_batch, max_delay, queue_size."""
    return Server(export_dir, **options)


def main(argv=None):
    p = argparse.ArgumentParser(description="Serve an export's cloud half over the KServe v2 gRPC protocol.")
    p.add_argument("--export", required=True, help="directory written by python -m bottlenet_jax.export")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="longest wait for a batch to fill")
    p.add_argument("--queue", type=int, default=256, help="requests waiting at most; more are rejected")
    a = p.parse_args(argv)
    if a.max_batch < 1 or a.queue < 1 or a.max_delay_ms < 0:
        sys.exit("error: --max-batch and --queue must be >= 1, --max-delay-ms >= 0")
    from bottlenet_jax.errors import CheckpointError

    try:
        server = start(
            a.export,
            host=a.host,
            port=a.port,
            max_batch=a.max_batch,
            max_delay=a.max_delay_ms / 1e3,
            queue_size=a.queue,
        )
    except (OSError, RuntimeError, CheckpointError) as e:
        sys.exit(f"error: {e}")
    m, port, batcher = server.decoder.manifest, server.port, server.batcher
    print(
        f"serving {a.export} (RB{m['split_after']}, {m['codec']['name']}, features "
        f"{m['feature_shape']}) as model {MODEL!r} on {a.host}:{port}; batch sizes {server.model.sizes}, "
        f"max delay {a.max_delay_ms} ms, queue {a.queue}",
        flush=True,
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    print("stopping: finishing requests in flight", flush=True)
    server.stop()
    print(
        f"stopped after {batcher.inferences} inferences in {batcher.executions} batches; "
        f"compiles after warm-up: {server.compiles_after_warmup}",
        flush=True,
    )


if __name__ == "__main__":
    main()
