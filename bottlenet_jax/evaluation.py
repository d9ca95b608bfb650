"""Evaluate a trained workdir on a split; optionally sweep the codec quality with the same weights."""

from __future__ import annotations

import csv
import os

import jax
import ml_collections
import numpy as np

from bottlenet_jax import parallel
from bottlenet_jax.checkpoint import load_config, load_eval_state
from bottlenet_jax.codecs import STAT_KEYS
from bottlenet_jax.errors import ConfigError
from bottlenet_jax.models import build_model
from bottlenet_jax.steps import check_batch, compile_steps


def summarize_eval(parts: list[dict]) -> dict:
    """Per-sample eval outputs -> top-1/top-5/loss and mean/median/p95 of each byte count."""
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
    return out


def evaluate(p_eval, state, data, cfg, mesh, split: str | None = None) -> dict:
    """Summary over `split` (default cfg.eval_split)."""
    from bottlenet_jax.data import loader

    parts = [
        {k: parallel.to_host(v) for k, v in p_eval(state, parallel.shard_batch(b, mesh)).items()}
        for b in loader.eval_iterator(data, cfg, split=split)
    ]
    if not parts:
        raise ConfigError(f"split={split or cfg.eval_split!r} gave no examples")
    return summarize_eval(parts)


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
    workdir: str,
    cfg=None,
    split: str | None = None,
    values=(),
    out_dir: str | None = None,
    include_trained: bool = True,
):
    """Summaries for the trained codec settings (unless include_trained=False), then one per swept
    value of the codec's `sweep_field` (`values`: JPEG q, AWGN sigma, BEC p); writes CSV + PNG
    when sweeping."""
    from bottlenet_jax.data import records

    cfg = cfg or load_config(workdir)
    if split:
        cfg.eval_split = split
    mesh = parallel.make_mesh()
    check_batch(cfg, mesh)
    data = records.open_prepared(cfg.dataset, cfg.data_dir)
    state = load_eval_state(workdir, mesh)
    field = sweep_field(cfg) if values else ""
    rows = []
    for q in ([None] if include_trained else []) + list(values):
        c = ml_collections.ConfigDict(cfg.to_dict())
        if q is not None:
            c.codec[field] = type(c.codec[field])(q) if field in c.codec else q
        model = build_model(c)
        _, p_eval = compile_steps(model, None, mesh, c)
        s = evaluate(p_eval, state, data, c, mesh)
        rows.append({"codec": c.codec.name, **({field: c.codec[field]} if field else {}), "trained": q is None, **s})
        print(
            ("trained  " if q is None else f"{field}={q:<5g}    ")
            + " ".join(f"{k}={v:.4g}" for k, v in s.items() if isinstance(v, float))
        )
    if values:
        out_dir = out_dir or os.path.join(workdir, "sweep")
        os.makedirs(out_dir, exist_ok=True)
        write_sweep(
            rows[1:] if include_trained else rows,
            out_dir,
            title=f"{cfg.dataset} {cfg.split.after and f'RB{cfg.split.after}'} "
            f"(trained at {field}={cfg.codec.get(field)})",
            field=field,
        )
        print(f"wrote {out_dir}/sweep.csv and {out_dir}/sweep.png")
    return rows


def input_image_jpeg(cfg, workdir: str, qualities) -> list[dict]:
    """The reference BottleNet is measured against: each eval image (as the model sees it) sent as
    a JPEG at each q (cv2), decoded, classified by the model in `workdir` (a plain, unsplit one).
    One row per q (None first: the raw image): top1, bytes of the abbreviated stream (tables fixed
    by q dropped, as the feature payloads) and of the full JFIF file."""
    import cv2
    import numpy as np

    from bottlenet_jax.codecs import jpeg
    from bottlenet_jax.data import loader, records
    from bottlenet_jax.steps import normalize

    batches = list(loader.eval_iterator(records.open_prepared(cfg.dataset, cfg.data_dir), cfg))
    imgs = np.concatenate([b["image"][b["mask"]] for b in batches])
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    state = load_eval_state(workdir, parallel.make_mesh(jax.devices()[:1]))
    model = build_model(cfg, bn_axis_name=None)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    f = jax.jit(lambda u8: model.apply(variables, normalize(u8, cfg.mean, cfg.std))[0])
    grey = imgs.shape[-1] == 1
    rows = []
    for q in (None, *qualities):
        full, abbr, dec = [imgs[0].size], [imgs[0].size], imgs
        if q is not None:
            params = [cv2.IMWRITE_JPEG_QUALITY, int(q)]
            encs = [
                jpeg.encode_image(im[..., 0] if grey else cv2.cvtColor(im, cv2.COLOR_RGB2BGR), params) for im in imgs
            ]
            full = [e.size for e in encs]
            abbr = [len(jpeg.abbreviate(e.tobytes(), False)) for e in encs]
            dec = np.stack([cv2.imdecode(e, cv2.IMREAD_UNCHANGED) for e in encs])
            dec = dec[..., None] if grey else dec[..., ::-1]
        pred = np.concatenate([np.argmax(np.asarray(f(dec[i : i + 500])), -1) for i in range(0, len(dec), 500)])
        rows.append(
            {
                "q": q,
                "top1": float(np.mean(pred == labels)),
                "examples": len(labels),
                "bytes_payload_mean": float(np.mean(abbr)),
                "bytes_payload_median": float(np.median(abbr)),
                "bytes_full_mean": float(np.mean(full)),
                "bytes_full_median": float(np.median(full)),
            }
        )
    return rows


def write_sweep(rows, out_dir, title, field):
    with open(os.path.join(out_dir, "sweep.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, style in (("bytes_payload_mean", "o-"), ("bytes_full_mean", "s--")):
        if key in rows[0]:
            ax.plot([r[key] for r in rows], [100 * r["top1"] for r in rows], style, label=key.replace("_mean", ""))
    for r in rows:
        ax.annotate(f"{field[0]}{r[field]:g}", (r.get("bytes_payload_mean", 0), 100 * r["top1"]), fontsize=7)
    ax.set_xlabel("bytes per sample (mean)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "sweep.png"), dpi=120)
    plt.close(fig)
