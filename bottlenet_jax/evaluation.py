"""The one evaluation loop (`evaluate`) and what is built on it: a codec's fitted state
(`fitted_codec_state`: fitted once, then read), a workdir's evaluation and codec sweeps
(`evaluate_workdir`), and the input-image reference (`input_images`: JPEG or WebP).

Periodic evaluation, the final test, eval.py, the demo and every experiment call these; plots live
in `plots.py`.
"""

from __future__ import annotations

import ml_collections
import numpy as np
from absl import logging

from bottlenet_jax import parallel
from bottlenet_jax.checkpoint import load_codec_state, load_config, load_eval_state, save_codec_state
from bottlenet_jax.codecs import STAT_KEYS, make_codec
from bottlenet_jax.errors import ConfigError
from bottlenet_jax.models import build_model
from bottlenet_jax.steps import check_batch, compile_steps

_PER_SAMPLE = ("top1", "top5", "loss", "mask")


def summarize_eval(parts: list[dict], samples: bool = False) -> dict:
    """Per-sample eval outputs -> top-1/top-5/loss, mean/median/p95 of each byte count, the mean of
    any other per-sample stat a codec reports (e.g. signal_power), the rate model's estimate; with
    `samples`, also "samples": each example's top-1 (0/1) and payload bytes, in split order."""
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    m = cat.pop("mask").astype(bool)
    out = {
        "examples": int(m.sum()),
        "top1": float(cat["top1"][m].mean()),
        "top5": float(cat["top5"][m].mean()),
        "loss": float(cat["loss"][m].mean()),
    }
    for k in STAT_KEYS:
        if k in cat:
            v = cat[k][m].astype(np.float64)
            out.update(
                {
                    f"{k}_mean": float(v.mean()),
                    f"{k}_median": float(np.median(v)),
                    f"{k}_p95": float(np.percentile(v, 95)),
                }
            )
    if "rate_bits" in cat:  # a rate model's estimate, reported beside the real bytes, never instead
        out["rate_estimate_bytes_mean"] = float(cat["rate_bits"][m].astype(np.float64).mean() / 8)
    for k in sorted(set(cat) - set(_PER_SAMPLE) - set(STAT_KEYS) - {"rate_bits", "index"}):
        out[f"{k}_mean"] = float(cat[k][m].astype(np.float64).mean())
    if samples:
        order = np.argsort(cat["index"][m], kind="stable") if "index" in cat else slice(None)
        out["samples"] = {"top1": cat["top1"][m][order].astype(np.int8)}
        if "bytes_payload" in cat:
            out["samples"]["bytes"] = cat["bytes_payload"][m][order].astype(np.int32)
    return out


def evaluate(
    p_eval, state, data, cfg, mesh, split: str | None = None, transform=None, codec_state=None, samples=False
) -> dict:
    """Every example of `split` (default cfg.eval_split) once through the compiled eval step;
    `transform(host batch) -> batch` changes each batch first (per-sample byte counts it adds,
    under the STAT_KEYS names, pass through to the summary). `codec_state`: the codec's fitted
    state (`fitted_codec_state`; None: not fitted, as in periodic evaluation during training);
    `samples`: keep each example's top-1 and bytes (summarize_eval)."""
    from bottlenet_jax.data import loader

    codec_state = parallel.replicate(codec_state, mesh) if codec_state else None
    parts = []
    for b in loader.eval_iterator(data, cfg, split=split):
        b = transform(b) if transform else b
        sharded = parallel.shard_batch(b, mesh)
        out = p_eval(state, sharded, codec_state)
        if samples:  # each example's place in the split, gathered as the outputs are
            out = {**out, "index": sharded["index"]}
        parts.append({k: parallel.to_host(v) for k, v in out.items()})
    if not parts:
        raise ConfigError(f"split={split or cfg.eval_split!r} gave no examples")
    return summarize_eval(parts, samples)


def edge_features(cfg, variables, data, split: str, n: int = 0):
    """Batches (numpy, padding dropped) of what the edge half sends, y [b, h, w, C], for the first
    `n` examples of `split` (0: all), on this host's first device: the input of `Codec.fit`
    (a generator: it reads the data only as far as its consumer asks)."""
    import jax

    from bottlenet_jax.data import loader
    from bottlenet_jax.steps import normalize

    c = ml_collections.ConfigDict(cfg.to_dict())
    c.eval_split, c.eval_examples = split, n if n > 0 else -1
    model = build_model(c, bn_axis_name=None)
    variables = jax.device_get(variables)
    edge = jax.jit(lambda v, x: model.apply(v, normalize(x, c.mean, c.std), part="edge"))
    for b in loader.eval_iterator(data, c, process_index=0, process_count=1):
        yield np.asarray(edge(variables, b["image"]))[b["mask"]]


def fitted_codec_state(cfg, variables, step: int, workdir: str | None = None, data=None) -> dict:
    """The state of cfg's codec for these weights (codecs/base.py): the one saved in `workdir` for
    this checkpoint step and these codec settings when there is one (nothing is read from the
    data), else fitted here once and saved there. Fitting runs the edge over the training split
    only when the codec fits data (`Codec.fits_data`; the dataset is opened then if `data` is
    None). Deterministic for given weights and data, so every evaluator of a workdir codes alike."""
    codec = make_codec(cfg.codec)
    if not cfg.split.after:
        return {}
    if workdir:
        saved = load_codec_state(workdir, step, codec)
        if saved is not None:
            return saved
    features = iter(())
    if codec.fits_data:
        if data is None:
            from bottlenet_jax.data import records

            data = records.open_prepared(cfg.dataset, cfg.data_dir)
        features = edge_features(cfg, variables, data, cfg.train_split)
    import jax

    state = jax.tree.map(np.asarray, codec.fit(jax.device_get(variables["params"]).get("codec", {}), features))
    if workdir and state and jax.process_index() == 0:
        where = save_codec_state(
            workdir,
            step,
            codec,
            state,
            {"fitted_on": cfg.train_split if codec.fits_data else "", "dataset": cfg.dataset},
        )
        logging.info("%s codec: state fitted for step %d, saved in %s", codec.name, step, where)
    return state


def sweep_field(cfg) -> str:
    """The codec setting `--sweep` varies, as the codec declares it (JPEG: quality; AWGN: sigma; BEC: p)."""
    from bottlenet_jax.codecs import REGISTRY, make_codec

    field = make_codec(cfg.codec).sweep_field
    if not field:
        raise ConfigError(
            f"codec.name={cfg.codec.name!r}: has no setting to sweep "
            f"(sweepable: {', '.join(sorted(n for n, c in REGISTRY.items() if c.sweep_field))})"
        )
    return field


def evaluate_workdir(
    workdir: str, cfg=None, split: str | None = None, values=(), include_trained: bool = True, samples: bool = False
):
    """Summary rows of a workdir's best (else latest) weights: at the config's codec settings
    (unless include_trained=False), then at each of `values` of the codec's `sweep_field` (JPEG q,
    AWGN sigma, BEC p). `cfg` (default: the workdir's own) may name another codec or split. Each
    row carries the codec state's side information (`side_info_bytes`: sent once); `samples`:
    each example's top-1 and bytes too."""
    from bottlenet_jax.data import records

    cfg = cfg or load_config(workdir)
    if split:
        cfg.eval_split = split
    mesh = parallel.make_mesh()
    check_batch(cfg, mesh)
    data = records.open_prepared(cfg.dataset, cfg.data_dir)
    state = load_eval_state(workdir, mesh)
    variables, step = {"params": state.params, "batch_stats": state.batch_stats}, int(state.step)
    field = sweep_field(cfg) if values else ""
    rows = []
    for q in ([None] if include_trained else []) + list(values):
        c = ml_collections.ConfigDict(cfg.to_dict())
        if q is not None:
            c.codec[field] = type(c.codec[field])(q) if field in c.codec else q
        _, p_eval = compile_steps(build_model(c), None, mesh, c)
        codec_state = fitted_codec_state(c, variables, step, workdir, data)
        s = evaluate(p_eval, state, data, c, mesh, codec_state=codec_state, samples=samples)
        s["side_info_bytes"] = make_codec(c.codec).side_info_bytes(codec_state) if codec_state else 0
        rows.append({"codec": c.codec.name, **({field: c.codec[field]} if field else {}), "trained": q is None, **s})
        numbers = " ".join(f"{k}={v:.4g}" for k, v in s.items() if isinstance(v, (int, float)))
        logging.info("%s %s", "trained" if q is None else f"{field}={q:g}", numbers)
    return rows


def evaluate_setting(cfg, workdir: str, setting: dict, split: str, samples: bool = False) -> dict:
    """The weights of `workdir` (trained under `cfg`) evaluated on `split` with what `setting`
    changes: "codec" (a block with "name", or overrides of the config's), "split" (overrides: e.g.
    the plain network cut after RB1 with no unit), or "input" ({"format": "raw" | "jpeg" | "webp",
    "quality", "huffman"}: the input image through that codec, classified by the network). The
    summary of `evaluate_workdir` / `input_images` (+ per-sample arrays with `samples`)."""
    from bottlenet_jax.codecs import codec_settings

    inp = setting.get("input")
    if inp:
        fmt = inp.get("format", "raw")
        if fmt == "raw":
            return input_images(cfg, workdir, [], split, samples=samples)[0]
        return input_images(cfg, workdir, [inp["quality"]], split, inp.get("huffman", "default"), samples, fmt)[1]
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.split.update(**setting.get("split", {}))
    block = dict(setting.get("codec", {}))
    if "name" in block:
        cfg.codec = ml_collections.ConfigDict(codec_settings(block.pop("name"), **block))
    else:
        cfg.codec.update(block)
    return evaluate_workdir(workdir, cfg, split, (), True, samples)[0]


def input_images(
    cfg,
    workdir: str,
    qualities,
    split: str | None = None,
    huffman: str = "default",
    samples: bool = False,
    fmt: str = "jpeg",
) -> list[dict]:
    """The reference BottleNet is measured against: each image of `split` (default the config's
    eval_split), as the model sees it, sent as a JPEG (or, fmt="webp", a lossy WebP) at each q,
    decoded, classified by the model in `workdir` (a plain, unsplit one), through `evaluate`. One
    summary per q (None first: the raw image). bytes_payload is what a receiver that knows the
    image size needs (JPEG's abbreviated stream, tables fixed by q dropped, as the feature payloads;
    WebP's VP8 frame without its container: codecs/webp.py), bytes_full the file. `huffman` (JPEG):
    "default" (Annex K tables), "optimize" (per image, in the stream) or "fitted" (grey images:
    tables fitted to the training split's images at that q, sent once: `side_info_bytes`; the pixels
    are the default tables' as Huffman coding is lossless)."""
    from bottlenet_jax.data import records

    if cfg.split.after:  # its codec's byte counts would replace the image's
        raise ConfigError(
            f"input_images: needs a plain (unsplit) model, and this config splits after block {cfg.split.after}"
        )
    if huffman not in ("default", "optimize", "fitted"):
        raise ConfigError(f"huffman={huffman!r}: must be default, optimize or fitted")
    if fmt not in ("jpeg", "webp"):
        raise ConfigError(f"fmt={fmt!r}: must be jpeg or webp")
    mesh = parallel.make_mesh()
    check_batch(cfg, mesh)
    data = records.open_prepared(cfg.dataset, cfg.data_dir)
    state = load_eval_state(workdir, mesh)
    _, p_eval = compile_steps(build_model(cfg), None, mesh, cfg)
    out = []
    for q in (None, *qualities):
        lengths = _input_tables(cfg, data, q) if huffman == "fitted" and q is not None and fmt == "jpeg" else None
        transform = _webp_images(q) if fmt == "webp" and q is not None else _jpeg_images(q, huffman, lengths)
        s = evaluate(p_eval, state, data, cfg, mesh, split, transform, samples=samples)
        if lengths is not None:
            from bottlenet_jax.codecs.jpeg import huffman

            s["side_info_bytes"] = huffman.dht_bytes(lengths)
        out.append({"q": q, **s})
    return out


_INPUT_TABLES: dict = {}  # (dataset, data_dir, train split, q) -> fitted code lengths: they depend on the data only


def _input_tables(cfg, data, quality):
    """Huffman code lengths fitted to the training split's images at `quality` (grey images)."""
    import jax.numpy as jnp

    from bottlenet_jax.codecs.jpeg import huffman
    from bottlenet_jax.data import loader

    key = (cfg.dataset, cfg.data_dir, cfg.train_split, cfg.image_size, int(quality))
    if key not in _INPUT_TABLES:
        c = ml_collections.ConfigDict(cfg.to_dict())
        c.eval_examples = -1
        hist = np.zeros((2, 256), np.int64)
        for b in loader.eval_iterator(data, c, process_index=0, process_count=1, split=cfg.train_split):
            imgs = b["image"][b["mask"]]
            if imgs.shape[-1] != 1:
                raise ConfigError("input_images(huffman='fitted'): grey images only")
            zz = huffman.zigzag_blocks(jnp.asarray(imgs[..., 0]), int(quality))
            hist += np.asarray(huffman.symbol_histogram(zz))
        _INPUT_TABLES[key] = huffman.fit_lengths(hist)
    return _INPUT_TABLES[key]


def _jpeg_images(quality, huffman: str = "default", lengths=None):
    """A batch transform: each image as a JPEG at `quality`, decoded, with its byte counts (None:
    the raw image and its size); `huffman` as in input_images, `lengths` the fitted tables."""
    import cv2

    from bottlenet_jax.codecs.jpeg import huffman, jfif

    optimize = huffman == "optimize"

    def transform(batch):
        imgs = batch["image"]
        n = len(imgs)
        if quality is None:
            size = np.full(n, imgs[0].size, np.int32)
            return {**batch, "bytes_full": size, "bytes_payload": size}
        grey, params = imgs.shape[-1] == 1, jfif.params(quality, optimize)
        encs = [jfif.encode_image(im[..., 0] if grey else cv2.cvtColor(im, cv2.COLOR_RGB2BGR), params) for im in imgs]
        dec = np.stack([cv2.imdecode(e, cv2.IMREAD_UNCHANGED) for e in encs])
        if lengths is not None:  # the same pixels; the scan coded under the fitted tables
            payloads = huffman.write_streams(imgs[..., 0], quality, lengths, jfif.framing)
            extra = jfif.SEGMENT_BYTES["APP0"] + jfif.SEGMENT_BYTES["DQT"] + huffman.dht_bytes(lengths)
            full = np.array([len(p) + extra for p in payloads], np.int32)
        else:
            payloads = [jfif.abbreviate(e.tobytes(), optimize) for e in encs]
            full = np.array([e.size for e in encs], np.int32)
        return {
            **batch,
            "image": dec[..., None] if grey else dec[..., ::-1],
            "bytes_full": full,
            "bytes_payload": np.array([len(p) for p in payloads], np.int32),
        }

    return transform


def _webp_images(quality):
    """A batch transform: each image as a lossy WebP at `quality`, decoded, with its byte counts."""
    from bottlenet_jax.codecs import webp

    def transform(batch):
        imgs = batch["image"]
        grey = imgs.shape[-1] == 1
        files = [webp.encode_image(im[..., 0] if grey else im[..., ::-1], quality) for im in imgs]
        dec = np.stack([webp.decode(f, grey) for f in files])
        return {
            **batch,
            "image": dec[..., None] if grey else dec[..., ::-1],
            "bytes_full": np.array([len(f) for f in files], np.int32),
            "bytes_payload": np.array([len(webp.abbreviate(f)) for f in files], np.int32),
        }

    return transform
