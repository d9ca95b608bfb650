"""The lightweight codec (no retraining) at several split points: where, at this scale, does the
paper's "< 1 point loss at <= 1 bit per element" hold? The baseline cut after RB k, no unit, its
features clipped, quantised (uniform N levels, or ECSQ N = 16 at λ / b²), range-coded; calibrated
on `calib` training images. Its table: bits per element at each operating point."""

from __future__ import annotations

from bottlenet_jax import cli
from bottlenet_jax.experiments import runner
from bottlenet_jax.experiments.runner import Method

TITLE = "The lightweight codec (no retraining) at several split points"


def runs(cfg, seed: int, wd: str) -> dict:

    return {"baseline": runner.plain(cfg.base, cfg.baseline_epochs)}


def methods(cfg) -> list[Method]:
    settings = [("uniform", n, 0.0) for n in cfg.uniform_levels] + [("ecsq", 16, lam) for lam in cfg.ecsq_lambdas]
    out = [Method("baseline", "baseline", (("raw image", {"run": "baseline", "input": {"format": "raw"}}),))]
    for k in cfg.split_points:
        grid = tuple(
            (
                f"{q} N={n}" + (f" λ={lam}b²" if q == "ecsq" else ""),
                {
                    "run": "baseline",
                    "split": {"after": k, "unit": False},
                    "codec": {
                        "name": "lightweight",
                        "quantizer": q,
                        "num_levels": n,
                        "ecsq_lambda": lam,
                        "fit_examples": cfg.calib,
                    },
                },
            )
            for q, n, lam in settings
        )
        out.append(Method(f"lightweight RB{k}", "lightweight", grid))
    return out


def describe(cfg) -> list[str]:
    return [
        f"- baseline: {cfg.baseline_epochs:g} epochs from scratch (`{cfg.base}`); calibration on {cfg.calib} training "
        f"images; uniform N {','.join(map(str, cfg.uniform_levels))}, ECSQ N=16 λ/b² "
        f"{','.join(map(str, cfg.ecsq_lambdas))}",
        "- bytes: mean `len()` of each sample's range-coded stream; the quantiser's tables are side information",
    ]


def tables(cfg, val, test) -> list[str]:
    from bottlenet_jax.models import feature_shape

    base = cli.load_config_file(cfg.base, *cfg.overrides)
    md = ["## Bits per element at the operating points (test)", "", "| split | elements | setting(s) | bits/element |"]
    md.append("|---|---|---|---|")
    for k in cfg.split_points:
        base.split.update(after=k, unit=False)
        n = 1
        for v in feature_shape(base):
            n *= v
        got = [r for r in test if r.method == f"lightweight RB{k}"]
        bits = ", ".join(f"{8 * r.bytes / n:.3f}" for r in got) or "no operating point"
        md.append(f"| RB{k} | {n} | {', '.join(r.setting for r in got) or '–'} | {bits} |")
    return md
