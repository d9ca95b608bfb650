"""The input pipeline: grain over prepared records (records.py), OpenCV decoding, uint8 batches.

Where the time goes on the host is the JPEG decode (Huffman decoding dominates at ImageNet's
qualities); resizing the crop to 224 px costs about a tenth of it, and normalisation is done on the
accelerator (steps.normalize), so batches cross to the device as uint8 (4x fewer bytes). Levers used:
* work per batch, not per example: the pipeline shuffles and batches record *indices*; one task
  reads a batch's records in one call and decodes them into one array, which a worker process
  allocates in shared memory (no per-example framework overhead, no stacking or IPC copy);
* parallelism: `data_workers` processes (grain `mp_prefetch`, shared-memory batches; the GIL is not
  shared) each with `data_threads` threads (OpenCV releases the GIL while it decodes);
* DCT-domain downscaling: when the crop is at least 2x the output side, libjpeg decodes at 1/2, 1/4
  or 1/8 scale (OpenCV's IMREAD_REDUCED_*), so it runs fewer and smaller inverse DCTs.

Guarantees (tests/test_data.py):
* deterministic: the order is grain's index shuffle of `seed`, and each example's augmentation is
  drawn from a generator seeded by (seed, process, position in the stream); batch contents do not
  depend on the number of workers or threads;
* resume: `start_step` slices the batch stream by index, so skipped records are never read;
* multi-process: process p of P reads the p-th even slice of the split; eval batches are padded
  (mask=0) so every process runs the same number of steps.

Train: random-resized crop (area 8-100 %, aspect 3/4-4/3, Inception's 10 attempts then a centre
crop) + horizontal flip; eval: centre crop of size/(size+32) of the short side; `small` datasets
(28-64 px): flip only. Resizing is bicubic.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from bottlenet_jax.data.records import unpack
from bottlenet_jax.errors import DataError

CROP_PADDING = 32
_REDUCED = {
    1: (cv2.IMREAD_GRAYSCALE, cv2.IMREAD_COLOR),
    2: (cv2.IMREAD_REDUCED_GRAYSCALE_2, cv2.IMREAD_REDUCED_COLOR_2),
    4: (cv2.IMREAD_REDUCED_GRAYSCALE_4, cv2.IMREAD_REDUCED_COLOR_4),
    8: (cv2.IMREAD_REDUCED_GRAYSCALE_8, cv2.IMREAD_REDUCED_COLOR_8),
}
MODES = ("imagenet", "small")


def random_resized_crop_box(rng: np.random.Generator, h: int, w: int, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """(y, x, height, width) of an Inception-style crop; after 10 misses, the largest centred crop
    whose aspect lies in `ratio`."""
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = rng.uniform(*area) * h * w
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    aspect = w / h
    if aspect < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif aspect > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        ch, cw = h, w
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def center_crop_box(h: int, w: int, size: int):
    side = max(1, int(size / (size + CROP_PADDING) * min(h, w)))
    return (h - side + 1) // 2, (w - side + 1) // 2, side, side


def decode_crop(encoded, channels: int, box, size: int) -> np.ndarray:
    """Decode `encoded` (JPEG/PNG bytes) and return the crop `box` (y, x, h, w) of it, decoded at
    the smallest 1/2^k scale that still leaves the crop >= `size` px (JPEG only)."""
    y, x, ch, cw = box
    buf = np.frombuffer(encoded, np.uint8)
    factor = 1
    if buf[:2].tobytes() == b"\xff\xd8":
        while factor < 8 and min(ch, cw) >= 2 * factor * size:
            factor *= 2
    img = cv2.imdecode(buf, _REDUCED[factor][channels == 3])
    if img is None:
        raise ValueError(f"undecodable image ({len(buf)} bytes, starts {buf[:4].tobytes()!r})")
    if factor > 1:  # libjpeg rounds the scaled size up
        y, x, ch, cw = y // factor, x // factor, max(1, ch // factor), max(1, cw // factor)
    return img[y : y + ch, x : x + cw]


PER_WORKER_BUFFER = 2  # batches each worker process holds ready (grain mp_prefetch)
_IN_WORKER = False  # set in grain's worker processes: batches are then allocated in shared memory


class Preprocess:
    """(positions, record indices) of one batch -> {'image': uint8[B,S,S,C], 'label': int32[B],
    'index': int32[B] (position in the stream; the example's index in the split for eval)}.

    A plain class (not a closure) so grain can pickle it into worker processes.
    """

    def __init__(
        self,
        source,
        size: int,
        channels: int,
        mode: str,
        train: bool,
        seed: int,
        process_index: int = 0,
        jpeg=(),
        fmt: str = "jpeg",
    ):
        self.source, self.size, self.channels, self.mode, self.train = source, size, channels, mode, train
        self.seed, self.process_index = seed, process_index
        self.jpeg = tuple(int(q) for q in jpeg)  # (lo, hi): training images through `fmt` at q ~ U{lo..hi}
        self.params = {"jpeg": (".jpg", cv2.IMWRITE_JPEG_QUALITY), "webp": (".webp", cv2.IMWRITE_WEBP_QUALITY)}[fmt]

    def __call__(self, batch):
        positions, indices = batch
        records = self.source.__getitems__([int(i) for i in indices])
        s, c = self.size, self.channels
        shape = (len(records), s, s, c)
        if _IN_WORKER:
            import grain.python

            out = grain.python.SharedMemoryArray(shape, np.uint8)  # handed to the trainer without a copy
        else:
            out = np.empty(shape, np.uint8)
        labels = np.empty(len(records), np.int32)
        for k, (pos, rec) in enumerate(zip(positions, records)):
            labels[k], h, w, encoded = unpack(rec)
            rng = np.random.default_rng([self.seed, self.process_index, int(pos)]) if self.train else None
            if self.mode == "imagenet":
                box = random_resized_crop_box(rng, h, w) if self.train else center_crop_box(h, w, s)
            else:
                box = (0, 0, h, w)
            img = decode_crop(encoded, c, box, s)
            dst = out[k] if c == 3 else out[k, :, :, 0]
            if img.shape[:2] == (s, s):
                dst[...] = img if c == 1 else img[..., ::-1]  # OpenCV decodes BGR
            else:
                cv2.resize(img, (s, s), dst=dst, interpolation=cv2.INTER_CUBIC)
                if c == 3:
                    cv2.cvtColor(dst, cv2.COLOR_BGR2RGB, dst=dst)
            if self.train and rng.random() < 0.5:
                cv2.flip(dst, 1, dst=dst)  # in place; 30x faster than a numpy reversed-view copy
            if self.train and self.jpeg:  # the input image as the receiver of its JPEG / WebP would see it
                q = int(rng.integers(self.jpeg[0], self.jpeg[1] + 1))
                ext, key = self.params
                ok, enc = cv2.imencode(ext, dst if c == 1 else dst[..., ::-1], [key, q])
                dec = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE if c == 1 else cv2.IMREAD_COLOR)
                dst[...] = dec if c == 1 else dec[..., ::-1]
        return {"image": out, "label": labels, "index": np.asarray(positions, np.int32)}


class _Position:
    """(position in the stream, record index); eval positions are offset to index the split."""

    def __init__(self, first: int = 0):
        self.first = first

    def __call__(self, i, record_index):
        return self.first + int(i), int(record_index)


def _collate(items):
    return np.array([i for i, _ in items], np.int64), np.array([r for _, r in items], np.int64)


def _worker_init(worker_index, worker_count):
    global _IN_WORKER
    _IN_WORKER = True
    cv2.setNumThreads(1)  # the workers are the parallelism; OpenCV's own pool would oversubscribe


def process_range(lo: int, hi: int, process_index: int, process_count: int) -> tuple[int, int]:
    """This process's even share [a, b) of the record range [lo, hi)."""
    n = hi - lo
    return lo + process_index * n // process_count, lo + (process_index + 1) * n // process_count


def _processes(process_index, process_count):
    if process_index is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    return process_index, process_count


def workers(cfg) -> int:
    """Worker processes: cfg.data_workers, or (-1) one per host core."""
    return (os.cpu_count() or 1) if cfg.data_workers < 0 else int(cfg.data_workers)


def _iterate(ds, cfg):
    import grain
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain reads absl flags when it starts workers; a library caller
        flags.FLAGS.mark_as_parsed()  # (tests, notebooks) has not parsed any: use their defaults
    threads = max(1, int(cfg.data_threads))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads))
    n = workers(cfg)
    if n > 0:
        it = it.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=n, per_worker_buffer_size=PER_WORKER_BUFFER),
            worker_init_fn=_worker_init,
        )
    return iter(it)


def _check_mode(cfg):
    if cfg.preprocess not in MODES:
        raise DataError(f"preprocess={cfg.preprocess!r}: must be one of {', '.join(MODES)}")


def train_iterator(data, cfg, start_step: int = 0, process_index=None, process_count=None):
    """Endless iterator of host-local uint8 batches {'image', 'label', 'index'}, resumable at
    `start_step` (close() it to stop the workers)."""
    _check_mode(cfg)
    p, n_proc = _processes(process_index, process_count)
    local = cfg.batch_size // n_proc
    source, lo, hi = data.select(cfg.train_split)
    a, b = process_range(lo, hi, p, n_proc)
    if b - a < local:
        raise DataError(
            f"train_split={cfg.train_split!r}: {b - a} examples per process, fewer than one batch ({local})"
        )
    import grain

    ds = grain.MapDataset.range(a, b).shuffle(seed=cfg.seed).repeat().map_with_index(_Position())
    ds = ds.batch(local, drop_remainder=True, batch_fn=_collate)[start_step:]
    jpeg, fmt = tuple(cfg.get("train_input_jpeg", ())), cfg.get("train_input_format", "jpeg")
    ds = ds.map(Preprocess(source, cfg.image_size, data.channels, cfg.preprocess, True, cfg.seed, p, jpeg, fmt))
    return _iterate(ds, cfg)


def eval_iterator(data, cfg, process_index=None, process_count=None, split: str | None = None):
    """Each example of `split` (default cfg.eval_split) once (the first eval_examples if > 0); batches
    padded to full size with mask=0 rows, and every process yields the same number of batches."""
    _check_mode(cfg)
    p, n_proc = _processes(process_index, process_count)
    local = cfg.eval_batch_size // n_proc
    source, lo, hi = data.select(split or cfg.eval_split)
    if cfg.eval_examples > 0:
        hi = min(hi, lo + cfg.eval_examples)
    n_batches = -(-(-(-(hi - lo) // n_proc)) // local)  # of the largest process slice
    a, b = process_range(lo, hi, p, n_proc)
    import grain

    ds = grain.MapDataset.range(a, b).map_with_index(_Position(a - lo)).batch(local, batch_fn=_collate)
    ds = ds.map(Preprocess(source, cfg.image_size, data.channels, cfg.preprocess, False, cfg.seed, p))
    it = _iterate(ds, cfg) if len(ds) else iter(())
    try:
        for _ in range(n_batches):
            batch = next(it, None)
            n = 0 if batch is None else len(batch["label"])
            if batch is None:
                s = cfg.image_size
                batch = {
                    "image": np.zeros((0, s, s, data.channels), np.uint8),
                    "label": np.zeros(0, np.int32),
                    "index": np.zeros(0, np.int32),
                }
            batch = {k: np.concatenate([v, np.zeros((local - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
            batch["mask"] = np.arange(local) < n
            yield batch
    finally:
        getattr(it, "close", lambda: None)()
