"""A rate–accuracy frontier a reviewer cannot tilt (Fashion-MNIST), over seeds.

    python -m bottlenet_jax.experiments.frontier [--seeds 0,1,2]      # train, validate, choose, test once
    python -m bottlenet_jax.experiments.frontier --train_only         # only train what is missing
    python -m bottlenet_jax.experiments.frontier --quick              # smoke test: toy steps, 1 seed
    python -m bottlenet_jax.experiments.frontier --recipe scratch     # every classifier trained from scratch

Protocol (experiments/frontier_runs.py declares the runs and every method's grid before any run):
  1. train  every classifier for the same number of epochs (a plain base network, then each model
            fine-tuned from it for the same budget; or, --recipe scratch, each trained from scratch for
            as long), selecting checkpoints on the validation split;
  2. validate  every method at every setting of its grid on the validation split (train[:5000],
            held out from training): top-1 and bytes (real streams, mean len() per image);
  3. choose  per seed, the threshold is the equally trained baseline's validation top-1 minus 1
            point (the better one where the plain network is trained both ways); a method's
            operating point is its cheapest setting at or above it (validation);
  4. test   the test split read once per seed and method, at the chosen setting only: per-image
            correctness and bytes, kept for a paired bootstrap against the baseline.
Side information (tables sent once: the entropy bottleneck's, fitted Huffman tables, the
lightweight quantiser's) is counted in bytes of its binary form and reported spread over the test
set. Writes OUT/results.md, validation.csv (every setting), test.csv (the chosen settings) and
frontier.png; WORKDIR/seed<k> caches each phase, so a re-run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import ml_collections
import numpy as np

from bottlenet_jax import cli
from bottlenet_jax.experiments import frontier_report
from bottlenet_jax.experiments.frontier_runs import LAMBDAS, QUALITIES, methods, run_configs
from bottlenet_jax.experiments.report import Row, operating_point, write_rows

TOLERANCE = 0.01  # "within 1 point of the baseline"
EVAL_VERSION = 1  # part of every cached evaluation's key: raise it when what an evaluation measures changes


def train(a, seed: int) -> list[str]:
    """Train the seed's runs that have not finished (test.json marks a finished run; its final
    evaluation is on the validation split). Returns the runs trained here."""
    from bottlenet_jax import train_lib

    done = []
    runs = run_configs(a, seed)
    for i, (name, (cfg, wd)) in enumerate(runs.items()):
        if os.path.exists(os.path.join(wd, "test.json")):
            continue
        print(f"### seed {seed}, run {i + 1}/{len(runs)}: {name}", flush=True)
        cli.guarded(train_lib.train_and_evaluate, cfg, wd)
        done.append(name)
    return done


def evaluate_setting(a, seed: int, method, params: dict, split: str, samples: bool = False) -> dict:
    """One method at one setting on `split`: the evaluation summary (+ per-sample arrays)."""
    from bottlenet_jax.codecs import codec_settings
    from bottlenet_jax.evaluation import evaluate_workdir, input_image_jpeg

    runs = run_configs(a, seed)
    cfg, wd = runs[params.get("run", method.run)]
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    if a.quick:
        cfg.eval_examples = 200
    if method.family == "baseline":  # the raw image (its bytes: the uint8 pixels)
        return input_image_jpeg(cfg, wd, [], split, "default", samples)[0]
    if method.family == "input":
        return input_image_jpeg(cfg, wd, [params["quality"]], split, params["huffman"], samples)[1]
    if method.family == "codec":
        h = params["huffman"]
        cfg.codec.update(quality=params["quality"], optimize=h == "optimize", fitted_tables=h == "fitted")
    elif method.family == "lightweight":
        cfg.split.update(after=1, unit=False)
        cfg.codec = ml_collections.ConfigDict(codec_settings("lightweight", fit_examples=a.calib, **params))
    return cli.guarded(evaluate_workdir, wd, cfg, split, (), True, samples)[0]


def row(method, setting: str, seed: int, split: str, s: dict) -> Row:
    return Row(
        method=method.name,
        family=method.family,
        setting=setting,
        seed=seed,
        split=split,
        top1=float(s["top1"]),
        bytes=float(s["bytes_payload_mean"]),
        examples=int(s["examples"]),
        side_info_bytes=int(s.get("side_info_bytes", 0)),
        bytes_full=float(s.get("bytes_full_mean", float("nan"))),
        rate_estimate_bytes=float(s.get("rate_estimate_bytes_mean", float("nan"))),
    )


def _cached(path: str, key, compute):
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved["key"] == key:
            return saved["value"]
    value = compute()
    with open(path + ".tmp", "w") as f:
        json.dump({"key": key, "value": value}, f)
    os.replace(path + ".tmp", path)
    return value


def validate(a, seed: int) -> list[Row]:
    """Every method at every setting of its grid on the validation split (cached per setting)."""
    split = run_configs(a, seed)["base"][0].validation_split
    out = []
    for m in methods(a):
        for setting, params in m.grid:
            path = os.path.join(a.workdir, f"seed{seed}", "validation", f"{m.name}|{setting}.json".replace("/", "_"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s = _cached(
                path,
                [EVAL_VERSION, m.name, setting, params],
                lambda: _plain(evaluate_setting(a, seed, m, params, split)),
            )
            out.append(row(m, setting, seed, "validation", s))
            print(
                f"seed {seed} validation: {m.name} {setting}: top-1 {s['top1']:.4f}, {s['bytes_payload_mean']:.1f} B",
                flush=True,
            )
    return out


def _plain(s: dict) -> dict:
    return {k: v for k, v in s.items() if k != "samples"}


def choose(val: list[Row]) -> dict:
    """{method: its operating point on validation (None: no setting within TOLERANCE)}, one seed."""
    threshold = frontier_report.baseline_top1(val) - TOLERANCE
    names = list(dict.fromkeys(r.method for r in val))
    return {m: operating_point([r for r in val if r.method == m], threshold) for m in names}


def test_once(a, seed: int, chosen: dict) -> tuple[list[Row], dict]:
    """The test split at each method's chosen setting, once: rows and per-image arrays (npz cache)."""
    split = cli.load_config_file(a.config, *a.overrides).eval_split  # the runs were evaluated on validation
    by_name = {m.name: m for m in methods(a)}
    rows, samples = [], {}
    for name, r in chosen.items():
        if r is None:
            continue
        m = by_name[name]
        params = dict(m.grid)[r.setting]
        path = os.path.join(a.workdir, f"seed{seed}", "test", f"{name}|{r.setting}".replace("/", "_"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path + ".npz"):
            s = evaluate_setting(a, seed, m, params, split, samples=True)
            np.savez(path + ".npz", **s.pop("samples"))
            with open(path + ".json", "w") as f:
                json.dump(s, f)
        with open(path + ".json") as f:
            s = json.load(f)
        samples[name] = dict(np.load(path + ".npz"))
        rows.append(row(m, r.setting, seed, "test", s))
    return rows, samples


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    floats = lambda s: [float(v) for v in s.split(",")]  # noqa: E731
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    p.add_argument("--config", default="configs/fashion_mnist_entropic_student.py", help="the entropy bottleneck")
    p.add_argument("--seeds", type=ints, default=[0, 1, 2])
    p.add_argument("--recipe", choices=("finetune", "scratch"), default="finetune", help="how the budget is spent")
    p.add_argument("--workdir", default="workdir/frontier_fair", help="+ _scratch for --recipe scratch")
    p.add_argument("--out", default=None, help="default results/fashion_mnist/frontier_fair[_scratch]")
    p.add_argument("--baseline_epochs", type=float, default=2.0)
    p.add_argument("--finetune_epochs", type=float, default=2.0)
    p.add_argument("--finetune_lr", type=float, default=0.05)
    p.add_argument("--lambdas", type=floats, default=list(LAMBDAS))
    p.add_argument("--qualities", type=ints, default=list(QUALITIES))
    p.add_argument("--input_jpeg_range", type=ints, default=[5, 95], help="training JPEG quality range (lo,hi)")
    p.add_argument("--jpeg_channels", type=int, default=2, help="C' of the paper's unit")
    p.add_argument("--calib", type=int, default=512, help="training images the lightweight codec calibrates on")
    p.add_argument("--train_only", action="store_true", help="train what is missing, then stop")
    p.add_argument("--quick", action="store_true", help="3 steps per run, 200 eval images, 1 seed, 2 points per grid")
    p.add_argument("--dry_run", action="store_true", help="build and check every run's config, then stop (no data)")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    overrides, rest = cli.split_overrides(argv)  # --config.KEY=VALUE: on --config, as everywhere
    a = p.parse_args(rest)
    a.overrides = overrides
    suffix = "_scratch" if a.recipe == "scratch" else ""
    if a.workdir == p.get_default("workdir"):
        a.workdir += suffix
    if a.quick:
        a.seeds, a.lambdas, a.qualities, a.workdir = a.seeds[:1], a.lambdas[:2], [10, 50], a.workdir + "_quick"
    a.out = a.out or (os.path.join(a.workdir, "results") if a.quick else "results/fashion_mnist/frontier_fair" + suffix)
    cli.setup_logging()
    from bottlenet_jax.experiments import git_state
    from bottlenet_jax.train_lib import validate_config

    a.commit = git_state()
    for seed in a.seeds:  # every config built and checked before any training
        for cfg, _ in cli.guarded(run_configs, a, seed).values():
            cli.guarded(validate_config, cfg)
    if a.dry_run:
        n = len(run_configs(a, a.seeds[0]))
        return print(f"dry run: {n} runs per seed x {len(a.seeds)} seeds, {len(methods(a))} methods, every config ok")
    t0 = time.time()
    trained = {seed: train(a, seed) for seed in a.seeds}
    if a.train_only:
        return print(f"trained {sum(map(len, trained.values()))} runs ({(time.time() - t0) / 60:.1f} min)")
    val, test, samples = [], [], {}
    for seed in a.seeds:
        v = validate(a, seed)
        t, samples[seed] = test_once(a, seed, choose(v))
        val, test = val + v, test + t
    write_rows(os.path.join(a.out, "validation.csv"), val)
    write_rows(os.path.join(a.out, "test.csv"), test)
    md = frontier_report.report(a, argv, val, test, samples, time.time() - t0, trained)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    frontier_report.plot(val, test, a.out)
    print("\n".join(md), flush=True)
    print(f"wrote {a.out}/results.md, validation.csv, test.csv, frontier.png ({(time.time() - t0) / 60:.1f} min)")


if __name__ == "__main__":
    main()
