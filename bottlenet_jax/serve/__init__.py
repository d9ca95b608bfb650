"""Split inference as deployed: an edge client sends compressed features to a batching cloud server.

* `protocol.py`: what both sides share (model name and tensors, payload framing, status codes).
* `client.py`  (`python -m bottlenet_jax.serve.client`): runs the edge half, encodes, sends, prints;
  `stream.py` its HTTP/2 stream. Nothing of the server's side.
* `__main__.py` (`python -m bottlenet_jax.serve`): the server's command line; `server.py` the KServe v2
  gRPC service; `payload.py` the per-request payload check; `batcher.py` dynamic batching;
  `model_process.py` the compiled cloud half in its supervised process; `metrics.py` Prometheus.
"""
