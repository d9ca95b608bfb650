"""Serving's parts one by one, fast and without sleeping to synchronise: the wire protocol, the payload
check, the batcher behind a fake model (events decide when a batch may run), and the gRPC service
with that fake model answering the edge client's HTTP/2 stream in-process. The end-to-end serving
tests (a real export, the model process, TLS, SIGTERM) are in the slow stage."""

import contextlib
import json
import pathlib
import re
import threading
import time

import grpc
import numpy as np
import pytest

from bottlenet_jax.serve import protocol
from bottlenet_jax.serve.batcher import Batcher
from bottlenet_jax.serve.protocol import DeadlineExceeded, ModelUnavailable, PayloadError, QueueFull

from helpers import gate_decoder


class FakeModel:
    """infer(features) -> logits = the per-sample feature sums in every class; each call waits for
    `gate` (set: runs at once) and records the batch size."""

    num_classes, sizes, ready = 3, [1, 2, 4], True

    def __init__(self):
        self.gate, self.started, self.batches = threading.Event(), threading.Event(), []
        self.gate.set()
        self.fail = None

    def infer(self, features):
        self.started.set()
        assert self.gate.wait(10)
        if self.fail:
            raise self.fail
        self.batches.append(len(features))
        s = features.reshape(len(features), -1).sum(1, keepdims=True)
        return np.repeat(s, self.num_classes, 1).astype(np.float32)


def feats(v, n=1):
    return np.full((n, 2, 2, 1), v, np.float32)


@pytest.fixture
def model():
    return FakeModel()


def blocked(model, batcher):
    """Hold the batcher inside a first batch (so what is submitted next queues behind it)."""
    model.gate.clear()
    first = batcher.submit(feats(0.0))
    assert model.started.wait(10)
    return first


def test_requests_waiting_behind_a_batch_share_the_next_one(model):
    b = Batcher(model, max_batch=8, max_delay=0.0, queue_size=16)
    first = blocked(model, b)
    futs = [b.submit(feats(v, n)) for v, n in ((1.0, 1), (2.0, 2), (3.0, 1))]
    model.gate.set()
    first.result(10)
    got = [f.result(10) for f in futs]
    assert model.batches == [1, 4]  # one batch for the three queued requests
    np.testing.assert_array_equal(got[1], np.full((2, 3), 8.0))  # each request gets its own rows
    assert (b.executions, b.inferences) == (2, 5)
    b.close()


def test_a_batch_never_exceeds_max_batch_and_a_request_larger_than_it_is_refused(model):
    b = Batcher(model, max_batch=4, max_delay=0.0, queue_size=16)
    first = blocked(model, b)
    futs = [b.submit(feats(1.0, 3)) for _ in range(3)]
    model.gate.set()
    [f.result(10) for f in [first, *futs]]
    assert model.batches == [1, 3, 3, 3]  # 3 + 3 > 4: each its own batch
    with pytest.raises(PayloadError, match="at most 4"):
        b.submit(feats(1.0, 5))
    b.close()


def test_a_full_queue_refuses_at_once(model):
    b = Batcher(model, max_batch=1, max_delay=0.0, queue_size=2)
    first = blocked(model, b)
    queued = [b.submit(feats(1.0)) for _ in range(2)]
    t = time.perf_counter()
    with pytest.raises(QueueFull, match="queue full"):
        b.submit(feats(1.0))
    assert time.perf_counter() - t < 0.5  # at once, not after a wait
    model.gate.set()
    [f.result(10) for f in [first, *queued]]
    b.close()


def test_a_request_past_its_deadline_or_cancelled_is_never_computed(model):
    b = Batcher(model, max_batch=8, max_delay=0.0, queue_size=16)
    first = blocked(model, b)
    late = b.submit(feats(1.0), deadline=time.monotonic() - 1.0)
    gone = b.submit(feats(2.0))
    assert gone.cancel()  # the client gave up
    live = b.submit(feats(3.0))
    model.gate.set()
    first.result(10)
    with pytest.raises(DeadlineExceeded):
        late.result(10)
    np.testing.assert_array_equal(live.result(10), np.full((1, 3), 12.0))
    assert model.batches == [1, 1] and b.expired == 2  # only `live` reached the model
    b.close()


def test_a_model_failure_fails_its_batch_and_the_batcher_serves_on(model):
    b = Batcher(model, max_batch=8, max_delay=0.0, queue_size=16)
    model.fail = ModelUnavailable("the model process is restarting")
    with pytest.raises(ModelUnavailable):
        b.submit(feats(1.0)).result(10)
    model.fail = None
    np.testing.assert_array_equal(b.submit(feats(1.0)).result(10), np.full((1, 3), 4.0))
    b.close()


def test_close_finishes_what_is_queued(model):
    b = Batcher(model, max_batch=1, max_delay=0.0, queue_size=16)
    first = blocked(model, b)
    futs = [b.submit(feats(float(v))) for v in range(5)]
    closer = threading.Thread(target=b.close)
    closer.start()
    assert b.stopping.wait(10)  # close() has begun, with five requests still queued behind the first
    assert not any(f.done() for f in futs)
    model.gate.set()
    closer.join(30)
    assert not closer.is_alive()
    assert all(f.done() and not f.exception() for f in [first, *futs])


def test_framing_and_raw_bytes_tensors():
    body = b"\x01\x02payload"
    assert protocol.unframe(protocol.frame(body)) == body
    for bad, why in ((b"", "empty"), (protocol.frame(body)[:-1], "CRC-32"), (b"x" + protocol.frame(body)[1:], "CRC")):
        with pytest.raises(PayloadError, match=why):
            protocol.unframe(bad)
    raw = b"".join(len(p).to_bytes(4, "little") + p for p in (b"ab", b"", b"cde"))
    assert protocol.bytes_elements(None, raw) == [b"ab", b"", b"cde"]
    with pytest.raises(PayloadError, match="overruns"):
        protocol.bytes_elements(None, raw[:-1])
    with pytest.raises(PayloadError, match="truncated"):
        protocol.bytes_elements(None, raw + b"\x01")


def test_every_failure_maps_to_its_grpc_status():
    cases = {
        PayloadError("x"): grpc.StatusCode.INVALID_ARGUMENT,
        QueueFull("x"): grpc.StatusCode.RESOURCE_EXHAUSTED,
        ModelUnavailable("x"): grpc.StatusCode.UNAVAILABLE,
        DeadlineExceeded("x"): grpc.StatusCode.DEADLINE_EXCEEDED,
        RuntimeError("boom"): grpc.StatusCode.INTERNAL,
    }
    for e, code in cases.items():
        assert protocol.status_of(e).code == code
    st = protocol.Status(grpc.StatusCode.NOT_FOUND, "m")
    assert protocol.status_of(st) is st


@pytest.fixture
def identity_export(tmp_path):
    """An export directory as the payload check reads it: a manifest with the identity codec."""
    manifest = {"codec": {"name": "identity"}, "feature_shape": [2, 2, 1], "model": {"num_classes": 3}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return str(tmp_path)


def test_the_payload_check_names_what_is_wrong_before_decoding(identity_export):
    from bottlenet_jax.serve.payload import PayloadDecoder

    d = PayloadDecoder(identity_export)
    good = np.arange(4, dtype="<f4").reshape(2, 2, 1)
    np.testing.assert_array_equal(d.decode_one(protocol.frame(good.tobytes())), good)
    for element, why in (
        (protocol.frame(good.tobytes()[:-4]), "exactly 16 bytes"),
        (protocol.frame(np.full(4, np.nan, "<f4").tobytes()), "non-finite"),
        (b"\0" * 10_000, "larger than any identity payload"),
    ):
        with pytest.raises(PayloadError, match=why):
            d.decode_one(element)


class GatedDecoder:
    """decode_many that waits for `gate` and records how many payloads each call got."""

    def __init__(self):
        self.gate, self.started, self.calls = threading.Event(), threading.Event(), []

    def decode_many(self, elements):
        self.started.set()
        assert self.gate.wait(10)
        self.calls.append(len(elements))
        return [PayloadError("bad") if e == b"bad" else np.full((2, 2, 1), float(e), np.float32) for e in elements]


def test_payloads_queued_while_a_decode_runs_are_decoded_in_one_call():
    from bottlenet_jax.serve.payload import DecodeQueue

    decoder = GatedDecoder()
    q = DecodeQueue(decoder, workers=1)
    first = q.submit([b"1"])
    assert decoder.started.wait(10)
    futs = [q.submit(e) for e in ([b"2"], [b"3", b"4"], [b"5", b"bad"], [b"6"])]
    decoder.gate.set()
    assert first.result(10)[0, 0, 0, 0] == 1.0
    assert [f.result(10)[:, 0, 0, 0].tolist() for f in (futs[0], futs[1], futs[3])] == [[2.0], [3.0, 4.0], [6.0]]
    with pytest.raises(PayloadError, match="bad"):
        futs[2].result(10)  # its own error; the others of its call are answered
    assert decoder.calls == [1, 6] and q.calls == 2
    q.close()


def test_one_bad_payload_among_many_fails_only_itself(identity_export):
    from bottlenet_jax.serve.payload import PayloadDecoder

    d = PayloadDecoder(identity_export)
    good = [protocol.frame(np.full(4, v, "<f4").tobytes()) for v in (1.0, 2.0)]
    out = d.decode_many(
        [good[0], protocol.frame(b"\0\0"), good[1], protocol.frame(np.full(4, np.inf, "<f4").tobytes())]
    )
    assert [type(o).__name__ for o in out] == ["ndarray", "PayloadError", "ndarray", "PayloadError"]
    assert out[2].sum() == 8.0 and "non-finite" in str(out[3])


@contextlib.contextmanager
def grpc_service(service, rest=False):
    """`service` (a server.InferenceService) on a loopback port of a grpc.aio server in its own
    event-loop thread, as server.Server runs it, and with `rest` its REST form on another port of
    the same loop: yields the gRPC address (and the REST one)."""
    import asyncio

    from aiohttp import web
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    from bottlenet_jax.serve import rest as rest_app

    loop, started, port, held = asyncio.new_event_loop(), threading.Event(), [], []

    async def serve():
        server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
        port.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        held.append(server)  # a grpc.aio server nobody holds is stopped when collected
        if rest:
            runner = web.AppRunner(rest_app.app(service), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port.append(runner.addresses[0][1])
            held.append(runner)
        started.set()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve())
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    assert started.wait(10)
    try:
        yield (f"127.0.0.1:{port[0]}", f"127.0.0.1:{port[1]}") if rest else f"127.0.0.1:{port[0]}"
    finally:
        if rest:
            asyncio.run_coroutine_threadsafe(held[1].cleanup(), loop).result(10)
        asyncio.run_coroutine_threadsafe(held[0].stop(None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def _service(identity_export, model, batcher, slots=16, decoder=None):
    from bottlenet_jax.serve.metrics import Metrics
    from bottlenet_jax.serve.payload import PayloadDecoder
    from bottlenet_jax.serve.server import InferenceService

    return InferenceService(decoder or PayloadDecoder(identity_export), model, batcher, Metrics(4), 1, slots)


def _infer_future(stub, value: float):
    """A ModelInfer call (as a future) of one identity payload filled with `value`."""
    request = protocol.stream_request([protocol.frame(np.full(4, value, "<f4").tobytes())], "x")
    return stub.ModelInfer.future(request, timeout=30)


def test_the_edge_clients_stream_against_the_service_with_a_fake_model(identity_export, model):
    """The gRPC service (server.InferenceService) on a loopback port, its model a fake: the edge
    client's HTTP/2 stream gets each request's logits by id, a bad request gets its own error and
    the stream goes on; the unary RPC answers the same."""
    from bottlenet_jax.serve.stream import Stream

    batcher = Batcher(model, max_batch=4, max_delay=0.001, queue_size=16)
    service = _service(identity_export, model, batcher)
    with grpc_service(service) as addr:
        stream = Stream(addr)
        try:
            x = [np.full((2, 2, 1), v, "<f4") for v in (1.0, 2.0, 3.0)]
            futs = [stream.infer([protocol.frame(a.tobytes())]) for a in x]
            bad = stream.infer([protocol.frame(b"\0\0")])
            after = stream.infer([protocol.frame(x[0].tobytes())])
            for f, a in zip(futs, x):
                np.testing.assert_array_equal(protocol.logits_of(f.result(10)), np.full((1, 3), a.sum()))
            with pytest.raises(Exception, match="INVALID_ARGUMENT"):
                bad.result(10)
            np.testing.assert_array_equal(protocol.logits_of(after.result(10)), np.full((1, 3), 4.0))
        finally:
            stream.close()
            batcher.close()
            service.close()


def test_a_full_batcher_queue_answers_resource_exhausted_through_the_grpc_service(identity_export, model):
    """The model holds a first batch; two requests fill the batcher's queue (2); the next gets
    RESOURCE_EXHAUSTED from the gRPC service at once, and the queued ones are served after."""
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    batcher = Batcher(model, max_batch=1, max_delay=0.0, queue_size=2)
    service = _service(identity_export, model, batcher)
    queued, submit = threading.Semaphore(0), batcher.submit

    def counted(*a, **k):
        fut = submit(*a, **k)
        queued.release()
        return fut

    batcher.submit = counted
    model.gate.clear()
    with grpc_service(service) as addr, grpc.insecure_channel(addr) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            first = _infer_future(stub, 1.0)
            assert model.started.wait(10)  # the model holds the first batch
            waiting = [_infer_future(stub, v) for v in (2.0, 3.0)]
            for _ in range(3):
                assert queued.acquire(timeout=10)  # both in the batcher's queue
            with pytest.raises(grpc.RpcError) as e:
                _infer_future(stub, 4.0).result()
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue full" in e.value.details()
            model.gate.set()
            got = [protocol.logits_of(f.result())[0, 0] for f in (first, *waiting)]
            assert got == [4.0, 8.0, 12.0]
        finally:
            model.gate.set()
            batcher.close()
            service.close()


def test_a_full_decode_queue_answers_resource_exhausted_through_the_grpc_service(identity_export, model):
    """The decoder holds a first request; a second waits for it (2 decode slots); the third gets
    RESOURCE_EXHAUSTED, and the two are served after."""
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    from bottlenet_jax.serve.payload import PayloadDecoder

    decoder = PayloadDecoder(identity_export)
    gate, started = gate_decoder(decoder, 10)
    batcher = Batcher(model, max_batch=4, max_delay=0.0, queue_size=16)
    service = _service(identity_export, model, batcher, slots=2, decoder=decoder)
    submitted, submit = threading.Semaphore(0), service.decoding.submit

    def counted(elements):
        fut = submit(elements)
        submitted.release()
        return fut

    service.decoding.submit = counted
    with grpc_service(service) as addr, grpc.insecure_channel(addr) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            first = _infer_future(stub, 1.0)
            assert started.wait(10)
            second = _infer_future(stub, 2.0)
            for _ in range(2):
                assert submitted.acquire(timeout=10)  # the second holds the other slot
            with pytest.raises(grpc.RpcError) as e:
                _infer_future(stub, 3.0).result()
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "being decoded" in e.value.details()
            gate.set()
            assert [protocol.logits_of(f.result())[0, 0] for f in (first, second)] == [4.0, 8.0]
        finally:
            gate.set()
            batcher.close()
            service.close()


def _post(addr, body, headers=None, path="/v2/models/bottlenet/infer"):
    """A plain HTTP POST, as curl sends it: (status, parsed JSON or raw body, headers)."""
    import http.client

    conn = http.client.HTTPConnection(addr, timeout=30)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    data, kind = r.read(), r.getheader("Content-Type", "")
    conn.close()
    return r.status, json.loads(data) if kind.startswith("application/json") else data, dict(r.getheaders())


def _json_request(elements, **params):
    return json.dumps({**protocol.json_request(elements), **params}).encode()


def test_the_rest_form_answers_as_the_grpc_service_does(identity_export, model):
    """tritonclient.http unmodified (binary tensors) and curl-style JSON (base64 payloads, JSON
    outputs) get the logits the gRPC service gives; health, metadata and config answer; every
    malformed request gets 400 with the gRPC status's message where gRPC has the same request, and
    the next good request is served."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    batcher = Batcher(model, max_batch=4, max_delay=0.001, queue_size=16)
    service = _service(identity_export, model, batcher)
    x = np.stack([np.full((2, 2, 1), v, "<f4") for v in (1.0, 2.0)])
    elements = [protocol.frame(a.tobytes()) for a in x]
    with grpc_service(service, rest=True) as (addr, http_addr):
        h, g = httpclient.InferenceServerClient(http_addr), grpcclient.InferenceServerClient(addr)
        try:
            assert h.is_server_live() and h.is_server_ready() and h.is_model_ready("bottlenet")
            assert h.get_model_metadata("bottlenet")["inputs"] == [
                {"name": "PAYLOAD", "datatype": "BYTES", "shape": [-1]}
            ]
            assert h.get_model_config("bottlenet")["config"]["max_batch_size"] == 4
            assert "binary_tensor_data" in h.get_server_metadata()["extensions"]

            def both(elements, outputs=("LOGITS",)):
                got = []
                for client, mod in ((h, httpclient), (g, grpcclient)):
                    t = mod.InferInput("PAYLOAD", [len(elements)], "BYTES")
                    t.set_data_from_numpy(np.array(elements, dtype=object))
                    got.append(client.infer("bottlenet", [t], outputs=[mod.InferRequestedOutput(o) for o in outputs]))
                return got

            rh, rg = both(elements, ("LOGITS", "CLASS"))
            np.testing.assert_array_equal(rh.as_numpy("LOGITS"), rg.as_numpy("LOGITS"))
            np.testing.assert_array_equal(
                rh.as_numpy("LOGITS"), np.repeat(x.reshape(2, -1).sum(1, keepdims=True), 3, 1)
            )
            np.testing.assert_array_equal(rh.as_numpy("CLASS"), rg.as_numpy("CLASS"))
            status, doc, _ = _post(http_addr, _json_request(elements, id="curl-1"))
            assert status == 200 and doc["id"] == "curl-1"
            assert {o["name"]: o["data"] for o in doc["outputs"]}["LOGITS"] == rh.as_numpy("LOGITS").ravel().tolist()

            bad_crc = [elements[0][:-1] + bytes([elements[0][-1] ^ 1])]
            for body, why in (
                (b"{not json", "not JSON"),
                (b'{"inputs": 3}', '"inputs"'),
                (
                    json.dumps(
                        {
                            "inputs": [
                                {
                                    "name": "PAYLOAD",
                                    "shape": [1],
                                    "datatype": "BYTES",
                                    "data": ["%%%"],
                                    "parameters": {"content_type": "base64"},
                                }
                            ]
                        }
                    ).encode(),
                    "not base64",
                ),
                (_json_request(elements, parameters={"timeout": "soon"}), "timeout"),
                (_json_request(bad_crc), "CRC-32"),
                (_json_request(elements, outputs=[{"name": "PROBS"}]), "requested outputs"),
            ):
                status, doc, _ = _post(http_addr, body)
                assert status == 400 and why in doc["error"] and "\n" not in doc["error"], (status, doc)
            status, doc, _ = _post(http_addr, _json_request(bad_crc))
            with pytest.raises(Exception) as e:
                both(bad_crc)
            assert doc["error"] in str(e.value)  # the same one-line message on both protocols
            status, _, _ = _post(http_addr, _json_request(elements), path="/v2/models/resnet/infer")
            assert status == 404
            status, _, _ = _post(http_addr, b"x" * 10, {"Inference-Header-Content-Length": "99"})
            assert status == 400
            rh, rg = both(elements[:1])  # still serving
            np.testing.assert_array_equal(rh.as_numpy("LOGITS"), rg.as_numpy("LOGITS"))
            t = httpclient.InferInput("PAYLOAD", [1], "BYTES")
            t.set_data_from_numpy(np.array(elements[:1], dtype=object))
            r = h.infer("bottlenet", [t])  # no outputs named: all of them, binary (tritonclient's default)
            np.testing.assert_array_equal(r.as_numpy("LOGITS"), rg.as_numpy("LOGITS"))
            assert r.as_numpy("CLASS").tolist() == [0]
        finally:
            h.close()
            g.close()
            batcher.close()
            service.close()


def fake_worker(export_dir, max_batch, conn):
    """A model process speaking _model_worker's pipe protocol without a model: logits = sums."""
    conn.send(("ready", [1, 2, 4], 3))
    while True:
        try:
            msg = conn.recv_bytes()
        except EOFError:
            return
        if msg == b"compiles":
            conn.send_bytes((0).to_bytes(8, "little"))
            continue
        n = int.from_bytes(msg[:4], "little")
        x = np.frombuffer(msg, np.float32, offset=4).reshape(n, -1)
        conn.send_bytes(b"\0" + np.repeat(x.sum(1, keepdims=True), 3, 1).astype(np.float32).tobytes())


def test_the_model_process_is_restarted_after_it_dies(identity_export):
    """kill -9 of the model process: readiness drops at once (the supervisor waits on its
    sentinel), a batch meanwhile fails with ModelUnavailable, and a new process answers again."""
    import os
    import signal

    from bottlenet_jax.serve.model_process import ModelProcess

    restarted = threading.Event()
    mp = ModelProcess(identity_export, 4, on_restart=restarted.set, worker=fake_worker)
    try:
        np.testing.assert_array_equal(mp.infer(feats(1.0)), np.full((1, 3), 4.0))
        pid = mp.pid
        os.kill(pid, signal.SIGKILL)
        assert restarted.wait(10)  # the death was seen
        assert not mp.ready
        with pytest.raises(ModelUnavailable):
            mp.infer(feats(1.0))
        assert mp._ready.wait(30)  # the new process said it is ready
        assert mp.pid != pid and mp.restarts == 1
        np.testing.assert_array_equal(mp.infer(feats(2.0, 2)), np.full((2, 3), 8.0))
    finally:
        mp.close()


# Tests that still sleep, and why no event can replace it there.
SLEEP_ALLOWED = {
    "test_codecs.py": "polls for a killed process tree's exit: another process's state has no event to wait on",
    "test_serve_network.py": "keeps load threads running and polls readiness over gRPC while a real model "
    "process restarts in another process",
    "test_serve.py": "lets in-flight requests reach a server in another process before SIGTERM (slow stage)",
    "test_benchmarks.py": "simulates a loader that makes one batch per interval (what is measured is time)",
}


SLEEPS = re.compile(r"\btime\.sleep\(|from time import[^\n]*\bsleep\b|\basyncio\.sleep\(|\bTimer\(")


def test_the_sleep_pattern_catches_every_way_to_wait_on_a_clock():
    for line in (
        "time.sleep(0.1)",
        "from time import sleep",
        "from time import perf_counter, sleep",
        "await asyncio.sleep(0)",
        "threading.Timer(0.05, gate.set).start()",
        "from threading import Timer; Timer(1, f)",
    ):
        assert SLEEPS.search(line), line
    for line in ("time.perf_counter()", "gate.wait(10)", "sleeper = 1", "TimerStats"):
        assert not SLEEPS.search(line), line


def test_no_test_sleeps_to_synchronise_outside_the_allow_list():
    """Every Python file under tests/ (helpers and conftest too), this one aside."""
    here = pathlib.Path(__file__).parent
    found = {
        p.name for p in here.rglob("*.py") if p.name != pathlib.Path(__file__).name and SLEEPS.search(p.read_text())
    }
    assert found <= set(SLEEP_ALLOWED), sorted(found - set(SLEEP_ALLOWED))
