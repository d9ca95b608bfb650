"""The one runner of every study: train what is missing -> every method's grid on validation (cached)
-> choose -> test once -> bootstrap -> write.

A study is a config (configs/experiments/NAME.py: its dataset, budget, seeds, grids, folders; its
docstring carries its command) naming a spec (experiments/specs/: which runs it trains, which
methods it compares, with their families and grids, and any tables of its own). The protocol:
  1. train   every run of every seed (the spec's `runs`): the run configs are the spec's, with the
             study's dataset keys and `overrides` applied; no test image is read in training (its
             final evaluation is on the validation split);
  2. validate  every method at every setting of its grid, declared before any run, on the
             validation split: top-1 and bytes (real streams, mean len() per image), cached per setting;
  3. choose  per seed the threshold is the best validation top-1 of the baseline family minus
             `tolerance`; a method's operating point is its cheapest setting at or above it (a
             method with selection "all", e.g. an environment sweep, has every setting read instead);
  4. test    the test split read once per seed, method and chosen setting: per-image correctness and
             bytes, kept for a paired bootstrap against the baseline;
  5. write   OUT/results.md (header: command, commit, machine, date; the generic tables, then the
             spec's), validation.csv, test.csv and plot.png.
Side information (tables sent once) is counted in bytes of its binary form. A run is `done` when
its workdir holds test.json under the same config; `--list` prints each run with its config hash
and state, `--only RUN` trains that run alone: a job array trains a study's runs on many machines
into one shared workdir, and a last call (no --only) evaluates (README.md, "Studies").
"""

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
    """One compared method: `family` groups rivals in the tables (the baseline family sets the bar);
    `grid` holds its settings as (label, setting) pairs, fixed before any run. A setting names the
    run it evaluates and what the evaluation changes: "codec" (a block or its overrides), "split"
    (overrides), "input" (the input image through {"format": "raw"|"jpeg"|"webp", "quality",
    "huffman"}, classified by the run's network). `selection`: "threshold" (the cheapest setting
    within the tolerance) or "all" (every setting read on test: conditions swept, nothing chosen)."""

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


def config_hash(cfg) -> str:
    return hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]


class Study:
    def __init__(self, cfg, command: str):
        self.cfg, self.command = cfg, command
        self.spec = spec_module(cfg.spec)
        self.seeds = list(cfg.seeds)[:1] if cfg.quick else list(cfg.seeds)
        self.workdir = cfg.workdir + ("_quick" if cfg.quick else "")
        self.out = cfg.out if not cfg.quick else os.path.join(self.workdir, "results")
        self.methods = self.spec.methods(cfg)
        if cfg.quick:  # toy size: two settings per grid
            self.methods = [dataclasses.replace(m, grid=m.grid[:2]) for m in self.methods]

    # -- runs
    def runs(self, seed: int) -> dict:
        """name -> (run config, workdir) of one seed: the spec's, with the study's data keys and
        overrides, and at toy size with `quick`."""
        out = {}
        wd = os.path.join(self.workdir, f"seed{seed}")
        for name, c in self.spec.runs(self.cfg, seed, wd).items():
            c = ml_collections.ConfigDict(c.to_dict())
            for k in DATA_KEYS:
                if k in self.cfg and self.cfg[k] is not None:
                    c[k] = self.cfg[k]
            c.model.num_classes = self.cfg.num_classes
            c.eval_split = c.validation_split  # no test image is read in training
            c.seed = seed
            cli.apply_overrides(c, self.cfg.overrides)
            if self.cfg.quick:
                c.num_train_steps, c.eval_examples, c.eval_every_steps = 3, 200, 3
                c.stage1_steps = min(c.stage1_steps, 1)
            out[name] = (c, os.path.join(wd, name))
        return out

    def plan(self) -> list[tuple[str, object, str]]:
        """Every run of every seed: (seed<k>/<name>, config, workdir), each checked (ConfigError)."""
        from bottlenet_jax.train_lib import validate_config

        plan = []
        for seed in self.seeds:
            for name, (c, wd) in self.runs(seed).items():
                validate_config(c)
                plan.append((f"seed{seed}/{name}", c, wd))
        return plan

    @staticmethod
    def state(c, wd: str) -> str:
        """ "missing", "started", "done", or "done under another config" (train_lib's resume rule:
        keys added since the run started, at their defaults, are not changes)."""
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
            state = self.state(c, wd)
            if state.startswith("done under"):
                raise ConfigError(f"{name}: {state}")
            if (only and name != only) or state == "done":
                continue
            print(f"### run {i + 1}/{len(plan)}: {name}", flush=True)
            train_lib.train_and_evaluate(c, wd)
            trained.append(name)
        return trained

    # -- evaluation
    def evaluate(self, seed: int, method: Method, setting: dict, split: str, samples: bool = False) -> dict:
        """One method at one setting on `split`: the evaluation summary (+ per-sample arrays)."""
        from bottlenet_jax.codecs import codec_settings
        from bottlenet_jax.evaluation import evaluate_workdir, input_images

        c, wd = self.runs(seed)[setting["run"]]
        c = ml_collections.ConfigDict(c.to_dict())
        if self.cfg.quick:
            c.eval_examples = 200
        inp = setting.get("input")
        if inp:
            fmt = inp.get("format", "raw")
            if fmt == "raw":
                return input_images(c, wd, [], split, samples=samples)[0]
            return input_images(c, wd, [inp["quality"]], split, inp.get("huffman", "default"), samples, fmt)[1]
        c.split.update(**setting.get("split", {}))
        block = dict(setting.get("codec", {}))
        if "name" in block:
            c.codec = ml_collections.ConfigDict(codec_settings(block.pop("name"), **block))
        else:
            c.codec.update(block)
        return evaluate_workdir(wd, c, split, (), True, samples)[0]

    def _cached(self, path: str, key, compute):
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            if saved["key"] == key:
                return saved["value"]
        value = compute()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump({"key": key, "value": value}, f)
        os.replace(path + ".tmp", path)
        return value

    def _path(self, seed: int, split: str, method: Method, label: str) -> str:
        return os.path.join(self.workdir, f"seed{seed}", split, f"{method.name}|{label}".replace("/", "_"))

    def validate(self, seed: int) -> list:
        """Every method at every setting of its grid on the validation split (cached per setting)."""
        split, rows = self.cfg.validation_split, []
        for m in self.methods:
            for label, setting in m.grid:
                key = [EVAL_VERSION, m.name, label, setting]
                compute = lambda: {k: v for k, v in self.evaluate(seed, m, setting, split).items() if k != "samples"}
                s = self._cached(
                    self._path(seed, "validation", m, label) + ".json", json.loads(json.dumps(key)), compute
                )
                rows.append(report.row(m, label, seed, "validation", s))
                print(
                    f"seed {seed} validation: {m.name} {label}: top-1 {s['top1']:.4f}, {s['bytes_payload_mean']:.1f} B",
                    flush=True,
                )
        return rows

    def choose(self, val: list) -> list:
        """The settings to read on test, one seed: (method, label) pairs (module docstring, step 3)."""
        threshold = report.baseline_top1(val) - self.cfg.tolerance
        out = []
        for m in self.methods:
            rows = [r for r in val if r.method == m.name]
            if m.selection == "all":
                out += [(m, r.setting) for r in rows]
            elif (r := report.operating_point(rows, threshold)) is not None:
                out.append((m, r.setting))
        return out

    def test_once(self, seed: int, chosen: list) -> tuple[list, dict]:
        """The test split at each chosen setting, once: rows and per-image arrays (npz cache)."""
        split = self.cfg.test_split
        rows, samples = [], {}
        for m, label in chosen:
            path = self._path(seed, "test", m, label)
            if not os.path.exists(path + ".npz"):
                s = self.evaluate(seed, m, dict(m.grid)[label], split, samples=True)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                np.savez(path + ".npz", **s.pop("samples"))
                with open(path + ".json", "w") as f:
                    json.dump(s, f)
            with open(path + ".json") as f:
                s = json.load(f)
            samples[(m.name, label)] = dict(np.load(path + ".npz"))
            rows.append(report.row(m, label, seed, "test", s))
        return rows, samples

    # -- the whole study
    def run(self, trained=()) -> str:
        t0 = time.time()
        val, test, samples = [], [], {}
        for seed in self.seeds:
            v = self.validate(seed)
            t, samples[seed] = self.test_once(seed, self.choose(v))
            val, test = val + v, test + t
        report.write_rows(os.path.join(self.out, "validation.csv"), val)
        report.write_rows(os.path.join(self.out, "test.csv"), test)
        extra = [
            f"- study: `{self.cfg.spec}` spec (bottlenet_jax/experiments/specs/{self.cfg.spec}.py); protocol: "
            "bottlenet_jax/experiments/runner.py (docstring)",
            f"- seeds {', '.join(map(str, self.seeds))}; wall {(time.time() - t0) / 60:.1f} min evaluating in this "
            f"invocation; runs trained in it: {', '.join(trained) or 'none (all trained before)'}",
            *self.spec.describe(self.cfg),
        ]
        md = report.header(self.spec.TITLE, self.command, extra=extra)
        md += report.tables(val, test, samples, self.cfg.tolerance)
        md += ["", *self.spec.tables(self.cfg, val, test)]
        os.makedirs(self.out, exist_ok=True)
        with open(os.path.join(self.out, "results.md"), "w") as f:
            f.write("\n".join(md) + "\n")
        report.plot(val, test, self.out)
        print("\n".join(md), flush=True)
        return self.out
