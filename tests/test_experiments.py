"""The experiments' table logic (no training): operating points, seed rows with the identity ablation."""

import ml_collections
import numpy as np

from bottlenet_jax import demo
from bottlenet_jax.experiments import lightweight, seeds


def lw_row(split, bits, loss, top1=0.8):
    return {"split": split, "bits/element (bytes)": bits, "loss vs baseline (pts)": loss, "top1": top1}


def test_operating_points_per_split():
    rows = [
        lw_row("RB1", 2.0, -0.1, 0.89),
        lw_row("RB1", 1.5, 0.4, 0.88),
        lw_row("RB1", 0.9, 2.4, 0.86),
        lw_row("RB1", 0.7, 8.0, 0.80),
        lw_row("RB8", 1.2, 0.2, 0.88),
        lw_row("RB8", 0.95, 0.8, 0.879),
        lw_row("RB8", 0.6, 3.0, 0.85),
    ]
    rb1, rb8 = lightweight.operating_points(rows)
    assert rb1["within_loss"]["bits/element (bytes)"] == 1.5  # cheapest under 1 point
    assert rb1["within_bits"]["bits/element (bytes)"] == 0.9  # most accurate at <= 1 bit
    assert not rb1["both"]
    assert rb8["within_loss"]["bits/element (bytes)"] == 0.95 and rb8["both"]
    (none,) = lightweight.operating_points([lw_row("RB4", 3.0, 5.0)])
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


def test_frontier_ratios_without_jpeg_framing():
    """JPEG's fixed framing comes off the JPEG methods' bytes only, and no operating point moves."""
    from bottlenet_jax.codecs.jfif import FRAMING_BYTES
    from bottlenet_jax.experiments import frontier

    def r(seed, method, setting, top1, nbytes):
        return {"seed": seed, "method": method, "setting": setting, "top1": top1, "bytes": nbytes}

    rows = []
    for seed, scale in ((0, 1.0), (1, 2.0)):
        rows += [
            r(seed, "baseline (raw image)", "", 0.90, 784.0),
            r(seed, frontier.INPUT, "q=50", 0.895, 227.0 * scale),
            r(seed, frontier.INPUT, "q=10", 0.80, 127.0),  # cheaper but too inaccurate: not the operating point
            r(seed, "BottleNet JPEG C'=2", "q=20", 0.899, 127.0),
            r(seed, "entropy bottleneck", "λ=0.0003", 0.891, 40.0),
        ]
    md = "\n".join(frontier.without_framing(rows))
    assert f"{FRAMING_BYTES} B of fixed framing" in md
    assert f"| entropy bottleneck / {frontier.INPUT} | {40 / (227 - FRAMING_BYTES):.3f} | " in md
    assert f"{40 / (454 - FRAMING_BYTES):.3f} |" in md
    assert f"| entropy bottleneck / BottleNet JPEG C'=2 | {40 / (127 - FRAMING_BYTES):.3f} | " in md
    assert frontier.operating_points(rows)[0][frontier.INPUT]["bytes"] == 227.0  # the rows are left as they were
