"""What every study's results share: typed rows, the one CSV writer, the results header, the operating
point rule, the statistics (mean ± sd over seeds, a paired bootstrap over test images, the goal
verdict), the tables every study prints and the one plot.

A `Row` is one measurement: a method at one setting of its declared grid, in one seed, on one
split; `side_info_bytes` is what the method sends once to every receiver (tables), beside the
per-sample `bytes`. Studies identify rows by these fields, never by parsing method names.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import os

import numpy as np

from bottlenet_jax.experiments import git_state, machine

SEEDS_FOR_A_CLAIM = 3


@dataclasses.dataclass(frozen=True)
class Row:
    method: str  # display name, e.g. "hyperprior"
    family: str  # what kind of method: "baseline" | "input" | "codec" | "learned" | ... (the spec's own set)
    setting: str  # one point of the method's grid, e.g. "q=30" or "λ=2e-4"
    seed: int
    split: str  # "validation" or "test"
    top1: float
    bytes: float  # mean per sample of the real payload
    examples: int
    side_info_bytes: int = 0  # sent once per model (tables), not per sample
    bytes_full: float = float("nan")
    rate_estimate_bytes: float = float("nan")

    def with_side_info(self, n: int) -> float:
        """Bytes per sample with the side information spread over `n` samples."""
        return self.bytes + self.side_info_bytes / n


def row(method, setting: str, seed: int, split: str, s: dict) -> Row:
    """A Row from an evaluation summary (evaluation.summarize_eval's keys)."""
    nan = float("nan")
    top1, nbytes, n = float(s["top1"]), float(s["bytes_payload_mean"]), int(s["examples"])
    extra = (
        int(s.get("side_info_bytes", 0)),
        float(s.get("bytes_full_mean", nan)),
        float(s.get("rate_estimate_bytes_mean", nan)),
    )
    return Row(method.name, method.family, setting, seed, split, top1, nbytes, n, *extra)


def write_rows(path: str, rows: list[Row]) -> None:
    """The one CSV writer: rows with Row's columns."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[fl.name for fl in dataclasses.fields(Row)])
        w.writeheader()
        w.writerows(dataclasses.asdict(r) for r in rows)


def read_rows(path: str) -> list[Row]:
    types = {f.name: f.type for f in dataclasses.fields(Row)}
    cast = {"int": int, "float": float, "str": str}
    with open(path) as f:
        return [Row(**{k: cast[types[k]](v) for k, v in r.items()}) for r in csv.DictReader(f)]


def header(title: str, command: str, commit=None, extra: list[str] = ()) -> list[str]:
    """The lines every results file starts with: title, command, commit, machine, date (+ extra)."""
    commit, dirty = commit or git_state()
    today = datetime.date.today().isoformat()
    dirty = " (with uncommitted changes)" if dirty else ""
    return [
        f"# {title}",
        "",
        f"- command: `{command.strip()}`",
        f"- commit: {commit}{dirty}",
        f"- machine: {machine()}",
    ] + [
        f"- date: {today}",
        *extra,
        "",
    ]


def operating_point(rows: list[Row], threshold: float) -> Row | None:
    """The cheapest row (bytes per sample) whose top-1 is at least `threshold`; None if none is.
    The rows are one method's grid in one seed on one split (the caller selects them)."""
    ok = [r for r in rows if r.top1 >= threshold - 1e-9]
    return min(ok, key=lambda r: (r.bytes, -r.top1)) if ok else None


def mean_sd(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(np.mean(v)), float(np.std(v, ddof=1)) if v.size > 1 else 0.0


def fmt(ms, scale=1.0, digits=2) -> str:
    return f"{scale * ms[0]:.{digits}f} ± {scale * ms[1]:.{digits}f}"


def paired_bootstrap(a, b, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over paired per-sample values and its 95 % percentile interval from `n`
    resamples of the samples (the same resample for both: the pairing is kept)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap: {a.shape} vs {b.shape} samples (must be the same test images)")
    d = a - b
    rng = np.random.default_rng(seed)
    means = np.array([d[rng.integers(0, d.size, d.size)].mean() for _ in range(n)])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def verdict(per_seed: dict, seeds, goal: float) -> str:
    """A goal on a ratio (smaller is better) judged on mean + 2 sd over seeds: "met" or "missed",
    and only with every seed present and at least SEEDS_FOR_A_CLAIM of them ("not judged" else)."""
    if len(seeds) < SEEDS_FOR_A_CLAIM:
        return f"not judged ({len(seeds)} seed(s); a claim needs {SEEDS_FOR_A_CLAIM})"
    if set(per_seed) != set(seeds):
        return f"missed ({len(per_seed)} of {len(seeds)} seeds have an operating point)"
    m, sd = mean_sd([per_seed[s] for s in seeds])
    return "met" if m + 2 * sd <= goal else "missed"


def baseline_top1(val: list[Row], seed=None) -> float:
    """A seed's bar: the best validation top-1 of the baseline family (the plain network, trained
    one way or two)."""
    return max(r.top1 for r in val if r.family == "baseline" and seed in (None, r.seed))


def table(columns: str, rows) -> list[str]:
    """A markdown table: `columns` separated by "|", then one line per row (cells, or a string)."""
    out = ["| " + columns.replace("|", " | ") + " |", "|---" * (columns.count("|") + 1) + "|"]
    return out + ["| " + (r if isinstance(r, str) else " | ".join(map(str, r))) + " |" for r in rows]


def tables(val: list[Row], test: list[Row], samples: dict, tolerance: float) -> list[str]:
    """The tables every study prints: thresholds, operating points (test), the paired bootstrap
    against the baseline, every setting on validation."""
    seeds, names = sorted({r.seed for r in val}), list(dict.fromkeys(r.method for r in val))
    n_test = max((r.examples for r in test), default=0)
    bar = {s: baseline_top1(val, s) for s in seeds}
    md = ["## Thresholds (validation)", ""]
    md += table(
        "seed|baseline validation top-1 %|threshold %",
        (f"{s} | {100 * b:.2f} | {100 * (b - tolerance):.2f}" for s, b in bar.items()),
    )
    ops = []
    for name in names:
        got = [r for r in test if r.method == name]
        ms = lambda f, **k: fmt(mean_sd([f(r) for r in got]), **k)  # noqa: E731
        if not got:
            gaps = [100 * (bar[s] - max(r.top1 for r in val if r.seed == s and r.method == name)) for s in seeds]
            ops.append(
                f"{name} | 0 of {len(seeds)} | none at the threshold (best validation top-1 "
                f"{fmt(mean_sd(gaps))} points below) | | | |"
            )
            continue
        ops.append(
            f"{name} | {len({r.seed for r in got})} of {len(seeds)} | {ms(lambda r: r.bytes, digits=1)} | "
            f"{ms(lambda r: r.side_info_bytes, digits=0)} | {ms(lambda r: r.with_side_info(n_test), digits=1)} | "
            f"{ms(lambda r: r.top1, scale=100)} | {', '.join(dict.fromkeys(r.setting for r in got))}"
        )
    md += ["", "## Operating points: chosen on validation, measured once on test", ""]
    md += table(
        "method|seeds|test bytes/sample|side info (B, once)|+ side info / test image|test top-1 %|settings", ops
    )
    boot = []
    for seed in seeds:
        s = samples.get(seed, {})
        base = next((v for (m, _), v in s.items() if m == "baseline"), None)
        for (m, lab), v in s.items() if base is not None else ():
            if v is not base:
                d, lo, hi = paired_bootstrap(v["top1"], base["top1"])
                boot.append(f"{seed} | {m} ({lab}) | {100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
    md += ["", "## Paired bootstrap over the test images (points, 2,000 resamples, 95 % interval)", ""]
    md += table("seed|method (setting)|top-1 − baseline", boot)
    md += [
        "",
        f"Within {100 * tolerance:g} point of the baseline: where the lower end is above −{100 * tolerance:g}.",
    ]
    every = []
    for name in names:
        for setting in dict.fromkeys(r.setting for r in val if r.method == name):
            rs = [r for r in val if r.method == name and r.setting == setting]
            est = [r.rate_estimate_bytes for r in rs if np.isfinite(r.rate_estimate_bytes)]
            ms = lambda f, **k: fmt(mean_sd([f(r) for r in rs]), **k)  # noqa: E731
            every.append(
                f"{name} | {setting} | {ms(lambda r: r.top1, scale=100)} | {ms(lambda r: r.bytes, digits=1)} | "
                f"{fmt(mean_sd(est), digits=1) if est else ''} | {ms(lambda r: r.side_info_bytes, digits=0)}"
            )
    md += ["", "## Every setting on validation (mean ± sd over seeds)", ""]
    return md + table("method|setting|top-1 %|bytes/sample|rate estimate (B)|side info (B)", every)


def plot(val: list[Row], test: list[Row], out: str) -> None:
    """The study's plot (plots.rate_accuracy): each method's validation curve, mean over seeds (for
    JPEG the cheapest tables at each q), its test operating points starred."""
    from bottlenet_jax.plots import rate_accuracy

    curves, stars = {}, {}
    for name in [n for n in dict.fromkeys(r.method for r in val) if n != "baseline"]:
        pts = {}
        for setting in dict.fromkeys(r.setting for r in val if r.method == name):
            rs = [r for r in val if r.method == name and r.setting == setting]
            p = (float(np.mean([r.bytes for r in rs])), 100 * float(np.mean([r.top1 for r in rs])))
            key = setting.split(" ")[0] if setting.startswith("q=") else setting  # one point per q
            pts[key] = min(pts.get(key, p), p)
        curves[name], stars[name] = list(pts.values()), [(r.bytes, 100 * r.top1) for r in test if r.method == name]
    seeds = sorted({r.seed for r in val})
    bar = 100 * np.mean([baseline_top1(val, s) for s in seeds]) if any(r.family == "baseline" for r in val) else None
    rate_accuracy(curves, stars, bar, os.path.join(out, "plot.png"))
