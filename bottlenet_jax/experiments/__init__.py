"""Reproduction runs that write results/ (each table names its command, commit, machine and date)."""
import subprocess


def git_state():
    """(short commit, True if tracked files differ from it)."""
    run = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
    return run("rev-parse", "--short", "HEAD") or "unknown", bool(run("status", "--porcelain", "--untracked-files=no"))
