"""The training loop's periodic work as small actions, each called after every step.

`train_lib.train` runs the step and hands `(step, state, metrics)` to each action; an action
decides itself whether it is due. This is the shape of `clu.periodic_actions` in Flax's ImageNet
example; clu's metric writers import TensorFlow, which training must not need, so the few actions
used here are written against tensorboardX and tqdm instead.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from tqdm.auto import tqdm

from bottlenet_jax.checkpoint import write_json


def every(n: int, last: int):
    """Due at multiples of `n` and at the last step."""
    return lambda step: step % n == 0 or step == last


def fmt(d: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


class Writer:
    """Scalars to TensorBoard (tensorboardX) from process 0; a no-op elsewhere."""

    def __init__(self, workdir: str):
        self._w = None
        if jax.process_index() == 0:
            from tensorboardX import SummaryWriter

            self._w = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def scalars(self, step: int, prefix: str, values: dict):
        if self._w:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self._w.add_scalar(f"{prefix}/{k}", v, step)

    def close(self):
        if self._w:
            self._w.close()


class ProgressBar:
    """One tqdm bar per epoch (process 0 only); other actions write through it."""

    def __init__(self, steps_per_epoch: int, total: int):
        self.steps_per_epoch, self.total, self._bar = steps_per_epoch, total, None

    def __call__(self, step, state, metrics):
        if self._bar is None:
            epoch = (step - 1) // self.steps_per_epoch
            self._bar = tqdm(
                total=min(self.steps_per_epoch, self.total - epoch * self.steps_per_epoch),
                initial=(step - 1) % self.steps_per_epoch,
                desc=f"epoch {epoch + 1}",
                unit="step",
                disable=jax.process_index() != 0,
                dynamic_ncols=True,
            )
        self._bar.update(1)
        if step % self.steps_per_epoch == 0:
            self.close()

    def write(self, text: str):
        (self._bar.write if self._bar is not None else tqdm.write)(text)

    def postfix(self, **values):
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class TrainMetrics:
    """Means of the train metrics over each logging window (+ img/s): to the bar and TensorBoard."""

    def __init__(self, due, batch_size: int, bar: ProgressBar, writer: Writer):
        self.due, self.batch_size, self.bar, self.writer = due, batch_size, bar, writer
        self._window, self._t0 = [], time.perf_counter()

    def __call__(self, step, state, metrics):
        self._window.append(metrics)
        if not self.due(step):
            return
        m = {k: float(np.mean([jax.device_get(w[k]) for w in self._window], dtype=np.float64)) for k in self._window[0]}
        m["img_per_s"] = len(self._window) * self.batch_size / (time.perf_counter() - self._t0)
        self.bar.postfix(
            loss=f"{m['loss']:.3f}",
            acc=f"{m['accuracy']:.3f}",
            img_s=f"{m['img_per_s']:.0f}",
            **({"B": f"{m['bytes_payload']:.0f}"} if "bytes_payload" in m else {}),
            **({"est_B": f"{m['rate_bits'] / 8:.0f}"} if "rate_bits" in m else {}),
        )
        self.writer.scalars(step, "train", m)
        self._window, self._t0 = [], time.perf_counter()


class Checkpoint:
    """Periodic saves; at an evaluation step `PeriodicEval` saves instead (with its metrics)."""

    def __init__(self, due, ckpt, meta_fn, unless=lambda step: False):
        self.due, self.ckpt, self.meta_fn, self.unless = due, ckpt, meta_fn, unless

    def __call__(self, step, state, metrics):
        if self.due(step) and not self.unless(step):
            self.ckpt.save(state, self.meta_fn(step))


class PeriodicEval:
    """Evaluate `split`, write eval_step_N.json and TensorBoard, and save a checkpoint; with
    `select` the save carries the top-1, so the checkpoint manager keeps the best one."""

    def __init__(
        self, due, evaluate, split: str, select: bool, ckpt, meta_fn, workdir: str, bar: ProgressBar, writer: Writer
    ):
        self.due, self.evaluate, self.split, self.select = due, evaluate, split, select
        self.ckpt, self.meta_fn, self.workdir, self.bar, self.writer = ckpt, meta_fn, workdir, bar, writer

    def __call__(self, step, state, metrics):
        if not self.due(step):
            return
        s = {"step": step, "split": self.split, **self.evaluate(state, self.split)}
        self.bar.write(fmt(s))
        self.writer.scalars(step, "validation" if self.select else "eval", s)
        if jax.process_index() == 0:
            write_json(os.path.join(self.workdir, f"eval_step_{step}.json"), s)
        self.ckpt.save(state, self.meta_fn(step), metrics={"top1": s["top1"]} if self.select else None)
