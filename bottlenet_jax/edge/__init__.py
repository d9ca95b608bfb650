"""The edge as it is deployed: an export's edge half in ONNX Runtime and its codec's encoder in
numpy, with no JAX, Flax or orbax in the process (a phone, a camera, a Jetson runs this).

    from bottlenet_jax.edge import EdgeRuntime
    edge = EdgeRuntime("export/demo")                # reads manifest.json, codec_state.npz, edge.onnx
    payloads = edge.encode(images_u8)                # uint8 [n, H, W, C] -> one payload per image

`EdgeRuntime.encode` gives the same bytes as the JAX path, `codec.encode(Half(export, "edge")(x))`
(tests/test_edge.py: byte for byte, and imported with JAX blocked). The encoders
(`encoders.encoder`) are the codecs' numpy transports (codecs/jpeg/jfif.py, codecs/quantize.py,
codecs/lightweight/quantizer.py, codecs/entropy/tables.py and hyper_model.py, codecs/coding/
rans_np.py): one implementation, which the JAX codecs call too or are tested against. Dependencies:
numpy, OpenCV, constriction (the lightweight and range-coded streams) and onnxruntime (the install
extra `edge`: `pip install '.[edge]'`).
"""

from bottlenet_jax.edge.encoders import encoder
from bottlenet_jax.edge.runtime import EdgeRuntime, load_export

__all__ = ["EdgeRuntime", "encoder", "load_export"]
