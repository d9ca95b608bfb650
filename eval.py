"""Evaluate a trained workdir: top-1, top-5, bytes/sample (mean, median, p95) for both byte counts.

    python eval.py --workdir=DIR [--split=test] [--sweep=10,30,50,70,90] [--config.KEY=VALUE ...]

Uses the config saved in DIR (config.json), with any --config.KEY=VALUE overrides (e.g. the same
weights through another codec: --config.codec.name=jpeg --config.codec.quality=10), and its best
(else latest) checkpoint. --sweep re-uses the same weights at other codec settings (JPEG quality,
AWGN sigma, BEC p) and writes DIR/sweep/sweep.{csv,png}. --dry_run checks the flags, the saved
config and the overrides, then stops. A codec's fitted state (the entropy codec's tables, the
lightweight quantiser, fitted Huffman tables) is read from DIR/codec_state for the checkpoint and
the codec settings evaluated, where training's final test saved it; a missing one is fitted once on
the training split and saved there, so no later evaluation reads a training example.
"""

import os

from absl import app, flags

from bottlenet_jax import cli

flags.DEFINE_string("workdir", None, "A training workdir.")
flags.DEFINE_string("split", None, "Split to evaluate (default: the config's eval_split).")
flags.DEFINE_list("sweep", [], "Codec settings to evaluate with the same weights: JPEG quality, AWGN sigma or BEC p.")
flags.DEFINE_string("out", None, "Where the sweep CSV/PNG go (default: WORKDIR/sweep).")
flags.DEFINE_bool("dry_run", False, "Check the flags, the saved config and the overrides, then stop.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from bottlenet_jax.checkpoint import load_config
    from bottlenet_jax.errors import ConfigError
    from bottlenet_jax.evaluation import evaluate_workdir, sweep_field
    from bottlenet_jax.train_lib import validate_config

    try:
        values = [float(q) if any(ch in q for ch in ".eE") else int(q) for q in FLAGS.sweep]
    except ValueError:
        values = cli.guarded(_raise, ConfigError(f"--sweep={','.join(FLAGS.sweep)}: must be numbers"))
    if FLAGS.dry_run and not os.path.exists(os.path.join(FLAGS.workdir, "config.json")):
        print(f"dry run: flags parse; {FLAGS.workdir} holds no trained run here, so its config is not checked")
        return
    cfg = cli.guarded(load_config, FLAGS.workdir)
    cli.guarded(cli.apply_overrides, cfg, cli.OVERRIDES)
    if FLAGS.dry_run:
        sweeps = ["sweeps", cli.guarded(sweep_field, cfg)] if values else []
        print("dry run:", cli.guarded(validate_config, cfg), *sweeps)
        return
    rows = cli.guarded(evaluate_workdir, FLAGS.workdir, cfg, FLAGS.split, values)
    if values:
        from bottlenet_jax.plots import write_sweep

        out, field = FLAGS.out or os.path.join(FLAGS.workdir, "sweep"), sweep_field(cfg)
        title = f"{cfg.dataset} RB{cfg.split.after} (trained at {field}={cfg.codec.get(field)})"
        write_sweep(rows[1:], out, title, field)
        print(f"wrote {out}/sweep.csv and {out}/sweep.png")


def _raise(e):
    raise e


if __name__ == "__main__":
    cli.run(main)
