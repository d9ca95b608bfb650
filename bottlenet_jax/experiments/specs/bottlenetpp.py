"""BottleNet++ under AWGN and binary erasures: with and without the channel condition fed to the
encoder (`awgn_cond`, `awgn_blind`, `bec_cond`, `bec_blind`, fine-tuned from `baseline` with
`base`'s recipe, C' = C / reduction), against the baseline's own features sent uncoded (min-max,
8-bit). The grid is the channel's conditions, swept (selection "all": test read once at each)."""

from __future__ import annotations

import ml_collections

from bottlenet_jax import cli
from bottlenet_jax.experiments import runner
from bottlenet_jax.experiments.runner import Method

TITLE = "BottleNet++ under AWGN and binary erasures"
FIELDS = {"awgn": "sigma", "bec": "p"}
VARIANTS = ("conditioned", "unconditioned", "no channel coding")


def _split_after(c, cfg) -> int:
    from bottlenet_jax.models.resnet import STAGE_SIZES

    return cfg.split_after or sum(STAGE_SIZES[c.model.depth])


def runs(cfg, seed: int, wd: str) -> dict:
    from bottlenet_jax.codecs import codec_settings
    from bottlenet_jax.models.resnet import channels_after_block

    base = cli.load_config_file(cfg.base, *cfg.overrides)
    out, k = {"baseline": runner.plain(cfg.baseline_config, cfg.baseline_epochs)}, _split_after(base, cfg)
    for ch in FIELDS:
        for cond in (True, False):
            c = ml_collections.ConfigDict(base.to_dict())
            width = max(1, channels_after_block(c.model.depth, c.model.width, k) // cfg.reduction)
            c.split.update(after=k, channels=width, condition=cond)
            c.codec = ml_collections.ConfigDict(codec_settings(ch, **cfg.train_condition[ch].to_dict()))
            c.init_from = f"{wd}/baseline"
            out[f"{ch}_{'cond' if cond else 'blind'}"] = c
    return out


def methods(cfg) -> list[Method]:
    k = _split_after(cli.load_config_file(cfg.base, *cfg.overrides), cfg)
    uncoded = {"run": "baseline", "split": {"after": k, "unit": False}}  # the baseline's own features
    out = [Method("baseline", "baseline", (("raw image", {"run": "baseline", "input": {"format": "raw"}}),))]
    for ch, field in FIELDS.items():
        for v, run in zip(VARIANTS, (f"{ch}_cond", f"{ch}_blind", None)):
            at = lambda x: (
                {"run": run, "codec": {field: x}}
                if run
                else {**uncoded, "codec": {"name": ch, "minmax": True, field: x}}
            )  # noqa: E731
            out.append(
                Method(f"{ch.upper()} {v}", ch, tuple((f"{field}={x:g}", at(x)) for x in cfg.conditions[ch]), "all")
            )
    return out


def describe(cfg) -> list[str]:
    return [
        f"- budget: baseline {cfg.baseline_epochs:g} epochs; channel models `{cfg.base}` fine-tuned from it (after "
        f"RB{cfg.split_after or 'last'}, C' = C / {cfg.reduction}), trained at {cfg.train_condition.to_dict()}",
        "- bytes: what enters the channel per sample (8-bit values for BEC; float32 channel uses for AWGN)",
    ]


def tables(cfg, val, test) -> list[str]:
    from bottlenet_jax.experiments.report import fmt, mean_sd, table

    md = []
    for ch, field in FIELDS.items():
        names = [f"{ch.upper()} {v}" for v in VARIANTS]
        top1 = lambda n, x: [r.top1 for r in test if r.method == n and r.setting == f"{field}={x:g}"]  # noqa: E731
        rows = [
            [f"{x:g}"] + [fmt(mean_sd(top1(n, x)), 100) if top1(n, x) else "–" for n in names]
            for x in cfg.conditions[ch]
        ]
        md += [
            f"## {ch.upper()}: test top-1 % against {field} (mean ± sd over seeds)",
            "",
            *table("|".join([field, *names]), rows),
            "",
        ]
    return md
