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
        (["--config.dataset=no_such_dataset"], "not a TFDS dataset name"),
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
