"""The edge client: run the exported edge half, encode, send to the cloud server, print the answer.

    python -m bottlenet_jax.serve.client --export EXPORT_DIR --server HOST:PORT IMAGE [IMAGE ...]
        [--condition SIGMA_OR_P]

Per image it prints the predicted class, the bytes sent (the framed payload: codec bytes + CRC-32)
and the round-trip latency. Images are read with OpenCV (grey or RGB as the export's input), resized
to the export's input size and normalised with its mean/std. A channel-conditioned (BottleNet++)
export needs `--condition` (its manifest's `edge_condition`: sigma or p). The Python API is
`EdgeClient`; the transport is `tritonclient.grpc`, a standard KServe v2 client.
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np

from bottlenet_jax.serve.runtime import frame
from bottlenet_jax.serve.server import MODEL


class EdgeClient:
    """Edge half + codec from an export, and a KServe v2 gRPC connection to the cloud server."""

    def __init__(self, export_dir: str, server: str, timeout: float = 30.0, onnx: bool = False):
        """`onnx`: run the edge half's ONNX graph (export --onnx) in onnxruntime instead of JAX."""
        import os

        import tritonclient.grpc as tc

        from bottlenet_jax.export import Half, load_codec, load_manifest

        self.manifest = load_manifest(export_dir)
        self.codec = load_codec(self.manifest)
        self.edge = Half(export_dir, "edge")
        self.onnx = None
        if onnx:
            if not self.manifest.get("edge_onnx"):
                raise ValueError(f"{export_dir}: has no edge.onnx (export with --onnx)")
            import onnxruntime

            self.onnx = onnxruntime.InferenceSession(os.path.join(export_dir, self.manifest["edge_onnx"]))
        self.timeout = timeout
        self._tc = tc
        self.client = tc.InferenceServerClient(server)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["input_shape"])

    def normalize(self, images_u8) -> np.ndarray:
        x = np.asarray(images_u8, np.float32) / 255.0
        return (x - np.asarray(self.manifest["mean"], np.float32)) / np.asarray(self.manifest["std"], np.float32)

    def encode(self, images_u8, condition=None) -> list[bytes]:
        """uint8 [n, H, W, C] -> one framed payload per image (what goes on the wire)."""
        z = self.run_edge(self.normalize(images_u8), condition)
        return [frame(p) for p in self.codec.encode(np.asarray(z))]

    def run_edge(self, x, condition=None) -> np.ndarray:
        """Normalised float32 [n, H, W, C] -> features z, in JAX or (onnx=True) onnxruntime."""
        if self.onnx is None:
            return np.asarray(self.edge(x, condition=condition))
        feeds = {"x": np.asarray(x, np.float32)}
        if self.edge.conditioned:
            if condition is None:
                raise ValueError("this edge half is channel-conditioned: pass condition=[sigma or p per sample]")
            feeds["condition"] = np.broadcast_to(np.asarray(condition, np.float32), (len(x),)).copy()
        return self.onnx.run(None, feeds)[0]

    def send(self, payloads: list[bytes]) -> np.ndarray:
        """Framed payloads -> logits [n, classes] from the server (raises InferenceServerException)."""
        tc = self._tc
        inp = tc.InferInput("PAYLOAD", [len(payloads)], "BYTES")
        inp.set_data_from_numpy(np.array(payloads, dtype=np.object_))
        res = self.client.infer(MODEL, [inp], outputs=[tc.InferRequestedOutput("LOGITS")], client_timeout=self.timeout)
        return res.as_numpy("LOGITS")

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
    p.add_argument("--onnx", action="store_true", help="run the edge half's ONNX graph in onnxruntime")
    p.add_argument("images", nargs="+")
    a = p.parse_args(argv)
    try:
        client = EdgeClient(a.export, a.server, onnx=a.onnx)
        if client.edge.conditioned and a.condition is None:
            sys.exit(
                f"error: {a.export} is channel-conditioned: pass --condition ({client.manifest['edge_condition']})"
            )
        images = np.stack([read_image(f, client.input_shape) for f in a.images])
        results = client.classify(images, a.condition)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    except Exception as e:  # tritonclient's InferenceServerException: the server's one-line status
        sys.exit(f"error: {type(e).__name__}: {e}")
    for f, r in zip(a.images, results):
        print(f"{f}: {r['name']} (class {r['label']})  {r['bytes']} bytes sent  {r['ms']:.1f} ms")


if __name__ == "__main__":
    main()
