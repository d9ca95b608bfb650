"""The edge half as ONNX (export --onnx): onnxruntime matches the JAX edge, and its payload is
classified by the server as the JAX edge's is. Needs `pip install '.[onnx]'` (jax2onnx pins an
older orbax-checkpoint, so the default test environment does not carry it): `make test-onnx`
builds a second environment for it and runs it there (CI does); elsewhere it is skipped, unless
BOTTLENET_REQUIRE_ONNX=1 makes a missing extra a failure."""

import os

import numpy as np
import pytest

if os.environ.get("BOTTLENET_REQUIRE_ONNX") == "1":
    import jax2onnx  # noqa: F401
    import onnxruntime  # noqa: F401
else:
    pytest.importorskip("jax2onnx", reason="pip install '.[onnx]' (or make test-onnx) to test the ONNX edge export")
    pytest.importorskip("onnxruntime")
TOL = 1e-5  # float32; measured max |diff| is ~1e-6 on features in [0, 1]


def test_onnx_edge_matches_jax_and_the_server_gives_the_same_class(tmp_path):
    import jax
    import jax.numpy as jnp

    from bottlenet_jax.export import export_variables
    from bottlenet_jax.models import build_model, feature_shape
    from bottlenet_jax.serve import server as srv
    from bottlenet_jax.serve.client import EdgeClient
    from configs import fashion_mnist_demo

    cfg = fashion_mnist_demo.get_config()
    model = build_model(cfg, bn_axis_name=None)
    v = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    v = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(1), a.shape), v)  # BN stats off 0/1
    m = export_variables(cfg, v, str(tmp_path / "export"), onnx=True)
    assert m["edge_onnx"] == "edge.onnx" and os.path.getsize(tmp_path / "export" / "edge.onnx") > 4_000
    s = srv.start(str(tmp_path / "export"), port=0, max_batch=4, max_delay=0.01)
    port = s.port
    try:
        jax_client = EdgeClient(str(tmp_path / "export"), f"127.0.0.1:{port}")
        onnx_client = EdgeClient(str(tmp_path / "export"), f"127.0.0.1:{port}", runtime="onnx")
        imgs = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), np.uint8)
        x = jax_client.normalize(imgs)
        z_jax, z_onnx = jax_client.run_edge(x), onnx_client.run_edge(x)
        assert z_onnx.shape == z_jax.shape == (8, *feature_shape(cfg))
        np.testing.assert_allclose(z_onnx, z_jax, atol=TOL)
        # the edge runtime's numpy encoder on the ONNX features: the JAX codec's bytes on the same
        # features (an element within ~1e-6 of a rounding boundary may round the other way in ONNX)
        assert onnx_client.edge.encode_features(z_onnx) == jax_client.codec.encode(z_onnx)
        got = [r["label"] for r in onnx_client.classify(imgs)]
        assert got == [r["label"] for r in jax_client.classify(imgs)]
    finally:
        s.stop(grace=5)
