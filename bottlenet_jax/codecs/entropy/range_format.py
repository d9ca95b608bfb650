"""The factorized entropy codec's range-coded streams (`stream="range"`: the format up to cbe3d3f,
which codec blocks saved before `stream` existed keep, so old workdirs and exports reproduce their
bytes; the default rANS streams are streams.py's).

constriction's range coder (coding/rangecoder.py, the one wrapper) codes the channels one after
another into one stream per sample, escapes after each channel; with rows finer than the channel
each symbol is coded under its own row (constriction's categorical model family).
"""

from __future__ import annotations

import numpy as np

from bottlenet_jax.codecs.coding import rangecoder
from bottlenet_jax.codecs.entropy.tables import (
    ESC_BITS,
    Tables,
    neighbour_states,
    sign_bucket,
    states_per_element,
    symbol_indices,
)


def _models(t: Tables):
    """(per channel one categorical model, the categorical family, the escapes' uniform model) of
    these tables, built once per Tables object."""
    cache = t.__dict__.setdefault("_range_models", [])
    if not cache:
        cats = [rangecoder.categorical(t.freqs[c, : k + 1]) for c, k in enumerate(t.widths)]
        cache += [cats, rangecoder.family(), rangecoder.uniform(2**ESC_BITS)]
    return cache


def channel_rows(t: Tables, context: str) -> list[np.ndarray]:
    """Per channel its rows' frequencies, float64 [h*w*S, K + 1], row (i*w + j)*S + state (cached
    per Tables object and context: the decoder's per-symbol model parameters)."""
    cache = t.__dict__.setdefault("_channel_rows", {})
    if context not in cache:
        s, c = states_per_element(context), t.channels
        per = t.freqs.reshape(-1, c, s, t.freqs.shape[1])
        cache[context] = [
            np.asarray(per[:, ch, :, : k + 1].reshape(-1, k + 1), np.float64) for ch, k in enumerate(t.widths)
        ]
    return cache[context]


def encode_sample(q: np.ndarray, t: Tables) -> bytes:
    """Symbols [h, w, C] -> one range-coded stream (channel after channel, escapes after each)."""
    context = t.context(q.shape)
    out = rangecoder.Writer()
    widths = t.widths
    idx = symbol_indices(q, t.lower, widths)
    hw = q.shape[0] * q.shape[1]
    local = None  # each element's row among its channel's: (i*w + j)*S + state
    if context == "element":
        local = np.broadcast_to(np.arange(hw)[:, None], (hw, t.channels))
    elif context == "neighbours":
        local = np.arange(hw)[:, None] * 9 + neighbour_states(idx, t.zero).reshape(hw, t.channels)
    rows = channel_rows(t, context) if local is not None else None
    for c in range(t.channels):
        sym = idx[..., c].ravel()
        if local is None:
            out.write(sym, _models(t)[0][c])
        else:
            out.write(sym, _models(t)[1], rows[c][local[:, c]])
        esc = sym == widths[c]
        if esc.any():
            out.write(q[..., c].ravel()[esc] + 2 ** (ESC_BITS - 1), _models(t)[2])
    return out.getvalue()


def decode_sample(data: bytes, shape, t: Tables) -> np.ndarray:
    """One stream -> symbols [h, w, C]; a stream that is not exactly one sample's raises ValueError."""
    h, w, c_ = shape
    context = t.context(shape)
    src = rangecoder.Reader(data)
    widths, zero = t.widths, t.zero
    rows = channel_rows(t, context) if context != "channel" else None
    idx = np.empty((h, w, c_), np.int64)
    out = np.empty((h, w, c_), np.int32)
    try:
        for c in range(c_):
            if context == "channel":
                idx[..., c] = src.read(_models(t)[0][c], h * w).reshape(h, w)
            elif context == "element":
                idx[..., c] = src.read(_models(t)[1], rows[c]).reshape(h, w)
            else:  # row by row: an element's state needs the row above and the previous channel
                for i in range(h):
                    up = sign_bucket(idx[i - 1, :, c], zero[c]) if i else np.ones(w, np.int64)
                    prev = sign_bucket(idx[i, :, c - 1], zero[c - 1]) if c else np.ones(w, np.int64)
                    idx[i, :, c] = src.read(_models(t)[1], rows[c][(i * w + np.arange(w)) * 9 + 3 * up + prev])
            vals = idx[..., c] + t.lower[c]
            esc = idx[..., c] == widths[c]
            if esc.any():
                vals[esc] = src.read(_models(t)[2], int(esc.sum())).astype(np.int64) - 2 ** (ESC_BITS - 1)
            out[..., c] = vals
    except Exception as e:  # constriction reports a stream that runs out as a generic error
        raise ValueError(f"entropy stream does not decode to {h}x{w}x{c_} symbols ({e})") from None
    # A range decoder reads any words as some symbols (missing ones as zeros), so a stream is
    # accepted only in the one form our encoder writes for what it decodes to.
    if not src.exhausted() or encode_sample(out, t) != bytes(data):
        raise ValueError(f"entropy stream is not an encoding of {h}x{w}x{c_} symbols under this model's tables")
    return out
