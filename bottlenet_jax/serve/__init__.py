"""Split inference as deployed: an edge client sends compressed features to a batching cloud server.

* `server.py`  (`python -m bottlenet_jax.serve`): KServe v2 gRPC server around the export's cloud half.
* `client.py`  (`python -m bottlenet_jax.serve.client`): runs the edge half, encodes, sends, prints.
* `runtime.py`: payload framing and validation, the dynamic batcher, the compiled cloud model.
"""
