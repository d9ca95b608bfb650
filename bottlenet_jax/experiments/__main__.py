"""`python -m bottlenet_jax.experiments NAME [--config.KEY=VALUE ...] [--dry_run | --list | --only RUN |
--train_only]`: run a study. NAME is a config under configs/experiments/ (or its path): its docstring
is its command, its keys the study's dataset, budget, seeds, grids and folders, its `spec` what is
trained and compared (experiments/runner.py: the protocol). Overrides as train.py's, one-line errors."""

from __future__ import annotations

import argparse
import os
import sys

from bottlenet_jax import cli


def load(name: str, overrides):
    """The study config NAME (configs/experiments/NAME.py, or a path) with the runner's optional
    keys at their defaults where it leaves them out (runner.Study), then the overrides applied."""
    path = name if name.endswith(".py") else os.path.join("configs", "experiments", f"{name}.py")
    cfg = cli.load_config_file(path)
    stem = os.path.basename(path)[:-3]
    defaults = dict(quick=False, overrides=(), tolerance=0.01, test_split="test")
    defaults |= dict(workdir=f"workdir/{stem}", out=f"results/{stem}")
    for k, v in defaults.items():
        if k not in cfg:
            cfg[k] = v
    cli.apply_overrides(cfg, overrides)
    return cfg


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bottlenet_jax.experiments", description=__doc__.splitlines()[0])
    p.add_argument("name", help="a study: configs/experiments/NAME.py, or the path of a config")
    p.add_argument("--dry_run", action="store_true", help="check every run and method, then stop (no data)")
    p.add_argument("--list", action="store_true", help="print the runs: name, config hash, state")
    p.add_argument("--only", default="", help="train this run alone (seed<k>/<name>, from --list)")
    p.add_argument("--train_only", action="store_true", help="train every run not done, then stop")
    overrides, rest = cli.split_overrides(argv)
    a = p.parse_args(rest)
    from bottlenet_jax.experiments.runner import Study, config_hash

    cfg = cli.guarded(load, a.name, overrides)
    study = cli.guarded(Study, cfg, "python -m bottlenet_jax.experiments " + " ".join(argv))
    plan = cli.guarded(study.plan)
    if a.dry_run:
        n_settings = sum(len(m.grid) for m in study.methods)
        return print(
            f"dry run: {cfg.spec} study, {len(plan)} runs ({len(study.seeds)} seeds), {len(study.methods)} methods, "
            f"{n_settings} settings per seed; every config ok"
        )
    if a.list:
        for name, c, wd in plan:
            print(f"{name} {config_hash(c)} {study.state(c, wd)}")
        return
    cli.setup_logging()
    trained = cli.guarded(study.train, a.only)
    if a.only or a.train_only:
        return print(f"trained: {', '.join(trained) or 'nothing (done before)'}")
    out = cli.guarded(study.run, trained)
    print(f"wrote {out}/results.md, validation.csv, test.csv, plot.png")


if __name__ == "__main__":
    main()
