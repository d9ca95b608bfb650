"""What the cloud server and the edge client share: the model's name and tensors on the KServe v2 /
Open Inference Protocol, the wire element (a codec payload + CRC-32), how BYTES tensors are laid
out, and which error becomes which gRPC status.

One model, `bottlenet` (version 1): input `PAYLOAD` BYTES [n] (one framed payload per sample),
outputs `LOGITS` FP32 [n, classes] and `CLASS` INT32 [n].
"""

from __future__ import annotations

import struct
import zlib

import grpc
import numpy as np

MODEL, VERSION = "bottlenet", "1"


MAX_MESSAGE = 64 * 1024 * 1024


CRC_BYTES = 4


class PayloadError(ValueError):
    """One request's payload is malformed; the message names the problem (INVALID_ARGUMENT)."""


class QueueFull(RuntimeError):
    """The batcher's queue is full (RESOURCE_EXHAUSTED): retry later."""


class ModelUnavailable(RuntimeError):
    """The model process is down or restarting (UNAVAILABLE): retry later."""


class DeadlineExceeded(RuntimeError):
    """The request's deadline passed before its batch ran (DEADLINE_EXCEEDED): it was not computed."""


def frame(payload: bytes) -> bytes:
    """Codec payload -> wire element: the payload and its CRC-32 (little-endian), so a corrupted
    payload is rejected instead of decoding to wrong features."""
    return bytes(payload) + zlib.crc32(payload).to_bytes(CRC_BYTES, "little")


def unframe(element: bytes) -> bytes:
    if len(element) <= CRC_BYTES:
        raise PayloadError(f"payload of {len(element)} bytes: empty (a framed payload is the codec's bytes + CRC-32)")
    body, crc = element[:-CRC_BYTES], int.from_bytes(element[-CRC_BYTES:], "little")
    if zlib.crc32(body) != crc:
        raise PayloadError(f"payload of {len(element)} bytes: CRC-32 mismatch (truncated or corrupted in transit)")
    return body


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


def logits_of(response) -> np.ndarray:
    """LOGITS [n, classes] of a ModelInferResponse carrying raw outputs (LOGITS among them)."""
    k = [o.name for o in response.outputs].index("LOGITS")
    return np.frombuffer(response.raw_output_contents[k], "<f4").reshape(list(response.outputs[k].shape))


def stream_request(payloads, request_id: str, outputs=()):
    """A lean ModelInferRequest: the payloads as one raw BYTES tensor (uint32 length + bytes each);
    `outputs` named, or none (the server then sends all)."""
    from tritonclient.grpc import service_pb2 as pb

    raw = b"".join(len(p).to_bytes(4, "little") + p for p in payloads)
    return pb.ModelInferRequest(
        model_name=MODEL,
        id=request_id,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="PAYLOAD", datatype="BYTES", shape=[len(payloads)])],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=o) for o in outputs],
        raw_input_contents=[raw],
    )


def json_request(payloads, request_id: str = "") -> dict:
    """The REST form's infer body for framed payloads in plain JSON (serve/rest.py): BYTES elements
    as base64 strings (`"content_type": "base64"`), outputs as JSON arrays: what curl can send."""
    import base64

    tensor = {"name": "PAYLOAD", "shape": [len(payloads)], "datatype": "BYTES"}
    tensor["parameters"] = {"content_type": "base64"}
    tensor["data"] = [base64.b64encode(p).decode() for p in payloads]
    return {**({"id": request_id} if request_id else {}), "inputs": [tensor]}


class Status(Exception):
    """One request's outcome other than OK: a gRPC status code and its message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def status_of(e: Exception) -> Status:
    """Every failure a request can meet, as the gRPC status it is answered with."""
    for kind, code in (
        (PayloadError, grpc.StatusCode.INVALID_ARGUMENT),
        (QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (ModelUnavailable, grpc.StatusCode.UNAVAILABLE),
        (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    ):
        if isinstance(e, kind):
            return Status(code, str(e))
    if isinstance(e, Status):
        return e
    return Status(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")


def describe_export(export_dir: str) -> str:
    """The export's manifest and codec, if the export is here (what serving it would need first)."""
    import os

    from bottlenet_jax.export import load_codec, load_manifest

    if not os.path.exists(os.path.join(export_dir, "manifest.json")):
        return f"arguments ok; {export_dir} holds no export here, not checked"
    m = load_manifest(export_dir)
    return f"arguments ok; export {export_dir}: codec {load_codec(export_dir)[0].name}, features {m['feature_shape']}"
