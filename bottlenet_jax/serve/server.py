"""The cloud server: the KServe v2 / Open Inference Protocol over gRPC and its REST form
(serve/rest.py: the same service on the same event loop), with a dynamic batcher (its command
line: serve/__main__.py).

It speaks the protocol's gRPC service (`inference.GRPCInferenceService`, the stubs tritonclient
ships), so `tritonclient.grpc` and Triton's tools talk to it: ServerLive/Ready/Metadata,
ModelReady/Metadata/Config/Statistics, ModelInfer and the bidirectional ModelStreamInfer (responses
carry their request's id; a bad request gets an error response and the stream goes on). One
model, `bottlenet` (version 1):

  input  PAYLOAD  BYTES [n]              one framed payload per sample: the codec's `encode` output
                                         followed by its CRC-32 (protocol.frame)
  output LOGITS   FP32  [n, classes]      (both unless the request names the outputs it wants)
         CLASS    INT32 [n]

Each payload's size, CRC and header are checked against the export's feature shape before it is
decoded (a header cannot make the server allocate more than that shape), and decoding runs on a
bounded thread pool, off the event loop, the payloads of requests that queue meanwhile decoded in
one codec call (payload.DecodeQueue), compiled before readiness for every stream width a valid
payload can have (Codec.warm_up: no request compiles). Every failure is one gRPC status for that
request alone, counted in ModelStatistics and the Prometheus metrics: INVALID_ARGUMENT (bad payload
or request), RESOURCE_EXHAUSTED (queue or decode pool full), UNAVAILABLE (model process down or
restarting, or draining), DEADLINE_EXCEEDED (its deadline passed before its batch ran), INTERNAL.
ServerReady/ModelReady are true only between warm-up and the start of draining while the model
process serves. TLS with --tls-cert/--tls-key, and with --tls-client-ca clients must present a
certificate signed by that CA (mutual TLS; REST too); plaintext otherwise (loopback default).
SIGTERM/SIGINT stop accepting requests, finish the ones in flight, then exit.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import numpy as np
from aiohttp import web
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from bottlenet_jax.serve import rest, tls
from bottlenet_jax.serve.batcher import Batcher
from bottlenet_jax.serve.metrics import Metrics
from bottlenet_jax.serve.model_process import ModelProcess
from bottlenet_jax.serve.payload import DecodeQueue, PayloadDecoder
from bottlenet_jax.serve.protocol import (
    MAX_MESSAGE,
    MODEL,
    VERSION,
    PayloadError,
    QueueFull,
    Status,
    bytes_elements,
    status_of,
)


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self, decoder: PayloadDecoder, model: ModelProcess, batcher: Batcher, metrics: Metrics, workers: int, slots: int
    ):
        self.decoder, self.model, self.batcher, self.metrics = decoder, model, batcher, metrics
        self.failures = 0
        self.draining = False
        self.decoding = DecodeQueue(decoder, workers)
        # requests decoding or waiting to: bounded like the batcher's queue (one request's decode is
        # bounded by its header check), so a client sees RESOURCE_EXHAUSTED only past --queue
        self._decode_slots = threading.BoundedSemaphore(slots)

    @property
    def ready(self) -> bool:
        return self.model.ready and not self.draining

    # -- health and metadata
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.ready)

    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=self.ready and request.name == MODEL and request.version in ("", VERSION))

    # what both protocols say about the server and the model
    def server_metadata(self) -> dict:
        return {"name": "bottlenet-jax", "version": "0.1.0", "extensions": ["statistics", "binary_tensor_data"]}

    def model_metadata(self) -> dict:
        return {
            "name": MODEL,
            "versions": [VERSION],
            "platform": "jax",
            "inputs": [{"name": "PAYLOAD", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": "LOGITS", "datatype": "FP32", "shape": [-1, self.model.num_classes]},
                {"name": "CLASS", "datatype": "INT32", "shape": [-1]},
            ],
        }

    def model_config(self) -> mc.ModelConfig:
        return mc.ModelConfig(
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

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**self.server_metadata())

    @staticmethod
    async def _check_model(name, version, context):
        if name != MODEL or version not in ("", VERSION):
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model {name!r} version {version!r}: this server has {MODEL!r} version {VERSION}",
            )

    async def ModelMetadata(self, request, context):
        await self._check_model(request.name, request.version, context)
        m, t = self.model_metadata(), pb.ModelMetadataResponse.TensorMetadata
        m["inputs"], m["outputs"] = ([t(**x) for x in m[k]] for k in ("inputs", "outputs"))
        return pb.ModelMetadataResponse(**m)

    async def ModelConfig(self, request, context):
        await self._check_model(request.name, request.version, context)
        return pb.ModelConfigResponse(config=self.model_config())

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
    def failed(self, code: str) -> None:
        """Count a request that failed before `infer` saw it (a REST body that is not a request)."""
        self.failures += 1
        self.metrics.request(code)

    async def infer(self, request, time_remaining: float | None) -> pb.ModelInferResponse:
        """One request, through validation, decoding (off the event loop) and the batcher; raises
        Status for anything but success. Counted either way."""
        try:
            if request.model_name != MODEL or request.model_version not in ("", VERSION):
                raise Status(grpc.StatusCode.NOT_FOUND, f"model {request.model_name!r}: this server has {MODEL!r}")
            if self.draining:
                raise Status(grpc.StatusCode.UNAVAILABLE, "the server is draining: send to another replica")
            wanted = [o.name for o in request.outputs] or ["LOGITS", "CLASS"]
            unknown = [n for n in wanted if n not in ("LOGITS", "CLASS")]
            if unknown:
                raise PayloadError(f"requested outputs {unknown}: this model has LOGITS and CLASS")
            deadline = None if time_remaining is None else time.monotonic() + time_remaining
            elements = self._payloads(request)
            if not self._decode_slots.acquire(blocking=False):
                raise QueueFull("too many requests being decoded; retry later")
            try:
                features = await asyncio.wrap_future(self.decoding.submit(elements))
            finally:
                self._decode_slots.release()
            logits = await asyncio.wrap_future(self.batcher.submit(features, deadline))
        except asyncio.CancelledError:  # the client gave up (its deadline, or a cancel): not computed
            late = deadline is not None and time.monotonic() >= deadline
            self.failures += 1
            self.metrics.request("DEADLINE_EXCEEDED" if late else "CANCELLED")
            raise
        except Exception as e:
            st = status_of(e)
            self.failed(st.code.name)
            raise st from None
        self.metrics.request("OK")
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

    async def ModelInfer(self, request, context):
        try:
            return await self.infer(request, context.time_remaining())
        except Status as st:
            await context.abort(st.code, st.message)

    async def ModelStreamInfer(self, request_iterator, context):
        """Bidirectional stream: each request is answered on its own (out of order when batches
        finish so), matched by its id; a failed one gets an error response and the stream goes on."""
        answers: asyncio.Queue = asyncio.Queue()
        pending = set()

        async def one(request):
            try:
                r = pb.ModelStreamInferResponse(infer_response=await self.infer(request, context.time_remaining()))
            except Status as st:
                msg = f"[{st.code.name}] {st.message}"
                r = pb.ModelStreamInferResponse(
                    error_message=msg, infer_response=pb.ModelInferResponse(id=request.id, model_name=MODEL)
                )
            await answers.put(r)

        async def read():
            async for request in request_iterator:
                t = asyncio.ensure_future(one(request))
                pending.add(t)
                t.add_done_callback(pending.discard)
            await asyncio.gather(*list(pending))
            await answers.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                r = await answers.get()
                if r is None:
                    break
                yield r
        finally:
            reader.cancel()

    def _payloads(self, request) -> list[bytes]:
        inputs = list(request.inputs)
        if len(inputs) != 1 or inputs[0].name != "PAYLOAD" or inputs[0].datatype != "BYTES":
            got = ", ".join(f"{t.name} {t.datatype}{list(t.shape)}" for t in inputs) or "none"
            raise PayloadError(f"inputs: expected one BYTES tensor PAYLOAD [n], got {got}")
        t = inputs[0]
        if len(t.shape) != 1 or t.shape[0] < 1:
            raise PayloadError(f"PAYLOAD shape {list(t.shape)}: expected [n], n >= 1 (one payload per sample)")
        if t.shape[0] > self.batcher.max_batch:
            raise PayloadError(f"{t.shape[0]} samples in one request: at most {self.batcher.max_batch} (max batch)")
        raw = request.raw_input_contents[0] if request.raw_input_contents else None
        elements = bytes_elements(t, raw)
        if len(elements) != t.shape[0]:
            raise PayloadError(f"PAYLOAD shape {list(t.shape)} but {len(elements)} elements sent")
        return elements

    def close(self):
        self.decoding.close()


class Server:
    """The gRPC server (grpc.aio, on its own event-loop thread) + batcher + supervised model, started.

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
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_client_ca: str | None = None,
        metrics_port: int | None = None,
        decode_workers: int = 0,
        max_restarts: int = 5,
        http_port: int | None = None,
    ):
        creds = tls.grpc_credentials(tls_cert, tls_key, tls_client_ca)
        http_tls = tls.ssl_context(tls_cert, tls_key, tls_client_ca)
        self.http_port, self._http = None, None
        self.tls = creds is not None
        self.decoder = PayloadDecoder(export_dir)
        self.metrics = Metrics(max_batch)
        self.model = ModelProcess(export_dir, max_batch, max_restarts, on_restart=self.metrics.restarted)
        self.decoder.warm_up()  # while the model process compiles
        self.batcher = Batcher(self.model, max_batch, max_delay, queue_size, observe=self.metrics.observe)
        # one decoding thread by default: what queues while it decodes is decoded together in its
        # next call (payload.DecodeQueue), which a batch-parallel codec does for little more than one
        workers = decode_workers or 1
        self.service = InferenceService(self.decoder, self.model, self.batcher, self.metrics, workers, queue_size)
        self.metrics.ready.labels(model=MODEL, version=VERSION).set_function(lambda: float(self.service.ready))
        self.metrics_port = None
        if metrics_port is not None:
            http, _ = self.metrics.serve(host, metrics_port)
            self._metrics_http = http
            self.metrics_port = http.server_port
        self._loop = asyncio.new_event_loop()
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
                address = f"{host}:{port}"
                self.port = (
                    self._grpc.add_secure_port(address, creds) if creds else self._grpc.add_insecure_port(address)
                )
            except RuntimeError:
                self.port = 0
            if not self.port:
                failure.append(OSError(f"{host}:{port}: cannot listen there (in use?)"))
                return
            await self._grpc.start()
            if http_port is not None:  # the REST form, on this event loop: the same service
                self._http = web.AppRunner(rest.app(self.service), access_log=None)
                await self._http.setup()
                try:
                    await web.TCPSite(self._http, host, http_port, ssl_context=http_tls).start()
                except OSError as e:
                    await self._grpc.stop(None)
                    failure.append(OSError(f"{host}:{http_port}: cannot listen there for HTTP ({e.strerror})"))
                    return
                self.http_port = self._http.addresses[0][1]

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
        """Readiness false at once, stop accepting requests, let those in flight finish (up to
        `grace` s), then stop the batcher and the model process."""
        self.service.draining = True

        async def drain():
            await asyncio.gather(self._grpc.stop(grace), *([self._http.cleanup()] if self._http else []))

        asyncio.run_coroutine_threadsafe(drain(), self._loop).result()
        self.batcher.close()
        self.service.close()
        # the model process's compiles and this process's (the decoder's; in a test that runs the
        # server in its own process, the test's too): 0 when nothing a client sent compiled anything
        model = self.model.compiles_since_warmup if self.model.ready else -1
        self.compiles_after_warmup = -1 if model < 0 else model + self.decoder.compiles_since_warmup
        self.model.close()
        if self.metrics_port is not None:
            self._metrics_http.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def start(export_dir: str, **options) -> Server:
    """Load the export, compile, and serve (returns at once; `.stop()` drains and ends it).
    `options`: Server's keyword arguments (host, port, max_batch, max_delay, queue_size, tls_*,
    metrics_port, decode_workers, max_restarts, http_port: the REST form on that port, none if None)."""
    return Server(export_dir, **options)


def listening_port(serving_line: str) -> int:
    """The port in the CLI's first line ("serving ... on HOST:PORT; ..."): what --port 0 was given."""
    import re

    return int(re.search(r" on [^ ]+:(\d+);", serving_line).group(1))


def listening_http_port(serving_line: str) -> int | None:
    """The REST port in the CLI's first line (what --http-port 0 was given), None if not served."""
    import re

    m = re.search(r"; REST on https?://[^ ]+:(\d+)/v2", serving_line)
    return int(m.group(1)) if m else None
