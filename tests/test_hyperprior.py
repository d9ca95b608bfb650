"""The mean-scale hyperprior (codecs/entropy/hyperprior.py): integer hyper networks that compute the
same integers in numpy, XLA and training's simulation; exact rANS streams (in-graph bytes = len(),
decode(encode(y)) = the graph's y_hat bit for bit, escapes, refusals); the same indices and bytes
whatever the XLA flags, device count or batch size; a rate term that prices what is sent."""

import hashlib
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bottlenet_jax.codecs import codec_settings, make_codec
from bottlenet_jax.codecs.coding import rans
from bottlenet_jax.codecs.entropy import hyper_streams as hs
from bottlenet_jax.codecs.entropy import integer_net as inet
from bottlenet_jax.codecs.entropy.tables import QMAX
from bottlenet_jax.errors import ConfigError

from helpers import corruption_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (7, 5, 6)


def codec_and_state(form="mean_scale", seed=0, shape=SHAPE, spread=3.0, **settings):
    """A codec with parameters pushed away from init (weights at their bounds, biases of both signs),
    and its fitted state."""
    codec = make_codec(codec_settings("hyperprior", form=form, **settings))
    p = jax.device_get(codec.init_params(jax.random.key(seed), shape))
    r = np.random.default_rng(seed)
    for net in ("ha", "hs"):
        for k, v in p[net].items():
            p[net][k] = (np.asarray(v) * spread + r.normal(0, 0.5, np.shape(v))).astype(np.float32)
    p["hs"]["pos"] = (r.normal(0, 4, np.shape(p["hs"]["pos"]))).astype(np.float32)
    return codec, p, codec.fit(p, ())


def features(rng, n, shape=SHAPE, outliers=0.01):
    """Feature-like values: Gaussian of a few scales per channel, some far outliers (escapes)."""
    y = rng.normal(0, 1, (n, *shape)) * np.linspace(0.3, 6, shape[-1])
    far = rng.random(y.shape) < outliers
    return np.where(far, rng.uniform(-3000, 3000, y.shape), y).astype(np.float32)


def integer_reference(a, ints, layers, shape):
    """The hyper network in int64 arithmetic, loop by loop (no floats anywhere): (output
    accumulator, its shift)."""
    a = np.asarray(a, np.int64)
    i, shift = 0, None
    for layer in layers:
        if layer.kind == "d2s":  # each position's 4C values over a 2x2 block, written out
            n, h, wd, c4 = a.shape
            out = np.zeros((n, 2 * h, 2 * wd, c4 // 4), a.dtype)
            for di in range(2):
                for dj in range(2):
                    out[:, di::2, dj::2] = a[..., (2 * di + dj) * (c4 // 4) : (2 * di + dj + 1) * (c4 // 4)]
            a = out[:, : shape[0], : shape[1]]
            continue
        w, b = np.asarray(ints[f"w{i}"], np.int64), np.asarray(ints[f"b{i}"], np.int64)
        n, h, wd, _ = a.shape
        ho, wo = -(-h // layer.stride), -(-wd // layer.stride)
        ph, pw = max((ho - 1) * layer.stride + layer.k - h, 0), max((wo - 1) * layer.stride + layer.k - wd, 0)
        p = np.pad(a, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        acc = np.zeros((n, ho, wo, layer.c_out), np.int64) + b
        for di in range(layer.k):
            for dj in range(layer.k):
                win = p[
                    :,
                    di : di + (ho - 1) * layer.stride + 1 : layer.stride,
                    dj : dj + (wo - 1) * layer.stride + 1 : layer.stride,
                ]
                acc += np.einsum("nhwc,co->nhwo", win, w[di, dj])
        i += 1
        if layer.f_out is None:  # the output: the accumulator, its shift kept (d2s may follow)
            a, shift = acc, layer.shift
            continue
        a = (acc + (1 << (layer.shift - 1))) >> layer.shift  # floor((acc + half) / 2^shift)
        if layer.relu:
            a = np.clip(a, 0, inet.ACT_MAX)
    return a, shift


@pytest.mark.parametrize("form", ["mean_scale", "scale"])
def test_the_integer_networks_give_the_same_integers_in_int64_numpy_xla_and_training(form, rng):
    codec, p, state = codec_and_state(form)
    s = codec.structure(SHAPE)
    y = features(rng, 64)
    a = inet.input_of_analysis(y)
    assert np.abs(a).max() == inet.INPUT_MAX  # the clip is exercised
    acc, shift = integer_reference(a, hs.part(state, "ha_"), s.analysis, SHAPE)
    z = s.analyze(y, hs.part(state, "ha_"))
    np.testing.assert_array_equal(z, (acc / 2.0**shift).astype(np.float32))
    np.testing.assert_array_equal(jax.jit(lambda y: s.analyze(y, hs.part(state, "ha_"), jnp))(y), z)
    np.testing.assert_array_equal(jax.jit(lambda y: s.analyze(y, p["ha"], jnp, train=True))(y), z)
    qz = np.clip(np.round(z * 4), -200, 200).astype(np.int32)  # beyond the synthesis' input clip too
    level, mean = s.synthesize(qz, hs.part(state, "hs_"))
    acc, shift = integer_reference(np.clip(qz, -inet.Z_MAX, inet.Z_MAX), hs.part(state, "hs_"), s.synthesis, SHAPE[:2])
    assert np.abs(state["hs_pos"]).max() > 0
    acc = acc + state["hs_pos"]  # the position prior, at the accumulator's resolution
    c = SHAPE[-1]
    want_level = np.clip((acc[..., :c] + (1 << (shift - 1))) >> shift, 0, codec.scale_levels - 1)
    np.testing.assert_array_equal(level, want_level)
    assert 0 < (level == 0).mean() < 1 and (level == codec.scale_levels - 1).any()  # both clips exercised
    if form == "mean_scale":
        sh = shift - inet.MEAN_FRAC
        np.testing.assert_array_equal(
            mean, np.clip((acc[..., c:] + (1 << (sh - 1))) >> sh, -inet.MEAN_MAX, inet.MEAN_MAX)
        )
        assert np.unique(mean).size > 10
    else:
        assert not mean.any()
    got = jax.jit(lambda q: s.synthesize(q, hs.part(state, "hs_"), jnp))(qz)
    np.testing.assert_array_equal(got[0], level)
    np.testing.assert_array_equal(got[1], mean)
    sim = jax.jit(lambda q: s.synthesize(q.astype(jnp.float32), p["hs"], jnp, train=True))(qz)
    np.testing.assert_array_equal(sim[0], level)
    np.testing.assert_array_equal(sim[1], mean)


def test_accumulators_that_float32_cannot_hold_exactly_are_refused():
    with pytest.raises(ConfigError, match="2\\^24"):
        make_codec(codec_settings("hyperprior", hidden=64)).init_params(jax.random.key(0), (4, 4, 8))
    with pytest.raises(ConfigError, match="codec.form"):
        make_codec(codec_settings("hyperprior", form="mean"))


@pytest.mark.parametrize("form", ["mean_scale", pytest.param("scale", marks=pytest.mark.slow)])  # slow: ~14 s
def test_streams_round_trip_and_the_graph_counts_their_bytes(form, rng):
    codec, p, state = codec_and_state(form)
    y = features(rng, 300)  # two calls: 256 lanes, then 44 in a call of 64
    y_hat, stats = jax.jit(lambda y: codec(y, train=False, params=p, state=state))(y)
    payloads = codec.encode(y, state=state)
    r = hs.Structure(SHAPE, 8, 16, codec.scale_levels, form == "mean_scale").symbols(y, state)[1]
    assert (np.abs(r) > np.asarray(state["y_half"]).max()).any(axis=(1, 2, 3)).sum() > 100  # escapes
    np.testing.assert_array_equal([len(q) for q in payloads], np.asarray(stats["bytes_payload"]))
    np.testing.assert_array_equal(codec.decode(payloads, y.shape, state=state), np.asarray(y_hat))
    np.testing.assert_array_equal(codec.decode(payloads[7:8], (1, *SHAPE), state=state), np.asarray(y_hat)[7:8])
    for q in payloads[:5]:
        codec.check_payload(q, SHAPE, state=state)
    with pytest.raises(ValueError, match="bytes: a hyperprior stream"):
        codec.check_payload(b"\x01\x02", SHAPE, state=state)
    with pytest.raises(ValueError, match="other features"):
        codec.encode(y[:, :, :, :4], state=state)
    # without a state (periodic evaluation in training): the bytes of the parameters' own tables
    _, unfitted = jax.jit(lambda y: codec(y, train=False, params=p))(y[:8])
    np.testing.assert_array_equal(unfitted["bytes_payload"], stats["bytes_payload"][:8])


def test_a_stream_is_accepted_only_in_the_form_the_encoder_writes(rng):
    """Corruptions: each refused, or accepted only as exactly the encoding of the symbols it decodes
    to. Many of the escapes' words are accepted (another value still outside its table is a valid
    stream): at least 20 here, so the re-encoding check runs; the rANS part catches nearly all the
    rest (at most 5 % of the corruptions before the escapes)."""
    codec, p, state = codec_and_state()
    y = features(rng, 64, outliers=0.02)
    good = codec.encode(y, state=state)
    r, level = hs.Structure(SHAPE, 8, 16, codec.scale_levels, True).symbols(y, state)[1:3]
    tails = (np.abs(r) > np.asarray(state["y_half"])[level]).sum(axis=(1, 2, 3))
    streams = codec._streams(state, SHAPE)
    assert streams.encode_symbols(*streams.decode_symbols(good)[:2]) == good
    # the check re-encodes the symbols decoded: the encoder derives z from y, so decoded features
    # (y_hat, not y) would code another z
    in_tail, elsewhere, tried = corruption_check(
        rng, lambda s: streams.encode_symbols(*s[:2]), streams.decode_symbols, good, tails
    )
    assert in_tail >= 20 and elsewhere <= 0.05 * tried, (in_tail, elsewhere, tried)


def test_each_refusal_of_a_malformed_stream(rng):
    """An escape its level's table could have coded; an escaped value beyond QMAX; a final state
    not written in its shortest form: each refused, naming why."""
    codec, p, state = codec_and_state()
    y = features(rng, 64, outliers=0.02)
    good = codec.encode(y, state=state)
    r, level = hs.Structure(SHAPE, 8, 16, codec.scale_levels, True).symbols(y, state)[1:3]
    n_esc = (np.abs(r) > np.asarray(state["y_half"])[level]).sum(axis=(1, 2, 3))
    i = int(np.flatnonzero(n_esc)[0])
    last = len(good[i]) - 2  # the last escape's word
    for value, why in ((0, "table codes"), (-(QMAX + 1), "beyond")):
        bad = good[i][:last] + int(value + hs.ESC_OFFSET).to_bytes(2, "little")
        with pytest.raises(ValueError, match=why):
            codec.decode([bad], (1, *SHAPE), state=state)
    short = next(q for q in good if len(q) % 2)  # a state of 3 bytes, written in 4
    with pytest.raises(ValueError, match="shortest form"):
        codec.decode([b"\x00" + short], (1, *SHAPE), state=state)
    assert codec.decode([short], (1, *SHAPE), state=state).shape == (1, *SHAPE)


DETERMINISM = r"""
import hashlib, os, sys
import numpy as np
flags, batch, devices, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.environ["XLA_FLAGS"] = flags + f" --xla_force_host_platform_device_count={devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax, jax.numpy as jnp
from jax.sharding import PartitionSpec as P
from bottlenet_jax import parallel
from bottlenet_jax.codecs import codec_settings, make_codec
from bottlenet_jax.codecs.coding import rans
d = np.load(path, allow_pickle=True)
codec = make_codec(codec_settings("hyperprior"))
state = {k[6:]: d[k] for k in d.files if k.startswith("state_")}
params = {k: d["params"].item()[k] for k in ("ha", "hs", "z_density", "z_medians")}
y = d["y"]
mesh = parallel.make_mesh()
per_device = lambda y: codec(y, train=False, params=params, state=state)
graph = parallel.data_parallel(per_device, mesh, (P(parallel.AXIS),), (P(parallel.AXIS), P(parallel.AXIS)))
s = codec.structure(y.shape[1:])
parts = {k: [] for k in ("qz", "r", "level", "mean", "bytes", "y_hat")}
streams = []
for a in range(0, len(y), batch):
    part = y[a : a + batch]
    for k, v in zip(("qz", "r", "level", "mean"), jax.jit(lambda y: s.symbols(y, state, jnp))(part)):
        parts[k].append(np.asarray(v, np.int32))
    y_hat, stats = graph(part)
    parts["bytes"].append(np.asarray(stats["bytes_payload"], np.int32))
    parts["y_hat"].append(np.asarray(y_hat))
    payloads = codec.encode(part, state=state)
    streams += payloads
    assert np.array_equal(codec.decode(payloads, part.shape, state=state), np.asarray(y_hat))
h = hashlib.sha256()
for k in parts:
    h.update(np.concatenate(parts[k]).tobytes())
h.update(b"".join(streams))
print("digest", h.hexdigest())
"""


@pytest.mark.slow  # subprocesses compiling under other flags: ~40 s
def test_indices_and_bytes_are_the_same_whatever_the_xla_flags_devices_or_batch(rng, tmp_path):
    """The same symbols, levels, means, in-graph bytes (the eval step's: jit of shard_map), y_hat and
    streams from a process at XLA's optimisation level 0 with 4 devices and batches of 256, one at
    the default level with fast math on, 1 device and batches of 4, and the numpy-only path: one
    digest. Features include values on rounding boundaries (y * 16 half-way between integers)."""
    codec, p, state = codec_and_state("mean_scale", shape=(7, 7, 8), spread=2.0)
    y = features(rng, 256, (7, 7, 8), outliers=0.002)
    y[:, :2] = np.round(y[:, :2] * 16) / 16 + np.float32(1 / 32)  # values on rounding boundaries
    path = str(tmp_path / "case.npz")
    np.savez(path, y=y, params=np.array(p, dtype=object), **{f"state_{k}": v for k, v in state.items()})
    script = tmp_path / "digest.py"
    script.write_text(DETERMINISM)
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("XLA_FLAGS", None)
    digests = set()
    for flags, batch, devices in (
        ("--xla_backend_optimization_level=0", 256, 4),
        ("--xla_cpu_enable_fast_math=true", 4, 1),  # XLA's default level otherwise
    ):
        out = subprocess.run(
            [sys.executable, str(script), flags, str(batch), str(devices), path],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=ROOT,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        digests.add(out.stdout.split("digest ")[-1].strip())
    # the numpy-only path: symbols, bytes and streams computed without XLA
    s = codec.structure((7, 7, 8))
    parts = {k: [] for k in ("qz", "r", "level", "mean", "bytes", "y_hat")}
    streams = []
    for a in range(0, 256, 4):
        part = y[a : a + 4]
        qz, r, level, mean = s.symbols(part, state)
        for k, v in zip(("qz", "r", "level", "mean"), (qz, r, level, mean)):
            parts[k].append(np.asarray(v, np.int32))
        parts["bytes"].append(hs.stream_bytes_np(qz, r, level, state, codec.precision).astype(np.int32))
        parts["y_hat"].append(hs.dequantize(r, mean))
        streams += codec.encode(part, state=state)
    h = hashlib.sha256()
    for k in parts:
        h.update(np.concatenate(parts[k]).tobytes())
    h.update(b"".join(streams))
    digests.add(h.hexdigest())
    assert len(digests) == 1, digests


def test_the_rate_estimate_prices_what_is_sent(rng):
    """A hyperprior trained by Adam on its rate alone (features of varying local scale, which the
    hyperprior must predict): its rate estimate at the values sent, plus the stream's fixed cost,
    is the mean len() within 3 %; and it learned (fewer bits than at init)."""
    shape = (8, 8, 4)
    n = 512
    scale = np.exp(rng.normal(0, 1, (n, 4, 4, 4))).repeat(2, 1).repeat(2, 2)
    y = (rng.normal(0, 1, (n, *shape)) * scale * 3).astype(np.float32)
    codec = make_codec(codec_settings("hyperprior", form="scale"))
    p = codec.init_params(jax.random.key(0), shape)
    opt = optax.adam(3e-3)
    st = opt.init(p)

    def loss(p, y, key):
        _, stats = codec(y, train=True, rng=key, params=p)
        return jnp.mean(stats["rate_bits"]) + codec.aux_loss(p)

    @jax.jit
    def step(p, st, y, key):
        g = jax.grad(loss)(p, y, key)
        u, st = opt.update(g, st)
        return optax.apply_updates(p, u), st

    def estimate(p, state):
        return float(np.mean(jax.jit(lambda y: codec(y, train=False, params=p, state=state))(y)[1]["rate_bits"])) / 8

    before = estimate(p, codec.fit(p, ()))
    for i in range(300):
        p, st = step(p, st, y[(i % 8) * 64 : (i % 8 + 1) * 64], jax.random.key(i))
    state = codec.fit(p, ())
    est = estimate(p, state)
    real = np.mean([len(q) for q in codec.encode(y, state=state)])
    assert est < 0.8 * before, (est, before)
    assert abs(est + rans.FIXED_BYTES - real) <= 0.03 * real, (est, real)
