"""Prepared datasets: encoded images + labels in ArrayRecord files, read without TensorFlow.

Why this format: training hosts (the GPU machine among them) have no TensorFlow, and tf.data's
per-example Python-free graph was the only reason we needed it. ArrayRecord gives O(1) random
access by global record index, which `grain` turns into a global shuffle, resume without reading
skipped records, and per-process slices, all by index arithmetic. TensorFlow is needed only once,
by `python -m bottlenet_jax.data.prepare`, to read a TFDS dataset and write these files.

Layout: ``{data_dir}/bottlenet_records/{dataset}/meta.json`` plus
``{split}-{i:05d}-of-{n:05d}.array_record`` shards. A record is ``HEADER`` (label int32, height,
width uint16) followed by the image exactly as TFDS stored it (JPEG for ImageNet, PNG for the small
grey datasets): no re-encoding, so no generation loss. meta.json is written last; a dataset without
it is not prepared.

Splits accept TFDS-style slices of one split: ``train``, ``train[:5000]``, ``train[5000:]``,
``validation[:10%]``.
"""

from __future__ import annotations

import json
import os
import re
import struct

from bottlenet_jax.errors import DataError

FORMAT = "bottlenet-records-1"
HEADER = struct.Struct("<iHH")  # label, height, width (little-endian)
WRITER_OPTIONS = "group_size:1,uncompressed"  # random access per record; JPEG/PNG bytes do not compress


def default_data_dir() -> str:
    return os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def records_dir(name: str, data_dir: str | None) -> str:
    return os.path.join(data_dir or default_data_dir(), "bottlenet_records", name)


def prepare_command(name: str, data_dir: str | None) -> str:
    return f"python -m bottlenet_jax.data.prepare {name}" + (f" --data_dir {data_dir}" if data_dir else "")


def pack(label: int, height: int, width: int, image: bytes) -> bytes:
    return HEADER.pack(int(label), int(height), int(width)) + bytes(image)


def unpack(record: bytes) -> tuple[int, int, int, memoryview]:
    """(label, height, width, encoded image) of one record."""
    label, h, w = HEADER.unpack_from(record)
    return label, h, w, memoryview(record)[HEADER.size :]


_SLICE = re.compile(r"^([\w\-]+)(?:\[(-?\d*)(%?):(-?\d*)(%?)\])?$")


def parse_split(spec: str, sizes: dict[str, int]) -> tuple[str, int, int]:
    """'train[:5000]' -> ('train', 0, 5000); percentages of the split's size; Python slice bounds."""
    m = _SLICE.match(spec.replace(" ", ""))
    if not m:
        raise DataError(f"split={spec!r}: expected NAME or NAME[start:end] (ints or percentages), e.g. train[:5000]")
    name, a, a_pct, b, b_pct = m.groups()
    if name not in sizes:
        raise DataError(f"split={spec!r}: this dataset has splits {', '.join(sorted(sizes))}")
    n = sizes[name]

    def bound(v, pct, default):
        if v in (None, ""):
            return default
        v = int(v) * n // 100 if pct else int(v)
        return max(0, min(n, v + n if v < 0 else v))

    lo, hi = bound(a, a_pct, 0), bound(b, b_pct, n)
    if hi <= lo:
        raise DataError(f"split={spec!r}: selects no examples of {name} ({n} examples)")
    return name, lo, hi


def write_prepared(
    root: str, dataset: str, channels: int, label_names, splits: dict, extra_meta=None, examples_per_shard: int = 10_000
) -> str:
    """Write `splits` {name: (iterable of (label, height, width, encoded bytes), count or None)} as a
    prepared dataset at `root`, atomically: into root.partial, meta.json last, then renamed."""
    import shutil

    from array_record.python.array_record_module import ArrayRecordWriter
    from tqdm.auto import tqdm

    tmp = root + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    meta = {
        "format": FORMAT,
        "dataset": dataset,
        "channels": int(channels),
        "label_names": list(label_names),
        **(extra_meta or {}),
        "splits": {},
    }
    for split, (examples, total) in splits.items():
        n_shards = max(1, -(-(total or 0) // examples_per_shard))
        per = -(-(total or 1) // n_shards)
        files, writer, count = [], None, 0
        bar = tqdm(examples, total=total, desc=f"{dataset} {split}", unit="img", dynamic_ncols=True)
        for label, h, w, image in bar:
            shard = min(count // per, n_shards - 1)
            if shard == len(files):
                if writer:
                    writer.close()
                files.append(f"{split}-{shard:05d}-of-{n_shards:05d}.array_record")
                writer = ArrayRecordWriter(os.path.join(tmp, files[-1]), WRITER_OPTIONS)
            writer.write(pack(label, h, w, image))
            count += 1
        if not count:
            raise DataError(f"dataset={dataset!r} split {split!r} has no examples")
        writer.close()
        meta["splits"][split] = {"num_examples": count, "files": files}
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root


class Prepared:
    """A prepared dataset: its meta.json and a random-access source per split (no decoding here)."""

    def __init__(self, root: str):
        self.root = root
        with open(os.path.join(root, "meta.json")) as f:
            self.meta = json.load(f)
        if self.meta.get("format") != FORMAT:
            raise DataError(
                f"{root}: prepared in format {self.meta.get('format')!r}, this version reads {FORMAT!r}; "
                f"prepare it again ({prepare_command(self.meta.get('dataset', '?'), None)})"
            )

    @property
    def channels(self) -> int:
        return int(self.meta["channels"])

    @property
    def label_names(self) -> list[str]:
        return list(self.meta["label_names"])

    def split_sizes(self) -> dict[str, int]:
        return {k: int(v["num_examples"]) for k, v in self.meta["splits"].items()}

    def num_examples(self, split: str) -> int:
        _, lo, hi = parse_split(split, self.split_sizes())
        return hi - lo

    def select(self, split: str):
        """(random-access source of the split's records, first, end): a slice of a split is an index
        range of its source, so selecting, shuffling and skipping never read a record."""
        import grain

        name, lo, hi = parse_split(split, self.split_sizes())
        paths = [os.path.join(self.root, f) for f in self.meta["splits"][name]["files"]]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise DataError(
                f"{missing[0]}: listed in meta.json but missing; prepare again "
                f"({prepare_command(self.meta['dataset'], None)})"
            )
        return grain.sources.ArrayRecordDataSource(paths), lo, hi


def open_prepared(name: str, data_dir: str | None = None, prepare=None) -> Prepared:
    """The prepared dataset `name`. When it is missing, `prepare(name, data_dir)` is called first if
    given (the trainer does, in a single-process job: `train_lib.open_dataset`), else the DataError
    names the command to run."""
    root = records_dir(name, data_dir)
    if os.path.exists(os.path.join(root, "meta.json")):
        return Prepared(root)
    if prepare is not None:
        prepare(name, data_dir)
        return Prepared(root)
    raise DataError(f"dataset={name!r} is not prepared in {root}: run `{prepare_command(name, data_dir)}`")
