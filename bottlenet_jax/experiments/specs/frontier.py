"""The fair rate–accuracy frontier: learned codecs against every rival, equally trained (`recipe`):
  scratch   each classifier trained from scratch for baseline + finetune epochs (split models with
            their codec from the first step); the plain network also base + fine-tune: the better
            of the two sets the bar, so the recipe cannot lower it;
  finetune  a plain `base` for baseline_epochs, each run fine-tuned from it for finetune_epochs.
Runs: `baseline`; `input_jpeg`, `input_webp` (the plain network trained on its images through JPEG
/ WebP at a quality drawn per image); `jpeg_paper` (BottleNet, one strided conv, C' =
jpeg_channels) and `jpeg_unit` (the learned codecs' unit), JPEG in the loop; one run per λ of each
learned codec. Methods: the raw image; the input image as JPEG (q x Annex K / optimized / fitted
tables) and WebP, each classified by the baseline and by the network trained on it; BottleNet JPEG
on both units; the lightweight codec at RB1; each learned codec over its λ. Its tables: each
learned codec's bytes over the better rival of each family per seed, its verdict against `goals`
(mean + 2 sd, every seed), its rate estimate against len() on validation."""

from __future__ import annotations

import ml_collections

from bottlenet_jax import cli
from bottlenet_jax.errors import ConfigError
from bottlenet_jax.experiments import runner
from bottlenet_jax.experiments.report import fmt, mean_sd, table, verdict
from bottlenet_jax.experiments.runner import Method

TITLE = "The fair rate–accuracy frontier"
RIVALS = {"input": "the input image (best of JPEG and WebP, either classifier)", "codec": "BottleNet JPEG (best unit)"}
NETWORK = ("model", "image_size", "mean", "std", "dataset", "train_split", "validation_split")


def _copy(c):
    return ml_collections.ConfigDict(c.to_dict())


def runs(cfg, seed: int, wd: str) -> dict:
    from bottlenet_jax.codecs import codec_settings

    base = cli.load_config_file(cfg.base)
    plain = runner.plain(base, cfg.baseline_epochs)
    scratch = cfg.recipe == "scratch"
    if cfg.recipe not in ("scratch", "finetune"):
        raise ConfigError(f"recipe={cfg.recipe!r}: must be scratch or finetune")

    def trained(c, **split):
        c = _copy(c)
        c.split.update(**split)
        if scratch:  # the whole budget from scratch, the base network's schedule
            c.num_epochs, c.stage1_steps = cfg.baseline_epochs + cfg.finetune_epochs, 0
            return c
        c.init_from = f"{wd}/base"
        c.num_epochs, c.learning_rate, c.warmup_epochs = cfg.finetune_epochs, cfg.finetune_lr, 0.05
        c.stage1_steps = base.stage1_steps if split or c.split.after else 0
        return c

    out = {"base": plain, "baseline": trained(plain)}
    if scratch:
        out["baseline_finetuned"] = _copy(plain)
        out["baseline_finetuned"].update(
            init_from=f"{wd}/base", num_epochs=cfg.finetune_epochs, learning_rate=cfg.finetune_lr, warmup_epochs=0.05
        )
    for fmt_ in ("jpeg", "webp"):
        out[f"input_{fmt_}"] = trained(plain)
        out[f"input_{fmt_}"].update(train_input_jpeg=tuple(cfg.input_quality_range), train_input_format=fmt_)
    jpeg = codec_settings("jpeg", quality=30, quality_range=tuple(cfg.input_quality_range))
    paper = dict(after=base.split.after, unit=True, channels=cfg.jpeg_channels, kernel=2, stride=2, layers=1, hidden=0)
    out["jpeg_paper"] = trained(plain, **paper)
    out["jpeg_unit"] = trained(plain, **base.split.to_dict())
    for name in ("jpeg_paper", "jpeg_unit"):
        out[name].codec = ml_collections.ConfigDict(jpeg)
    for key, learned in cfg.learned.items():
        c = cli.load_config_file(learned.config)
        differ = [k for k in NETWORK if c[k] != base[k]]
        if differ:
            raise ConfigError(f"learned.{key}.config={learned.config}: its {differ[0]} is not the base config's")
        for lam in learned.lambdas:
            out[f"{key}_l{lam:g}"] = trained(c)
            out[f"{key}_l{lam:g}"].update(rate_lambda=lam)
            out[f"{key}_l{lam:g}"].distill.update(teacher="", feature_weight=0.0)
    return out


def methods(cfg) -> list[Method]:
    tables = ("default", "optimize", "fitted")
    jpeg = tuple(
        (f"q={q} {h}", {"input": {"format": "jpeg", "quality": q, "huffman": h}}) for h in tables for q in cfg.qualities
    )
    webp = tuple((f"q={q}", {"input": {"format": "webp", "quality": q}}) for q in cfg.webp_qualities)
    bottlenet = tuple(
        (f"q={q} {h}", {"codec": {"quality": q, "optimize": h == "optimize", "fitted_tables": h == "fitted"}})
        for h in tables
        for q in cfg.qualities
    )
    lw = lambda k, n, lam: {"name": "lightweight", "quantizer": k, "num_levels": n, "ecsq_lambda": lam}  # noqa: E731
    light = tuple(
        (
            f"{k} N={n}" + (f" λ={lam}b²" if k == "ecsq" else ""),
            {"split": {"after": 1, "unit": False}, "codec": lw(k, n, lam)},
        )
        for k, n, lam in cfg.lightweight
    )
    light = tuple((label, {**st, "codec": {**st["codec"], "fit_examples": cfg.calib}}) for label, st in light)
    plain = [("raw image", {"run": "baseline", "input": {"format": "raw"}})]
    if cfg.recipe == "scratch":
        plain += [("raw image, base + fine-tune", {"run": "baseline_finetuned", "input": {"format": "raw"}})]
    run = lambda grid, name: tuple((label, {"run": name, **s}) for label, s in grid)  # noqa: E731
    out = [
        Method("baseline", "baseline", tuple(plain)),
        Method("input image JPEG, baseline", "input", run(jpeg, "baseline")),
        Method("input image JPEG, trained on JPEG", "input", run(jpeg, "input_jpeg")),
        Method("input image WebP, baseline", "input", run(webp, "baseline")),
        Method("input image WebP, trained on WebP", "input", run(webp, "input_webp")),
        Method(f"BottleNet JPEG, paper unit C'={cfg.jpeg_channels}", "codec", run(bottlenet, "jpeg_paper")),
        Method("BottleNet JPEG, the learned codecs' unit", "codec", run(bottlenet, "jpeg_unit")),
        Method("lightweight RB1, no retraining", "lightweight", run(light, "baseline")),
    ]
    for key, learned in cfg.learned.items():
        grid = tuple((f"λ={lam:g}", {"run": f"{key}_l{lam:g}"}) for lam in learned.lambdas)
        out.append(Method(learned.name, "learned", grid))
    return out


def describe(cfg) -> list[str]:
    budget = f"{cfg.baseline_epochs:g} + {cfg.finetune_epochs:g} epochs per classifier, "
    budget += (
        "from scratch (the plain network also base + fine-tune: the better sets the bar)"
        if cfg.recipe == "scratch"
        else f"base + fine-tune (lr {cfg.finetune_lr:g})"
    )
    learned = "; ".join(
        f"{v.name} `{v.config}` λ {','.join(f'{x:g}' for x in v.lambdas)}" for v in cfg.learned.values()
    )
    return [
        f"- budget: {budget}; base network `{cfg.base}`",
        f"- grids (declared before the run): JPEG q {','.join(map(str, cfg.qualities))} x Huffman tables (Annex K, per "
        f"image, fitted); WebP q {','.join(map(str, cfg.webp_qualities))}; lightweight {len(cfg.lightweight)} "
        f"settings; {learned}",
        "- bytes: mean `len()` of real payloads (JPEG's abbreviated stream, WebP's VP8 frame); side info (tables "
        "sent once) in bytes of its binary form",
    ]


def ratios(test, learned: str, family: str, n_test: int, side: bool) -> dict:
    """{seed: (the learned method's bytes / the fewest bytes among `family`'s operating points, that rival)}."""
    out = {}
    for seed in sorted({r.seed for r in test}):
        rs = [r for r in test if r.seed == seed]
        mine = next((r for r in rs if r.method == learned), None)
        rivals = [r for r in rs if r.family == family]
        if mine is None or not rivals:
            continue
        cost = (lambda r: r.with_side_info(n_test)) if side else (lambda r: r.bytes)
        best = min(rivals, key=cost)
        out[seed] = (cost(mine) / cost(best), best)
    return out


def tables(cfg, val, test) -> list[str]:
    from bottlenet_jax.codecs.coding.rans import FIXED_BYTES

    seeds = sorted({r.seed for r in val})
    n_test = max((r.examples for r in test), default=0)
    learned = [v.name for v in cfg.learned.values()]
    rows = []
    for name in learned:
        for family, what in RIVALS.items():
            for side in (False, True):
                rs = ratios(test, name, family, n_test, side)
                v = {s: x for s, (x, _) in rs.items()}
                ms = mean_sd(list(v.values())) if v else (float("nan"), float("nan"))
                cells = [f"{rs[s][0]:.3f} ({rs[s][1].method}, {rs[s][1].setting})" if s in rs else "–" for s in seeds]
                goal = cfg.goals[family]
                rows.append(
                    [
                        name,
                        what,
                        "spread over the test set" if side else "not counted",
                        *cells,
                        fmt(ms, digits=3),
                        f"{ms[0] + 2 * ms[1]:.3f}",
                        f"≤ {goal:g}: {verdict(v, seeds, goal)}",
                    ]
                )
    md = ["## Each learned codec's bytes over its rivals' (test, at the operating points)", ""]
    md += table(
        "learned codec|over|side info|" + "|".join(f"seed {s}" for s in seeds) + "|mean ± sd|mean + 2 sd|goal", rows
    )
    md += [
        "",
        f"The aim beyond the goals: ≤ {cfg.aim:g}x the input image's bytes.",
        "",
        "## Rate estimate vs bytes sent (validation)",
        "",
    ]
    md += [
        f"Each learned codec's rate term at the values sent, + the stream's fixed cost ({FIXED_BYTES:g} B: rans.py), "
        "against the mean len() of its streams.",
        "",
    ]
    rows = []
    for name in learned:
        for setting in dict.fromkeys(r.setting for r in val if r.method == name):
            rs = [r for r in val if r.method == name and r.setting == setting]
            est, real = mean_sd([r.rate_estimate_bytes for r in rs]), mean_sd([r.bytes for r in rs])
            rows.append(
                f"{name} | {setting} | {fmt(est, digits=1)} | {est[0] + FIXED_BYTES:.1f} | {fmt(real, digits=1)} | "
                f"{(est[0] + FIXED_BYTES) / real[0]:.3f}"
            )
    md += table("learned codec|λ|rate estimate (B)|+ fixed cost|len() (B)|(estimate + fixed) / len()", rows)
    return md
