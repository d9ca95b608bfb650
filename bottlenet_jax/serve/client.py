"""The edge client: run the exported edge half, encode, send to the cloud server, print the answer.

    python -m bottlenet_jax.serve.client --export EXPORT_DIR --server HOST:PORT IMAGE [IMAGE ...]
        [--condition SIGMA_OR_P] [--unary] [--tls-ca ca.crt [--tls-cert client.crt --tls-key client.key]]

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
import contextlib
import itertools
import sys
import threading
import time

import cv2
import numpy as np

from bottlenet_jax.serve.runtime import frame
from bottlenet_jax.serve.server import MODEL


def logits_of(response) -> np.ndarray:
    """LOGITS [n, classes] of a ModelInferResponse carrying raw outputs (LOGITS among them)."""
    k = [o.name for o in response.outputs].index("LOGITS")
    return np.frombuffer(response.raw_output_contents[k], "<f4").reshape(list(response.outputs[k].shape))


class EdgeClient:
    """Edge half + codec from an export, and a KServe v2 gRPC connection to the cloud server."""

    def __init__(
        self,
        export_dir: str,
        server: str,
        timeout: float = 30.0,
        onnx: bool = False,
        stream: bool = True,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ):
        """`onnx`: run the edge half's ONNX graph (export --onnx) in onnxruntime instead of JAX.
        `stream`: requests on one ModelStreamInfer stream (else one ModelInfer call each).
        `tls_ca`: PEM CA to verify the server by (TLS); `tls_cert`/`tls_key`: this client's
        certificate and key for a server that requires them (mutual TLS)."""
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


def _h2_connection():
    """An h2 client connection that lets a draining server finish this client's stream."""
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events

    class Connection(h2.connection.H2Connection):
        def _receive_goaway_frame(self, frame):
            # h2 ends the connection at any GOAWAY and refuses every later frame; a graceful one
            # (NO_ERROR) that covers our streams lets them finish (RFC 9113, 6.8), as a server that
            # drains on SIGTERM expects: report it, keep the connection
            if frame.error_code != 0 or frame.last_stream_id < self.highest_outbound_stream_id:
                return super()._receive_goaway_frame(frame)
            e = h2.events.ConnectionTerminated()
            e.error_code, e.last_stream_id = h2.errors.ErrorCodes.NO_ERROR, frame.last_stream_id
            e.additional_data = frame.additional_data or None
            return [], [e]

    return Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))


class Stream:
    """One ModelStreamInfer stream: requests go out as they come, answers are matched to them by
    id (they may come back in another order: batches finish when they finish); a request the
    server refuses gets its error, and the stream goes on.

    The gRPC messages are the protocol's own (KServe v2 protobufs, the 5-byte gRPC prefix), but
    HTTP/2 is the `h2` library's rather than gRPC core's: gRPC core hands back the flow-control
    window of every answer it reads at its next write, two 13-byte WINDOW_UPDATE frames riding on
    each request, more than the rest of a request's framing after the message itself
    (benchmarks/README.md); h2 returns window once half of it is used. Without TLS the connection
    is plaintext HTTP/2 (h2c), as grpc's insecure channels are; with `tls_ca`, TLS with ALPN "h2"."""

    PATH = "/inference.GRPCInferenceService/ModelStreamInfer"
    window_timeout = 30.0  # s a request waits for the server to let it be sent

    def __init__(self, server: str, tls_ca=None, tls_cert=None, tls_key=None, connect_timeout: float = 10.0):
        self._pending: dict[str, concurrent.futures.Future] = {}
        self._lock = threading.Lock()  # h2's connection is not thread-safe: every use holds it
        self._window = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._ended: Exception | None = None  # once the stream is over, every request fails at once
        self._sock = None
        self._conn = _h2_connection()
        try:
            self._sock = self._connect(server, tls_ca, tls_cert, tls_key, connect_timeout)
            self._conn.initiate_connection()
            self._sid = self._conn.get_next_available_stream_id()
            headers = [
                (":method", "POST"),
                (":scheme", "https" if tls_ca else "http"),
                (":path", self.PATH),
                (":authority", server),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
            self._conn.send_headers(self._sid, headers)
            self._sock.sendall(self._conn.data_to_send())
        except OSError as e:  # refused, unreachable, TLS handshake failed: every request is told why
            self._end(f"could not connect to {server}: {e}")
            return
        self._reader = threading.Thread(target=self._read, name="stream-reader", daemon=True)
        self._reader.start()

    @staticmethod
    def _connect(server, tls_ca, tls_cert, tls_key, timeout):
        import socket
        import ssl

        host, _, port = server.rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls_ca:
            ctx = ssl.create_default_context(cafile=tls_ca)
            if tls_cert:
                ctx.load_cert_chain(tls_cert, tls_key)
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname=host.strip("[]"))
        sock.settimeout(None)
        return sock

    def infer(self, payloads, outputs=()) -> concurrent.futures.Future:
        """Send one request; the future gets its ModelInferResponse (or InferenceServerException).
        `outputs`: the outputs to ask for; none named (the default, 10 B less per request): all."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        rid = str(next(self._ids))
        msg = stream_request(payloads, rid, outputs).SerializeToString()
        data = b"\0" + len(msg).to_bytes(4, "big") + msg  # gRPC: uncompressed, big-endian length
        with self._lock:
            if not self._window.wait_for(  # the server has not returned window yet
                lambda: self._ended is not None or self._conn.local_flow_control_window(self._sid) >= len(data),
                timeout=self.window_timeout,
            ):
                self._end_locked(f"the server returned no flow-control window in {self.window_timeout:g} s")
            if self._ended is not None:
                fut.set_exception(self._ended)
                return fut
            self._pending[rid] = fut
            try:
                self._conn.send_data(self._sid, data)
                self._sock.sendall(self._conn.data_to_send())
            except Exception as e:  # the connection is gone (or h2 refuses to send on it)
                self._end_locked(f"send failed: {e}")
        return fut

    def _read(self):
        import h2.events as ev
        from tritonclient.grpc import service_pb2 as pb

        why, buf, over = "closed by the server", b"", False
        try:
            while not over and self._ended is None:
                data = self._sock.recv(65536)
                if not data:
                    break
                with self._lock:
                    for e in self._conn.receive_data(data):
                        if isinstance(e, ev.DataReceived):
                            buf += e.data
                            self._conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                        elif isinstance(e, (ev.ResponseReceived, ev.TrailersReceived)):
                            h = dict(e.headers)
                            if h.get("grpc-status", "0") != "0":
                                why = f"{h.get('grpc-message', '')} (grpc-status {h['grpc-status']})"
                        elif isinstance(e, ev.WindowUpdated):
                            self._window.notify_all()
                        elif isinstance(e, ev.StreamReset):
                            why, over = f"reset by the server (HTTP/2 error {e.error_code})", True
                        elif isinstance(e, ev.ConnectionTerminated):
                            why = f"the server closed the connection (HTTP/2 error {e.error_code})"
                            over = not (e.error_code == 0 and (e.last_stream_id or 0) >= self._sid)  # draining
                        over = over or isinstance(e, ev.StreamEnded)
                    out = self._conn.data_to_send()  # window updates and ping answers, when due
                    if out:
                        self._sock.sendall(out)
                answers = []
                while len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[1:5], "big"):
                    n = int.from_bytes(buf[1:5], "big")
                    answers.append(pb.ModelStreamInferResponse.FromString(buf[5 : 5 + n]))
                    buf = buf[5 + n :]
                for r in answers:
                    self._answer(r)
        except Exception as e:  # TLS refused, reset, a malformed frame: its text is the reason
            why = str(e) or type(e).__name__
        self._end(why)

    def _answer(self, r):
        from tritonclient.utils import InferenceServerException

        with self._lock:
            fut = self._pending.pop(r.infer_response.id, None)
        if fut is None:
            return
        if r.error_message:
            fut.set_exception(InferenceServerException(r.error_message))
        else:
            fut.set_result(r.infer_response)

    def _end(self, why: str):
        with self._lock:
            self._end_locked(why)

    def _end_locked(self, why: str):
        """Requests still waiting, and any sent later, fail now rather than at their deadline."""
        from tritonclient.utils import InferenceServerException

        if self._ended is None:
            self._ended = InferenceServerException(f"stream ended: {why}")
        for fut in self._pending.values():
            fut.set_exception(self._ended)
        self._pending.clear()
        self._window.notify_all()

    def close(self):
        with self._lock:
            if self._ended is None and self._sock is not None:
                try:
                    self._conn.end_stream(self._sid)
                    self._conn.close_connection()
                    self._sock.sendall(self._conn.data_to_send())
                except Exception:  # already gone
                    pass
        self._end("closed by the client")
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(2)
            self._sock.close()


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
    p.add_argument("--unary", action="store_true", help="one ModelInfer call per image instead of the stream")
    p.add_argument("--tls-ca", default=None, help="PEM CA that signed the server's certificate: connect with TLS")
    p.add_argument("--tls-cert", default=None, help="PEM client certificate, for a server that requires one")
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    p.add_argument("images", nargs="+")
    p.add_argument("--dry_run", action="store_true", help="check the arguments (and the export, if here), then stop")
    a = p.parse_args(argv)
    if a.dry_run:
        from bottlenet_jax.serve.server import dry_run_export

        return print(f"dry run: {dry_run_export(a.export)}; {len(a.images)} image argument(s)")
    try:
        client = EdgeClient(
            a.export, a.server, onnx=a.onnx, stream=not a.unary, tls_ca=a.tls_ca, tls_cert=a.tls_cert, tls_key=a.tls_key
        )
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
