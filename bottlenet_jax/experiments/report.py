"""What every experiment's results share: typed rows, the one results header, CSV, the operating
point rule and the statistics (mean ± sd over seeds, a paired bootstrap over test images).

A `Row` is one measurement: a method at one setting of its declared grid, in one seed, on one
split; `side_info_bytes` is what the method sends once to every receiver (tables), beside the
per-sample `bytes`. Experiments identify rows by these fields, never by parsing method names.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import os

import numpy as np

from bottlenet_jax.experiments import git_state, machine


@dataclasses.dataclass(frozen=True)
class Row:
    method: str  # display name, e.g. "entropy bottleneck"
    family: str  # what kind of method: "baseline" | "input" | "split" | ... (the experiment's own set)
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


def write_rows(path: str, rows: list[Row]) -> None:
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
    return [
        f"# {title}",
        "",
        f"- command: `{command.strip()}`",
        f"- commit: {commit}{' (with uncommitted changes)' if dirty else ''}",
        f"- machine: {machine()}",
        f"- date: {datetime.date.today().isoformat()}",
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
