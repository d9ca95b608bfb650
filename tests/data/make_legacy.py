"""Write tests/data/legacy/: a workdir and an export as an older version of the library saved them.

    git worktree add /tmp/old 17c031e && cd /tmp/old && python /path/to/tests/data/make_legacy.py OUT

Run with the code of the commit to preserve (the committed folder was written at 17c031e, the last
commit before codecs could own parameters): a tiny BottleNet (ResNet-18 layout, width 2, 32 px,
RB1, C'=2, JPEG q=50), its freshly initialised TrainState saved as a checkpoint, config.json, and
the export of the same variables. tests/test_entropy.py loads both with the current code.
"""

import os
import sys

sys.path.insert(0, os.getcwd())

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bottlenet_jax.checkpoint import Checkpoints, write_json  # noqa: E402
from bottlenet_jax.export import export_variables  # noqa: E402
from bottlenet_jax.models import build_model  # noqa: E402
from bottlenet_jax.train_lib import create_train_state  # noqa: E402
from configs import default  # noqa: E402


def config():
    c = default.get_config()
    c.model.update(depth=18, width=2, stem="small", num_classes=10)
    c.split.update(after=1, unit=True, channels=2, kernel=2, stride=2)
    c.codec.update(quality=50)
    c.image_size = 32
    c.batch_size = c.eval_batch_size = 4
    c.num_train_steps = 1
    c.dataset = "legacy_not_prepared"
    return c


def main(out):
    cfg = config()
    model = build_model(cfg)
    state, _ = create_train_state(cfg, model, 3, 1, 1)
    os.makedirs(out)
    wd = os.path.join(out, "workdir")
    ck = Checkpoints(wd)
    ck.save(state, {"step": 0, "examples_seen": 0, "config": cfg.to_dict()})
    ck.close()
    write_json(os.path.join(wd, "config.json"), cfg.to_dict())
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    export_variables(cfg, variables, os.path.join(out, "export"))
    x = np.asarray(jax.random.uniform(jax.random.key(7), (2, 32, 32, 3)), np.float32)
    m = build_model(cfg, bn_axis_name=None)
    logits, _ = m.apply(variables, jnp.asarray(x))
    np.savez(os.path.join(out, "expected.npz"), x=x, logits=np.asarray(logits))


if __name__ == "__main__":
    main(sys.argv[1])
