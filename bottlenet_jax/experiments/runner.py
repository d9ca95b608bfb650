"""The one runner of every study. A study is a config (configs/experiments/NAME.py: dataset, budget,
seeds, grids, folders; its docstring carries its command) naming a spec (experiments/specs/: its
runs, its methods with families and grids, its own tables). The protocol:
  1. train     every run of every seed (the study's data keys and `overrides` applied); no test
               image is read in training (a run's final evaluation is on validation);
  2. validate  every method at every setting of its grid (declared before any run) on validation:
               top-1 and bytes (real streams, mean len() per image), cached per setting;
  3. choose    per seed, threshold = the baseline family's best validation top-1 - `tolerance`; a
               method's operating point is its cheapest setting at or above it (selection "all", a
               sweep of e.g. channel conditions, reads every setting: nothing is chosen);
  4. test      the test split read once per seed, method and chosen setting, per image kept for a
               paired bootstrap against the baseline;
  5. write     OUT/results.md (command, commit, machine, date; generic tables, then the spec's),
               validation.csv, test.csv, plot.png.
A run is done when its workdir holds test.json under the same config. `--list` / `--only RUN` let
a job array train a study's runs on many machines into one workdir (README.md, "Studies")."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import os
import time

import ml_collections
import numpy as np

from bottlenet_jax import cli
from bottlenet_jax.errors import ConfigError
from bottlenet_jax.experiments import report

# keys of a study config copied onto every run config (the dataset is the study's, not the run's)
DATA_KEYS = ("dataset", "data_dir", "train_split", "validation_split", "image_size", "mean", "std", "preprocess")
EVAL_VERSION = 2  # part of every cached evaluation's key: raise it when what an evaluation measures changes


@dataclasses.dataclass(frozen=True)
class Method:
    """One compared method: `family` groups rivals (the baseline family sets the bar); `grid` holds
    its settings, (label, setting) pairs fixed before any run: a setting names its "run" and what
    the evaluation changes (evaluation.evaluate_setting). `selection`: "threshold" (the cheapest
    setting within the tolerance) or "all" (every setting read on test: a sweep, nothing chosen)."""

    name: str
    family: str
    grid: tuple
    selection: str = "threshold"


def spec_module(name: str):
    """A spec by name (experiments/specs/NAME.py) or by the path of a file of one's own."""
    if name.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"_spec_{os.path.basename(name)[:-3]}", name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(f"bottlenet_jax.experiments.specs.{name}")
    except ModuleNotFoundError:
        raise ConfigError(f"spec={name!r}: no such spec (bottlenet_jax/experiments/specs/) or .py file") from None


def plain(base, epochs: float):
    """The plain network of a config (a path or a ConfigDict): no split, the identity codec, no rate
    term or first stage, trained for `epochs`: every spec's baseline."""
    from bottlenet_jax.codecs import codec_settings

    c = ml_collections.ConfigDict((cli.load_config_file(base) if isinstance(base, str) else base).to_dict())
    c.split.update(after=0, unit=False, layers=1, hidden=0)
    c.codec = ml_collections.ConfigDict(codec_settings("identity"))
    c.update(rate_lambda=0.0, stage1_steps=0, num_epochs=epochs)
    c.distill.update(teacher="", feature_weight=0.0)
    return c


def config_hash(cfg) -> str:
    return hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]


class Study:
    """A study config's runs and methods, and the protocol over them (module docstring). Keys a
    config may leave out (__main__.load sets them): quick, overrides, tolerance, test_split,
    workdir, out; the data keys (DATA_KEYS, num_classes: each run keeps its own)."""

    def __init__(self, cfg, command: str):
        self.cfg, self.command = cfg, command
        self.spec = spec_module(cfg.spec)
        self.quick, self.tolerance = bool(cfg.quick), float(cfg.tolerance)
        self.seeds = list(cfg.seeds)[:1] if self.quick else list(cfg.seeds)
        self.workdir = cfg.workdir + ("_quick" if self.quick else "")
        self.out = os.path.join(self.workdir, "results") if self.quick else cfg.out
        self.methods = self.spec.methods(cfg)
        if self.quick:  # toy size: two settings per grid
            self.methods = [dataclasses.replace(m, grid=m.grid[:2]) for m in self.methods]

    def runs(self, seed: int) -> dict:
        """name -> (run config, workdir) of one seed: the spec's, with the study's data keys and
        overrides, and at toy size with `quick`."""
        out = {}
        wd = os.path.join(self.workdir, f"seed{seed}")
        for name, c in self.spec.runs(self.cfg, seed, wd).items():
            c = ml_collections.ConfigDict(c.to_dict())
            for k in DATA_KEYS:
                if self.cfg.get(k) is not None:
                    c[k] = self.cfg[k]
            if self.cfg.get("num_classes"):
                c.model.num_classes = self.cfg.num_classes
            c.seed = seed
            cli.apply_overrides(c, self.cfg.overrides)
            c.eval_split = c.validation_split  # no test image is read in training
            if self.quick:
                c.num_train_steps, c.eval_examples, c.eval_every_steps = 3, 200, 3
                c.stage1_steps = min(c.stage1_steps, 1)
            out[name] = (c, os.path.join(wd, name))
        return self._used(out, wd) if self.quick else out

    def _used(self, runs: dict, wd: str) -> dict:
        """At toy size: the runs the trimmed grids evaluate and those they start from (init_from)."""
        keep, todo = set(), [s["run"] for m in self.methods for _, s in m.grid if "run" in s]
        while todo:
            if (name := todo.pop()) in runs and name not in keep:
                keep.add(name)
                todo.append(os.path.relpath(runs[name][0].get("init_from") or wd, wd))
        return {k: v for k, v in runs.items() if k in keep}

    def plan(self) -> list[tuple[str, object, str]]:
        """Every run of every seed: (seed<k>/<name>, config, workdir), each checked (ConfigError)."""
        from bottlenet_jax.train_lib import validate_config

        plan = [(f"seed{seed}/{n}", c, wd) for seed in self.seeds for n, (c, wd) in self.runs(seed).items()]
        for _, c, _ in plan:
            validate_config(c)
        return plan

    @staticmethod
    def state(c, wd: str) -> str:
        """missing, started, done, or done under another config (keys added since, at defaults: not)."""
        from bottlenet_jax.train_lib import config_changes, json_form

        if not os.path.exists(os.path.join(wd, "test.json")):
            return "started" if os.path.exists(os.path.join(wd, "config.json")) else "missing"
        with open(os.path.join(wd, "config.json")) as f:
            changed = config_changes(json.load(f), json_form(c.to_dict()))
        return "done" if not changed else f"done under another config ({', '.join(changed[:3])}): use a new workdir"

    def train(self, only: str = "") -> list[str]:
        """Train the runs not done (or only `only`); returns those trained here."""
        from bottlenet_jax import train_lib

        plan = self.plan()
        if only and only not in [n for n, _, _ in plan]:
            raise ConfigError(f"--only {only}: not a run of this study (see --list)")
        trained = []
        for i, (name, c, wd) in enumerate(plan):
            if (state := self.state(c, wd)).startswith("done under"):
                raise ConfigError(f"{name}: {state}")
            if (only and name != only) or state == "done":
                continue
            print(f"### run {i + 1}/{len(plan)}: {name}", flush=True)
            train_lib.train_and_evaluate(c, wd)
            trained.append(name)
        return trained

    def evaluate(self, seed: int, method: Method, setting: dict, split: str, samples: bool = False) -> dict:
        """One method at one setting on `split` (evaluation.evaluate_setting): the summary."""
        from bottlenet_jax.evaluation import evaluate_setting

        c, wd = self.runs(seed)[setting["run"]]
        c = ml_collections.ConfigDict(c.to_dict())
        if self.quick:
            c.eval_examples = 200
        return evaluate_setting(c, wd, {k: v for k, v in setting.items() if k != "run"}, split, samples)

    def measure(self, seed: int, m: Method, label: str, split: str, samples: bool = False) -> dict:
        """A setting's summary on `split`, computed once and kept in WORKDIR/seed<k>/<split>/ (with
        `samples`, the per-image arrays beside it: "samples"); recomputed if the setting changed."""
        path = os.path.join(self.workdir, f"seed{seed}", split, f"{m.name}|{label}".replace("/", "_"))
        key = json.loads(json.dumps([EVAL_VERSION, m.name, label, dict(m.grid)[label], split]))
        if os.path.exists(path + ".json") and (not samples or os.path.exists(path + ".npz")):
            with open(path + ".json") as f:
                saved = json.load(f)
            if saved["key"] == key:
                return {**saved["value"], **({"samples": dict(np.load(path + ".npz"))} if samples else {})}
        s = self.evaluate(seed, m, dict(m.grid)[label], split, samples)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if samples:
            np.savez(path + ".npz", **s["samples"])
        with open(path + ".json.tmp", "w") as f:
            json.dump({"key": key, "value": {k: v for k, v in s.items() if k != "samples"}}, f)
        os.replace(path + ".json.tmp", path + ".json")
        return s

    def validate(self, seed: int) -> list:
        """Every method at every setting of its grid on the validation split."""
        split = self.cfg.get("validation_split") or next(iter(self.runs(seed).values()))[0].validation_split
        rows = []
        for m in self.methods:
            for label, _ in m.grid:
                rows.append(report.row(m, label, seed, "validation", s := self.measure(seed, m, label, split)))
                print(f"seed {seed} validation: {m.name} {label}: {s['top1']:.4f}, {s['bytes_payload_mean']:.1f} B")
        return rows

    def choose(self, val: list) -> list:
        """The settings to read on test, one seed: (method, label) pairs (module docstring, step 3)."""
        threshold = report.baseline_top1(val) - self.tolerance
        out = []
        for m in self.methods:
            rows = [r for r in val if r.method == m.name]
            if m.selection == "all":
                out += [(m, r.setting) for r in rows]
            elif (r := report.operating_point(rows, threshold)) is not None:
                out.append((m, r.setting))
        return out

    def test_once(self, seed: int, chosen: list) -> tuple[list, dict]:
        """The test split at each chosen setting, once: rows and per-image arrays."""
        rows, samples = [], {}
        for m, label in chosen:
            samples[(m.name, label)] = (s := self.measure(seed, m, label, self.cfg.test_split, samples=True))["samples"]
            rows.append(report.row(m, label, seed, "test", s))
        return rows, samples

    def run(self, trained=()) -> str:
        t0 = time.time()
        val, test, samples = [], [], {}
        for seed in self.seeds:
            v = self.validate(seed)
            t, samples[seed] = self.test_once(seed, self.choose(v))
            val, test = val + v, test + t
        report.write_rows(os.path.join(self.out, "validation.csv"), val)
        report.write_rows(os.path.join(self.out, "test.csv"), test)
        spec = self.cfg.spec if self.cfg.spec.endswith(".py") else f"bottlenet_jax/experiments/specs/{self.cfg.spec}.py"
        extra = [
            f"- study: `{self.cfg.spec}` spec ({spec}); protocol: bottlenet_jax/experiments/runner.py (docstring)",
            f"- seeds {', '.join(map(str, self.seeds))}; wall {(time.time() - t0) / 60:.1f} min evaluating in this "
            f"invocation; runs trained in it: {', '.join(trained) or 'none (all trained before)'}",
            *self.spec.describe(self.cfg),
        ]
        md = report.header(self.spec.TITLE, self.command, extra=extra)
        md += report.tables(val, test, samples, self.tolerance)
        md += ["", *self.spec.tables(self.cfg, val, test)]
        with open(os.path.join(self.out, "results.md"), "w") as f:  # write_rows made the folder
            f.write("\n".join(md) + "\n")
        report.plot(val, test, self.out)
        print("\n".join(md), flush=True)
        return self.out
