"""Train a BottleNet / split model.  python train.py --config=configs/fashion_mnist_demo.py --workdir=DIR

Re-running with the same --workdir resumes from its newest checkpoint (a config that differs from
the one the workdir was started with is refused unless --accept_config_changes). Config values are
overridden on the command line: --config.codec.quality=30 --config.split.after=4; a codec is swapped
with its own settings by --config.codec.name=awgn. --dry_run builds and checks everything, trains
nothing and needs no data.
"""

from absl import app, flags

from bottlenet_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "A configs/*.py file; override its keys with --config.KEY=VALUE.")
flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard logs and eval summaries go here.")
flags.DEFINE_bool("dry_run", False, "Build and validate the config and the model, then stop (no data, no training).")
flags.DEFINE_bool("accept_config_changes", False, "Resume a workdir although this config differs from its own.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from bottlenet_jax import train_lib
    from bottlenet_jax.actions import fmt

    cfg = cli.guarded(cli.load_config_file, FLAGS.config, *cli.OVERRIDES)
    if FLAGS.dry_run:
        print("dry run:", cli.guarded(train_lib.validate_config, cfg))
        return
    summary = cli.guarded(train_lib.train_and_evaluate, cfg, FLAGS.workdir, FLAGS.accept_config_changes)
    print("final eval:", fmt(summary))


if __name__ == "__main__":
    cli.run(main)
