"""Train a BottleNet / split model.  python train.py --config=configs/fashion_mnist.py --workdir=DIR

Re-running with the same --workdir resumes from its newest checkpoint. Config values can be
overridden on the command line: --config.codec.quality=30 --config.split.after=4.
"""

from absl import app, flags
from ml_collections import config_flags

from bottlenet_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard logs and eval summaries go here.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from bottlenet_jax import train_lib
    from bottlenet_jax.actions import fmt

    summary = cli.guarded(train_lib.train_and_evaluate, FLAGS.config, FLAGS.workdir)
    print("final eval:", fmt(summary))


if __name__ == "__main__":
    cli.run(main)
