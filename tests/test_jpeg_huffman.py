"""JPEG under fitted Huffman tables (codecs/jpeg/huffman.py): the stream writer reproduces cv2's file
byte for byte under the Annex K tables, streams under tables fitted to other images decode in cv2
to the pixels of the standard stream, the graph's byte count is their len(), and the JPEG codec
with `fitted_tables` keeps them as its state."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bottlenet_jax.codecs import make_codec
from bottlenet_jax.codecs.jpeg import huffman as jpeg_huffman
from bottlenet_jax.codecs.jpeg import jfif
from bottlenet_jax.codecs.jpeg.scan import DEFAULT_LENGTHS
from bottlenet_jax.errors import ConfigError

from helpers import feature_maps


def _images(rng, n, h, w):
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (n * h, w), np.uint8), (0, 0), 2).reshape(n, h, w)
    return np.concatenate([smooth, rng.integers(0, 256, (n, h, w), np.uint8), np.zeros((1, h, w), np.uint8)])


@pytest.mark.parametrize("shape", [(28, 28), (21, 14), (8, 8), (3, 5)])
def test_annex_k_tables_write_cv2s_own_file(rng, shape):
    lengths = DEFAULT_LENGTHS.reshape(2, 256)
    for img in _images(rng, 2, *shape):
        for q in (1, 30, 90, 100):
            ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
            ours = jpeg_huffman.write_streams(img[None], q, lengths, jfif.framing)[0]
            assert jfif.rebuild_full(ours, q, False, jpeg_huffman.dht_segments(lengths)) == enc.tobytes()


def test_fitted_tables_decode_in_cv2_to_the_standard_streams_pixels_and_bytes_are_len(rng):
    """Tables fitted to 64 images at q=30 code 40 other images (noise, smooth, blank): cv2 decodes
    each stream, with the fitted DHT put back, to exactly the pixels of the standard-table stream of
    the same image and quality; the XLA count is the stream's length; on images like the training
    ones the fitted scan is shorter than the standard one."""
    train, test = _images(rng, 32, 28, 28)[:64], _images(rng, 20, 28, 28)
    hist = np.asarray(jpeg_huffman.symbol_histogram(jpeg_huffman.zigzag_blocks(jnp.asarray(train), 30)))
    lengths = jpeg_huffman.fit_lengths(hist)
    assert lengths.max() <= 16 and jpeg_huffman.dht_bytes(lengths) == len(jpeg_huffman.dht_segments(lengths))
    for t in lengths:  # a prefix code with room left: the all-ones code stays unused (T.81 K.2)
        assert 0.5 < (2.0 ** -t[t > 0]).sum() < 1
    from bottlenet_jax.codecs.jpeg.scan import AC_SYMBOLS

    fib = [1.0, 2.0]
    while len(fib) < len(AC_SYMBOLS):
        fib.append(fib[-1] + fib[-2])
    skewed = np.zeros((2, 256))
    skewed[1, AC_SYMBOLS] = fib  # Fibonacci counts: Huffman's code would be ~160 bits deep
    limited = jpeg_huffman.fit_lengths(skewed)[1]
    assert limited.max() == 16 and (2.0 ** -limited[limited > 0]).sum() < 1
    streams = jpeg_huffman.write_streams(test, 30, lengths, jfif.framing)
    scan = np.asarray(jpeg_huffman.scan_bytes(jpeg_huffman.zigzag_blocks(jnp.asarray(test), 30), lengths))
    head, tail = jfif.framing(28, 28)
    for img, s, n in zip(test, streams, scan):
        full = jfif.rebuild_full(s, 30, False, jpeg_huffman.dht_segments(lengths))
        dec = cv2.imdecode(np.frombuffer(full, np.uint8), cv2.IMREAD_UNCHANGED)
        ref = cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 30])[1], cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(dec, ref)
        assert len(s) == len(head) + n + len(tail)
    standard = [
        len(jfif.abbreviate(cv2.imencode(".jpg", im, jfif.params(30, False))[1].tobytes(), False)) for im in test
    ]
    assert sum(map(len, streams[:20])) < sum(standard[:20])  # the smooth ones: like the training images


def test_jpeg_codec_with_fitted_tables_keeps_them_as_state(rng):
    """fitted_tables: fit reads training features and returns the code lengths; the graph's pixels
    are the default tables' (Huffman coding is lossless) and its bytes the fitted streams' len()."""
    codec = make_codec({"name": "jpeg", "quality": 30, "fitted_tables": True})
    default = make_codec({"name": "jpeg", "quality": 30})
    z = feature_maps(rng, 24, 14, 14, 2)
    assert codec.fits_data and not default.fits_data
    state = codec.fit({}, [z[:8], z[8:16]])
    x = jnp.asarray(z[16:])
    (x_hat, stats), (ref, _) = codec(x, state=state), default(x)
    np.testing.assert_array_equal(x_hat, ref)
    payloads = codec.encode(z[16:], state=state)
    np.testing.assert_array_equal(stats["bytes_payload"], [len(p) for p in payloads])
    np.testing.assert_array_equal(codec.decode(payloads, z[16:].shape, state=state), np.asarray(ref))
    extra = stats["bytes_full"] - stats["bytes_payload"]
    np.testing.assert_array_equal(extra, jfif.omitted_bytes(True) + jpeg_huffman.dht_bytes(state["lengths"]))
    assert codec.side_info_bytes(state) == jpeg_huffman.dht_bytes(state["lengths"])
    jax.jit(lambda x, s: codec(x, state=s))(x, state)  # traced tables
    with pytest.raises(ValueError, match="fit it first"):
        codec.encode(z[:1])
    with pytest.raises(ConfigError, match="one kind of Huffman tables"):
        make_codec({"name": "jpeg", "fitted_tables": True, "optimize": True})
