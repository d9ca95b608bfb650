"""The KServe v2 / Open Inference Protocol's HTTP/REST form, beside the gRPC service, on the same
event loop, queue, batcher and payload checks: each REST request becomes the ModelInferRequest the
gRPC service answers (`server.InferenceService.infer`), so both protocols refuse the same requests
with the same one-line message, counted in the same statistics.

Routes (what `tritonclient.http` and `curl` use):

  GET  /v2/health/live, /v2/health/ready               200, or 503 when not ready
  GET  /v2                                             server metadata
  GET  /v2/models/bottlenet[/versions/1]               model metadata
  GET  /v2/models/bottlenet[/versions/1]/ready         200, or 503 when not ready
  GET  /v2/models/bottlenet[/versions/1]/config        model configuration (Triton's extension)
  POST /v2/models/bottlenet[/versions/1]/infer         inference

An infer body is JSON, or, with the binary tensor data extension (header
`Inference-Header-Content-Length: N`), N bytes of JSON followed by the tensors' bytes, each input
naming its `binary_data_size`. PAYLOAD's elements in JSON are strings: UTF-8 bytes by default (the
protocol's rule), or base64 with the input's `"parameters": {"content_type": "base64"}` (the
convention MLServer and KServe use, what `curl` can send: the README has the line). Outputs come
back as JSON arrays, or binary when asked for (`"binary_data": true` on an output, or
`"binary_data_output": true` for all, as tritonclient asks). Failures: a JSON body
`{"error": message}` with 400 (a bad request: the gRPC INVALID_ARGUMENT's message), 404 (unknown
model), 429 (queue full), 503 (unavailable or draining), 504 (deadline: the `timeout` parameter,
in microseconds, as Triton takes it), 500 (internal).
"""

from __future__ import annotations

import base64
import binascii
import json

import grpc
import numpy as np
from aiohttp import web
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb

from bottlenet_jax.serve.protocol import MAX_MESSAGE, MODEL, VERSION, PayloadError, Status, status_of

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = {"FP32": "<f4", "INT32": "<i4"}


def _error(st: Status) -> web.Response:
    return web.json_response({"error": st.message}, status=HTTP_STATUS.get(st.code, 500))


def parse_infer(body: bytes, header_length: str | None, name: str, version: str):
    """An infer request's body -> (the ModelInferRequest the gRPC service takes, its JSON, its
    timeout in seconds or None), or PayloadError naming what is wrong."""
    try:
        n = len(body) if header_length is None else int(header_length)
    except ValueError:
        raise PayloadError(f"{HEADER_LENGTH} {header_length!r}: not a number of bytes") from None
    if not 0 < n <= len(body):
        raise PayloadError(f"{HEADER_LENGTH} {n}: the body has {len(body)} bytes")
    try:
        doc = json.loads(body[:n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PayloadError(f"request body: not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise PayloadError('request body: a JSON object with "inputs" (a list of tensors) expected')
    request = pb.ModelInferRequest(model_name=name, model_version=version, id=str(doc.get("id", "")))
    binary, at = memoryview(body)[n:], 0
    for t in doc["inputs"]:
        if not isinstance(t, dict) or not isinstance(t.get("shape"), list):
            raise PayloadError("input tensor: a JSON object with name, shape, datatype and data expected")
        params = t.get("parameters") or {}
        try:
            shape = [int(v) for v in t["shape"]]
        except (TypeError, ValueError):
            raise PayloadError(f"input {t.get('name')!r}: shape {t['shape']!r} is not a list of integers") from None
        request.inputs.add(name=str(t.get("name", "")), datatype=str(t.get("datatype", "")), shape=shape)
        if "binary_data_size" in params:
            size = int(params["binary_data_size"])
            if size < 0 or at + size > len(binary):
                raise PayloadError(f"input {t.get('name')!r}: binary_data_size {size} overruns the body's binary data")
            request.raw_input_contents.append(bytes(binary[at : at + size]))
            at += size
        else:
            elements = [_element(e, params.get("content_type"), t.get("name")) for e in _flat(t.get("data"))]
            request.raw_input_contents.append(b"".join(len(e).to_bytes(4, "little") + e for e in elements))
    if at != len(binary):
        raise PayloadError(f"{len(binary) - at} bytes of binary data after the inputs that name theirs")
    for o in doc.get("outputs") or []:
        if not isinstance(o, dict):
            raise PayloadError(f"requested output {o!r}: a JSON object with a name expected")
        request.outputs.add(name=str(o.get("name", "")))
    timeout = (doc.get("parameters") or {}).get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise PayloadError(f"parameter timeout {timeout!r}: a positive number of microseconds expected")
    return request, doc, None if timeout is None else timeout / 1e6


def _flat(data):
    if not isinstance(data, list):
        raise PayloadError('input without binary data: its elements in "data" (a list) expected')
    for e in data:
        yield from _flat(e) if isinstance(e, list) else (e,)


def _element(e, content_type, name) -> bytes:
    if not isinstance(e, str):
        raise PayloadError(f"input {name!r}: BYTES elements are strings in JSON, got {type(e).__name__}")
    if content_type == "base64":
        try:
            return base64.b64decode(e, validate=True)
        except binascii.Error:
            raise PayloadError(f"input {name!r}: an element is not base64") from None
    return e.encode()


def infer_response(response: pb.ModelInferResponse, doc: dict) -> web.Response:
    """The gRPC service's response as the REST one: outputs as JSON arrays, or binary where the
    request asked (per output, or for all)."""
    every = bool((doc.get("parameters") or {}).get("binary_data_output"))
    asked = {
        o.get("name"): bool((o.get("parameters") or {}).get("binary_data", every)) for o in doc.get("outputs") or []
    }
    outputs, tail = [], []
    for t, raw in zip(response.outputs, response.raw_output_contents):
        out = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        if asked.get(t.name, every):
            out["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            out["data"] = np.frombuffer(raw, DATATYPES[t.datatype]).tolist()
        outputs.append(out)
    head = json.dumps({"model_name": MODEL, "model_version": VERSION, "id": response.id, "outputs": outputs}).encode()
    if not tail:
        return web.Response(body=head, content_type="application/json")
    return web.Response(
        body=head + b"".join(tail), content_type="application/octet-stream", headers={HEADER_LENGTH: str(len(head))}
    )


def app(service) -> web.Application:
    """The REST routes over `service` (a server.InferenceService)."""
    ready = lambda ok: web.Response(status=200 if ok else 503)  # noqa: E731

    def model(request):
        name, version = request.match_info["name"], request.match_info.get("version", "")
        if name != MODEL or version not in ("", VERSION):
            msg = f"model {name!r} version {version!r}: this server has {MODEL!r} version {VERSION}"
            raise web.HTTPNotFound(text=json.dumps({"error": msg}), content_type="application/json")
        return name, version

    async def live(request):
        return web.Response(status=200)

    async def server_ready(request):
        return ready(service.ready)

    async def server_metadata(request):
        return web.json_response(service.server_metadata())

    async def model_ready(request):
        model(request)
        return ready(service.ready)

    async def model_metadata(request):
        model(request)
        return web.json_response(service.model_metadata())

    async def model_config(request):
        model(request)
        config = json_format.MessageToDict(service.model_config(), preserving_proto_field_name=True)
        return web.json_response({"config": config})

    async def infer(request):
        name, version = request.match_info["name"], request.match_info.get("version", "")
        try:
            body = await request.read()
            req, doc, timeout = parse_infer(body, request.headers.get(HEADER_LENGTH), name, version)
        except Exception as e:  # noqa: BLE001  (a request the service never saw: counted here)
            st = status_of(e)
            service.failed(st.code.name)
            return _error(st)
        try:
            response = await service.infer(req, timeout)  # counts its own failures
        except Status as st:
            return _error(st)
        return infer_response(response, doc)

    a = web.Application(client_max_size=MAX_MESSAGE)
    a.add_routes(
        [web.get("/v2/health/live", live), web.get("/v2/health/ready", server_ready), web.get("/v2", server_metadata)]
    )
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        a.add_routes(
            [
                web.get(base, model_metadata),
                web.get(base + "/ready", model_ready),
                web.get(base + "/config", model_config),
                web.post(base + "/infer", infer),
            ]
        )
    return a
