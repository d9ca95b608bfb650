"""The edge client: run the exported edge half, encode, send to the cloud server, print the answer.

    python -m bottlenet_jax.serve.client --export EXPORT_DIR --server HOST:PORT IMAGE [IMAGE ...]
        [--runtime jax|onnx] [--condition SIGMA_OR_P] [--unary] [--tls-ca ca.crt [--tls-cert ...]]
    python -m bottlenet_jax.serve.client --export EXPORT_DIR --write-request REQUEST.json IMAGE ...

With --write-request it sends nothing: it writes the images' payloads as the REST form's JSON infer
body (base64 elements), for curl or any HTTP client (README, "Serving").

Per image it prints the predicted class, the bytes sent (the framed payload: codec bytes + CRC-32)
and the round-trip latency. Images are read with OpenCV (grey or RGB as the export's input), resized
to the export's input size and normalised with its mean/std. A channel-conditioned (BottleNet++)
export needs `--condition` (its manifest's `edge_condition`: sigma or p). The Python API is
`EdgeClient`. Requests go over the KServe v2 protocol's bidirectional stream (ModelStreamInfer: no
per-request HTTP/2 headers, which cost more than a feature payload; `Stream`, gRPC's messages over
the `h2` library's HTTP/2, which returns flow-control window lazily), or with --unary one
ModelInfer call each through `tritonclient.grpc`, the standard KServe v2 client. --tls-ca trusts
that CA for the server's certificate (TLS); --tls-cert/--tls-key present a client certificate (mutual TLS).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import time

import cv2
import numpy as np

from bottlenet_jax.serve.protocol import MODEL, describe_export, frame, json_request, logits_of
from bottlenet_jax.serve.stream import Stream


class EdgeClient:
    """An export's edge (JAX, or edge.onnx + numpy encoders) and a KServe v2 gRPC connection to the
    cloud server."""

    def __init__(
        self,
        export_dir: str,
        server: str,
        timeout: float = 30.0,
        runtime: str = "jax",
        stream: bool = True,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        onnx: bool = False,
    ):
        """`runtime`: "jax" (the exported edge half and the codec in JAX) or "onnx" (bottlenet_jax.edge:
        edge.onnx in onnxruntime and the codec's numpy encoder; no JAX imported: what an edge device
        runs); `onnx=True` is runtime="onnx". `stream`: requests on one ModelStreamInfer stream (else
        one ModelInfer call each). `tls_ca`: PEM CA to verify the server by (TLS); `tls_cert`/`tls_key`:
        this client's certificate and key for a server that requires them (mutual TLS)."""
        import tritonclient.grpc as tc

        runtime = "onnx" if onnx else runtime
        if runtime not in ("jax", "onnx"):
            raise ValueError(f"runtime={runtime!r}: must be jax or onnx")
        if runtime == "onnx":
            from bottlenet_jax.edge import EdgeRuntime

            self.edge = EdgeRuntime(export_dir)
            self.manifest = self.edge.manifest
        else:
            from bottlenet_jax.export import Half, load_codec, load_manifest

            self.manifest = load_manifest(export_dir)
            self.codec, self.codec_state = load_codec(export_dir)
            self._half = Half(export_dir, "edge")
            self.edge = None
        self.runtime = runtime
        self.conditioned = bool(self.manifest.get("edge_condition"))
        self.timeout = timeout
        self._tc = tc
        if (tls_cert or tls_key) and not tls_ca:
            raise ValueError("a client certificate (tls_cert/tls_key) is for TLS: give tls_ca too")
        tls = (
            dict(ssl=True, root_certificates=tls_ca, private_key=tls_key, certificate_chain=tls_cert) if tls_ca else {}
        )
        self.client = tc.InferenceServerClient(server, **tls)
        self._stream = Stream(server, tls_ca, tls_cert, tls_key) if stream else None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["input_shape"])

    def normalize(self, images_u8) -> np.ndarray:
        x = np.asarray(images_u8, np.float32) / 255.0
        return (x - np.asarray(self.manifest["mean"], np.float32)) / np.asarray(self.manifest["std"], np.float32)

    def encode(self, images_u8, condition=None) -> list[bytes]:
        """uint8 [n, H, W, C] -> one framed payload per image (what goes on the wire)."""
        if self.conditioned and condition is None:
            raise ValueError("this edge half is channel-conditioned: pass condition=[sigma or p per sample]")
        if self.edge is not None:
            return [frame(p) for p in self.edge.encode(images_u8, condition)]
        z = self.run_edge(self.normalize(images_u8), condition)
        return [frame(p) for p in self.codec.encode(np.asarray(z), state=self.codec_state)]

    def run_edge(self, x, condition=None) -> np.ndarray:
        """Normalised float32 [n, H, W, C] -> features z, in JAX or (runtime onnx) onnxruntime."""
        if self.edge is not None:
            return self.edge.run(x, condition)
        return np.asarray(self._half(x, condition=condition))

    def send(self, payloads: list[bytes]) -> np.ndarray:
        """Framed payloads -> logits [n, classes] from the server (raises InferenceServerException)."""
        tc = self._tc
        inp = tc.InferInput("PAYLOAD", [len(payloads)], "BYTES")
        inp.set_data_from_numpy(np.array(payloads, dtype=np.object_))
        outputs = [tc.InferRequestedOutput("LOGITS")]
        if self._stream is None:
            return self.client.infer(MODEL, [inp], outputs=outputs, client_timeout=self.timeout).as_numpy("LOGITS")
        try:
            response = self._stream.infer(payloads).result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise tc.InferenceServerException(f"no answer within {self.timeout} s") from None
        return logits_of(response)

    def classify(self, images_u8, condition=None) -> list[dict]:
        """One request per image: label, its name, bytes sent and round-trip ms (edge + network + cloud)."""
        names = self.manifest.get("label_names") or []
        out = []
        for img in np.asarray(images_u8):
            t = time.perf_counter()
            payloads = self.encode(img[None], None if condition is None else np.atleast_1d(condition))
            logits = self.send(payloads)[0]
            label = int(np.argmax(logits))
            out.append(
                {
                    "label": label,
                    "name": names[label] if label < len(names) else str(label),
                    "bytes": len(payloads[0]),
                    "ms": 1e3 * (time.perf_counter() - t),
                }
            )
        return out

    def close(self):
        if self._stream is not None:
            self._stream.close()
        self.client.close()


def read_image(path: str, shape) -> np.ndarray:
    """An image file as uint8 [H, W, C] of the export's input shape (grey or RGB, resized)."""
    h, w, c = shape
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE if c == 1 else cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: not a readable image")
    if img.shape[:2] != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return img[..., None] if c == 1 else img[..., ::-1]


def main(argv=None):
    p = argparse.ArgumentParser(description="Classify images through the split model: edge here, cloud there.")
    p.add_argument("--export", required=True)
    p.add_argument("--server", default="127.0.0.1:8001")
    p.add_argument("--condition", type=float, default=None, help="channel condition for a BottleNet++ export")
    p.add_argument(
        "--runtime",
        choices=("jax", "onnx"),
        default="jax",
        help="onnx: edge.onnx in onnxruntime and the codec's numpy encoder (bottlenet_jax.edge: no JAX)",
    )
    p.add_argument("--unary", action="store_true", help="one ModelInfer call per image instead of the stream")
    p.add_argument("--tls-ca", default=None, help="PEM CA that signed the server's certificate: connect with TLS")
    p.add_argument("--tls-cert", default=None, help="PEM client certificate, for a server that requires one")
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    p.add_argument("--write-request", default=None, help="write the REST JSON infer body here instead of sending")
    p.add_argument("images", nargs="+")
    p.add_argument("--dry_run", action="store_true", help="check the arguments (and the export, if here), then stop")
    a = p.parse_args(argv)
    if a.dry_run:
        return print(f"dry run: {describe_export(a.export)}; {len(a.images)} image argument(s)")
    try:
        client = EdgeClient(
            a.export,
            a.server,
            runtime=a.runtime,
            stream=not (a.unary or a.write_request),
            tls_ca=a.tls_ca,
            tls_cert=a.tls_cert,
            tls_key=a.tls_key,
        )
        if client.conditioned and a.condition is None:
            sys.exit(
                f"error: {a.export} is channel-conditioned: pass --condition ({client.manifest['edge_condition']})"
            )
        images = np.stack([read_image(f, client.input_shape) for f in a.images])
        if a.write_request:
            cond = None if a.condition is None else np.full(len(images), a.condition, np.float32)
            with open(a.write_request, "w") as f:
                json.dump(json_request(client.encode(images, cond)), f)
            return print(f"wrote {a.write_request}: {len(images)} payloads; POST it to /v2/models/{MODEL}/infer")
        results = client.classify(images, a.condition)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    except Exception as e:  # tritonclient's InferenceServerException: the server's one-line status
        sys.exit(f"error: {type(e).__name__}: {e}")
    for f, r in zip(a.images, results):
        print(f"{f}: {r['name']} (class {r['label']})  {r['bytes']} bytes sent  {r['ms']:.1f} ms")


if __name__ == "__main__":
    main()
