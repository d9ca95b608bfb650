"""The offline Fashion-MNIST builder and the deterministic pipeline, on small IDX files we write."""
import numpy as np
import pytest

from bottlenet_jax.data import fashion_mnist as fm
from conftest import write_tiny_fashion_mnist


@pytest.fixture
def tiny_fmnist(tmp_path, monkeypatch):
    write_tiny_fashion_mnist(tmp_path)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    return tmp_path


def test_read_idx_roundtrip(tiny_fmnist):
    imgs = fm.read_idx(str(tiny_fmnist / fm.FILES["train"][0]))
    assert imgs.shape == (40, 28, 28) and imgs.dtype == np.uint8
    np.testing.assert_array_equal(fm.read_idx(str(tiny_fmnist / fm.FILES["test"][1])), np.arange(12) % 10)


def test_builder_and_resumable_deterministic_pipeline(tiny_fmnist, tmp_path):
    from bottlenet_jax.data import input_pipeline as ip
    from configs import fashion_mnist
    b = ip.get_builder("fashion_mnist_local", str(tmp_path / "tfds"))
    assert {k: v.num_examples for k, v in b.info.splits.items()} == {"train": 40, "test": 12}
    assert ip.label_names(b)[9] == "Ankle boot"
    cfg = fashion_mnist.get_config()
    cfg.batch_size, cfg.eval_batch_size, cfg.shuffle_buffer = 8, 8, 40
    it = ip.train_iterator(b, cfg)
    first = [next(it) for _ in range(7)]  # crosses an epoch boundary (5 batches per epoch)
    assert first[0]["image"].shape == (8, 28, 28, 1) and first[0]["image"].dtype == np.float32
    resumed = ip.train_iterator(b, cfg, start_step=4)
    for want in first[4:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])
    evals = list(ip.eval_iterator(b, cfg))
    assert [int(e["mask"].sum()) for e in evals] == [8, 4]  # every test example once, last batch padded


def test_real_fashion_mnist_files_if_installed():
    d = fm.local_dir()
    if d is None:
        pytest.skip(fm.HOW_TO_GET)
    labels = fm.read_idx(f"{d}/{fm.FILES['test'][1]}")
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
