"""The experiments' table logic (no training): operating points, seed rows with the identity ablation."""

import ml_collections
import numpy as np

from bottlenet_jax import demo
from bottlenet_jax.experiments import lightweight, seeds


def lw_row(split, bits, loss, top1=0.8):
    return {"split": split, "bits/element (bytes)": bits, "loss vs baseline (pts)": loss, "top1": top1}


def test_the_papers_points_per_split():
    rows = [
        lw_row("RB1", 2.0, -0.1, 0.89),
        lw_row("RB1", 1.5, 0.4, 0.88),
        lw_row("RB1", 0.9, 2.4, 0.86),
        lw_row("RB1", 0.7, 8.0, 0.80),
        lw_row("RB8", 1.2, 0.2, 0.88),
        lw_row("RB8", 0.95, 0.8, 0.879),
        lw_row("RB8", 0.6, 3.0, 0.85),
    ]
    rb1, rb8 = lightweight.paper_points(rows)
    assert rb1["within_loss"]["bits/element (bytes)"] == 1.5  # cheapest under 1 point
    assert rb1["within_bits"]["bits/element (bytes)"] == 0.9  # most accurate at <= 1 bit
    assert not rb1["both"]
    assert rb8["within_loss"]["bits/element (bytes)"] == 0.95 and rb8["both"]
    (none,) = lightweight.paper_points([lw_row("RB4", 3.0, 5.0)])
    assert none["within_loss"] is None and none["within_bits"] is None and not none["both"]


def demo_result(seed, base, bn, ident, inputs):
    return {
        "seed": seed,
        "baseline": {"top1": base},
        "bottlenet": {"top1": bn, "bytes_payload_mean": 120.0 + seed},
        "identity": {"top1": ident, "bytes_payload_mean": 150.0 + seed},
        "inputs": [{"q": None, "top1": base, "bytes_payload_mean": 784.0}]
        + [{"q": q, "top1": t, "bytes_payload_mean": 10.0 * q} for q, t in inputs],
        "matched": demo.matched(bn, [{"q": q, "top1": t, "bytes_payload_mean": 10.0 * q} for q, t in inputs]),
        "split_after": 1,
        "channels": 2,
        "quality": 30,
    }


def test_seed_rows_carry_the_identity_ablation_and_its_spread():
    rows = []
    for seed, ident in ((0, 0.80), (1, 0.84)):
        rows += seeds.per_seed_rows(demo_result(seed, 0.88, 0.86, ident, [(10, 0.83), (20, 0.87)]))
    summary = {r["method"]: r for r in seeds.summarise(rows)}
    ident = summary["BottleNet RB1 C'=2, identity-trained"]
    assert ident["n"] == 2 and ident["q"] == 30
    np.testing.assert_allclose(ident["top1_mean"], 0.82)
    np.testing.assert_allclose(ident["top1_sd"], np.std([0.80, 0.84], ddof=1))
    np.testing.assert_allclose(ident["bytes_mean"], 150.5)
    assert summary[seeds.MATCHED]["q"] == "20, 20"  # the cheapest input quality reaching 86 %, per seed


def test_identity_trained_config_differs_only_in_the_codec():
    bn = ml_collections.ConfigDict({"codec": {"name": "jpeg", "quality": 30}, "split": {"after": 1}, "seed": 3})
    ident = demo.identity_trained(bn)
    assert ident.codec.to_dict() == {"name": "identity"}
    assert bn.codec.name == "jpeg"  # the BottleNet config is left as it was
    assert {k: v for k, v in ident.items() if k != "codec"} == {k: v for k, v in bn.items() if k != "codec"}


def test_git_state_ignores_uncommitted_results_but_not_code(tmp_path, monkeypatch):
    import subprocess

    from bottlenet_jax.experiments import git_state

    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
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


def test_write_csv_takes_every_rows_columns(tmp_path):
    import csv

    from bottlenet_jax.experiments import write_csv

    write_csv(tmp_path / "r" / "x.csv", [{"method": "a", "top1": 0.9}, {"method": "b", "top5": 1.0, "top1": 0.8}])
    with open(tmp_path / "r" / "x.csv") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == ["method", "top1", "top5"]
    assert got[0]["top5"] == "" and got[1] == {"method": "b", "top1": "0.8", "top5": "1.0"}


def _row(method, family, setting, seed, split, top1, nbytes, side=0):
    from bottlenet_jax.experiments.report import Row

    return Row(method, family, setting, seed, split, top1, nbytes, 100, side)


def test_frontier_chooses_operating_points_on_validation_and_reads_test_once(monkeypatch, tmp_path):
    """A synthetic run where validation and test disagree: the threshold is the baseline's
    validation top-1 - 1 point, each method's operating point its cheapest validation setting at or
    above it, and the test split is evaluated once per method at that setting only, even where
    another setting would look cheaper within the threshold on test."""
    from bottlenet_jax.experiments import frontier, frontier_runs

    val = [
        _row("baseline", "baseline", "raw image", 0, "validation", 0.90, 784),
        _row("entropy bottleneck", "entropy", "λ=0.0004", 0, "validation", 0.885, 30),  # below 0.89
        _row("entropy bottleneck", "entropy", "λ=0.0002", 0, "validation", 0.893, 45),
        _row("entropy bottleneck", "entropy", "λ=0.0001", 0, "validation", 0.90, 60),
        _row("input image JPEG, baseline", "input", "q=10 default", 0, "validation", 0.70, 100),
    ]
    chosen = frontier.choose(val)
    assert chosen["entropy bottleneck"].setting == "λ=0.0002" and chosen["input image JPEG, baseline"] is None
    # the plain network trained two ways (--recipe scratch): the better one sets the bar
    two = val + [_row("baseline", "baseline", "raw image, base + fine-tune", 0, "validation", 0.904, 784)]
    raised = frontier.choose(two)
    assert raised["entropy bottleneck"].setting == "λ=0.0001" and raised["baseline"].top1 == 0.904
    evaluated = []

    def fake(a, seed, method, params, split, samples=False):
        evaluated.append((method.name, params.get("run", params.get("quality")), split))
        top1 = {"entropy_l0.0004": 0.91}.get(params.get("run"), 0.89)  # on test, 4e-4 would pass: never asked
        return {"top1": top1, "bytes_payload_mean": 44.0, "examples": 100, "samples": {"top1": np.ones(100, np.int8)}}

    monkeypatch.setattr(frontier, "evaluate_setting", fake)
    a = frontier.parser().parse_args(["--workdir", str(tmp_path), "--lambdas", "1e-4,2e-4,4e-4"])
    a.overrides = []
    every = frontier_runs.methods(a)
    monkeypatch.setattr(frontier, "methods", lambda a: [m for m in every if m.family in ("baseline", "entropy")])
    chosen = {m: r for m, r in chosen.items() if r is not None}
    rows, samples = frontier.test_once(a, 0, chosen)
    assert sorted(evaluated) == [("baseline", None, "test"), ("entropy bottleneck", "entropy_l0.0002", "test")]
    assert [r.split for r in rows] == ["test", "test"] and set(samples) == {"baseline", "entropy bottleneck"}
    frontier.test_once(a, 0, chosen)  # cached: the test split is not read again
    assert len(evaluated) == 2


def test_report_ratios_take_the_best_rival_and_spread_side_information():
    from bottlenet_jax.experiments import frontier_report
    from bottlenet_jax.experiments.report import mean_sd, operating_point, paired_bootstrap

    test = []
    for seed, k in ((0, 1.0), (1, 1.1)):
        test += [
            _row("entropy bottleneck", "entropy", "λ", seed, "test", 0.9, 30 * k, side=40_000),
            _row("input image JPEG, baseline", "input", "q=50 default", seed, "test", 0.9, 300),
            _row("input image JPEG, fine-tuned on JPEG", "input", "q=30 fitted", seed, "test", 0.9, 250, side=200),
            _row("BottleNet JPEG, paper unit C'=2", "codec", "q=20 fitted", seed, "test", 0.9, 90, side=200),
        ]
    plain = frontier_report.ratios(test, "entropy bottleneck", "input", 10_000, side=False)
    assert plain[0][0] == 30 / 250 and plain[0][1].method.endswith("fine-tuned on JPEG")  # the better rival
    spread = frontier_report.ratios(test, "entropy bottleneck", "codec", 10_000, side=True)
    assert abs(spread[1][0] - (33 + 4.0) / (90 + 0.02)) < 1e-9
    assert mean_sd([1.0, 3.0]) == (2.0, np.sqrt(2.0))
    rows = [_row("m", "x", s, 0, "validation", t, b) for s, t, b in (("a", 0.9, 50), ("b", 0.88, 20), ("c", 0.95, 80))]
    assert operating_point(rows, 0.89).setting == "a" and operating_point(rows, 0.99) is None
    d, lo, hi = paired_bootstrap(np.r_[np.ones(90), np.zeros(10)], np.ones(100))
    assert d == -0.1 and lo < -0.1 < hi < 0


def test_report_judges_the_goal_only_over_enough_seeds():
    """One seed's ratio under the goal is reported, not claimed: sd over one seed is no evidence."""
    import types

    from bottlenet_jax.experiments import frontier_report

    rows = []
    for split in ("validation", "test"):
        rows += [
            _row("baseline", "baseline", "raw image", 0, split, 0.90, 784),
            _row("entropy bottleneck", "entropy", "λ=0.0004", 0, split, 0.895, 10),
            _row("input image JPEG, baseline", "input", "q=50 fitted", 0, split, 0.895, 200, side=216),
            _row("BottleNet JPEG, paper unit C'=2", "codec", "q=20 fitted", 0, split, 0.895, 100, side=216),
        ]
    val = [r for r in rows if r.split == "validation"]
    test = [r for r in rows if r.split == "test"]
    a = types.SimpleNamespace(
        recipe="scratch",
        baseline_epochs=2.0,
        finetune_epochs=2.0,
        finetune_lr=0.05,
        config="c.py",
        qualities=[50],
        lambdas=[4e-4],
        commit=("abc", False),
    )
    md = "\n".join(frontier_report.report(a, [], val, test, {}, 60.0, {0: []}))
    assert "0.050" in md and "not judged (1 seed(s); a claim needs 3)" in md and "≤ 0.1 met" not in md
    assert "4 epochs from scratch" in md
