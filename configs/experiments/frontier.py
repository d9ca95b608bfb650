"""The fair rate–accuracy frontier on Fashion-MNIST: the hyperprior and the factorized entropy
bottleneck against the input image (JPEG, WebP), BottleNet JPEG and the lightweight codec, every
classifier 4 epochs from scratch, 3 seeds (spec: bottlenet_jax/experiments/specs/frontier.py).

    python -m bottlenet_jax.experiments frontier                        # train, validate, choose, test once
    python -m bottlenet_jax.experiments frontier --list                 # its runs: name, config hash, done or not
    python -m bottlenet_jax.experiments frontier --only seed0/baseline  # one run (a job array's task)
    python -m bottlenet_jax.experiments frontier --config.quick=true    # toy size: 3 steps a run, 1 seed (CI)
    python -m bottlenet_jax.experiments frontier --config.recipe=finetune --config.workdir=workdir/frontier_ft \\
        --config.out=results/fashion_mnist/frontier_finetune --dry_run  # the budget spent as base + fine-tune
    python -m bottlenet_jax.experiments frontier --config.dataset=mnist --config.train_split=train[5000:] \\
        --config.validation_split=train[:5000] --config.mean=0.131 --config.std=0.308 --dry_run  # another dataset

Results (command, commit, machine, date in each): results/README.md.
"""

import ml_collections

from bottlenet_jax import cli


def get_config():
    base = "configs/fashion_mnist_entropic_student.py"
    net = cli.load_config_file(base)
    c = ml_collections.ConfigDict()
    c.spec = "frontier"
    c.base = base  # the network, data and schedule every run starts from
    # the data every run reads (copied onto each run config; override to run the study elsewhere)
    for k in ("dataset", "train_split", "validation_split", "image_size", "mean", "std", "preprocess"):
        c[k] = net[k]
    c.data_dir = ml_collections.config_dict.placeholder(str)
    c.test_split = net.eval_split  # read once per method, at its chosen setting
    c.num_classes = net.model.num_classes
    c.overrides = ()  # KEY=VALUE applied to every run config (e.g. batch_size=64)
    c.seeds = (0, 1, 2)
    c.recipe = "scratch"  # or "finetune" (specs/frontier.py)
    c.baseline_epochs, c.finetune_epochs, c.finetune_lr = 2.0, 2.0, 0.05
    c.tolerance = 0.01  # "within 1 point of the equally trained baseline"
    c.qualities = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)  # JPEG: steps of 10 (5 at the ends)
    c.webp_qualities = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)  # WebP: the same grid
    c.input_quality_range = (5, 95)  # the qualities the input-image classifiers and BottleNet train at
    c.jpeg_channels = 2  # C' of BottleNet's paper unit
    c.calib = 512  # training images the lightweight codec calibrates on
    c.lightweight = (("uniform", 2, 0.0), ("uniform", 3, 0.0), ("uniform", 4, 0.0), ("uniform", 6, 0.0))
    c.lightweight += (("ecsq", 16, 0.1), ("ecsq", 16, 0.3))
    lambdas = (5e-5, 1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3)  # one grid for both learned codecs: log, factor 2
    c.learned = ml_collections.ConfigDict(
        {
            "entropy": {"name": "entropy bottleneck", "config": base, "lambdas": lambdas},
            "hyperprior": {"name": "hyperprior", "config": "configs/fashion_mnist_hyperprior.py", "lambdas": lambdas},
        }
    )
    c.goals = ml_collections.ConfigDict({"input": 0.25, "codec": 0.5})  # bytes ratios, mean + 2 sd over seeds
    c.aim = 0.10
    c.workdir = "workdir/frontier"
    c.out = "results/fashion_mnist/frontier"
    c.quick = False
    return c
