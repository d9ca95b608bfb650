"""Every test process sees 4 CPU devices, so data-parallel code is exercised without accelerators.

Fixtures only; plain helper functions live in helpers.py (tests import them `from helpers import ...`)."""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mock_imagenet(tmp_path_factory):
    """A data_dir holding imagenet2012 records prepared from tfds.testing.mock_data (64 per split)."""
    import tensorflow_datasets as tfds

    from bottlenet_jax.data.prepare import prepare

    d = tmp_path_factory.mktemp("mock_tfds")
    with tfds.testing.mock_data(num_examples=64):
        prepare("imagenet2012", str(d), splits=("train", "validation"))
    return d


@pytest.fixture
def rng():
    return np.random.default_rng(0)
