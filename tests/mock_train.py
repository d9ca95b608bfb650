"""Run train_and_evaluate on mock ImageNet records in a fresh process (used by tests).

    python tests/mock_train.py DATA_DIR WORKDIR OUT_JSON [config.key=value ...] [kill_after_checkpoint_step=N]
DATA_DIR holds imagenet2012 prepared from tfds.testing.mock_data (conftest's `mock_imagenet`).
Writes OUT_JSON: the final eval summary, a digest of the final params, and whether TensorFlow was
imported (training must not need it).
"""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def params_digest(params) -> str:
    import jax
    import numpy as np

    h = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        h.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
    return h.hexdigest()


def kill_after_checkpoint(step: int):
    """Fault injection: SIGKILL this process right after the checkpoint of `step` is on disk."""
    import signal

    from bottlenet_jax.checkpoint import Checkpoints

    save = Checkpoints.save

    def save_then_die(self, state, meta, metrics=None):
        save(self, state, meta, metrics)
        if meta["step"] == step:
            self.wait()
            os.kill(os.getpid(), signal.SIGKILL)

    Checkpoints.save = save_then_die


def main():
    data_dir, workdir, out, *overrides = sys.argv[1:]
    kill = [int(kv.split("=")[1]) for kv in overrides if kv.startswith("kill_after_checkpoint_step=")]
    overrides = [kv for kv in overrides if not kv.startswith("kill_after_checkpoint_step=")]
    if kill:
        kill_after_checkpoint(kill[0])
    from bottlenet_jax import train_lib
    from bottlenet_jax.cli import load_config_file, setup_logging

    setup_logging()  # as train.py: "resumed from ..." and the evaluations on stderr

    cfg = load_config_file(
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "mock.py"),
        f"data_dir={data_dir}",
        *overrides,
    )
    state, summary = train_lib.train(cfg, workdir)
    import jax

    local = jax.tree.map(lambda a: a.addressable_data(0), state.params)  # this process's own replica
    with open(out, "w") as f:
        json.dump(
            {
                "summary": summary,
                "process": jax.process_index(),
                "step": int(state.step.addressable_data(0)),
                "digest": params_digest(local),
                "tensorflow_imported": "tensorflow" in sys.modules,
            },
            f,
        )


if __name__ == "__main__":
    main()
