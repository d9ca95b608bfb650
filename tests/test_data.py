"""Data: preparation to records, and the grain/OpenCV loader's guarantees (determinism across
worker counts, resume without reading skipped records, per-process slices, eval padding)."""

import cv2
import numpy as np
import pytest

from bottlenet_jax import train_lib
from bottlenet_jax.data import fashion_mnist as fm
from bottlenet_jax.data import loader, records
from bottlenet_jax.errors import DataError

from helpers import slow_extra, write_tiny_fashion_mnist


def _tiny_idx(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmnist")
    write_tiny_fashion_mnist(d)
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Records of a 40 + 12 example Fashion-MNIST written as IDX files here, as prepare.py writes
    them (PNG, as TFDS stores them; Fashion-MNIST's label names), but without TensorFlow: make test
    has none. The TFDS path itself: test_tfds_prepared_records_hold_the_images_and_labels."""
    d = _tiny_idx(tmp_path_factory)

    def examples(split):
        images, labels = (fm.read_idx(str(d / f)) for f in fm.FILES[split])
        for img, lab in zip(images, labels):
            yield int(lab), 28, 28, cv2.imencode(".png", img)[1].tobytes()

    root = records.records_dir("fashion_mnist_local", str(d / "tfds"))
    splits = {s: (examples(s), n) for s, n in (("train", 40), ("test", 12))}
    records.write_prepared(root, "fashion_mnist_local", 1, fm.LABELS, splits)
    return records.open_prepared("fashion_mnist_local", str(d / "tfds")), d


def _cfg(**kw):
    from configs import fashion_mnist

    cfg = fashion_mnist.get_config()
    cfg.batch_size, cfg.eval_batch_size = 8, 8
    cfg.train_split, cfg.validation_split = "train", ""  # the tiny dataset has 40 training images
    cfg.update(kw)
    return cfg


def test_read_idx_roundtrip(tmp_path):
    write_tiny_fashion_mnist(tmp_path)
    imgs = fm.read_idx(str(tmp_path / fm.FILES["train"][0]))
    assert imgs.shape == (40, 28, 28) and imgs.dtype == np.uint8
    np.testing.assert_array_equal(fm.read_idx(str(tmp_path / fm.FILES["test"][1])), np.arange(12) % 10)


def check_prepared(data, d):
    """The records hold the IDX files' test images and labels, and eval reads each once, unaltered."""
    assert data.split_sizes() == {"train": 40, "test": 12} and data.channels == 1
    assert data.label_names[9] == "Ankle boot"
    want_imgs, want_labels = (fm.read_idx(str(d / f)) for f in fm.FILES["test"])
    want = sorted((img.tobytes(), int(lab)) for img, lab in zip(want_imgs, want_labels))
    source, lo, hi = data.select("test")
    assert (lo, hi) == (0, 12) and data.select("test[4:]")[1:] == (4, 12)
    label, h, w, png = records.unpack(source[3])
    assert (h, w) == (28, 28)
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert (img.tobytes(), label) in want
    batches = list(loader.eval_iterator(data, _cfg()))  # eval: every test image once, unaltered (28 px)
    got = [
        (img[..., 0].tobytes(), int(lab))
        for b in batches
        for img, lab in zip(b["image"][b["mask"]], b["label"][b["mask"]])
    ]
    assert sorted(got) == want and got[3] == (img.tobytes(), label)


def test_prepared_records_hold_the_images_and_labels(tiny):
    check_prepared(*tiny)


@pytest.mark.slow  # TensorFlow/TFDS: make test-slow's extra (make test runs without TensorFlow)
def test_tfds_prepared_records_hold_the_images_and_labels(tmp_path_factory, monkeypatch, tmp_path):
    """prepare.py through TFDS's `fashion_mnist_local` builder writes the records `tiny` stands for,
    and an unprepared ImageNet says where its manual download goes."""
    slow_extra("tensorflow_datasets")
    from bottlenet_jax.data.prepare import prepare

    d = _tiny_idx(tmp_path_factory)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(d))
    prepare("fashion_mnist_local", str(d / "tfds"))
    check_prepared(records.open_prepared("fashion_mnist_local", str(d / "tfds")), d)
    with pytest.raises(
        DataError,
        match=r"ImageNet .* download ILSVRC2012_img_train.tar .* then run "
        r"`python -m bottlenet_jax.data.prepare imagenet2012",
    ):
        train_lib.open_dataset(_cfg(dataset="imagenet2012", data_dir=str(tmp_path)))  # prepared where TFDS can


def test_split_slices():
    sizes = {"train": 100, "test": 10}
    assert records.parse_split("train[:30]", sizes) == ("train", 0, 30)
    assert records.parse_split("train[30:]", sizes) == ("train", 30, 100)
    assert records.parse_split("train[-10%:]", sizes) == ("train", 90, 100)
    for bad, msg in (
        ("val", "has splits test, train"),
        ("train[5:5]", "selects no examples"),
        ("train[a:b]", "expected NAME"),
    ):
        with pytest.raises(DataError, match=msg):
            records.parse_split(bad, sizes)


def test_train_batches_are_deterministic_and_independent_of_workers(tiny):
    data, _ = tiny
    cfg = _cfg(data_workers=0, data_threads=1)
    it = loader.train_iterator(data, cfg)
    a = [next(it) for _ in range(7)]  # crosses an epoch boundary (5 batches per epoch)
    it.close()
    assert a[0]["image"].shape == (8, 28, 28, 1) and a[0]["image"].dtype == np.uint8
    epoch1 = np.concatenate([b["index"] for b in a[:5]])
    assert sorted(np.concatenate([b["label"] for b in a[:5]])) == sorted(np.arange(40) % 10)  # a permutation
    assert not np.array_equal(np.concatenate([b["label"] for b in a[:5]]), np.arange(40) % 10)  # shuffled
    assert list(epoch1) == list(range(40))
    b_it = loader.train_iterator(data, _cfg(data_workers=2, data_threads=2))  # processes, threads
    for want in a:
        got = next(b_it)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    b_it.close()
    other = loader.train_iterator(data, _cfg(data_workers=0, seed=1))
    assert not np.array_equal(next(other)["label"], a[0]["label"])  # the seed matters
    other.close()


def test_train_input_jpeg_sends_each_training_image_through_jpeg(tiny):
    """train_input_jpeg=(lo, hi): each augmented image is what cv2 decodes of its JPEG at a quality
    from lo..hi (the augmentation draws are unchanged, so a fixed quality gives the plain batch's
    images through JPEG)."""
    data, _ = tiny
    plain = loader.train_iterator(data, _cfg(data_workers=0))
    fixed = loader.train_iterator(data, _cfg(data_workers=0, train_input_jpeg=(10, 10)))
    ranged = loader.train_iterator(data, _cfg(data_workers=0, train_input_jpeg=(5, 95)))
    a, b, c = next(plain), next(fixed), next(ranged)
    for it in (plain, fixed, ranged):
        it.close()
    np.testing.assert_array_equal(a["label"], b["label"])
    for img, got, any_q in zip(a["image"][..., 0], b["image"][..., 0], c["image"][..., 0]):
        at = lambda q: cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1], 0)  # noqa: B023,E731
        np.testing.assert_array_equal(got, at(10))
        assert any(np.array_equal(any_q, at(q)) for q in range(5, 96))
    assert not np.array_equal(a["image"], b["image"])


def test_resume_skips_records_without_reading_them(tiny):
    data, _ = tiny
    cfg = _cfg(data_workers=0, data_threads=1)
    it = loader.train_iterator(data, cfg)
    first = [next(it) for _ in range(9)]
    it.close()

    class Counting(records.Prepared):
        reads = []

        def select(self, split):
            source, lo, hi = super().select(split)

            class Source:
                def __getitems__(_, keys):
                    self.reads.extend(keys)
                    return source.__getitems__(keys)

            return Source(), lo, hi

    counting = Counting(data.root)
    resumed = loader.train_iterator(counting, cfg, start_step=6)
    for want in first[6:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])
    resumed.close()
    # 3 batches consumed and at most 2 prefetched: never the 48 records of the 6 skipped batches
    assert len(Counting.reads) <= 5 * cfg.batch_size, len(Counting.reads)


def test_processes_read_disjoint_slices_and_eval_pads_to_equal_steps(tiny):
    data, _ = tiny
    cfg = _cfg(batch_size=8, eval_batch_size=6, data_workers=0)  # 2 processes: 4 train / 3 eval per batch
    seen = []
    for p in range(2):
        it = loader.train_iterator(data, cfg, process_index=p, process_count=2)
        batches = [next(it) for _ in range(5)]  # one epoch of this process's 20 examples
        it.close()
        assert all(len(b["label"]) == 4 for b in batches)
        imgs = np.concatenate([b["image"] for b in batches])
        seen.append({img.tobytes() for img in imgs[..., 0]})
    assert not seen[0] & seen[1]
    evals = [list(loader.eval_iterator(data, cfg, process_index=p, process_count=2)) for p in range(2)]
    assert len(evals[0]) == len(evals[1]) == 2  # 6 test examples per process, 3 per batch
    idx = sorted(int(i) for e in evals for b in e for i in b["index"][b["mask"]])
    assert idx == list(range(12))  # every example once, across processes
    cfg.eval_examples = 7  # uneven: 3 + 4 examples; process 0 pads with an all-masked batch
    evals = [list(loader.eval_iterator(data, cfg, process_index=p, process_count=2)) for p in range(2)]
    assert [len(e) for e in evals] == [2, 2] and [int(sum(b["mask"].sum() for b in e)) for e in evals] == [3, 4]


def test_crop_boxes_and_dct_scaled_decode():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = rng.integers(20, 800, 2)
        y, x, ch, cw = loader.random_resized_crop_box(rng, int(h), int(w))
        assert y >= 0 and y + ch <= h and x >= 0 and x + cw <= w and ch > 0 and cw > 0
    assert loader.center_crop_box(375, 500, 224) == (24, 86, 328, 328)  # 224/256 of the short side, centred
    yy, xx = np.mgrid[0:600, 0:800]
    img = np.stack([(yy * 0.3 + xx * 0.1) % 256, (xx * 0.25) % 256, (yy * 0.2 + 40) % 256], -1).astype(np.uint8)
    jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    box = (40, 96, 520, 600)  # crop >= 8x the 64 px output: decoded at 1/8 scale
    small = cv2.resize(loader.decode_crop(jpg, 3, box, 64), (64, 64), interpolation=cv2.INTER_AREA)
    full = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)[40:560, 96:696]
    ref = cv2.resize(full, (64, 64), interpolation=cv2.INTER_AREA)
    assert loader.decode_crop(jpg, 3, box, 64).shape[:2] == (65, 75)
    assert np.abs(small.astype(int) - ref).mean() < 2.0  # the same window, not a shifted one


def test_unprepared_or_bad_dataset_is_a_one_line_error(tmp_path, monkeypatch, tiny):
    with pytest.raises(
        DataError,
        match=r"not prepared in .*python -m bottlenet_jax.data.prepare nope "
        r"--data_dir",
    ):
        records.open_prepared("nope", str(tmp_path))
    import sys

    import bottlenet_jax.data

    monkeypatch.setitem(sys.modules, "bottlenet_jax.data.prepare", None)  # a host without TensorFlow
    monkeypatch.delattr(bottlenet_jax.data, "prepare", raising=False)
    with pytest.raises(DataError, match=r"TensorFlow/TFDS are not installed here: run `pip install"):
        train_lib.open_dataset(_cfg(dataset="imagenet2012", data_dir=str(tmp_path)))
    data, _ = tiny
    with pytest.raises(DataError, match="preprocess='crop'"):
        loader.train_iterator(data, _cfg(preprocess="crop"))
    with pytest.raises(DataError, match="fewer than one batch"):
        loader.train_iterator(data, _cfg(batch_size=64))


def test_real_fashion_mnist_files_if_installed():
    d = fm.local_dir()
    if d is None:
        pytest.skip(fm.HOW_TO_GET)
    labels = fm.read_idx(f"{d}/{fm.FILES['test'][1]}")
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
