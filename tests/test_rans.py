"""Batch rANS (codecs/coding/rans.py) and the entropy codec's rANS streams (codecs/entropy/streams.py): exact
round trips in every context, the graph's bytes equal to the host's streams, the format check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bottlenet_jax.checkpoint import codec_fingerprint
from bottlenet_jax.codecs import codec_settings, make_codec
from bottlenet_jax.codecs.coding import rans
from bottlenet_jax.codecs.entropy import streams as es
from bottlenet_jax.codecs.entropy.density import init_density
from bottlenet_jax.codecs.entropy.range_format import encode_sample
from bottlenet_jax.codecs.entropy.tables import CONTEXTS, QMAX, Tables, fit_tables, row_index
from bottlenet_jax.codecs.saved import upgrade_settings
from bottlenet_jax.errors import ConfigError

from helpers import corruption_check

SHAPE = (6, 5, 4)


def symbols(rng, n, shape=SHAPE, escapes=0.01):
    """Feature-like symbols: Laplacian around 0, wider in the first channel, some far outliers."""
    q = np.round(rng.laplace(0, 0.8, (n, *shape)) * np.linspace(2, 0.5, shape[-1])).astype(np.int32)
    far = rng.random(q.shape) < escapes
    return np.where(far, rng.integers(-3000, 3000, q.shape), q).astype(np.int32)


def fitted(rng, context, shape=SHAPE, precision=16, spread=1):
    """Tables fitted to `symbols` (times `spread`: 10 makes rows 64 wide, the most here)."""
    c = shape[-1]
    density = jax.device_get(init_density(jax.random.key(0), c, (3, 3, 3), 10.0))
    fit = [symbols(rng, 200, shape) * spread]
    t, _ = fit_tables(density, np.zeros(c, np.float32), fit, context, 1e-9, precision, 64, 1.0)
    return t


# make test: narrow rows in every context, and wide and unblocked rows in the first; the other
# four pairs (~25 s of compiling) in make test-slow.
ROWS_CONTEXTS = [
    pytest.param(r, c, marks=pytest.mark.slow) if r != "narrow" and c != CONTEXTS[0] else (r, c)
    for r in ("narrow", "wide", "unblocked")
    for c in CONTEXTS
]


@pytest.mark.parametrize("rows, context", ROWS_CONTEXTS)
def test_batches_round_trip_in_every_context_and_the_graph_counts_their_bytes(rng, context, rows, monkeypatch):
    """Narrow rows (a few symbols: compared at once), wide (binary search), and tables too big to
    hold per position (`BLOCKS_LIMIT`)."""
    if rows == "unblocked":
        monkeypatch.setattr(es, "BLOCKS_LIMIT", 0)
    t = fitted(rng, context, spread=10 if rows == "wide" else 1)
    assert (t.widths.max() + 1 > es.NARROW) == (rows == "wide")
    streams = es.Streams(t, SHAPE, 16)
    q = symbols(rng, 300)  # two calls: 256 lanes, then 44 in a call of 64
    assert (q < t.lower).any() and (q >= t.lower + t.widths).any()  # escapes on both sides
    payloads = streams.encode(q)
    np.testing.assert_array_equal(streams.decode(payloads), q)
    np.testing.assert_array_equal(streams.decode(payloads[7:8]), q[7:8])  # one at a time, as a server does
    lengths = [len(p) for p in payloads]
    graph = jax.jit(lambda q, s: es.stream_bytes(q, s, 16))(q.reshape(3, 100, *SHAPE), t.state())
    np.testing.assert_array_equal(np.asarray(graph).ravel(), lengths)
    np.testing.assert_array_equal(es.stream_bytes_np(q, t, 16), lengths)
    # within a few bytes of the range coder's streams for the same symbols, either side
    old = np.mean([len(encode_sample(s, t)) for s in q])
    assert abs(np.mean(lengths) - old) < 3


@pytest.mark.parametrize("precision", [8, 12, 16])
def test_the_coder_counts_its_own_words_in_xla_and_numpy_at_every_precision(rng, precision):
    k = 9
    p = rng.dirichlet(np.full(k, 0.3), size=20)
    freqs = 1 + np.floor(p * ((1 << precision) - k)).astype(np.int64)
    freqs[np.arange(20), p.argmax(1)] += (1 << precision) - freqs.sum(1)
    cum = rans.cumulative(freqs)
    rows, idx = rng.integers(0, 20, (50, 64)), rng.integers(0, k, (50, 64))
    f, c = freqs[rows, idx].astype(np.uint32), cum[rows, idx].astype(np.uint32)
    x, words, emitted = jax.device_get(jax.jit(rans.encode, static_argnums=2)(f, c, precision))
    streams = rans.pack(x, words, emitted, [None] * 64)
    np.testing.assert_array_equal(rans.stream_bytes_np(f, c, precision), [len(s) for s in streams])
    np.testing.assert_array_equal(
        jax.jit(rans.stream_bytes, static_argnums=2)(f, c, precision), [len(s) for s in streams]
    )
    ideal = -np.log2(f / (1 << precision)).sum(0) / 8
    assert np.all(np.array([len(s) for s in streams]) <= ideal + 5)  # a state and half a word over, at most
    # the numpy coder, vectorised over lanes and (an edge's one or two lanes) in Python integers
    for lanes in (slice(None), slice(0, 1), slice(5, 7)):
        got = rans.encode_np(f[:, lanes], c[:, lanes], precision)
        for g, want in zip(got, (x, words, emitted)):
            np.testing.assert_array_equal(g, want[..., lanes])


@pytest.mark.slow
def test_the_graph_bytes_equal_len_of_the_host_streams_on_10000_samples(rng):
    """The codec in the graph (fitted neighbour tables, no host callback) against its own encode."""
    codec = make_codec(codec_settings("entropy", fit_context="neighbours"))
    shape = (14, 14, 8)
    params = codec.init_params(jax.random.key(0), shape)
    state = codec.fit(params, [symbols(rng, 500, shape, escapes=0).astype(np.float32)])
    x = symbols(rng, 10_000, shape, escapes=0.001).astype(np.float32) + rng.uniform(-0.4, 0.4, (10_000, *shape))
    apply = jax.jit(lambda x, s: codec(x, train=False, params=params, state=s)[1]["bytes_payload"])
    graph = np.concatenate([np.asarray(apply(x[i : i + 2000], state)) for i in range(0, 10_000, 2000)])
    payloads = codec.encode(x, state=state)
    assert (np.abs(np.round(x)) > 100).any(axis=(1, 2, 3)).sum() > 100  # samples with escapes among them
    np.testing.assert_array_equal(graph, [len(p) for p in payloads])
    np.testing.assert_array_equal(codec.decode(payloads[:300], (300, *shape), state=state), np.round(x[:300]))


@pytest.mark.parametrize("rows", ["narrow", "wide", "unblocked"])
def test_a_stream_is_accepted_only_in_the_form_the_encoder_writes(rng, rows, monkeypatch):
    """Corruptions (helpers.corruption_check): each refused, or accepted only as exactly the encoding
    of what it decodes to; many escape words are accepted (another value outside the table is a
    valid stream), at least 20, so the re-encoding check runs; the rANS part catches nearly all the
    rest (at most 5 %). On the narrow, wide (binary search) and unblocked decode paths."""
    if rows == "unblocked":
        monkeypatch.setattr(es, "BLOCKS_LIMIT", 0)
    t = fitted(rng, "neighbours", spread=10 if rows == "wide" else 1)
    streams = es.Streams(t, SHAPE, 16)
    q = symbols(rng, 64, escapes=0.03)
    good = streams.encode(q)
    tails = ((q < t.lower) | (q >= t.lower + t.widths)).sum(axis=(1, 2, 3))
    in_tail, elsewhere, tried = corruption_check(rng, streams.encode, streams.decode, good, tails)
    assert in_tail >= 20 and elsewhere <= 0.05 * tried, (in_tail, elsewhere, tried)


@pytest.mark.parametrize("rows", ["narrow", "wide", "unblocked"])
def test_each_refusal_of_a_malformed_stream(rng, rows, monkeypatch):
    """An escape the tables could have coded; an escaped value beyond QMAX; a final state not
    written in its shortest form: each refused, naming why, on every decode path."""
    if rows == "unblocked":
        monkeypatch.setattr(es, "BLOCKS_LIMIT", 0)
    t = fitted(rng, "neighbours", spread=10 if rows == "wide" else 1)
    streams = es.Streams(t, SHAPE, 16)
    q = symbols(rng, 64, escapes=0.03)
    good = streams.encode(q)
    n_esc = ((q < t.lower) | (q >= t.lower + t.widths)).sum(axis=(1, 2, 3))
    i = int(np.flatnonzero(n_esc)[0])
    last = len(good[i]) - 2  # the last escape's word
    for value, why in ((0, "tables code"), (-(QMAX + 1), "beyond")):
        with pytest.raises(ValueError, match=why):
            streams.decode([good[i][:last] + int(value + es.ESC_OFFSET).to_bytes(2, "little")])
    short = next(p for p in good if len(p) % 2)  # a state of 3 bytes, written in 4
    with pytest.raises(ValueError, match="shortest form"):
        streams.decode([b"\x00" + short])
    np.testing.assert_array_equal(streams.decode([short]), q[good.index(short)][None])


def test_an_eval_step_of_the_fitted_codec_has_no_host_callback():
    """The fashion_mnist_entropy model (14x14x8, neighbour tables) at a training batch size, lowered:
    with rANS streams the bytes are XLA; with the range coder one callback (the check can see it)."""
    from bottlenet_jax import cli
    from bottlenet_jax.codecs.base import STATE_COLLECTION
    from bottlenet_jax.models import build_model

    for stream, callbacks in (("rans", False), ("range", True)):
        cfg = cli.load_config_file("configs/fashion_mnist_entropy.py")
        cfg.codec.update(fit_context="neighbours", stream=stream)
        model = build_model(cfg, bn_axis_name=None)
        x = jnp.zeros((cfg.batch_size, 28, 28, 1))
        v = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x[:1]))
        state = jax.tree.map(np.asarray, fitted(np.random.default_rng(0), "neighbours", (14, 14, 8)).state())
        v = {**v, STATE_COLLECTION: {"codec": state}}
        text = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(v, x).as_text()
        assert ("callback" in text) == callbacks, stream


def test_saved_blocks_keep_the_range_coder_and_the_state_serves_both():
    block = {k: v for k, v in codec_settings("entropy", fit_context="element").items() if k != "stream"}
    assert upgrade_settings(block)["stream"] == "range"  # saved before `stream` existed: their bytes
    assert make_codec(block).stream == "rans"  # a config being written gets the default
    a, b = make_codec(block, stream="rans"), make_codec(block, stream="range")
    assert codec_fingerprint(a) == codec_fingerprint(b)  # one fitted state for both formats
    with pytest.raises(ConfigError, match="precision=20"):
        make_codec(block, precision=20)
    make_codec(block, precision=20, stream="range")
    with pytest.raises(ConfigError, match="codec.stream"):
        make_codec(block, stream="ans")


def test_tables_that_do_not_sum_to_the_precision_are_refused(rng):
    t = fitted(rng, "channel")
    with pytest.raises(ValueError, match="not 2\\^12"):
        es.Streams(t, SHAPE, 12)
    with pytest.raises(ValueError, match="1..16"):
        es.Streams(Tables(**t.state()), SHAPE, 17)
    assert row_index("channel", np.zeros((1, *SHAPE), int), t.zero).max() < len(t.freqs)


def test_the_graph_bytes_under_shard_map_as_the_eval_step_computes_them(rng):
    """The eval step runs the codec per device (jit of shard_map, 4 forced CPU devices): the
    scan's carry must be per device like its symbols, and the bytes stay len() of the streams."""
    from jax.sharding import PartitionSpec as P

    from bottlenet_jax import parallel

    codec = make_codec(codec_settings("entropy", fit_context="neighbours"))
    params = codec.init_params(jax.random.key(0), SHAPE)
    state = codec.fit(params, [symbols(rng, 200, escapes=0).astype(np.float32)])
    x = symbols(rng, 8 * jax.device_count()).astype(np.float32)
    mesh = parallel.make_mesh()
    per_device = lambda x: codec(x, train=False, params=params, state=state)[1]["bytes_payload"]  # noqa: E731
    got = parallel.data_parallel(per_device, mesh, (P(parallel.AXIS),), P(parallel.AXIS))(x)
    np.testing.assert_array_equal(np.asarray(got), [len(p) for p in codec.encode(x, state=state)])
