"""The lightweight codec (Cohen, Choi & Bajic 2021): no retraining; the clip model, quantisers and
range coding of `quantizer.py` behind the codec contract. Its calibrated tables are its state."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.codecs.base import Codec, first_samples, register
from bottlenet_jax.codecs.coding import rangecoder
from bottlenet_jax.codecs.lightweight.quantizer import (
    QUANTIZERS,
    calibrate,
    calibrate_free,
    decode_symbols,
    encode_features,
    encode_symbols,
    quantize,
)
from bottlenet_jax.errors import ConfigError


@register
@dataclasses.dataclass(frozen=True, eq=False)
class LightweightCodec(Codec):
    """Clip + scalar quantiser + range coder; its tables are its state, calibrated by `fit` on the
    first `fit_examples` training samples the edge sends (module docstring). Uncalibrated (state
    None: model init, training) it is the uniform quantiser of `num_levels` on [0, 1] with equal
    probabilities."""

    name: ClassVar[str] = "lightweight"
    num_levels: int = 4  # N
    quantizer: str = "uniform"  # uniform on [0, c*] | ecsq (N levels at most; unused ones dropped)
    ecsq_lambda: float = 0.1  # ECSQ's rate weight in units of b^2 (b: the exponential scale)
    fit_examples: int = 512  # calibration samples (no gradient step: the paper's "no retraining")

    def __post_init__(self):
        if self.num_levels < 2 or self.quantizer not in QUANTIZERS or self.ecsq_lambda < 0 or self.fit_examples < 1:
            raise ConfigError(
                f"codec.num_levels={self.num_levels} (>= 2), codec.quantizer={self.quantizer!r} "
                f"({' or '.join(QUANTIZERS)}), codec.ecsq_lambda={self.ecsq_lambda} (>= 0), "
                f"codec.fit_examples={self.fit_examples} (>= 1)"
            )

    @property
    def fits_data(self) -> bool:
        return True

    def fit(self, params, features):
        x = np.concatenate(list(first_samples(features, self.fit_examples)))
        return calibrate(x, self.num_levels, self.quantizer, self.ecsq_lambda)

    def _state(self, state):
        if state:
            return state
        return calibrate_free(self.num_levels)

    def side_info_bytes(self, state) -> int:
        s = self._state(state)
        return 4 * (len(s["levels"]) + len(s["thresholds"])) + 2 * len(s["probs"])  # f32 tables + 16-bit probs

    @classmethod
    def split_saved(cls, block):
        """Configs before the state: the calibrated tables were settings (levels, thresholds, probs)."""
        block = dict(block)
        old = {k: block.pop(k) for k in ("levels", "thresholds", "probs") if isinstance(block.get(k), (list, tuple))}
        if not old:
            return block, {}
        block.setdefault("num_levels", len(old["levels"]))
        state = {k: np.asarray(v, np.float32) for k, v in old.items()}
        return block, {**state, "clip": np.float32(state["levels"][-1])}

    def roundtrip(self, x, state=None):
        s = self._state(state)
        lead = x.shape[:-3]
        out = (
            jax.ShapeDtypeStruct(x.shape, jnp.float32),
            jax.ShapeDtypeStruct(lead, jnp.int32),
        )

        def host(x, levels, thresholds, probs):  # (under vmap the tables arrive with a leading 1)
            x, levels, thresholds, probs = (
                np.asarray(x, np.float32),
                *(np.ravel(v) for v in (levels, thresholds, probs)),
            )
            sym = quantize(x.reshape((-1, *x.shape[-3:])), levels, thresholds)
            n = np.array([len(encode_symbols(v, probs)) for v in sym], np.int32).reshape(x.shape[:-3])
            return levels.astype(np.float32)[sym].reshape(x.shape), n

        x_hat, n = jax.pure_callback(
            host, out, x.astype(jnp.float32), s["levels"], s["thresholds"], s["probs"], vmap_method="expand_dims"
        )
        return x_hat.astype(x.dtype), {"bytes_full": n, "bytes_payload": n}

    def encode(self, x, state=None):
        return encode_features(x, self._state(state))

    def check_payload(self, payload, shape, state=None):
        rangecoder.check_size(payload, int(np.prod(shape)), 24)  # constriction's probabilities are 24-bit

    def decode(self, payloads, shape, state=None):
        s = self._state(state)
        count = int(np.prod(shape[1:]))
        lv = np.asarray(s["levels"], np.float32)
        return np.stack([lv[decode_symbols(p, count, s["probs"])].reshape(shape[1:]) for p in payloads])
