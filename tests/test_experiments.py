"""Studies (bottlenet_jax/experiments): the runner's protocol end to end on a fake study whose
validation and test disagree, the goal verdict, the frontier's tables, and the README's own small
study trained and evaluated on mock data."""

import os
import re
import subprocess
import sys

import ml_collections
import numpy as np

from bottlenet_jax import demo
from bottlenet_jax.experiments import report
from bottlenet_jax.experiments.report import Row

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAKE_SPEC = """
from bottlenet_jax.experiments.runner import Method
TITLE = "a fake study"
def runs(cfg, seed, wd):
    return {}
def methods(cfg):
    plain = (("raw image", {"run": "baseline"}),)
    grid = tuple((f"λ={v}", {"run": f"learned_{v}"}) for v in ("4e-4", "2e-4", "1e-4"))
    sweep = tuple((f"sigma={v}", {"run": "channel", "codec": {"sigma": v}}) for v in (0.0, 0.1))
    return [Method("baseline", "baseline", plain), Method("learned", "learned", grid),
            Method("hopeless", "learned", (("λ=1", {"run": "x"}),)), Method("channel", "awgn", sweep, "all")]
def describe(cfg):
    return ["- fake"]
def tables(cfg, val, test):
    return ["## its own table"]
"""


def test_the_runner_chooses_on_validation_and_reads_test_once(tmp_path, monkeypatch):
    """Validation and test disagree: on validation λ=2e-4 is the cheapest setting within 1 point of
    the baseline (90.0 %), on test λ=4e-4 would pass too. The runner picks λ=2e-4, reads the test
    split only there (and at the baseline, and at every condition of a sweep, selection "all"), a
    method with no setting at the threshold has none, and a second run reads nothing again."""
    from bottlenet_jax.experiments.runner import Study

    (tmp_path / "fake.py").write_text(FAKE_SPEC)
    cfg = ml_collections.ConfigDict(
        dict(spec=str(tmp_path / "fake.py"), seeds=(0,), workdir=str(tmp_path / "wd"), out=str(tmp_path / "out"))
    )
    cfg.update(validation_split="val", test_split="test", quick=False, tolerance=0.01, overrides=())
    top1 = {  # (setting, split) -> top-1
        ("raw image", "val"): 0.90,
        ("λ=4e-4", "val"): 0.885,
        ("λ=2e-4", "val"): 0.893,
        ("λ=1e-4", "val"): 0.90,
        ("λ=4e-4", "test"): 0.91,
        ("λ=2e-4", "test"): 0.89,
        ("raw image", "test"): 0.90,
        ("λ=1", "val"): 0.5,
    }
    nbytes = {"raw image": 784, "λ=4e-4": 30, "λ=2e-4": 45, "λ=1e-4": 60, "λ=1": 1}
    read = []

    def fake(self, seed, method, setting, split, samples=False):
        label = next(lab for lab, s in method.grid if s == setting)
        read.append((method.name, label, split))
        s = {"top1": top1.get((label, split), 0.8), "bytes_payload_mean": nbytes.get(label, 10.0), "examples": 100}
        return {**s, "samples": {"top1": (np.arange(100) < 100 * s["top1"]).astype(np.int8)}} if samples else s

    monkeypatch.setattr(Study, "evaluate", fake)
    study = Study(cfg, "python -m bottlenet_jax.experiments fake")
    study.run()
    tested = sorted((m, label) for m, label, split in read if split == "test")
    assert tested == [
        ("baseline", "raw image"),
        ("channel", "sigma=0.0"),
        ("channel", "sigma=0.1"),
        ("learned", "λ=2e-4"),
    ]
    assert len([r for r in read if r[2] == "val"]) == 7  # every setting of every grid, once
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| learned | 1 of 1 | 45.0 ± 0.0" in md and "| hopeless | 0 of 1 | none at the threshold" in md
    assert "## its own table" in md and "- fake" in md and (tmp_path / "out" / "plot.png").exists()
    test_rows = report.read_rows(str(tmp_path / "out" / "test.csv"))
    assert {(r.method, r.setting) for r in test_rows} == set(tested)
    read.clear()
    study.run()  # cached: neither split is read again
    assert read == []


def test_the_goal_verdict_needs_every_seed_and_mean_plus_two_sd():
    seeds = [0, 1, 2]
    assert report.verdict({0: 0.20, 1: 0.21, 2: 0.22}, seeds, 0.25) == "met"  # 0.21 + 2 * 0.01 = 0.23
    assert report.verdict({0: 0.10, 1: 0.21, 2: 0.30}, seeds, 0.25) == "missed"  # mean 0.20, + 2 sd 0.40
    assert report.verdict({0: 0.10, 1: 0.10}, seeds, 0.25).startswith("missed (2 of 3 seeds")
    assert report.verdict({0: 0.01}, [0], 0.25).startswith("not judged")


def _row(method, family, setting, seed, split, top1, nbytes, side=0, est=float("nan")):
    return Row(method, family, setting, seed, split, top1, nbytes, 10_000, side, rate_estimate_bytes=est)


def test_the_frontier_judges_each_learned_codec_against_the_better_rival_over_three_seeds():
    from bottlenet_jax.experiments.__main__ import load
    from bottlenet_jax.experiments.specs import frontier

    cfg = load("frontier", [])
    val, test = [], []
    for seed, k in ((0, 1.0), (1, 1.05), (2, 0.95)):
        for split in ("validation", "test"):
            rows = [
                _row("hyperprior", "learned", "λ=2e-4", seed, split, 0.90, 30 * k, side=4_000, est=27.4 * k),
                _row("entropy bottleneck", "learned", "λ=2e-4", seed, split, 0.90, 80 * k, est=200 * k),
                _row("input image JPEG, trained on JPEG", "input", "q=30 fitted", seed, split, 0.90, 180, side=216),
                _row("input image WebP, baseline", "input", "q=5", seed, split, 0.90, 150),
                _row("BottleNet JPEG, paper unit C'=2", "codec", "q=20 fitted", seed, split, 0.90, 120),
            ]
            (val if split == "validation" else test).extend(rows)
    md = "\n".join(frontier.tables(cfg, val, test))
    lines = {tuple(c.strip() for c in ln.split("|")[1:4]): ln for ln in md.splitlines() if ln.startswith("| ")}
    webp = lines[("hyperprior", frontier.RIVALS["input"], "not counted")]
    assert "0.200 (input image WebP, baseline, q=5)" in webp and "≤ 0.25: met" in webp  # 30/150, the better rival
    assert "≤ 0.25: missed" in lines[("entropy bottleneck", frontier.RIVALS["input"], "not counted")]  # 80/150
    assert "≤ 0.5: met" in lines[("hyperprior", frontier.RIVALS["codec"], "not counted")]  # 0.25
    spread = lines[("hyperprior", frontier.RIVALS["input"], "spread over the test set")]
    assert "0.203" in spread  # (30 + 4,000 / 10,000) / 150
    rate = next(ln for ln in md.splitlines() if ln.startswith("| hyperprior | λ=2e-4 | 27.4"))
    assert rate.endswith("| 0.997 |")  # (27.4 + 2.5) / 30


def test_identity_trained_config_differs_only_in_the_codec():
    bn = ml_collections.ConfigDict({"codec": {"name": "jpeg", "quality": 30}, "split": {"after": 1}, "seed": 3})
    ident = demo.identity_trained(bn)
    assert ident.codec.to_dict() == {"name": "identity"}
    assert bn.codec.name == "jpeg"  # the BottleNet config is left as it was
    assert {k: v for k, v in ident.items() if k != "codec"} == {k: v for k, v in bn.items() if k != "codec"}


def test_git_state_ignores_uncommitted_results_but_not_code(tmp_path, monkeypatch):
    from bottlenet_jax.experiments import git_state

    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "table.md").write_text("new\n")  # an earlier run's output, not yet committed
    commit, dirty = git_state()
    assert len(commit) >= 7 and not dirty
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state()[1]


def test_rows_read_back_as_written(tmp_path):
    rows = [_row("m", "x", "q=10", 0, "test", 0.9, 12.5, side=3), _row("n", "y", "λ=1", 1, "validation", 0.5, 1.0)]
    report.write_rows(str(tmp_path / "r" / "rows.csv"), rows)
    back = report.read_rows(str(tmp_path / "r" / "rows.csv"))
    assert back[0].top1 == 0.9 and back[0].side_info_bytes == 3 and back[1].setting == "λ=1"
    assert np.isnan(back[1].rate_estimate_bytes) and back[0].with_side_info(3) == 13.5
    assert report.operating_point(back, 0.4).method == "n" and report.operating_point(back, 0.95) is None
    d, lo, hi = report.paired_bootstrap(np.r_[np.ones(90), np.zeros(10)], np.ones(100))
    assert d == -0.1 and lo < -0.1 < hi < 0


def readme_study() -> dict:
    """The README's how-to: its spec and config, as written there (file name -> text)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    blocks = re.findall(r"```python\n# (studies/\w+\.py)\n(.*?)```", text, re.S)
    assert len(blocks) == 2, [name for name, _ in blocks]
    return dict(blocks)


def test_the_readme_study_trains_and_evaluates_on_mock_data(tmp_path):
    """Adding a study is a spec and a config (README.md, "Studies"): the README's own, at toy size,
    on mock records, through `python -m bottlenet_jax.experiments`, end to end."""
    from helpers import write_tiny_records

    for name, text in readme_study().items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "configs").symlink_to(os.path.join(ROOT, "configs"))  # the study's base config, as in a checkout
    data = tmp_path / "data"
    write_tiny_records(data, n_train=48, n_test=16, size=28)
    mock = ["dataset=tiny_records", f"data_dir={data}", "train_split=train[16:]", "validation_split=train[:16]"]
    args = [
        "studies/my_config.py",
        "--config.quick=true",
        f"--config.workdir={tmp_path / 'wd'}",
        "--config.test_split=test",
        "--config.widths=4,",  # one unit width: the baseline and one BottleNet run
        "--config.overrides=" + ",".join(mock + ["eval_batch_size=8", "batch_size=8"]),
    ]
    env = {**os.environ, "PYTHONPATH": ROOT}
    p = subprocess.run(
        [sys.executable, "-m", "bottlenet_jax.experiments", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    md = (tmp_path / "wd_quick" / "results" / "results.md").read_text()
    assert "# BottleNet at two unit widths" in md and "| BottleNet C'=4 |" in md and "C'=2" not in md
    assert "- study: `studies/my_study.py` spec (studies/my_study.py);" in md  # its own file, not specs/'s
    listed = subprocess.run(
        [sys.executable, "-m", "bottlenet_jax.experiments", *args, "--list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert [ln.split()[-1] for ln in listed.stdout.splitlines()] == ["done"] * 2, listed.stdout + listed.stderr
