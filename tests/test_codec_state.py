"""A codec is settings + state: one call for every codec in the graph, the state fitted once after
training and then read (eval, export, serving), exported as arrays; and what a511a13 wrote
(tests/data/legacy_a511a13: tables as JSON in an export, none kept in a workdir) still evaluates,
exports and serves with the figures it gave."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bottlenet_jax.codecs import REGISTRY, STAT_KEYS, STATE_COLLECTION, CodecLayer, codec_settings, make_codec

from helpers import write_tiny_records

HERE = os.path.dirname(os.path.abspath(__file__))
LEGACY = os.path.join(HERE, "data", "legacy_a511a13")


# The hyperprior's case compiles its networks and coder several times (~30 s): make test-slow; make
# test has its own round-trip and rate tests (tests/test_hyperprior.py).
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "hyperprior" else n for n in sorted(REGISTRY)]
)
def test_every_codec_works_through_the_same_call_in_the_graph(name, rng):
    """params from init_params, state from fit, then `codec(x, ..., params=, state=)` under jit and
    as a model layer (CodecLayer, the state in the codec_state collection): the same x_hat and stats,
    and decode(encode(x)) under that state is the graph's x_hat."""
    codec = make_codec(codec_settings(name))
    x = rng.uniform(0, 1, (3, 4, 4, 2)).astype(np.float32)
    params = jax.device_get(codec.init_params(jax.random.key(0), x.shape[1:]))
    state = codec.fit(params, [x])
    key = jax.random.key(1)
    call = jax.jit(lambda x, p, s: codec(x, train=False, rng=key, params=p, state=s))
    x_hat, stats = call(x, params, state)
    assert set(STAT_KEYS) <= set(stats) and all(np.shape(stats[k]) == (3,) for k in STAT_KEYS)
    layer = CodecLayer(codec)
    v = layer.init({"params": jax.random.key(0)}, x, rng=key)
    assert set(v.get("params", {})) == set(params)
    out, layer_stats = layer.apply({**v, STATE_COLLECTION: state}, x, rng=key)
    np.testing.assert_array_equal(out, x_hat)
    np.testing.assert_array_equal(layer_stats["bytes_payload"], stats["bytes_payload"])
    payloads = codec.encode(x, state=state)
    np.testing.assert_array_equal(codec.decode(payloads, x.shape, state=state), np.asarray(x_hat))
    if name not in ("awgn", "bec"):  # a channel's bytes are what enters it, fixed by the shape
        assert [len(p) for p in payloads] == list(np.asarray(stats["bytes_payload"]))
    for p in payloads:
        codec.check_payload(p, x.shape[1:], state=state)


def _legacy_workdir(tmp_path):
    wd = tmp_path / "workdir"
    shutil.copytree(os.path.join(LEGACY, "workdir"), wd)
    data_dir = tmp_path / "data"
    write_tiny_records(data_dir, size=16)
    from bottlenet_jax.checkpoint import load_config

    cfg = load_config(str(wd))
    cfg.data_dir = str(data_dir)
    return str(wd), cfg


def _count_reads(monkeypatch):
    """The splits the data source is asked for (every read of a record goes through `select`)."""
    from bottlenet_jax.data import records

    asked = []
    select = records.Prepared.select
    monkeypatch.setattr(records.Prepared, "select", lambda self, split: (asked.append(split), select(self, split))[1])
    return asked


def test_a_workdir_is_fitted_once_and_then_evaluates_without_reading_training_data(tmp_path, monkeypatch):
    """The a511a13 workdir (fit_context=neighbours, no state kept): the first evaluation fits the
    tables on the training split and saves them beside the checkpoint, giving the test figures the
    a511a13 fit gave (its test.json); the next reads no training example and gives them again."""
    from bottlenet_jax.evaluation import evaluate_workdir

    wd, cfg = _legacy_workdir(tmp_path)
    with open(os.path.join(wd, "test.json")) as f:
        want = json.load(f)
    asked = _count_reads(monkeypatch)
    first = evaluate_workdir(wd, cfg)[0]
    assert "train[8:]" in asked  # fitted on the training split
    saved = os.listdir(os.path.join(wd, "codec_state"))
    assert len(saved) == 1 and saved[0].startswith(f"{want['step']}-")
    with open(os.path.join(wd, "codec_state", saved[0], "meta.json")) as f:
        meta = json.load(f)
    assert meta["step"] == want["step"] and meta["fitted_on"] == "train[8:]"
    asked.clear()
    again = evaluate_workdir(wd, cfg)[0]
    assert asked == ["test"], asked  # the test split only: no training example read
    for r in (first, again):
        assert r["examples"] == want["examples"] == 16
        assert r["top1"] == want["top1"] and r["bytes_payload_mean"] == want["bytes_payload_mean"]
        assert r["bytes_full_p95"] == want["bytes_full_p95"]


def test_exports_as_arrays_and_a511a13_exports_code_the_same_bytes(tmp_path, monkeypatch):
    """The a511a13 export (tables as JSON lists in manifest.json) codes the very bytes and logits it
    wrote; exporting its workdir now writes the same tables as arrays (codec_state/), a manifest of
    settings and names, and reads the state saved by an evaluation instead of fitting again."""
    from bottlenet_jax.evaluation import evaluate_workdir
    from bottlenet_jax.export import Half, export_workdir, load_codec

    want = np.load(os.path.join(LEGACY, "expected.npz"))
    old = os.path.join(LEGACY, "export")
    codec, old_state = load_codec(old)
    assert codec.name == "entropy" and codec.fit_context == "neighbours" and "freqs" not in codec.settings()
    z = np.asarray(Half(old, "edge")(want["x"]))
    payloads = codec.encode(z, state=old_state)
    assert b"".join(payloads) == want["payloads"].tobytes() and [len(p) for p in payloads] == list(want["lengths"])
    z_hat = codec.decode(payloads, z.shape, state=old_state)
    np.testing.assert_allclose(Half(old, "cloud")(z_hat), want["logits"], rtol=1e-5, atol=1e-5)

    wd, cfg = _legacy_workdir(tmp_path)
    evaluate_workdir(wd, cfg)  # fits and saves the state
    asked = _count_reads(monkeypatch)
    m = export_workdir(wd, str(tmp_path / "export"))
    assert not asked  # the saved state, not a new fit
    assert (
        os.path.getsize(tmp_path / "export" / "manifest.json")
        <= 20_000
        < os.path.getsize(os.path.join(old, "manifest.json"))
    )
    assert m["codec_state"] == "codec_state" and m["codec_side_info_bytes"] > 0
    new_codec, state = load_codec(str(tmp_path / "export"))
    assert new_codec.settings() == codec.settings()
    for k in old_state:
        np.testing.assert_array_equal(state[k], old_state[k])  # the fit a511a13 made, now as arrays
    assert isinstance(state["freqs"], np.ndarray) and state["freqs"].ndim == 2


def test_the_fashion_mnist_entropy_export_manifest_holds_settings_only(tmp_path, rng):
    """configs/fashion_mnist_entropy.py's model with neighbour tables (14x14x8x9 rows): the export's
    manifest.json stays under 20 kB; the tables load from arrays and code as the fitted state does."""
    from bottlenet_jax import cli
    from bottlenet_jax.export import Half, export_variables, load_codec
    from bottlenet_jax.models import build_model

    cfg = cli.load_config_file(os.path.join(os.path.dirname(HERE), "configs", "fashion_mnist_entropy.py"))
    cfg.codec = ml_collections.ConfigDict(codec_settings("entropy", fit_context="neighbours"))
    model = build_model(cfg, bn_axis_name=None)
    v = jax.device_get(jax.jit(model.init)({"params": jax.random.key(0)}, jnp.zeros((1, 28, 28, 1))))
    v["params"]["reduce"]["bn"]["scale"] = v["params"]["reduce"]["bn"]["scale"] * 4.0
    x = rng.normal(size=(16, 28, 28, 1)).astype(np.float32)
    y = np.asarray(jax.jit(lambda v, x: model.apply(v, x, part="edge"))(v, x))
    state = model.codec.fit(v["params"]["codec"], [y[:8], y[8:]])
    assert state["freqs"].shape[0] == 14 * 14 * 8 * 9
    export_variables(cfg, v, str(tmp_path / "export"), codec_state=state)
    assert os.path.getsize(tmp_path / "export" / "manifest.json") <= 20_000
    codec, shipped = load_codec(str(tmp_path / "export"))
    z = np.asarray(Half(str(tmp_path / "export"), "edge")(x[:4]))
    assert codec.encode(z, state=shipped) == model.codec.encode(z, state=state)
