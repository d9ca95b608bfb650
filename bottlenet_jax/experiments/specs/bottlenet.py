"""BottleNet's claim: JPEG on split features, trained with the codec in the loop, against the same
unit trained without it (`identity`), RB1 features JPEG'd without retraining (per-sample min-max,
8 B counted) and the input image; BottleNet at further split points at q_train. Runs: `baseline`
(from scratch); `rb1_jpeg`, `rb1_identity`, `rb<k>_jpeg` fine-tuned from it (stride 2 where the
features are even, else 1)."""

from __future__ import annotations

import ml_collections

from bottlenet_jax import cli
from bottlenet_jax.experiments import runner
from bottlenet_jax.experiments.runner import Method

TITLE = "BottleNet: JPEG on split features, trained with the codec in the loop"


def runs(cfg, seed: int, wd: str) -> dict:
    from bottlenet_jax.codecs import codec_settings
    from bottlenet_jax.models.resnet import size_after_block

    base = cli.load_config_file(cfg.base, *cfg.overrides)
    out = {"baseline": runner.plain(base, cfg.baseline_epochs)}

    def unit(k, codec, epochs):
        c = ml_collections.ConfigDict(base.to_dict())
        stride = 2 if size_after_block(c.image_size, c.model.depth, c.model.stem, k) % 2 == 0 else 1
        c.split.update(after=k, unit=True, channels=cfg.channels, kernel=2 if stride == 2 else 3, stride=stride)
        c.codec = ml_collections.ConfigDict(
            codec_settings(codec, **({"quality": cfg.q_train} if codec == "jpeg" else {}))
        )
        c.update(init_from=f"{wd}/baseline", num_epochs=epochs, learning_rate=cfg.finetune_lr, warmup_epochs=0.05)
        return c

    out["rb1_jpeg"] = unit(1, "jpeg", cfg.finetune_epochs)
    if cfg.identity:
        out["rb1_identity"] = unit(1, "identity", cfg.finetune_epochs)
    for k in cfg.split_points:
        if k != 1:
            out[f"rb{k}_jpeg"] = unit(k, "jpeg", cfg.split_epochs)
    return out


def methods(cfg) -> list[Method]:
    qs = tuple(cfg.qualities)
    jpeg = lambda run, **codec: tuple((f"q={q}", {"run": run, "codec": {**codec, "quality": q}}) for q in qs)  # noqa: E731
    out = [
        Method("baseline", "baseline", (("raw image", {"run": "baseline", "input": {"format": "raw"}}),)),
        Method(
            "input image JPEG",
            "input",
            tuple((f"q={q}", {"run": "baseline", "input": {"format": "jpeg", "quality": q}}) for q in qs),
        ),
        Method(
            "RB1 JPEG, no retraining",
            "codec",
            tuple(
                (label, {**s, "split": {"after": 1, "unit": False}})
                for label, s in jpeg("baseline", name="jpeg", minmax=True)
            ),
        ),
        Method("BottleNet RB1, JPEG-aware", "codec", jpeg("rb1_jpeg")),
    ]
    if cfg.identity:
        out.append(Method("BottleNet RB1, identity-trained", "codec", jpeg("rb1_identity", name="jpeg")))
    for k in cfg.split_points:
        if k != 1:
            grid = ((f"q={cfg.q_train}", {"run": f"rb{k}_jpeg", "codec": {"quality": cfg.q_train}}),)
            out.append(Method(f"BottleNet RB{k}, JPEG-aware", "split point", grid))
    return out


def describe(cfg) -> list[str]:
    return [
        f"- budget: baseline {cfg.baseline_epochs:g} epochs from scratch (`{cfg.base}`); RB1 units fine-tuned "
        f"{cfg.finetune_epochs:g}, other split points {cfg.split_epochs:g} (lr {cfg.finetune_lr:g})",
        f"- unit C'={cfg.channels}, q_train={cfg.q_train}",
        f"- grid: JPEG q {','.join(map(str, cfg.qualities))}; split points {','.join(map(str, cfg.split_points))}",
        "- bytes: mean `len()` of the abbreviated JPEG stream per image (tables fixed by q dropped on both sides)",
    ]


def tables(cfg, val, test) -> list[str]:
    return []
