"""Bad input to the entry points: exit code 2, one line `error: ...`, no traceback, nothing lost."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, env=None):
    p = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )
    lines = [l for l in p.stderr.splitlines() if l.startswith("error:")]
    return p, lines


@pytest.mark.parametrize(
    "extra, match",
    [
        pytest.param(  # TFDS's registry: TensorFlow, make test-slow's extra
            ["--config.dataset=no_such_dataset"], "not a TFDS dataset name", marks=pytest.mark.slow
        ),
        (["--config.codec.qualty=30"], "qualty"),
        (["--config.codec.quality=0"], "1..100"),
        (["--config.split.after=99"], "RB1..RB8"),
        (["--config.batch_size=6"], "multiple of the device count"),
    ],
)
def test_train_bad_config_is_one_line(tmp_path, extra, match):
    p, err = run("train.py", "--config=configs/mock.py", f"--workdir={tmp_path / 'wd'}", *extra)
    assert p.returncode == 2 and len(err) == 1 and match in err[0], p.stderr[-1500:]
    assert "Traceback" not in p.stderr


@pytest.mark.slow  # make test-slow (CI): keeps make test within its budget on 2 cores
def test_missing_config_file_and_missing_imagenet(tmp_path):
    p, err = run("train.py", "--config=configs/nope.py", f"--workdir={tmp_path}")
    assert p.returncode == 2 and len(err) == 1 and "Traceback" not in p.stderr
    p, err = run(
        "train.py",
        "--config=configs/resnet50_baseline.py",
        f"--workdir={tmp_path / 'wd'}",
        f"--config.data_dir={tmp_path / 'tfds'}",
    )
    assert p.returncode == 2 and len(err) == 1 and "ILSVRC2012" in err[0] and "manual" in err[0], p.stderr[-1500:]


@pytest.mark.slow  # trains a few steps first: make test-slow
def test_unreadable_checkpoint_is_reported_and_kept(tmp_path):
    bad = tmp_path / "wd" / "checkpoints" / "4"
    bad.mkdir(parents=True)
    (bad / "garbage").write_text("not a checkpoint")
    from helpers import write_tiny_fashion_mnist

    write_tiny_fashion_mnist(tmp_path)
    p, err = run(
        "train.py",
        "--config=configs/mock.py",
        f"--workdir={tmp_path / 'wd'}",
        "--config.dataset=fashion_mnist_local",
        f"--config.data_dir={tmp_path / 'tfds'}",
        env={"FASHION_MNIST_DIR": str(tmp_path)},
    )
    assert p.returncode == 2 and len(err) == 1 and "cannot restore" in err[0], p.stderr[-1500:]
    assert (bad / "garbage").read_text() == "not a checkpoint"  # nothing destroyed
    (tmp_path / "afile").write_text("x")
    p, err = run("train.py", "--config=configs/mock.py", f"--workdir={tmp_path / 'afile'}")
    assert p.returncode == 2 and "not a directory" in err[0] and (tmp_path / "afile").read_text() == "x"
    p, err = run("eval.py", f"--workdir={tmp_path / 'nothing'}")
    assert p.returncode == 2 and "config.json" in err[0]


def test_codec_switch_on_the_command_line_takes_that_codecs_own_settings(tmp_path):
    """--config.codec.name=awgn used to keep the JPEG block and fail on `codec.backend`."""
    p = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--config=configs/fashion_mnist_demo.py",
            f"--workdir={tmp_path / 'wd'}",
            "--config.codec.name=awgn",
            "--config.codec.sigma=0.1",
            "--dry_run",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert p.returncode == 0 and "codec awgn" in p.stdout, p.stderr[-1500:]
    from bottlenet_jax.cli import load_config_file

    cfg = load_config_file("configs/resnet50_bottlenetpp.py", "codec.p=0.02", "codec.name=bec")  # order-free
    assert cfg.codec.name == "bec" and cfg.codec.p == 0.02 and "sigma" not in cfg.codec


def test_tuple_and_list_overrides_keep_their_element_type():
    """`codec.sigma_range=0,0.1` used to become ('0', ',', '0', '.', '1')."""
    from bottlenet_jax.cli import load_config_file
    from bottlenet_jax.errors import ConfigError

    cfg = load_config_file("configs/fashion_mnist_bottlenetpp.py", "codec.sigma_range=0,0.1", "mean=(0.5)")
    assert cfg.codec.sigma_range == (0.0, 0.1) and all(isinstance(v, float) for v in cfg.codec.sigma_range)
    assert cfg.mean == (0.5,)
    cfg = load_config_file("configs/fashion_mnist_demo.py", "split.after=4", "codec.optimize=yes", "seed=3")
    assert (cfg.split.after, cfg.codec.optimize, cfg.seed) == (4, True, 3)
    for bad, match in (
        ("codec.sigma_range=0,x", "not a valid tuple"),
        ("split.after=two", "not a valid int"),
        ("model.widht=3", "not a key of model"),
        ("nope.x=1", "no config group"),
        ("model=3", "is a group"),
    ):
        with pytest.raises(ConfigError, match=match):
            load_config_file(
                "configs/fashion_mnist_bottlenetpp.py" if "sigma" in bad else "configs/fashion_mnist_demo.py", bad
            )


def test_one_override_syntax_for_train_the_demo_and_the_experiments():
    """train.py, the demo and every study take --config.KEY=VALUE the same way (cli.apply_overrides):
    a study's keys, and through `overrides` every run's."""
    from bottlenet_jax import demo
    from bottlenet_jax.experiments.__main__ import load
    from bottlenet_jax.experiments.runner import Study

    a = demo.parse(["--config.model.width=4", "--config.codec.quality=12", "--entropy_config="])
    base, bn = demo.configs(a.config, a)
    assert (base.model.width, bn.codec.quality) == (4, 12)
    cfg = load("frontier", ["recipe=finetune", "seeds=1", "overrides=split.hidden=4"])
    study = Study(cfg, "")
    runs = study.runs(1)
    assert study.seeds == [1] and {c.split.hidden for n, (c, _) in runs.items() if n.startswith("hyperprior")} == {4}
    assert {n: c.split.layers for n, (c, _) in runs.items() if not n.startswith(("entropy", "hyperprior"))} == {
        "base": 1,
        "baseline": 1,
        "input_jpeg": 1,
        "input_webp": 1,
        "jpeg_paper": 1,
        "jpeg_unit": 2,
    }
    assert all(c.num_epochs == cfg.finetune_epochs for n, (c, _) in runs.items() if n != "base")  # one budget
    assert {c.eval_split for c, _ in runs.values()} == {"train[:5000]"}  # no test image read in training
    assert (runs["input_webp"][0].train_input_format, runs["input_webp"][0].train_input_jpeg) == ("webp", (5, 95))
    # recipe scratch: the same total budget from scratch; the plain network trained both ways
    study = Study(load("frontier", []), "")
    runs = study.runs(0)
    total = cfg.baseline_epochs + cfg.finetune_epochs
    fresh = {n: (c.num_epochs, c.init_from, c.stage1_steps) for n, (c, _) in runs.items()}
    assert fresh.pop("base") == (cfg.baseline_epochs, "", 0)
    assert fresh.pop("baseline_finetuned")[:2] == (cfg.finetune_epochs, os.path.join(study.workdir, "seed0", "base"))
    assert set(fresh.values()) == {(total, "", 0)} and "hyperprior_l0.0004" in fresh and "jpeg_unit" in fresh
    baseline = next(m for m in study.methods if m.family == "baseline")
    assert [s["run"] for _, s in baseline.grid] == ["baseline", "baseline_finetuned"]
    with pytest.raises(SystemExit):  # a typo in a study key: one line, exit 2
        from bottlenet_jax.experiments.__main__ import main

        main(["frontier", "--config.seed=3", "--dry_run"])


def test_zero_intervals_and_bad_objectives_are_rejected_at_validation():
    """A step interval of 0 used to divide by zero in actions.py mid-run."""
    from bottlenet_jax.cli import load_config_file
    from bottlenet_jax.errors import ConfigError
    from bottlenet_jax.train_lib import validate_config

    for bad, match in (
        ("log_every_steps=0", "log_every_steps=0"),
        ("checkpoint_every_steps=0", "checkpoint_every_steps=0"),
        ("eval_every_steps=0", "eval_every_steps=0"),
        ("rate_lambda=0.001", "rate model"),
        ("optimizer=lamb", "sgd or adam"),
    ):
        with pytest.raises(ConfigError, match=match):
            validate_config(load_config_file("configs/fashion_mnist_demo.py", bad))
    assert "codec entropy" in validate_config(load_config_file("configs/fashion_mnist_entropy.py"))


def test_resuming_with_a_changed_config_is_refused_unless_accepted(tmp_path):
    """A workdir continued with another config used to be accepted silently (config.json is written once)."""
    import json

    from bottlenet_jax.cli import load_config_file
    from bottlenet_jax.errors import ConfigError
    from bottlenet_jax.train_lib import check_resume

    cfg = load_config_file("configs/fashion_mnist_demo.py")
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict(), default=str))
    check_resume(cfg, str(tmp_path), False)  # the same config: fine
    changed = load_config_file("configs/fashion_mnist_demo.py", "learning_rate=0.5", "codec.quality=50")
    with pytest.raises(ConfigError, match=r"differs in: codec.quality, learning_rate.*accept_config_changes"):
        check_resume(changed, str(tmp_path), False)
    check_resume(changed, str(tmp_path), True)
    assert json.loads((tmp_path / "config.json").read_text())["learning_rate"] == 0.5  # now the workdir's config
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("rate_lambda", "distill")}  # written before they existed
    (tmp_path / "config.json").write_text(json.dumps(old, default=str))
    check_resume(cfg, str(tmp_path), False)
    assert "distill" in json.loads((tmp_path / "config.json").read_text())  # the added keys written in


def test_setup_logging_drops_orbax_info_whichever_handler_prints():
    import logging as std

    import orbax.checkpoint  # noqa: F401  (installs a root StreamHandler outside absl.app)

    from bottlenet_jax.cli import setup_logging

    setup_logging()
    logger = std.getLogger("absl")

    def record(path, level):
        return logger.makeRecord("absl", level, path, 1, "msg", (), None)

    assert not logger.filter(record("/x/site-packages/orbax/checkpoint/manager.py", std.INFO))
    assert logger.filter(record("/x/site-packages/orbax/checkpoint/manager.py", std.WARNING))
    assert logger.filter(record("/x/bottlenet_jax/train_lib.py", std.INFO))
