"""Every test process sees 4 CPU devices, so data-parallel code is exercised without accelerators.

Fixtures only; plain helper functions live in helpers.py (tests import them `from helpers import ...`)."""

import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA's CPU backend spends most of a small test's time in LLVM's optimisation passes (compiling a
# ResNet-18's init: 23 s at the default level 2, 3.8 s at level 1), so the tests compile at level 1;
# the programs run almost as fast on test-sized inputs (level 0 compiles faster still but runs the
# compute-bound tests 3x slower). BOTTLENET_TEST_XLA_OPT=default (make test-slow, CI)
# keeps XLA's default, so the slow stage checks what users run.
_flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
if os.environ.get("BOTTLENET_TEST_XLA_OPT") != "default" and "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=1"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One persistent compilation cache for this run, shared by the tests and the processes they start:
# many tests build the same models, and XLA compiles each program once instead of once per test.
# Fresh per run (removed at exit), so a run's time is that of a fresh clone; set
# JAX_COMPILATION_CACHE_DIR to keep one across runs.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="bottlenet_test_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mock_imagenet(tmp_path_factory):
    """A data_dir holding imagenet2012 records prepared from tfds.testing.mock_data (64 per split);
    TensorFlow is make test-slow's extra (helpers.slow_extra)."""
    from helpers import slow_extra

    tfds = slow_extra("tensorflow_datasets")

    from bottlenet_jax.data.prepare import prepare

    d = tmp_path_factory.mktemp("mock_tfds")
    with tfds.testing.mock_data(num_examples=64):
        prepare("imagenet2012", str(d), splits=("train", "validation"))
    return d


@pytest.fixture(scope="session")
def demo_exports(tmp_path_factory):
    """The demo's three split exports (its configs; weights at init, perturbed, the codecs' tables
    fitted to the edge half's features of the first 2,000 Fashion-MNIST training images): {name:
    export dir}, built once per run (the edge's and the server decoder's tests share them)."""
    import jax
    import jax.numpy as jnp

    from bottlenet_jax import cli
    from bottlenet_jax.data import fashion_mnist as fm
    from bottlenet_jax.export import export_variables
    from bottlenet_jax.models import build_model
    from bottlenet_jax.steps import normalize

    if fm.local_dir() is None:
        pytest.skip("Fashion-MNIST is not on this machine (make data)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    train = fm.read_idx(os.path.join(fm.local_dir(), fm.FILES["train"][0]))[:2000, :, :, None]
    d, out = tmp_path_factory.mktemp("demo_exports"), {}
    for name, path in (
        ("bottlenet", "configs/fashion_mnist_demo.py"),
        ("entropy", "configs/fashion_mnist_entropic_student.py"),
        ("hyperprior", "configs/fashion_mnist_hyperprior.py"),
    ):
        cfg = cli.load_config_file(os.path.join(root, path))
        model = build_model(cfg, bn_axis_name=None)
        v = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))  # eager: ~100 small compiles
        v = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(1), a.shape), v)
        codec, state = model.codec, None
        if codec.fits_data:
            z = jax.jit(lambda v, x: model.apply(v, normalize(x, cfg.mean, cfg.std), part="edge"))(v, train)
            state = codec.fit(jax.device_get(v["params"]).get("codec", {}), [np.asarray(z)])
        export_variables(cfg, v, str(d / name), codec_state=state)
        out[name] = str(d / name)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)
