"""The edge client's transport: one ModelStreamInfer stream of the KServe v2 protocol over the `h2`
library's HTTP/2 (see `Stream` for why not gRPC core's), plaintext (h2c) or TLS with ALPN "h2".
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import threading

from bottlenet_jax.serve.protocol import stream_request


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
