"""The edge runtime (bottlenet_jax/edge): numpy encoders of every source codec, byte for byte the
JAX codecs' payloads, in a process where JAX, Flax and orbax cannot be imported; and the demo's
exports (BottleNet JPEG, the entropy bottleneck, the hyperprior) encoded alike from the edge
half's features of real Fashion-MNIST test images."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bottlenet_jax.codecs import codec_settings, make_codec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NO_JAX = r"""
import json, sys
class Blocked:
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("jax", "jaxlib", "flax", "orbax", "optax", "tensorflow"):
            raise ImportError(f"{name} is blocked here: the edge runs without it")
sys.meta_path.insert(0, Blocked())
import numpy as np
from bottlenet_jax.edge import encoder
cases = json.load(open(sys.argv[1]))
out = {}
for name, case in cases.items():
    with np.load(case["arrays"]) as f:
        state = {k[6:]: f[k] for k in f.files if k.startswith("state_")}
        x = f["x"]
    payloads = encoder(case["settings"], state, x.shape[1:])(x)
    out[name] = [p.hex() for p in payloads]
json.dump(out, open(sys.argv[2], "w"))
print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "flax", "orbax")))
"""


def _features(rng, n, shape, kind):
    x = rng.normal(0, 1, (n, *shape)) * np.linspace(0.3, 4, shape[-1])
    if kind == "unit":  # a sigmoid unit's range
        return (1 / (1 + np.exp(-x))).astype(np.float32)
    x[rng.random(x.shape) < 0.01] = 300.0  # escapes
    return x.astype(np.float32)


def _cases(rng):
    """name -> (codec, state, features): every source codec, the contexts and streams they have."""
    out = {}
    for name, settings, shape, kind in (
        ("identity", {}, (4, 4, 3), "unit"),
        ("uint8", {}, (4, 4, 3), "unit"),
        ("jpeg", {"quality": 35}, (14, 14, 2), "unit"),
        ("jpeg", {"quality": 80, "optimize": True, "layout": "rows"}, (7, 9, 3), "unit"),
        ("jpeg", {"quality": 50, "minmax": True}, (8, 8, 4), "real"),
        ("lightweight", {"num_levels": 4, "fit_examples": 64}, (6, 6, 5), "unit"),
        ("entropy", {"fit_context": "channel"}, (7, 7, 8), "real"),
        ("entropy", {"fit_context": "element"}, (7, 7, 8), "real"),
        ("entropy", {"fit_context": "neighbours"}, (7, 7, 8), "real"),
        ("entropy", {"fit_context": "neighbours", "stream": "range"}, (5, 5, 3), "real"),
        ("hyperprior", {}, (7, 7, 8), "real"),
        ("hyperprior", {"form": "scale"}, (6, 5, 4), "real"),
    ):
        codec = make_codec(codec_settings(name, **settings))
        params = jax.device_get(codec.init_params(jax.random.key(0), shape))
        fit = [np.round(_features(rng, 64, shape, kind))] if codec.fits_data else ()
        state = {k: np.asarray(v) for k, v in codec.fit(params, fit).items()}
        out[f"{name} {settings}"] = (codec, state, _features(rng, 40, shape, kind))
    return out


def test_the_edge_encodes_every_codec_as_the_jax_codecs_do_without_jax(rng, tmp_path):
    import json

    cases, want = {}, {}
    for i, (key, (codec, state, x)) in enumerate(_cases(rng).items()):
        path = str(tmp_path / f"case{i}.npz")
        np.savez(path, x=x, **{f"state_{k}": v for k, v in state.items()})
        cases[key] = {"settings": codec.settings(), "arrays": path}
        want[key] = [p.hex() for p in codec.encode(x, state=state)]
    (tmp_path / "cases.json").write_text(json.dumps(cases, default=list))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    p = subprocess.run(
        [sys.executable, "-c", NO_JAX, str(tmp_path / "cases.json"), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "PYTHONPATH": ROOT},
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "loaded: []" in p.stdout
    got = json.loads((tmp_path / "out.json").read_text())
    for key in want:
        assert got[key] == want[key], key


def test_fitted_huffman_tables_and_channels_are_refused_with_one_line():
    from bottlenet_jax.edge.encoders import UnsupportedAtTheEdge, encoder

    with pytest.raises(UnsupportedAtTheEdge, match="fitted_tables"):
        encoder(codec_settings("jpeg", fitted_tables=True), {}, (8, 8, 2))
    with pytest.raises(UnsupportedAtTheEdge, match="no edge encoder"):
        encoder(codec_settings("awgn"), {}, (8, 8, 2))


def check_demo_exports(exports, n):
    """The edge's numpy encoders against each export's JAX codec, on the edge half's features of the
    first `n` Fashion-MNIST test images: the same bytes."""
    from bottlenet_jax.data import fashion_mnist as fm
    from bottlenet_jax.edge import encoder, load_export
    from bottlenet_jax.export import Half, load_codec
    from bottlenet_jax.steps import normalize

    test = fm.read_idx(os.path.join(fm.local_dir(), fm.FILES["test"][0]))[:n, :, :, None]
    for name, d in exports.items():
        manifest, state = load_export(d)
        codec, jax_state = load_codec(d)
        edge = Half(d, "edge")
        for a in range(0, n, 1000):
            z = np.asarray(edge(np.asarray(normalize(test[a : a + 1000], manifest["mean"], manifest["std"]))))
            got = encoder(manifest["codec"], state, manifest["feature_shape"])(z)
            assert got == codec.encode(z, state=jax_state), name


# make test-slow (CI): the demo's exports take a minute to build (conftest.demo_exports), which
# make test cannot spend; the slow stage builds them once for this test and tests/test_serve_decode.py.
@pytest.mark.slow
@pytest.mark.xdist_group("demo_exports")  # one worker builds the session's exports (-n 2)
def test_the_demo_exports_encode_alike_on_the_10000_test_images(demo_exports):
    check_demo_exports(demo_exports, 10_000)
