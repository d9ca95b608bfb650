"""The server as an operator puts it on a network: a supervised model process, readiness that tells
the truth, bounded work per request before any decode, deadlines, TLS and mutual TLS, the
streaming RPC, Prometheus metrics. Clients are `tritonclient.grpc` (the standard KServe v2 client)
or the protocol's own stubs where a test sends what a good client never would."""

import concurrent.futures
import os
import signal
import socket
import threading
import time
import urllib.request

import grpc
import numpy as np
import psutil
import pytest
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """A random-init export of the demo's network (JPEG q=30 on 14x14x2 features: 28x28 tiles)."""
    import jax
    import jax.numpy as jnp

    from bottlenet_jax.export import export_variables
    from bottlenet_jax.models import build_model
    from configs import fashion_mnist_demo

    d = tmp_path_factory.mktemp("net")
    cfg = fashion_mnist_demo.get_config()
    v = build_model(cfg, bn_axis_name=None).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    export_variables(cfg, v, str(d / "export"))
    return str(d / "export")


@pytest.fixture(scope="module")
def server(export_dir):
    from bottlenet_jax.serve import server as srv

    s = srv.start(export_dir, port=0, max_batch=8, max_delay=0.005, metrics_port=0)
    yield s
    s.stop(grace=5)


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), np.uint8)


def scrape(port) -> dict:
    """The /metrics page as {(sample name, frozenset of its labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


MODEL = {("model", "bottlenet"), ("version", "1")}


def _infer(client, payload, timeout=None):
    inp = tc.InferInput("PAYLOAD", [1], "BYTES")
    inp.set_data_from_numpy(np.array([payload], dtype=np.object_))
    return client.infer("bottlenet", [inp], outputs=[tc.InferRequestedOutput("LOGITS")], client_timeout=timeout)


def test_kill_9_of_the_model_process_fails_its_batch_unavailable_and_the_server_recovers(server, export_dir):
    from bottlenet_jax.serve.client import EdgeClient

    addr = f"127.0.0.1:{server.port}"
    edge = EdgeClient(export_dir, addr, stream=False)
    payloads = edge.encode(_images(8))
    want = edge.send(payloads[:1])
    client = tc.InferenceServerClient(addr)
    assert client.is_server_ready() and client.is_model_ready("bottlenet")
    codes, stop = [], threading.Event()

    def load():
        k = 0
        while not stop.is_set():
            try:
                _infer(client, payloads[k % 8], timeout=30)
                codes.append("OK")
            except tc.InferenceServerException as e:
                codes.append(e.status())
            k += 1

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    pid = server.model.pid
    os.kill(pid, signal.SIGKILL)  # what the OOM killer does
    seen_down = False
    for _ in range(50):  # noticed at once: readiness false within a fraction of a second
        if not client.is_server_ready():
            seen_down = True
            break
        time.sleep(0.02)
    assert seen_down and not client.is_model_ready("bottlenet")
    deadline = time.time() + 240
    while not client.is_server_ready() and time.time() < deadline:  # a new process compiles
        time.sleep(0.5)
    assert client.is_server_ready() and server.model.pid != pid and server.model.restarts == 1
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert "StatusCode.UNAVAILABLE" in codes, set(codes)  # the lost batch's requests, and those during restart
    assert set(codes) <= {"OK", "StatusCode.UNAVAILABLE"}, set(codes)  # never UNKNOWN / a broken pipe
    assert codes[-1] == "OK"  # serving again, without restarting the server
    np.testing.assert_allclose(edge.send(payloads[:1]), want, rtol=1e-5, atol=1e-5)
    assert scrape(server.metrics_port)[("bottlenet_model_restarts_total", frozenset(MODEL))] == 1
    edge.close()
    client.close()


def test_a_header_claiming_a_huge_image_is_refused_before_decoding(server, export_dir):
    """101 bytes with a valid CRC whose SOF claims 30000x30000: refused in O(header), no allocation."""
    from bottlenet_jax.serve.client import EdgeClient
    from bottlenet_jax.serve.protocol import frame

    edge = EdgeClient(export_dir, f"127.0.0.1:{server.port}", stream=False)
    body = bytearray(edge.encode(_images(1))[0][:-4])
    sof = body.index(b"\xff\xc0")
    body[sof + 5 : sof + 9] = (30000).to_bytes(2, "big") * 2  # height, width
    bad = frame(bytes(body))
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    client = tc.InferenceServerClient(f"127.0.0.1:{server.port}")
    _infer(client, edge.encode(_images(1))[0])  # warm
    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        errs = list(pool.map(lambda _: pytest.raises(tc.InferenceServerException, _infer, client, bad), range(4)))
    elapsed = time.perf_counter() - t
    for e in errs:
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "30000x30000" in e.value.message()
    assert elapsed < 0.05 * 4 and proc.memory_info().rss - rss0 < 20e6, (elapsed, proc.memory_info().rss - rss0)
    edge.close()
    client.close()


def test_a_request_whose_deadline_passes_in_the_queue_is_not_computed(export_dir):
    from bottlenet_jax.serve import server as srv
    from bottlenet_jax.serve.client import EdgeClient

    s = srv.start(export_dir, port=0, max_batch=8, max_delay=1.0)  # batches wait up to 1 s to fill
    try:
        edge = EdgeClient(export_dir, f"127.0.0.1:{s.port}", stream=False)
        payload = edge.encode(_images(1))[0]
        before, expired = s.batcher.executions, s.batcher.expired
        with grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            req = pb.ModelInferRequest(
                model_name="bottlenet",
                inputs=[
                    pb.ModelInferRequest.InferInputTensor(
                        name="PAYLOAD",
                        datatype="BYTES",
                        shape=[1],
                        contents=pb.InferTensorContents(bytes_contents=[payload]),
                    )
                ],
            )
            with pytest.raises(grpc.RpcError) as e:
                stub.ModelInfer(req, timeout=0.2)
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        edge.close()
    finally:
        s.stop(grace=5)  # drains: the batcher finishes (or drops) what is queued before it returns
    assert s.batcher.executions == before and s.batcher.expired == expired + 1  # dropped, not computed


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, by the openssl CLI."""
    from bottlenet_jax.serve.certs import make_certs

    return make_certs(tmp_path_factory.mktemp("tls"), client=True, days=2)


def test_tls_serves_a_tls_client_and_refuses_plaintext(export_dir, certs):
    from bottlenet_jax.serve import server as srv
    from bottlenet_jax.serve.client import EdgeClient

    s = srv.start(
        export_dir, port=0, http_port=0, max_batch=4, tls_cert=certs["server.crt"], tls_key=certs["server.key"]
    )
    addr = f"127.0.0.1:{s.port}"
    try:
        edge = EdgeClient(export_dir, addr, tls_ca=certs["ca.crt"])  # streaming, over TLS
        payloads = edge.encode(_images(2))
        logits = edge.send(payloads)
        assert logits.shape == (2, 10)
        # the REST port: TLS with the same certificate, the same logits; plaintext refused
        import tritonclient.http as httpclient

        rest = httpclient.InferenceServerClient(
            f"127.0.0.1:{s.http_port}", ssl=True, ssl_options={"ca_certs": certs["ca.crt"]}
        )
        t = httpclient.InferInput("PAYLOAD", [2], "BYTES")
        t.set_data_from_numpy(np.array(payloads, dtype=object))
        np.testing.assert_allclose(rest.infer("bottlenet", [t]).as_numpy("LOGITS"), logits, rtol=1e-6)
        rest.close()
        import http.client
        import urllib.request

        with pytest.raises((OSError, http.client.HTTPException)):  # plaintext to the TLS port: no answer
            urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}/v2/health/live", timeout=10)
        secure = tc.InferenceServerClient(addr, ssl=True, root_certificates=certs["ca.crt"])
        assert secure.is_server_ready()
        plain = tc.InferenceServerClient(addr)
        with pytest.raises(tc.InferenceServerException):
            plain.is_server_ready()
        plain_edge = EdgeClient(export_dir, addr)  # a streaming client without TLS: told so, not left waiting
        t = time.perf_counter()
        for _ in range(2):  # the request in flight when the handshake fails, and one sent after
            with pytest.raises(tc.InferenceServerException, match="stream ended"):
                plain_edge.send(edge.encode(_images(1)))
        assert time.perf_counter() - t < 10 < plain_edge.timeout
        plain_edge.close()
        edge.close()
    finally:
        s.stop(grace=5)


def test_mutual_tls_refuses_a_client_without_a_certificate(export_dir, certs):
    from bottlenet_jax.serve import server as srv
    from bottlenet_jax.serve.client import EdgeClient

    s = srv.start(
        export_dir,
        port=0,
        http_port=0,
        max_batch=4,
        tls_cert=certs["server.crt"],
        tls_key=certs["server.key"],
        tls_client_ca=certs["ca.crt"],
    )
    addr = f"127.0.0.1:{s.port}"
    try:
        import ssl
        import urllib.request

        url = f"https://127.0.0.1:{s.http_port}/v2/health/ready"
        ctx = ssl.create_default_context(cafile=certs["ca.crt"])
        with pytest.raises(OSError):  # the REST port wants a client certificate too
            urllib.request.urlopen(url, context=ctx, timeout=10)
        ctx.load_cert_chain(certs["client.crt"], certs["client.key"])
        assert urllib.request.urlopen(url, context=ctx, timeout=10).status == 200
        with_cert = tc.InferenceServerClient(
            addr,
            ssl=True,
            root_certificates=certs["ca.crt"],
            private_key=certs["client.key"],
            certificate_chain=certs["client.crt"],
        )
        assert with_cert.is_server_ready()
        without = tc.InferenceServerClient(addr, ssl=True, root_certificates=certs["ca.crt"])
        with pytest.raises(tc.InferenceServerException):
            without.is_server_ready()
        # the edge client's stream (h2 over Python's ssl): served with its certificate, refused without
        edge = EdgeClient(
            export_dir, addr, tls_ca=certs["ca.crt"], tls_cert=certs["client.crt"], tls_key=certs["client.key"]
        )
        assert edge.send(edge.encode(_images(1))).shape == (1, 10)
        edge.close()
        anonymous = EdgeClient(export_dir, addr, tls_ca=certs["ca.crt"])
        with pytest.raises(tc.InferenceServerException, match="stream ended"):
            anonymous.send(anonymous.encode(_images(1)))
        anonymous.close()
    finally:
        s.stop(grace=5)


def test_streaming_gives_the_unary_logits_and_isolates_a_bad_request(server, export_dir):
    from bottlenet_jax.serve.client import EdgeClient
    from bottlenet_jax.serve.protocol import frame
    from bottlenet_jax.serve.stream import Stream

    addr = f"127.0.0.1:{server.port}"
    unary = EdgeClient(export_dir, addr, stream=False)
    payloads = unary.encode(_images(6, seed=4))
    want = np.concatenate([unary.send([p]) for p in payloads])
    stream = Stream(addr)
    futs = [stream.infer([p]) for p in payloads[:3]]
    bad = stream.infer([frame(b"\xff\xd8 not a jpeg")])
    futs += [stream.infer([p]) for p in payloads[3:]]
    got = [f.result(timeout=60) for f in futs]
    logits = np.stack([np.frombuffer(r.raw_output_contents[0], "<f4") for r in got])
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)  # each answer matched to its request by id
    with pytest.raises(Exception, match="INVALID_ARGUMENT"):
        bad.result(timeout=60)
    after = stream.infer(payloads[:1]).result(timeout=60)  # the stream went on
    np.testing.assert_allclose(np.frombuffer(after.raw_output_contents[0], "<f4"), want[0], rtol=1e-5, atol=1e-5)
    stream.close()
    streaming = EdgeClient(export_dir, addr)  # the edge client's default: the stream
    np.testing.assert_allclose(streaming.send(payloads[:2]), want[:2], rtol=1e-5, atol=1e-5)
    streaming.close()
    unary.close()
    with socket.socket() as closed:  # a port nobody listens on: every request fails at once, with why
        closed.bind(("127.0.0.1", 0))
        nowhere = Stream(f"127.0.0.1:{closed.getsockname()[1]}")
    with pytest.raises(tc.InferenceServerException, match="could not connect"):
        nowhere.infer(payloads[:1]).result(timeout=5)


def test_the_stream_sends_at_most_64_bytes_of_framing_per_request(server, export_dir):
    """The edge client's stream on the wire (serve_load's counting relay): per request the KServe
    message, the gRPC prefix and one DATA frame header, and no WINDOW_UPDATE frames riding along
    (gRPC core's client sends two per answer: 26 B)."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import serve_load

    from bottlenet_jax.serve.client import EdgeClient

    edge = EdgeClient(export_dir, f"127.0.0.1:{server.port}", stream=False)
    payloads = edge.encode(_images(8, seed=5))
    edge.close()
    w = serve_load.wire_bytes_stream(server.port, payloads, n=100)
    assert w["up"] - w["payload"] <= 64, w
    assert "WINDOW_UPDATE" not in w["frames"] and w["frames"]["DATA"] == 9.0, w


def test_metrics_scrape_shows_the_requests_this_test_made(export_dir):
    from bottlenet_jax.serve import server as srv
    from bottlenet_jax.serve.client import EdgeClient
    from bottlenet_jax.serve.protocol import frame

    s = srv.start(export_dir, port=0, max_batch=4, max_delay=0.001, metrics_port=0)
    try:
        edge = EdgeClient(export_dir, f"127.0.0.1:{s.port}", stream=False)
        for p in edge.encode(_images(5)):
            edge.send([p])
        for _ in range(3):
            with pytest.raises(tc.InferenceServerException):
                edge.send([frame(b"garbage")])
        m, labels = scrape(s.metrics_port), frozenset(MODEL)
        assert m[("nv_inference_request_success_total", labels)] == 5
        assert m[("nv_inference_request_failure_total", labels | {("reason", "INVALID_ARGUMENT")})] == 3
        assert m[("nv_inference_count_total", labels)] == 5 and m[("nv_inference_exec_count_total", labels)] == 5
        assert m[("bottlenet_batch_size_count", labels)] == 5 and m[("bottlenet_model_ready", labels)] == 1
        assert m[("bottlenet_queue_seconds_count", labels)] == 5 and m[("bottlenet_compute_seconds_sum", labels)] > 0
        edge.close()
    finally:
        s.stop(grace=5)
    # readiness false once draining begins (checked on the stopped service object)
    assert not s.service.ready
