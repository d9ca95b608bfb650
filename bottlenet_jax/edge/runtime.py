"""An export's edge, run without the training package: its edge half (edge.onnx) in ONNX Runtime,
then its codec's numpy encoder, then the wire framing (serve/protocol.py's CRC-32)."""

from __future__ import annotations

import json
import os

import numpy as np

from bottlenet_jax.edge.encoders import encoder


def load_export(export_dir: str) -> tuple[dict, dict]:
    """(manifest, the codec's state as numpy arrays: codec_state.npz, {} if it has none)."""
    with open(os.path.join(export_dir, "manifest.json")) as f:
        manifest = json.load(f)
    state = {}
    if manifest.get("codec_state"):
        path = os.path.join(export_dir, manifest.get("codec_state_npz") or "codec_state.npz")
        if not os.path.exists(path):
            raise ValueError(f"{export_dir}: its codec state has no numpy copy (codec_state.npz): export it again")
        with np.load(path) as f:
            state = {k: f[k] for k in f.files}
    return manifest, state


class EdgeRuntime:
    """edge.onnx + the codec's numpy encoder of an export (module docstring)."""

    def __init__(self, export_dir: str, threads: int = 0):
        """`threads`: ONNX Runtime's intra-op threads (0: its default)."""
        self.manifest, self.state = load_export(export_dir)
        self.encode_features = encoder(self.manifest["codec"], self.state, self.manifest["feature_shape"])
        if not self.manifest.get("edge_onnx"):
            raise ValueError(f"{export_dir}: has no edge.onnx (export with --onnx)")
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        path = os.path.join(export_dir, self.manifest["edge_onnx"])
        self.session = onnxruntime.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self.session.get_inputs()]

    def normalize(self, images_u8) -> np.ndarray:
        """uint8 [n, H, W, C] -> the edge half's input: (x / 255 - mean) / std, float32."""
        x = np.asarray(images_u8, np.float32) / np.float32(255.0)
        return (x - np.asarray(self.manifest["mean"], np.float32)) / np.asarray(self.manifest["std"], np.float32)

    def run(self, x, condition=None) -> np.ndarray:
        """Normalised float32 [n, H, W, C] -> the features z (edge.onnx); `condition`: a channel-
        conditioned edge's sigma or p per sample (BottleNet++)."""
        x = np.asarray(x, np.float32)
        feeds = {self._inputs[0]: x}
        if len(self._inputs) > 1:
            if condition is None:
                raise ValueError("this edge half is channel-conditioned: pass condition (sigma or p per sample)")
            feeds[self._inputs[1]] = np.broadcast_to(np.asarray(condition, np.float32), (len(x),)).copy()
        return self.session.run(None, feeds)[0]

    def encode(self, images_u8, condition=None) -> list[bytes]:
        """uint8 images -> the codec's payloads (one per image)."""
        return self.encode_features(self.run(self.normalize(images_u8), condition))
