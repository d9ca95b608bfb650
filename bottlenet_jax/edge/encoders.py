"""Each source codec's encoder in numpy, from an export's settings (manifest) and state arrays
(codec_state.npz): `encoder(settings, state, shape) -> features [n, h, w, C] -> payloads`.

What each one is, as the codec writes it (the codec's module says why):
  identity    float32 little-endian, C order;            uint8  round(x * 255), clipped;
  jpeg        the maps tiled into one grey image, cv2 at `quality`, the abbreviated stream (+ 8 bytes
              of min-max first with `minmax`); fitted Huffman tables need the scan's coefficients
              (the JAX codec's), so such an export is refused here with one line;
  lightweight its calibrated quantiser and range coder;
  entropy     the factorized codec's rANS streams (its tables per channel, element or neighbour
              state) or, `stream="range"`, its older range-coded ones;
  hyperprior  z and y in one rANS stream, its integer networks in numpy.
Channels (awgn, bec) put features on a channel, not bytes on a link: not an edge encoder.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class UnsupportedAtTheEdge(ValueError):
    """The export's codec cannot encode without the training package (one line says why)."""


def encoder(settings: dict, state: dict, shape) -> Callable[[np.ndarray], list[bytes]]:
    """The numpy encoder of the codec `settings` (a manifest's "codec" block) with its `state`
    (arrays) for features of `shape` ([h, w, C])."""
    name = settings.get("name", "identity")
    make = _ENCODERS.get(name)
    if make is None:
        raise UnsupportedAtTheEdge(f"codec {name!r}: no edge encoder (edge encoders: {', '.join(sorted(_ENCODERS))})")
    return make(settings, state, tuple(int(v) for v in shape))


def _identity(settings, state, shape):
    return lambda x: [np.ascontiguousarray(s, dtype="<f4").tobytes() for s in np.asarray(x)]


def _uint8(settings, state, shape):
    from bottlenet_jax.codecs.quantize import quantize_u8_np

    return lambda x: [s.tobytes() for s in quantize_u8_np(x)]


def _jpeg(settings, state, shape):
    from bottlenet_jax.codecs.jpeg.jfif import encode_maps

    if settings.get("fitted_tables"):
        raise UnsupportedAtTheEdge(
            "jpeg codec with fitted_tables: its scan is re-coded from libjpeg's coefficients in XLA; "
            "export with the standard tables (fitted_tables=false) for the edge runtime"
        )
    q, opt, layout, minmax = (settings.get(k) for k in ("quality", "optimize", "layout", "minmax"))
    return lambda x: encode_maps(x, q, bool(opt), layout or "grid", bool(minmax))


def _lightweight(settings, state, shape):
    from bottlenet_jax.codecs.lightweight.quantizer import calibrate_free, encode_features

    s = dict(state) if state else calibrate_free(int(settings.get("num_levels", 4)))
    return lambda x: encode_features(x, s)


def _entropy(settings, state, shape):
    from bottlenet_jax.codecs.entropy.tables import Tables, quantize_np, rans_streams_np

    t = Tables(**{k: np.asarray(v) for k, v in state.items()})
    t.context(shape)  # these tables code features of this shape (else a ValueError names why)
    if settings.get("stream", "rans") == "range":
        from bottlenet_jax.codecs.entropy.range_format import encode_sample

        return lambda x: [encode_sample(s, t) for s in quantize_np(x, t.medians)]
    precision = int(settings.get("precision", 16))
    return lambda x: rans_streams_np(x, t, precision)


def _hyperprior(settings, state, shape):
    from bottlenet_jax.codecs.entropy.hyper_model import Structure, encode_np

    z_channels, levels = int(np.shape(state["hs_w0"])[2]), int(len(state["y_half"]))
    structure = Structure(shape, z_channels, int(settings["hidden"]), levels, settings.get("form") == "mean_scale")
    precision = int(settings.get("precision", 16))
    return lambda x: encode_np(x, state, structure, precision)


_ENCODERS = {
    "identity": _identity,
    "uint8": _uint8,
    "jpeg": _jpeg,
    "lightweight": _lightweight,
    "entropy": _entropy,
    "hyperprior": _hyperprior,
}
