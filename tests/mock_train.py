"""Run train_and_evaluate on mock ImageNet records in a fresh process (used by tests).

    python tests/mock_train.py DATA_DIR WORKDIR OUT_JSON [config.key=value ...]
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


def main():
    data_dir, workdir, out, *overrides = sys.argv[1:]
    from absl import logging
    logging.set_verbosity(logging.WARNING)
    from bottlenet_jax import train_lib
    from configs import mock
    cfg = mock.get_config()
    cfg.data_dir = data_dir
    for kv in overrides:
        key, value = kv.split("=", 1)
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = type(node[leaf])(value)
    state, summary = train_lib.train(cfg, workdir)
    import jax
    local = jax.tree.map(lambda a: a.addressable_data(0), state.params)  # this process's own replica
    with open(out, "w") as f:
        json.dump({"summary": summary, "process": jax.process_index(), "step": int(state.step.addressable_data(0)),
                   "digest": params_digest(local),
                   "tensorflow_imported": "tensorflow" in sys.modules}, f)


if __name__ == "__main__":
    main()
