"""Studies that write results/: one runner (runner.py), specs (specs/), reports (report.py); the
entry point is `python -m bottlenet_jax.experiments NAME` (__main__.py)."""

import os
import platform
import subprocess


def git_state():
    """(short commit, True if tracked files other than results/ differ from it). Results written by
    an earlier run and not yet committed are outputs, not code, so they do not mark a run dirty."""
    run = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
    dirty = run("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return run("rev-parse", "--short", "HEAD") or "unknown", bool(dirty)


def machine():
    """The machine line of a results header."""
    import jax

    return (
        f"{platform.node()} ({os.cpu_count()} CPU cores, {platform.machine()}, jax {jax.__version__} "
        f"on {jax.devices()[0].platform})"
    )
