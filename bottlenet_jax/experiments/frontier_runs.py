"""The fair frontier's trained models and methods: what is trained, with which budget, and every
method's grid, declared here before any run (experiments/frontier.py runs them).

Per seed, in WORKDIR/seed<k>, every classifier gets the same budget: a plain network trained from
scratch for --baseline_epochs (`base`), then each of the following fine-tuned from it for
--finetune_epochs with the same schedule (so each has seen base + fine-tune epochs):
  baseline      the plain network, fine-tuned as it is (the equally trained baseline);
  input_jpeg    the plain network fine-tuned on its training images through JPEG at a quality
                drawn per image from --input_jpeg_range (the input comparator that knows JPEG);
  jpeg_paper    BottleNet at RB1 with the paper's unit (one strided conv, C'=--jpeg_channels) and
                JPEG in the loop, its quality drawn per step from --input_jpeg_range;
  jpeg_unit     the same with the entropy bottleneck's unit (--config's split: e.g. two convs);
  entropy_l<λ>  the learned entropy bottleneck (--config) at each rate_lambda of --lambdas.
Every split model has --config's first stage (stage1_steps: unit and codec only).

--recipe scratch gives every classifier the same budget another way: each is trained from scratch for
base + fine-tune epochs with the base network's schedule, the split models with their unit and codec
from the first step (no first stage: there is no pretrained cloud half to protect). The plain
network is trained both ways (`baseline` from scratch, `baseline_finetuned` = base + fine-tune), and
the better of the two on validation sets the threshold, so the recipe cannot lower the bar.
No test image is read while training: the runs' final evaluation is on the validation split.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from bottlenet_jax import cli

QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)  # JPEG's grid: steps of 10 (5 at the ends)
LAMBDAS = (5e-5, 1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3)  # the entropy bottleneck's grid: log, factor 2
HUFFMAN = ("default", "optimize", "fitted")  # JPEG's tables: Annex K, per image (sent), fitted to training (once)
# the lightweight codec on the baseline cut at RB1, no retraining: (quantizer, N, lambda / b^2)
LIGHTWEIGHT = (("uniform", 2, 0.0), ("uniform", 3, 0.0), ("uniform", 4, 0.0), ("uniform", 6, 0.0))
LIGHTWEIGHT += (("ecsq", 16, 0.1), ("ecsq", 16, 0.3))


@dataclasses.dataclass(frozen=True)
class Method:
    """One compared method: `family` says how a setting is evaluated (frontier.evaluate_setting),
    `grid` holds its settings as (label, parameters) pairs, fixed before any run."""

    name: str
    family: str  # baseline | input | codec | entropy
    run: str  # the trained run it evaluates (entropy: the run of each setting is in its parameters)
    grid: tuple


def run_configs(a, seed: int) -> dict:
    """name -> (config, workdir) of every trained run of one seed."""
    from bottlenet_jax.codecs import codec_settings

    wd = os.path.join(a.workdir, f"seed{seed}")
    ent = cli.load_config_file(a.config, *a.overrides)
    ent.seed = seed
    ent.eval_split = ent.validation_split  # no test image is read in training
    base = ml_collections.ConfigDict(ent.to_dict())
    base.split.update(after=0, unit=False, layers=1, hidden=0)
    base.codec = ml_collections.ConfigDict(codec_settings("identity"))
    base.rate_lambda, base.stage1_steps = 0.0, 0
    base.distill.update(teacher="", feature_weight=0.0)
    base.num_epochs = a.baseline_epochs
    runs = {"base": base}

    scratch = a.recipe == "scratch"

    def finetune(c, **split):
        c = ml_collections.ConfigDict(c.to_dict())
        if scratch:  # the whole budget from scratch, the base network's schedule
            c.num_epochs, c.stage1_steps = a.baseline_epochs + a.finetune_epochs, 0
            c.split.update(**split)
            return c
        c.init_from = os.path.join(wd, "base")
        c.num_epochs, c.learning_rate, c.warmup_epochs = a.finetune_epochs, a.finetune_lr, 0.05
        if split:
            c.split.update(**split)
            c.stage1_steps = ent.stage1_steps
        return c

    runs["baseline"] = finetune(base)
    if scratch:  # the plain network fine-tuned too: the better baseline sets the threshold
        runs["baseline_finetuned"] = ml_collections.ConfigDict(base.to_dict())
        runs["baseline_finetuned"].init_from = os.path.join(wd, "base")
        runs["baseline_finetuned"].update(num_epochs=a.finetune_epochs, learning_rate=a.finetune_lr, warmup_epochs=0.05)
    runs["input_jpeg"] = finetune(base)
    runs["input_jpeg"].train_input_jpeg = tuple(a.input_jpeg_range)
    jpeg = codec_settings("jpeg", quality=30, quality_range=tuple(a.input_jpeg_range))
    paper = dict(after=ent.split.after, unit=True, channels=a.jpeg_channels, kernel=2, stride=2, layers=1, hidden=0)
    runs["jpeg_paper"] = finetune(base, **paper)
    runs["jpeg_unit"] = finetune(base, **ent.split.to_dict())
    for name in ("jpeg_paper", "jpeg_unit"):
        runs[name].codec = ml_collections.ConfigDict(jpeg)
    for lam in a.lambdas:
        c = finetune(ent)
        c.rate_lambda = lam
        c.distill.update(teacher="", feature_weight=0.0)
        runs[f"entropy_l{lam:g}"] = c
    if a.quick:
        for c in runs.values():
            c.num_train_steps, c.eval_examples, c.eval_every_steps = 3, 200, 3
            c.stage1_steps = min(c.stage1_steps, 1)
    return {k: (c, os.path.join(wd, k)) for k, c in runs.items()}


def methods(a) -> list[Method]:
    """Every compared method and its grid (module docstring), in report order."""
    qs = tuple(a.qualities)
    jpeg_grid = tuple((f"q={q} {h}", {"quality": q, "huffman": h}) for h in HUFFMAN for q in qs)
    light = tuple(
        (f"{k} N={n}" + (f" λ={lam}b²" if k == "ecsq" else ""), {"quantizer": k, "num_levels": n, "ecsq_lambda": lam})
        for k, n, lam in LIGHTWEIGHT
    )
    plain = (("raw image", {}),)
    if a.recipe == "scratch":
        plain = (("raw image, from scratch", {}), ("raw image, base + fine-tune", {"run": "baseline_finetuned"}))
    return [
        Method("baseline", "baseline", "baseline", plain),
        Method("input image JPEG, baseline", "input", "baseline", jpeg_grid),
        Method("input image JPEG, fine-tuned on JPEG", "input", "input_jpeg", jpeg_grid),
        Method(f"BottleNet JPEG, paper unit C'={a.jpeg_channels}", "codec", "jpeg_paper", jpeg_grid),
        Method("BottleNet JPEG, entropy unit", "codec", "jpeg_unit", jpeg_grid),
        Method("lightweight RB1, no retraining", "lightweight", "baseline", light),
        Method(
            "entropy bottleneck",
            "entropy",
            "",
            tuple((f"λ={lam:g}", {"run": f"entropy_l{lam:g}"}) for lam in a.lambdas),
        ),
    ]
