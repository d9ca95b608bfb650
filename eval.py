"""Evaluate a trained workdir: top-1, top-5, bytes/sample (mean, median, p95) for both byte counts.

    python eval.py --workdir=DIR [--split=test] [--sweep=10,30,50,70,90]

Uses the config saved in DIR (config.json) and its best (else latest) checkpoint. --sweep re-uses
the same weights at other codec settings (JPEG quality, AWGN sigma, BEC p) and writes
DIR/sweep/sweep.{csv,png}.
"""

from absl import app, flags

from bottlenet_jax import cli

flags.DEFINE_string("workdir", None, "A training workdir.")
flags.DEFINE_string("split", None, "Split to evaluate (default: the config's eval_split).")
flags.DEFINE_list("sweep", [], "Codec settings to evaluate with the same weights: JPEG quality, AWGN sigma or BEC p.")
flags.DEFINE_string("out", None, "Where the sweep CSV/PNG go (default: WORKDIR/sweep).")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from bottlenet_jax.errors import ConfigError
    from bottlenet_jax.evaluation import evaluate_workdir

    try:
        qualities = [float(q) if any(ch in q for ch in ".eE") else int(q) for q in FLAGS.sweep]
    except ValueError:
        cli.guarded(_raise, ConfigError(f"--sweep={','.join(FLAGS.sweep)}: must be numbers (JPEG quality, sigma or p)"))
    cli.guarded(evaluate_workdir, FLAGS.workdir, None, FLAGS.split, qualities, FLAGS.out)


def _raise(e):
    raise e


if __name__ == "__main__":
    cli.run(main)
