"""The device JPEG codec is libjpeg-turbo (cv2), bit for bit: pixels, file sizes, and training.

Exactness is checked against cv2.imencode/imdecode itself on > 10,000 images (every size x quality
x content below), with the default Huffman tables and, on a smaller set, with optimize=True.
"""

import functools
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bottlenet_jax import parallel
from bottlenet_jax.codecs import JpegCodec, make_codec
from bottlenet_jax.codecs.jpeg import codec as jpeg
from bottlenet_jax.codecs.jpeg import jfif
from bottlenet_jax.codecs.jpeg import scan as jpeg_entropy
from bottlenet_jax.codecs.jpeg import xla as jpeg_xla
from bottlenet_jax.codecs.jpeg.xla import jpeg_device
from bottlenet_jax.errors import ConfigError
from bottlenet_jax.parallel import BATCH

from helpers import feature_maps

QUALITIES = (1, 2, 5, 10, 25, 50, 75, 90, 95, 98, 99, 100)
SIZES = ((1, 1), (7, 9), (13, 17), (28, 28), (9, 30), (84, 84))
UNIT_MAPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "unit_maps.npz")


def cv2_roundtrip(img, q, optimize=False):
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q, cv2.IMWRITE_JPEG_OPTIMIZE, int(optimize)])
    assert ok
    return cv2.imdecode(enc, cv2.IMREAD_UNCHANGED).reshape(img.shape), enc.size


def contents(rng, h, w, per_kind):
    """Test images of one size: {kind: uint8 [n, h, w]}."""
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    smooth = []
    for _ in range(per_kind):
        a, b, c = rng.uniform(-1, 1, 3)
        ramp = 128 + 127 * np.tanh(a * xx / 5 + b * yy / 5 + c)
        wave = 60 * np.sin(xx / rng.uniform(2, 12) + yy / rng.uniform(2, 12) + rng.uniform(0, 6))
        smooth.append(np.clip(np.round(ramp + rng.uniform(0, 1) * wave), 0, 255))
    stripes = []
    for i in range(per_kind):
        period, phase = 1 + i % 8, i // 8
        d = [xx, yy, xx + yy, xx - yy + 1000][i % 4]
        stripes.append(np.where(((d + phase) // period) % 2 == 0, 255, 0))
    maps = np.load(UNIT_MAPS)["maps"]  # [128, 14, 14, 4] from a trained reduction unit
    tiles = jpeg.tile(maps, "grid")  # [128, 28, 28]: what the codec codes
    reps = (-(-h // 28), -(-w // 28))
    trained = []
    for _ in range(3 * per_kind):
        pick = rng.integers(0, len(tiles), reps[0] * reps[1])
        mosaic = np.block([[tiles[pick[r * reps[1] + c]] for c in range(reps[1])] for r in range(reps[0])])
        y0, x0 = rng.integers(0, mosaic.shape[0] - h + 1), rng.integers(0, mosaic.shape[1] - w + 1)
        trained.append(mosaic[y0 : y0 + h, x0 : x0 + w])
    return {
        "noise": rng.integers(0, 256, (per_kind, h, w)),
        "smooth": np.stack(smooth),
        "constant": np.stack([np.full((h, w), v) for v in (0, 128, 255)]),
        "stripes": np.stack(stripes),
        "trained_unit": np.stack(trained),
    }


def check_exact(per_kind, optimize, seed):
    """Code every content at every size and quality on device and with cv2; return (tiles, diffs)."""
    rng = np.random.default_rng(seed)
    code = jax.jit(jpeg_device, static_argnames="optimize")  # quality traced: one program per size
    tiles = pixel_diff = byte_diff = 0
    for h, w in SIZES:
        kinds = contents(rng, h, w, per_kind)
        imgs = np.concatenate(list(kinds.values())).astype(np.uint8)
        names = [k for k, v in kinds.items() for _ in range(len(v))]
        for q in QUALITIES:
            dec, nbytes = (np.asarray(a) for a in code(imgs, jnp.int32(q), optimize=optimize))
            for i, img in enumerate(imgs):
                want, size = cv2_roundtrip(img, q, optimize)
                bad_pixels, bad_bytes = int((dec[i] != want).sum()), int(nbytes[i] != size)
                assert not (bad_pixels or bad_bytes), (
                    f"{h}x{w} q={q} {names[i]} #{i}: {bad_pixels} pixels differ, {nbytes[i]} bytes vs cv2's {size}"
                )
                pixel_diff, byte_diff, tiles = pixel_diff + bad_pixels, byte_diff + bad_bytes, tiles + 1
    return tiles, pixel_diff, byte_diff


@pytest.mark.slow  # 11,880 images: make test-slow (CI); make test keeps the backends' and the transport's equality
def test_exact_pixels_and_bytes_vs_cv2():
    tiles, pixel_diff, byte_diff = check_exact(per_kind=27, optimize=False, seed=0)
    print(f"default tables: {tiles} tiles, {pixel_diff} differing pixels, {byte_diff} byte-count differences")
    assert tiles >= 10_000 and pixel_diff == 0 and byte_diff == 0


@pytest.mark.slow  # minutes on 2 cores: make test-slow
def test_exact_with_optimized_huffman_tables():
    """optimize=True: per-image tables by libjpeg's jpeg_gen_optimal_table, computed on device."""
    tiles, pixel_diff, byte_diff = check_exact(per_kind=6, optimize=True, seed=1)
    print(f"optimized tables: {tiles} tiles, {pixel_diff} differing pixels, {byte_diff} byte-count differences")
    assert tiles >= 2_000 and pixel_diff == 0 and byte_diff == 0


def test_idct_output_never_reaches_the_range_where_libjpeg_builds_differ():
    """The one place libjpeg's own builds could disagree: IDCT outputs beyond +-512.

    jidctint.c indexes `range_limit[x & RANGE_MASK]` (RANGE_MASK = 1023; table built by
    jdmaster.c prepare_range_limit_table): a clamp to 0..255 for x in [-512, 511], a wrap outside.
    The SIMD IDCT that cv2's build runs packs with saturation: a clamp everywhere. jpeg_device
    clamps. Binary 0/255 blocks at the coarsest quality overshoot the most of anything we tried
    (random search plus hill climbing topped out at 511), and stay inside [-512, 511]: there both
    builds, and jpeg_device, agree; and cv2 agrees with jpeg_device on these blocks.
    """
    rng = np.random.default_rng(0)
    blocks = ((rng.random((4000, 8, 8)) < rng.uniform(0.05, 0.95, (4000, 1, 1))) * 255).astype(np.uint8)
    qt = jpeg_xla.quant_table(1)

    @jax.jit
    def before_clamp(b):
        coef = jpeg_xla.forward(b.astype(jnp.int32) - 128, qt)
        return jpeg_xla.idct_1d(jpeg_xla._transposed(jpeg_xla.idct_1d, coef * qt, True), False)

    v = np.asarray(before_clamp(blocks))
    assert v.min() >= -512 and v.max() <= 511
    assert v.max() > 255 - 128 and v.min() < -128  # the clamp is exercised, not idle
    dec, _ = jax.jit(lambda b: jpeg_device(b, 1))(blocks)
    np.testing.assert_array_equal(np.asarray(dec), np.stack([cv2_roundtrip(b, 1)[0] for b in blocks]))


def test_huffman_tables_and_fixed_segments_are_what_cv2_writes():
    ok, enc = cv2.imencode(".jpg", np.zeros((8, 8), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 75])
    buf = enc.tobytes()
    segs = {}
    for marker, start, end in jfif.segments(buf):
        segs.setdefault(marker, []).append(buf[start:end])
    got = {
        0xD8: 2,
        0xE0: jfif.SEGMENT_BYTES["APP0"],
        0xDB: jfif.SEGMENT_BYTES["DQT"],
        0xC0: jfif.SEGMENT_BYTES["SOF0"],
        0xDA: jfif.SEGMENT_BYTES["SOS"],
    }
    for marker, size in got.items():
        if marker != 0xD8:
            assert [len(s) for s in segs[marker]] == [size]
    assert sum(len(s) for s in segs[0xC4]) == jpeg_entropy.DEFAULT_DHT_BYTES
    # each DHT: class/id, BITS[1..16], HUFFVAL: rebuild ours the same way
    for dht, base in zip(segs[0xC4], (0, 256)):
        bits, huffval = np.frombuffer(dht[5:21], np.uint8), np.frombuffer(dht[21:], np.uint8)
        lengths = jpeg_entropy.DEFAULT_LENGTHS[base : base + 256]
        np.testing.assert_array_equal(bits, jpeg_entropy.length_counts(lengths)[1:])
        order = np.lexsort((np.arange(256), lengths))
        np.testing.assert_array_equal(huffval, order[lengths[order] > 0])
    assert jfif.omitted_bytes(False) == sum(len(s) for s in jfif._tables(75, False))
    assert jfif.omitted_bytes(True) == sum(len(s) for s in jfif._tables(75, True))


def test_quant_table_follows_libjpeg_scaling():
    assert int(jpeg_xla.quant_table(50)[0, 0]) == 16 and int(jpeg_xla.quant_table(100).max()) == 1
    assert int(jpeg_xla.quant_table(10)[0, 0]) == 80 and int(jpeg_xla.quant_table(1).max()) == 255  # clamped
    assert int(jpeg_xla.quant_table(90)[0, 0]) == 3  # (16*20+50)//100


@pytest.mark.parametrize("optimize", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_jpeg_device_under_vmap_and_shard_map_equals_direct(rng, optimize):
    imgs = rng.integers(0, 256, (8, 3, 12, 20), dtype=np.uint8)
    code = functools.partial(jpeg_device, quality=40, optimize=optimize)
    want_dec, want_n = jax.jit(code)(imgs)
    got_dec, got_n = jax.jit(jax.vmap(code))(imgs)
    np.testing.assert_array_equal(got_dec, want_dec)
    np.testing.assert_array_equal(got_n, want_n)
    mesh = parallel.make_mesh()
    sh_dec, sh_n = parallel.data_parallel(code, mesh, (BATCH,), (BATCH, BATCH))(imgs)
    np.testing.assert_array_equal(sh_dec, want_dec)
    np.testing.assert_array_equal(sh_n, want_n)


@pytest.mark.parametrize("layout", ["grid", "rows"])
@pytest.mark.parametrize("optimize", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_device_backend_equals_host_backend_and_transport(rng, layout, optimize):
    x = feature_maps(rng, 6, 14, 14, 5)
    host, device = (JpegCodec(quality=35, layout=layout, optimize=optimize, backend=b) for b in ("host", "device"))
    (xh, sh), (xd, sd) = (jax.jit(lambda x, c=c: c(x, train=True))(x) for c in (host, device))
    np.testing.assert_array_equal(xd, xh)
    for k in sh:
        np.testing.assert_array_equal(sd[k], sh[k])
    payloads = device.encode(x)
    np.testing.assert_array_equal(device.decode(payloads, x.shape), np.asarray(xd))
    assert [len(p) for p in payloads] == list(np.asarray(sd["bytes_payload"]))
    assert not np.array_equal(np.asarray(xd), x)  # lossy, so the comparison means something


def test_device_backend_makes_no_host_callback(rng):
    x = feature_maps(rng, 2, 8, 8, 4)
    text = jax.jit(lambda x: make_codec({"name": "jpeg", "backend": "device"})(x, train=True)).lower(x).as_text()
    assert "callback" not in text
    host_text = jax.jit(lambda x: make_codec({"name": "jpeg"})(x, train=True)).lower(x).as_text()
    assert "callback" in host_text  # the check can see a callback when there is one


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_device_gradient_is_identity_under_jit_vmap_and_shard_map(rng, dtype):
    codec = make_codec({"name": "jpeg", "quality": 10, "backend": "device"})
    x = jnp.asarray(feature_maps(rng, 8, 8, 8, 2), dtype)
    w = jnp.asarray(rng.normal(size=x.shape), dtype)
    f = lambda x, w: jnp.sum((w * codec(x, train=True)[0]).astype(jnp.float32))
    g = jax.jit(jax.grad(f))(x, w)
    assert g.dtype == dtype
    np.testing.assert_array_equal(g, w)
    xs, ws = jnp.stack([x, x[::-1]]), jnp.stack([w, -w])
    np.testing.assert_array_equal(jax.jit(jax.vmap(jax.grad(f)))(xs, ws), ws)
    mesh = parallel.make_mesh()
    g4 = parallel.data_parallel(jax.grad(f), mesh, (BATCH, BATCH), BATCH)(x, w)  # 4 devices, 2 samples each
    np.testing.assert_array_equal(g4, w)  # not 4 x w: the varying-type trap does not apply
    assert not np.array_equal(np.asarray(codec(x)[0]), np.asarray(x))


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"backend": "gpu"}, "host, device"),
        ({"backend": "device", "minmax": True}, "needs codec.backend='host'"),
        ({"name": "jpeg_xla"}, "backend='device'"),
    ],
)
def test_bad_settings_fail_at_build_with_one_line(bad, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_codec({"name": "jpeg", **bad})
    assert "\n" not in str(e.value)


def test_jpeg_device_rejects_non_uint8_images():
    with pytest.raises(ValueError, match=r"uint8 \[..., H, W\].*float32\[4, 4\]"):
        jpeg_device(np.zeros((4, 4), np.float32), 50)


def _step_runner(cfg, backend, mesh):
    """The trainer's own train step for this config, plus a forward that returns the step's x_hat."""
    from bottlenet_jax.models import build_model
    from bottlenet_jax.parallel import REPLICATED
    from bottlenet_jax.steps import compile_steps, normalize
    from bottlenet_jax.train_lib import create_train_state

    cfg = cfg.copy_and_resolve_references()
    cfg.codec.backend = backend
    model = build_model(cfg)
    state, tx = create_train_state(cfg, model, 3, 10, 10)
    p_train, _ = compile_steps(model, tx, mesh, cfg)

    def x_hat(state, batch):
        _, v = model.apply(
            {"params": state.params, "batch_stats": state.batch_stats},
            normalize(batch["image"], cfg.mean, cfg.std),
            train=True,
            mutable=["batch_stats", "intermediates"],
        )
        return v["intermediates"]["x_hat"][0]

    return parallel.replicate(state, mesh), p_train, parallel.data_parallel(x_hat, mesh, (REPLICATED, BATCH), BATCH)


@pytest.mark.slow  # minutes on 2 cores: make test-slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_with_either_backend_is_bit_identical(dtype):
    """N train steps (the trainer's jit(shard_map) step, 4 devices) with host and device JPEG: the
    cloud half sees the same x_hat at every step, and the parameters stay bit-identical."""
    from helpers import small_config

    cfg = small_config()
    cfg.model.update(depth=18, dtype=dtype)  # the ResNet-18 layout: the same step, a quarter of the compile
    cfg.batch_size = 8
    mesh = parallel.make_mesh()
    runs = {b: _step_runner(cfg, b, mesh) for b in ("host", "device")}
    rng = np.random.default_rng(0)
    states = {b: r[0] for b, r in runs.items()}
    for step in range(4):
        batch = parallel.shard_batch(
            {"image": rng.integers(0, 256, (8, 32, 32, 3), np.uint8), "label": rng.integers(0, 10, 8).astype(np.int32)},
            mesh,
        )
        seen = {b: np.asarray(runs[b][2](states[b], batch)) for b in runs}
        np.testing.assert_array_equal(seen["device"], seen["host"], err_msg=f"x_hat differs at step {step}")
        before = states["host"].params
        for b in runs:
            states[b], metrics = runs[b][1](states[b], batch)
            assert float(metrics["bytes_payload"]) > 0
        jax.tree.map(
            functools.partial(np.testing.assert_array_equal, err_msg=f"params differ after step {step}"),
            states["device"].params,
            states["host"].params,
        )
    assert not all(jax.tree.leaves(jax.tree.map(lambda a, b: np.array_equal(a, b), before, states["host"].params)))


def libjpeg_optimal_table(freq):
    """libjpeg's jpeg_gen_optimal_table (jchuff.c), line by line: (BITS[0..16], HUFFVAL)."""
    max_clen = 32
    freq = [int(v) for v in freq] + [1]  # the reserved pseudo-symbol 256
    bits, codesize, others = [0] * (max_clen + 1), [0] * 257, [-1] * 257
    while True:
        c1, v = -1, 10**9
        for i in range(257):
            if freq[i] and freq[i] <= v:
                v, c1 = freq[i], i
        c2, v = -1, 10**9
        for i in range(257):
            if freq[i] and freq[i] <= v and i != c1:
                v, c2 = freq[i], i
        if c2 < 0:
            break
        freq[c1] += freq[c2]
        freq[c2] = 0
        codesize[c1] += 1
        while others[c1] >= 0:
            c1 = others[c1]
            codesize[c1] += 1
        others[c1] = c2
        codesize[c2] += 1
        while others[c2] >= 0:
            c2 = others[c2]
            codesize[c2] += 1
    for i in range(257):
        if codesize[i]:
            bits[codesize[i]] += 1
    for i in range(max_clen, 16, -1):
        while bits[i] > 0:
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
    i = 16
    while bits[i] == 0:
        i -= 1
    bits[i] -= 1
    huffval = [j for n in range(1, max_clen + 1) for j in range(256) if codesize[j] == n]
    return np.array(bits[:17]), huffval, max(codesize)


def histograms(rng, n_blocks, n):
    """Symbol counts of images of n_blocks blocks: random mixes, and chains that make codes longer
    than 16 bits (counts growing at least like Fibonacci's), which only the K.2 adjustment shortens."""
    cap = 63 * n_blocks
    for i in range(n):
        h = np.zeros((2, 256), np.int64)
        h[0, rng.choice(jpeg_entropy.DC_SYMBOLS, 3, replace=False)] = rng.multinomial(n_blocks, [0.6, 0.3, 0.1])
        ac = rng.permutation(jpeg_entropy.AC_SYMBOLS)
        if i % 2:
            vals = [1, int(rng.integers(1, 3))]
            while sum(vals) + vals[-1] + vals[-2] + 3 <= cap and len(vals) < 162:
                vals.append(vals[-1] + vals[-2] + int(rng.integers(0, 4)))
            vals = np.concatenate([vals, rng.integers(1, 3, int(rng.integers(0, 40)))])[:162]
            while vals.sum() > cap:
                vals = vals[:-1]
        else:
            k = int(rng.integers(1, 163))
            vals = rng.multinomial(int(rng.integers(1, cap + 1)), rng.dirichlet(np.full(k, rng.choice([0.05, 1.0]))))
        h[1, ac[: len(vals)]] = vals
        yield h


@pytest.mark.slow  # minutes on 2 cores: make test-slow
def test_optimal_tables_equal_libjpegs_including_codes_longer_than_16_bits():
    """The unrolled table builder against a line-by-line port of libjpeg's, on block counts whose
    totals allow codes up to 18 and 22 bits (84x84 and 224x224 tiles)."""
    rng = np.random.default_rng(0)
    build = jax.jit(jpeg_entropy.optimal_tables, static_argnums=1)
    adjusted = 0
    for n_blocks in (121, 784):
        hs = np.stack(list(histograms(rng, n_blocks, 120)))
        _, lengths, bits = (np.asarray(a) for a in build(jnp.asarray(hs, jnp.int32), n_blocks))
        for h, got_len, got_bits in zip(hs, lengths, bits):
            for t in range(2):
                want_bits, huffval, longest = libjpeg_optimal_table(h[t])
                adjusted += longest > 16
                np.testing.assert_array_equal(got_bits[t], want_bits)
                want_len = np.zeros(256, int)
                want_len[huffval[: want_bits.sum()]] = np.repeat(np.arange(17), want_bits)
                np.testing.assert_array_equal(got_len[t], want_len)
    assert adjusted >= 20  # the K.2 adjustment was exercised


def test_optimized_tables_run_without_data_dependent_loops():
    """No `while` in the program: on a GPU each iteration of one waits for the host to read its condition."""
    for shape in ((2, 28, 28), (2, 224, 224)):
        text = jax.jit(lambda x: jpeg_device(x, 50, optimize=True)).lower(jnp.zeros(shape, jnp.uint8)).as_text()
        assert "while" not in text and "stablehlo.case" not in text
