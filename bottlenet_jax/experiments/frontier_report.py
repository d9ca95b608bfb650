"""The fair frontier's report: results.md and frontier.png from its validation and test rows."""

from __future__ import annotations


def report(a, argv, val, test, samples, wall, trained) -> list[str]:
    raise NotImplementedError("the report is written in the next step")


def plot(val, test, out) -> None:
    raise NotImplementedError
