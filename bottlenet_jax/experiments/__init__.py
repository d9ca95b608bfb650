"""Reproduction runs that write results/ (each table names its command, commit, machine and date)."""

import csv
import os
import platform
import subprocess


def git_state():
    """(short commit, True if tracked files other than results/ differ from it). Results written by
    an earlier run and not yet committed are outputs, not code, so they do not mark a run dirty."""
    run = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
    dirty = run("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return run("rev-parse", "--short", "HEAD") or "unknown", bool(dirty)


def write_csv(path, rows):
    """rows (dicts) -> CSV at path, creating its directory; the columns are every key in the order
    it first appears (rows of different methods report different stats), empty where a row lacks it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)


def machine():
    """The machine line of a results header."""
    import jax

    return (
        f"{platform.node()} ({os.cpu_count()} CPU cores, {platform.machine()}, jax {jax.__version__} "
        f"on {jax.devices()[0].platform})"
    )
