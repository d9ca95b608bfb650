"""Orbax checkpoints in --workdir: periodic keep-N, best-by-eval-top1, automatic resume.

Layout:  workdir/checkpoints/<step>/{state,meta}   the latest `keep_checkpoints` saves
         workdir/best/<step>/{state,meta}          the save with the highest eval top-1
         workdir/codec_state/<step>-<fingerprint>/{state,meta.json}   a codec's fitted state
`state` holds params, BN statistics, optimizer state, step and RNG; `meta` (JSON) the data
position (examples consumed; the pipeline is deterministic, so step * batch fixes it), the eval
metrics and the config. A codec's state (codecs/base.py: fitted once after training) is kept per
checkpoint step and codec settings (the fingerprint: a hash of them), so evaluating the same
weights through another codec never reads a state fitted for the first. Nothing here ever deletes
a directory it did not create.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import flax
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from bottlenet_jax import parallel
from bottlenet_jax.errors import CheckpointError
from bottlenet_jax.steps import TrainState

# Orbax's replica-parallel save (its default off GPU) has each device that holds a replicated array
# write a slice of it: that parallelises writing a large array, but every slice is a compiled program
# per shape and device, and a small array gains nothing. A 3-step Fashion-MNIST run on 4 CPU devices
# compiled 72 of them at its first save (12 s of its 51). So only arrays of at least 1 MiB a replica
# are split (a ResNet-50's largest kernels on 8 replicas still are). Orbax keeps one registry per
# process: this replaces its jax.Array handler, with orbax's own defaults otherwise (its warning that
# it did so, on every import, is silenced: it is this line's intent).
REPLICA_SLICE_MIN_BYTES = 1 << 20
_absl_level = logging.getLogger("absl").level
logging.getLogger("absl").setLevel(logging.ERROR)
try:
    ocp.type_handlers.register_type_handler(
        jax.Array,
        ocp.type_handlers.ArrayHandler(
            array_metadata_store=getattr(ocp.type_handlers.get_type_handler(jax.Array), "_array_metadata_store", None),
            min_slice_bytes_for_replica_parallel=REPLICA_SLICE_MIN_BYTES,
        ),
        override=True,
    )
finally:
    logging.getLogger("absl").setLevel(_absl_level)


def _abstract(state):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), state)


def _mp(name: str):
    return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)


class Checkpoints:
    def __init__(self, workdir: str, keep: int = 3):
        self.root = os.path.abspath(workdir)
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise CheckpointError(f"workdir={workdir}: exists and is not a directory")
        for sub in ("checkpoints", "best"):
            p = os.path.join(self.root, sub)
            if os.path.exists(p) and not os.access(p, os.R_OK | os.W_OK | os.X_OK):
                raise CheckpointError(f"{p}: checkpoint directory is not readable/writable")
        try:
            # Both managers save the same step; across processes each needs barriers of its own name
            # (with the default names, concurrent saves collided: "Barrier _async_write_complete.2
            # is already ongoing", and the run hung at exit).
            self.latest = ocp.CheckpointManager(
                os.path.join(self.root, "checkpoints"),
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=keep, create=True, multiprocessing_options=_mp("latest")
                ),
            )
            self.best = ocp.CheckpointManager(
                os.path.join(self.root, "best"),
                options=ocp.CheckpointManagerOptions(
                    multiprocessing_options=_mp("best"),
                    max_to_keep=1,
                    create=True,
                    best_fn=lambda m: m["top1"],
                    best_mode="max",
                    keep_checkpoints_without_metrics=False,
                ),
            )
        except (OSError, ValueError) as e:
            raise CheckpointError(f"workdir={workdir}: cannot open checkpoints ({type(e).__name__}: {e})") from None

    @staticmethod
    def _args(state, meta):
        return ocp.args.Composite(
            state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)), meta=ocp.args.JsonSave(meta)
        )

    def save(self, state, meta: dict, metrics: dict | None = None) -> None:
        step = int(jax.device_get(state.step))
        if self.latest.latest_step() != step:
            self.latest.save(step, args=self._args(state, meta))
        if metrics is not None:
            self.best.save(step, args=self._args(state, {**meta, "metrics": metrics}), metrics=metrics)

    def wait(self):
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def restore(self, target, which: str = "latest"):
        """(state, meta) of the newest ("latest") or the best-eval ("best") save, into the
        structure/shardings of `target`; (None, None) when there is none."""
        mgr = self.latest if which == "latest" else self.best
        step = mgr.latest_step() if which == "latest" else mgr.best_step()
        if step is None:
            return None, None
        try:
            got = mgr.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(_abstract(flax.serialization.to_state_dict(target))),
                    meta=ocp.args.JsonRestore(),
                ),
            )
        except Exception as e:
            raise CheckpointError(
                f"{mgr.directory}/{step}: cannot restore ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})"
            ) from None
        return flax.serialization.from_state_dict(target, got.state), dict(got.meta)

    def restore_raw(self) -> dict:
        """The best (else latest) saved state as a plain dict, no target needed (for init_from)."""
        mgr = self.best if self.best.latest_step() is not None else self.latest
        step = mgr.best_step() if mgr is self.best else mgr.latest_step()
        if step is None:
            raise CheckpointError(f"{self.root}: holds no checkpoint")
        try:
            return mgr.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
            ).state
        except Exception as e:
            raise CheckpointError(f"{mgr.directory}/{step}: cannot restore ({type(e).__name__})") from None

    def close(self):
        self.wait()
        self.latest.close()
        self.best.close()


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a training run saved in its workdir (config.json)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: not found (is --workdir a training workdir?)")
    with open(path) as f:
        cfg = json.load(f)
    from bottlenet_jax.codecs import upgrade_settings  # configs saved before codecs owned their settings

    cfg["codec"] = upgrade_settings(cfg.get("codec", {"name": "identity"}))
    return ml_collections.ConfigDict(cfg)


def load_eval_state(workdir: str, mesh) -> TrainState:
    """Params + BN statistics of the best (else latest) checkpoint; no optimizer needed."""
    raw = Checkpoints(workdir).restore_raw()
    state = TrainState(
        step=jnp.asarray(raw["step"]),
        params=raw["params"],
        batch_stats=raw.get("batch_stats", {}),
        opt_state=None,
        rng=jnp.asarray(raw["rng"]),
    )
    return parallel.replicate(state, mesh)


def read_tree(path: str):
    """Restore a bare pytree saved by `write_tree` (no target needed: used by exports)."""
    return ocp.StandardCheckpointer().restore(os.path.abspath(path))


def write_tree(path: str, tree) -> None:
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.abspath(path), tree)
    ckptr.wait_until_finished()


def codec_fingerprint(codec) -> str:
    """12 hex digits naming a codec's settings (its state is valid for these settings only; the ones
    that only change how bytes are written are left out)."""
    settings = {k: v for k, v in codec.settings().items() if k not in codec.transport_settings}
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def codec_state_dir(workdir: str, step: int, codec) -> str:
    return os.path.join(os.path.abspath(workdir), "codec_state", f"{int(step)}-{codec_fingerprint(codec)}")


def load_codec_state(workdir: str, step: int, codec) -> dict | None:
    """The state saved for this checkpoint step and these codec settings, or None."""
    d = codec_state_dir(workdir, step, codec)
    if not os.path.exists(os.path.join(d, "meta.json")):
        return None
    try:
        return read_tree(os.path.join(d, "state"))
    except Exception as e:
        raise CheckpointError(
            f"{d}: cannot read the codec state ({type(e).__name__}); delete it to fit again"
        ) from None


def save_codec_state(workdir: str, step: int, codec, state: dict, meta: dict) -> str:
    """Write a fitted state (meta.json last: a state without it is ignored, so an interrupted write
    is fitted again, never read half-written)."""
    d = codec_state_dir(workdir, step, codec)
    if os.path.exists(d):
        import shutil

        shutil.rmtree(d)
    write_tree(os.path.join(d, "state"), state)
    write_json(os.path.join(d, "meta.json"), {"step": int(step), "codec": codec.settings(), **meta})
    return d


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
    os.replace(tmp, path)
