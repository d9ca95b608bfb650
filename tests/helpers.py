"""Plain helpers shared by the tests (fixtures live in conftest.py)."""

import os

import numpy as np

from configs import default


def small_config(**split):
    """A BottleNet ResNet small enough for CPU tests (ResNet-50 layout, width 4, 32 px)."""
    c = default.get_config()
    c.model.update(depth=50, width=4, stem="small", num_classes=10)
    c.split.update(after=1, unit=True, channels=3, kernel=2, stride=2)
    c.split.update(**split)
    c.codec.update(quality=30)
    c.image_size = 32
    c.num_train_steps = 10
    c.warmup_epochs = 0.0
    return c


def feature_maps(rng, n, h, w, c, kind="mixed"):
    """Realistic [0,1] feature maps: ReLU-sparse blobs and smooth sigmoid fields, not white noise."""
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    out = np.empty((n, h, w, c), np.float32)
    for i in range(n):
        for j in range(c):
            f = sum(
                rng.normal() * np.sin(2 * np.pi * (rng.uniform(0.5, 3) * xx + rng.uniform(0.5, 3) * yy + rng.uniform()))
                for _ in range(3)
            )
            if kind == "sparse" or (kind == "mixed" and (i + j) % 2):
                out[i, :, :, j] = np.maximum(f - 0.8, 0) / 3
            else:
                out[i, :, :, j] = 1 / (1 + np.exp(-f))
    return np.clip(out, 0, 1)


def slow_extra(module: str):
    """`module` (TensorFlow/TFDS or torch: the extras `make test-slow` installs; make test has
    neither): skips the test where it is missing, unless BOTTLENET_REQUIRE_SLOW_EXTRAS=1 (make
    test-slow), where a missing one fails it."""
    import importlib

    import pytest

    if os.environ.get("BOTTLENET_REQUIRE_SLOW_EXTRAS") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def write_tiny_fashion_mnist(d, n_train=40, n_test=12):
    """Small random IDX files in Fashion-MNIST's layout (for builder and CLI tests)."""
    import gzip

    from bottlenet_jax.data.fashion_mnist import FILES

    r = np.random.default_rng(0)

    def write(path, arr):
        header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(x).to_bytes(4, "big") for x in arr.shape)
        with gzip.open(path, "wb") as f:
            f.write(header + arr.astype(np.uint8).tobytes())

    for split, n in (("train", n_train), ("test", n_test)):
        imgs, labs = FILES[split]
        write(os.path.join(d, imgs), r.integers(0, 256, (n, 28, 28)))
        write(os.path.join(d, labs), np.arange(n) % 10)
    return d


def write_tiny_records(data_dir, n_train=48, n_test=16, size=32, seed=0):
    """A prepared dataset `tiny_records` in `data_dir` (no TensorFlow): grey images size x size of a
    few bright blobs each, PNG-encoded, labels by the blob count (so a network can learn something)."""
    import cv2

    from bottlenet_jax.data import records

    r = np.random.default_rng(seed)

    def examples(n):
        for i in range(n):
            label = i % 4
            img = np.zeros((size, size), np.uint8)
            for _ in range(label + 1):
                y, x = r.integers(4, size - 4, 2)
                cv2.circle(img, (int(x), int(y)), int(r.integers(2, 5)), int(r.integers(120, 256)), -1)
            ok, png = cv2.imencode(".png", img)
            yield label, size, size, png.tobytes()

    root = records.records_dir("tiny_records", str(data_dir))
    splits = {"train": (examples(n_train), n_train), "test": (examples(n_test), n_test)}
    return records.write_prepared(root, "tiny_records", 1, [str(k) for k in range(4)], splits)


def corruption_check(rng, encode, decode, good, tails, trials=500):
    """Corruptions of good streams (`tails[i]`: how many escape words end stream i): a flipped bit
    or two overwritten bytes before the escapes, cut or added bytes, or a middle bit of an escape's
    word flipped (often still an escape: a valid stream). Each must be refused with a ValueError
    naming the stream or its bytes, or be exactly `encode` of what `decode` gives. Returns (accepted
    escape-word flips, accepted other corruptions, other corruptions tried)."""
    in_tail = elsewhere = tried = 0
    for trial in range(trials):
        i, kind = trial % len(good), trial % 5
        p = bytearray(good[i])
        body = len(p) - 2 * int(tails[i])  # the rANS part: state and words before the escapes
        if kind == 0:
            p[rng.integers(body)] ^= 1 << rng.integers(8)
        elif kind == 1:
            del p[rng.integers(len(p)) :]
        elif kind == 2:
            p += bytes(rng.integers(0, 256, rng.integers(1, 4)).astype(np.uint8))
        elif kind == 3:
            j = rng.integers(body - 1)
            p[j : j + 2] = bytes(rng.integers(0, 256, 2).astype(np.uint8))
        elif tails[i]:
            p[len(p) - 2 * rng.integers(1, int(tails[i]) + 1) + 1] ^= 1 << rng.integers(3, 6)  # bits 11..13
        else:
            continue
        p = bytes(p)
        if p == good[i]:
            continue
        tried += kind != 4
        try:
            out = decode([p])
        except ValueError as e:
            assert "stream" in str(e) or "bytes" in str(e), e
            continue
        assert encode(out) == [p]
        in_tail += kind == 4
        elsewhere += kind != 4
    return in_tail, elsewhere, tried


def gate_decoder(decoder, timeout: float):
    """Hold `decoder.decode_many` until the returned `gate` is set; `started` is set when a call
    arrives. Undo with `del decoder.decode_many`."""
    import threading

    gate, started, real = threading.Event(), threading.Event(), decoder.decode_many

    def gated(elements):
        started.set()
        assert gate.wait(timeout)
        return real(elements)

    decoder.decode_many = gated
    return gate, started
