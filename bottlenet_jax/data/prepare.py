"""Prepare a TFDS dataset once (download or build from local files) and print its split sizes.

    python -m bottlenet_jax.data.prepare fashion_mnist_local [--data_dir DIR]
"""
import argparse
import sys

from bottlenet_jax.data.input_pipeline import DataError, get_builder


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("--data_dir", default=None)
    a = p.parse_args(argv)
    try:
        b = get_builder(a.dataset, a.data_dir)
    except DataError as e:
        sys.exit(f"error: {e}")
    print(a.dataset, {k: v.num_examples for k, v in b.info.splits.items()}, "in", b.data_dir)


if __name__ == "__main__":
    main()
