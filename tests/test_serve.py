"""The split-inference runtime: KServe v2 gRPC server + dynamic batcher + edge client, on loopback,
from an export of a mock-trained model (tests/mock_train.py)."""

import concurrent.futures
import os
import subprocess
import sys
import time

import cv2
import grpc
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def export_dir(mock_imagenet, tmp_path_factory):
    from bottlenet_jax.export import export_workdir

    d = tmp_path_factory.mktemp("serve")
    p = subprocess.run(
        [
            sys.executable,
            os.path.join(HERE, "mock_train.py"),
            str(mock_imagenet),
            str(d / "wd"),
            str(d / "out.json"),
            "num_train_steps=2",
            "eval_every_steps=2",
            "checkpoint_every_steps=2",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    export_workdir(str(d / "wd"), str(d / "export"))
    return str(d / "export")


@pytest.fixture(scope="module")
def server(export_dir):
    from bottlenet_jax.serve import server as srv

    s = srv.start(export_dir, port=0, max_batch=8, max_delay=0.05, queue_size=64)
    yield s.service, f"127.0.0.1:{s.port}"
    s.stop(grace=5)


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), np.uint8)


def _raw_infer(addr, elements, shape=None):
    """One ModelInfer with hand-built BYTES contents (to send what a good client never would)."""
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    t = pb.ModelInferRequest.InferInputTensor(name="PAYLOAD", datatype="BYTES", shape=shape or [len(elements)])
    t.contents.bytes_contents.extend(elements)
    with grpc.insecure_channel(addr) as ch:
        return pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(
            pb.ModelInferRequest(model_name="bottlenet", inputs=[t]), timeout=30
        )


def test_logits_through_the_server_equal_the_full_model_and_clients_get_their_own(server, export_dir):
    import jax

    from bottlenet_jax.checkpoint import Checkpoints, load_config
    from bottlenet_jax.models import build_model
    from bottlenet_jax.serve.client import EdgeClient
    from bottlenet_jax.steps import normalize

    service, addr = server
    wd = os.path.join(os.path.dirname(export_dir), "wd")
    cfg, raw = load_config(wd), Checkpoints(wd).restore_raw()
    full = jax.jit(build_model(cfg, bn_axis_name=None).apply)
    imgs = _images(12)
    want = np.asarray(
        full({"params": raw["params"], "batch_stats": raw["batch_stats"]}, normalize(imgs, cfg.mean, cfg.std))[0]
    )
    client = EdgeClient(export_dir, addr)
    before = service.batcher.executions
    with concurrent.futures.ThreadPoolExecutor(12) as pool:  # 12 clients at once: batched together
        got = list(pool.map(lambda i: client.send(client.encode(imgs[i : i + 1]))[0], range(12)))
    np.testing.assert_allclose(np.stack(got), want, rtol=1e-5, atol=1e-5)  # each client got its own image's logits
    assert list(np.argmax(got, -1)) == list(np.argmax(want, -1))
    assert service.batcher.executions - before < 12  # requests shared batches
    import tritonclient.grpc as tc

    inp = tc.InferInput("PAYLOAD", [2], "BYTES")
    inp.set_data_from_numpy(np.array(client.encode(imgs[:2]), dtype=np.object_))
    res = client.client.infer("bottlenet", [inp], outputs=[tc.InferRequestedOutput("CLASS")])
    assert res.as_numpy("LOGITS") is None and list(res.as_numpy("CLASS")) == list(np.argmax(want[:2], -1))
    with pytest.raises(tc.InferenceServerException, match="requested outputs \\['PROBS'\\]"):
        client.client.infer("bottlenet", [inp], outputs=[tc.InferRequestedOutput("PROBS")])
    r = client.classify(imgs[:2])
    assert [x["label"] for x in r] == list(np.argmax(want[:2], -1)) and all(0 < x["bytes"] < 2000 for x in r)
    client.close()


def test_bad_payloads_fail_alone_while_a_good_request_in_the_same_batch_succeeds(server, export_dir):
    from bottlenet_jax.serve.client import EdgeClient
    from bottlenet_jax.serve.protocol import frame

    service, addr = server
    client = EdgeClient(export_dir, addr)
    good = client.encode(_images(1, seed=3))[0]
    body = good[:-4]
    flipped = bytearray(body)
    flipped[len(flipped) // 2] ^= 0x10
    wrong = cv2.imencode(".jpg", np.zeros((5, 7), np.uint8))[1].tobytes()
    bad = {
        "truncated": (good[: len(good) // 2], "CRC-32 mismatch"),
        "truncated, re-framed": (frame(body[: len(body) // 2]), "cannot decode"),
        "empty": (b"", "empty"),
        "bit-flipped": (bytes(flipped) + good[-4:], "CRC-32 mismatch"),
        "oversized": (frame(b"\0" * 10_000_000), "larger than any"),
        "wrong-shape image": (frame(wrong), "SOF0 says"),
    }
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futs = {k: pool.submit(_raw_infer, addr, [v]) for k, (v, _) in bad.items()}
        futs["wrong tensor shape"] = pool.submit(_raw_infer, addr, [good], shape=[1, 1])
        ok = pool.submit(_raw_infer, addr, [good])
        for k, f in futs.items():
            with pytest.raises(grpc.RpcError) as e:
                f.result()
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, k
            assert (bad[k][1] if k in bad else "expected [n]") in e.value.details(), (k, e.value.details())
        assert ok.result().outputs[0].name == "LOGITS"
    np.testing.assert_array_equal(client.send([good]), client.send([good]))  # and it keeps serving
    client.close()


def _try(fn):
    try:
        return fn()
    except grpc.RpcError as e:
        return e.code()


def test_cli_server_and_client_then_sigterm_drains_requests_in_flight(export_dir, tmp_path):
    from bottlenet_jax.serve import server as srv

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bottlenet_jax.serve",
            "--export",
            export_dir,
            "--port",
            "0",
            "--http-port",
            "0",
            "--max-delay-ms",
            "800",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "serving" in line, line + proc.stdout.read()[-2000:]
        port = srv.listening_port(line)  # --port 0: the one the system chose
        http_port = srv.listening_http_port(line)
        files = []
        for i, img in enumerate(_images(2, seed=5)):
            files.append(str(tmp_path / f"img{i}.png"))
            cv2.imwrite(files[-1], img[..., ::-1])
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "bottlenet_jax.serve.client",
                "--export",
                export_dir,
                "--server",
                f"127.0.0.1:{port}",
                *files,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 0, cli.stderr[-2000:]
        assert all(f"{f}: " in cli.stdout and "bytes sent" in cli.stdout for f in files), cli.stdout
        from bottlenet_jax.serve.client import EdgeClient

        client = EdgeClient(export_dir, f"127.0.0.1:{port}")
        payload = client.encode(_images(1))[0]
        # the REST port as curl uses it (README): the client writes the JSON body, an HTTP POST sends it
        import json
        import urllib.request

        cv2.imwrite(str(tmp_path / "one.png"), _images(1)[0][..., ::-1])
        body = tmp_path / "request.json"
        w = subprocess.run(
            [
                sys.executable,
                "-m",
                "bottlenet_jax.serve.client",
                "--export",
                export_dir,
                "--write-request",
                str(body),
                str(tmp_path / "one.png"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert w.returncode == 0 and "wrote" in w.stdout, w.stderr[-2000:]
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v2/models/bottlenet/infer", body.read_bytes())
        with urllib.request.urlopen(req, timeout=60) as r:
            got = {o["name"]: o["data"] for o in json.load(r)["outputs"]}
        np.testing.assert_allclose(np.reshape(got["LOGITS"], (1, -1)), client.send([payload]), rtol=1e-6)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            inflight = [pool.submit(client.send, [payload]) for _ in range(4)]
            time.sleep(0.3)  # they wait in the batcher's 800 ms window
            proc.send_signal(15)
            assert all(f.result().shape == (1, 1000) for f in inflight)  # finished, not dropped
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "stopping" in out and "compiles after warm-up: 0" in out, out[-2000:]
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_channel_conditioned_export_is_served_with_the_clients_condition(tmp_path):
    """BottleNet++ (AWGN, condition into the encoder): the client passes sigma to its edge half; the
    server's answer equals the cloud half run locally on the same received features."""
    import jax
    import jax.numpy as jnp

    from bottlenet_jax.export import Half, export_variables
    from bottlenet_jax.models import build_model
    from bottlenet_jax.serve import server as srv
    from bottlenet_jax.serve.client import EdgeClient
    from configs import fashion_mnist_bottlenetpp

    cfg = fashion_mnist_bottlenetpp.get_config()
    keys = {"params": jax.random.key(0), "codec": jax.random.key(1)}  # the channel draws noise at init too
    v = build_model(cfg, bn_axis_name=None).init(keys, jnp.zeros((1, 28, 28, 1)))
    export_variables(cfg, v, str(tmp_path / "export"))
    s = srv.start(str(tmp_path / "export"), port=0, max_batch=4, max_delay=0.01)
    port = s.port
    try:
        client = EdgeClient(str(tmp_path / "export"), f"127.0.0.1:{port}")
        imgs = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), np.uint8)
        with pytest.raises(ValueError, match="channel-conditioned"):
            client.encode(imgs)
        payloads = client.encode(imgs, condition=np.float32(0.1))
        z = client.codec.decode([p[:-4] for p in payloads], (3, 4, 4, 4), state=client.codec_state)
        np.testing.assert_allclose(
            client.send(payloads), np.asarray(Half(str(tmp_path / "export"), "cloud")(z)), rtol=1e-5, atol=1e-5
        )
        client.close()
    finally:
        s.stop(grace=5)


def test_entropy_export_is_served_and_malformed_streams_are_invalid_argument(tmp_path):
    """The learned entropy bottleneck: the export carries its integer tables (codec_state/, arrays),
    the server range-decodes each payload; a stream that is not one of this model's (but has a valid
    CRC) fails its own request with INVALID_ARGUMENT and serving goes on."""
    import jax
    import jax.numpy as jnp

    from bottlenet_jax.export import Half, export_variables
    from bottlenet_jax.models import build_model
    from bottlenet_jax.serve import server as srv
    from bottlenet_jax.serve.client import EdgeClient
    from bottlenet_jax.serve.protocol import frame
    from configs import fashion_mnist_entropy

    cfg = fashion_mnist_entropy.get_config()
    v = build_model(cfg, bn_axis_name=None).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    export_variables(cfg, v, str(tmp_path / "export"))
    s = srv.start(str(tmp_path / "export"), port=0, max_batch=4, max_delay=0.01)
    addr = f"127.0.0.1:{s.port}"
    try:
        client = EdgeClient(str(tmp_path / "export"), addr)
        imgs = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), np.uint8)
        payloads = client.encode(imgs)
        z = client.codec.decode([p[:-4] for p in payloads], (3, 14, 14, 8), state=client.codec_state)
        np.testing.assert_allclose(
            client.send(payloads), np.asarray(Half(str(tmp_path / "export"), "cloud")(z)), rtol=1e-5, atol=1e-5
        )
        body = payloads[0][:-4]
        for bad in (frame(body[:-4]), frame(body + b"\x12\x34\x56\x78"), frame(body[:-1]), frame(b"\xff" * 64)):
            with pytest.raises(grpc.RpcError) as e:
                _raw_infer(addr, [bad])
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "entropy" in e.value.details()
        np.testing.assert_array_equal(client.send(payloads[:1]), client.send(payloads[:1]))  # still serving
        client.close()
    finally:
        s.stop(grace=5)


def test_an_entropy_export_written_at_a511a13_is_served_with_the_logits_it_gave():
    """tests/data/legacy_a511a13/export keeps its fitted tables as JSON in manifest.json: the client
    sends the very payloads that version wrote, and the server answers with that version's logits."""
    from bottlenet_jax.serve import server as srv
    from bottlenet_jax.serve.client import EdgeClient

    d = os.path.join(HERE, "data", "legacy_a511a13")
    want = np.load(os.path.join(d, "expected.npz"))
    s = srv.start(os.path.join(d, "export"), port=0, max_batch=4, max_delay=0.01)
    try:
        client = EdgeClient(os.path.join(d, "export"), f"127.0.0.1:{s.port}")
        z = client.run_edge(want["x"])
        payloads = client.codec.encode(z, state=client.codec_state)
        assert b"".join(payloads) == want["payloads"].tobytes()
        from bottlenet_jax.serve.protocol import frame

        np.testing.assert_allclose(client.send([frame(p) for p in payloads]), want["logits"], rtol=1e-5, atol=1e-5)
        client.close()
    finally:
        s.stop(grace=5)
