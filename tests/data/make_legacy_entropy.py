"""Write tests/data/legacy_a511a13/: an entropy-codec workdir and its export as a511a13 saved them.

    git worktree add /tmp/old a511a13 && cd /tmp/old && python /path/to/tests/data/make_legacy_entropy.py OUT

At a511a13 a fitted codec kept its tables in its settings: the workdir's config.json holds an empty
`freqs` (eval refit the tables on the training split each time), and the export's manifest.json holds
the fitted tables as JSON lists. The committed folder: a tiny BottleNet (ResNet-18 layout, width 2,
16 px grey, RB1, C'=2) with the entropy codec (`fit_context=neighbours`) trained for 6 steps on
`helpers.write_tiny_records` (made again by the test, which points data_dir at it), its test.json
(the fitted test figures), the export, and expected.npz (inputs, the payloads' lengths and the
logits through them). tests/test_codec_state.py loads all of it with the current code.
"""

import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from bottlenet_jax.codecs import codec_settings  # noqa: E402
from bottlenet_jax.export import Half, export_workdir, load_codec, load_manifest  # noqa: E402
from bottlenet_jax.train_lib import train_and_evaluate  # noqa: E402
from configs import default  # noqa: E402
from helpers import write_tiny_records  # noqa: E402


def config(data_dir):
    c = default.get_config()
    c.model.update(depth=18, width=2, stem="small", num_classes=4)
    c.split.update(after=1, unit=True, channels=2, kernel=2, stride=2)
    c.codec = ml_collections.ConfigDict(codec_settings("entropy", fit_context="neighbours"))
    c.rate_lambda = 1e-3
    c.dataset, c.data_dir = "tiny_records", data_dir
    c.train_split, c.validation_split, c.eval_split = "train[8:]", "train[:8]", "test"
    c.image_size, c.preprocess, c.mean, c.std = 16, "small", (0.5,), (0.25,)
    c.keep_checkpoints = 1
    c.batch_size = c.eval_batch_size = 8
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps, c.log_every_steps = 6, 3, 3, 1
    c.warmup_epochs, c.learning_rate, c.data_workers = 0.0, 0.4, 0
    return c


def main(out):
    data_dir = tempfile.mkdtemp()
    write_tiny_records(data_dir, size=16)
    os.makedirs(out)
    wd = os.path.join(out, "workdir")
    train_and_evaluate(config(data_dir), wd)
    export_workdir(wd, os.path.join(out, "export"))
    d = os.path.join(out, "export")
    codec = load_codec(load_manifest(d))
    x = np.asarray(jax.random.uniform(jax.random.key(7), (4, 16, 16, 1)), np.float32)
    z = np.asarray(Half(d, "edge")(x))
    payloads = codec.encode(z)
    logits = np.asarray(Half(d, "cloud")(jnp.asarray(codec.decode(payloads, z.shape))))
    np.savez(
        os.path.join(out, "expected.npz"),
        x=x,
        logits=logits,
        lengths=np.array([len(p) for p in payloads]),
        payloads=np.frombuffer(b"".join(payloads), np.uint8),
    )
    shutil.rmtree(data_dir)


if __name__ == "__main__":
    main(sys.argv[1])
