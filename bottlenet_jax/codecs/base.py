"""The codec contract every feature codec follows: settings + state, one call in the graph, bytes off it.

A codec is its *settings* (a frozen dataclass: hyperparameters, in the config) and, for codecs that
learn or fit something, arrays kept apart from the settings:

    params = codec.init_params(key, shape)       # trained with the model: params["codec"] ({} for most)
    state = codec.fit(params, features)          # fitted once after training: a dict of arrays ({} for most)

    x_hat, stats = codec(x, train=..., rng=..., condition=..., params=params, state=state)  # in the graph
    payloads = codec.encode(x, state=state)      # off the graph: list[bytes], one per sample
    x_hat = codec.decode(payloads, shape, state=state)  # equals the graph's x_hat bit for bit

`features` are batches [n, h, w, C] of what the edge sends on the training split, read lazily: a
codec reads only as many as it needs, none when `fits_data` is False. The state is saved beside the
checkpoint (checkpoint.CodecStateStore) and in exports as arrays; eval, export and serving read it
and never fit again. `state=None` in the graph means "not fitted yet" (periodic evaluation during
training): each codec says what it does then.

Every codec reports the same stat keys (``STAT_KEYS``): ``bytes_full`` (a self-contained file per
sample) and ``bytes_payload`` (what a receiver that knows the codec settings and state needs). The
model, trainer and evaluator only ever see ``(x_hat, stats)`` and never branch on the codec type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.codecs.straight_through import straight_through
from bottlenet_jax.errors import ConfigError

STAT_KEYS = ("bytes_full", "bytes_payload")
#: the Flax collection the model reads a codec's fitted state from (variables[STATE_COLLECTION]["codec"])
STATE_COLLECTION = "codec_state"

#: name -> codec class, filled by @register as each codec module is imported (codecs/__init__).
REGISTRY: dict[str, type] = {}


def register(cls):
    """Class decorator: make a codec buildable by its `name` from a config."""
    if cls.name in REGISTRY:
        raise ValueError(f"codec name {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def _registry() -> dict:
    """REGISTRY, every codec module imported first (the package loads them on first use)."""
    from bottlenet_jax import codecs

    codecs.load_all()
    return REGISTRY


def codec_settings(name: str, **overrides) -> dict:
    """The settings (and their defaults) codec `name` takes, name first, with `overrides`: what a
    config's codec block holds. Each codec owns its names and defaults; nothing outside codecs/
    lists them."""
    if name not in _registry():
        raise ConfigError(f"codec.name={name!r}: unknown codec; valid: {', '.join(sorted(REGISTRY))}")
    out = {"name": name, **{f.name: f.default for f in dataclasses.fields(REGISTRY[name])}}
    unknown = sorted(set(overrides) - set(out))
    if unknown:
        raise ConfigError(
            f"codec.{unknown[0]}: not a setting of the {name} codec (its settings: "
            f"{', '.join(k for k in out if k != 'name') or 'none'})"
        )
    return {**out, **overrides}


def make_codec(cfg=None, **overrides):
    """Build the codec a config mapping names (`name` + that codec's settings); an unknown
    setting is a one-line ConfigError, not silently ignored."""
    cfg = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else (cfg or {"name": "identity"}))
    cfg.update(overrides)
    name = cfg.pop("name", "identity")
    if name == "jpeg_xla":  # configs and exports from before the exact device codec
        raise ConfigError(
            "codec.name='jpeg_xla' (a float emulation of JPEG) is gone: use codec.name='jpeg' with "
            "codec.backend='device', which is libjpeg bit for bit"
        )
    settings = codec_settings(name, **cfg)
    del settings["name"]
    return REGISTRY[name](**{k: _tuples(v) for k, v in settings.items()})


def _tuples(v):
    """JSON lists (a saved manifest, a config) back to the tuples a codec holds, at any depth."""
    return tuple(_tuples(e) for e in v) if isinstance(v, (list, tuple)) else v


def per_sample(value: int, x) -> dict:
    """Constant per-sample byte counts for codecs whose size does not depend on content."""
    n = jnp.full(x.shape[:-3], value, jnp.int32)
    return {k: n for k in STAT_KEYS}


def exact_size(payload: bytes, size: int, what: str) -> None:
    if len(payload) != size:
        raise ValueError(f"{len(payload)} bytes: {what} of this shape are exactly {size} bytes")


def first_samples(batches: Iterable[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """The batches up to n samples in all (n = 0: every batch); reads no batch beyond them."""
    seen = 0
    for b in batches:
        if n and seen >= n:
            return
        yield b[: n - seen] if n else b
        seen += len(b)


@dataclasses.dataclass(frozen=True, eq=False)
class Codec:
    """Base class (module docstring). Subclasses implement `roundtrip` (or `__call__`), `encode`,
    `decode` and `check_payload`; codecs with parameters or state also the methods that make them."""

    name: ClassVar[str] = "base"
    #: the setting `eval.py --sweep` varies with the same weights ("" = nothing to sweep)
    sweep_field: ClassVar[str] = ""
    #: the setting a channel-conditioned encoder is given ("" = source codecs: no condition)
    condition_field: ClassVar[str] = ""
    #: what the reduction unit ends in, i.e. the codec's input domain: "sigmoid" ([0, 1], for the
    #: 8-bit codecs and channels) or "linear" (real values: the entropy codec quantises to integers)
    unit_output: ClassVar[str] = "sigmoid"
    #: whether stats carry "rate_bits" (float32[b], differentiable) that a rate term can train on
    differentiable_rate: ClassVar[bool] = False
    #: settings that change how bytes are written but not the fitted state (a state fitted under one
    #: value serves every value: checkpoint.codec_fingerprint leaves them out)
    transport_settings: ClassVar[tuple] = ()
    #: names in params["codec"] that only `aux_loss` trains (e.g. an entropy model's medians): the
    #: train step gives them an optimizer of their own (steps.create_optimizer: Adam at
    #: aux_learning_rate, CompressAI's split), so neither loss's schedule nor scale drives the other
    aux_params: ClassVar[tuple] = ()
    #: names in params["codec"] trained with Adam at codec_learning_rate instead of the network's
    #: optimizer (steps.create_optimizer): parameters the network's SGD would drive out of range
    adam_params: ClassVar[tuple] = ()

    # ------------------------------------------------------------------ parameters and state
    def init_params(self, key, shape) -> dict:
        """The codec's trainable parameters for features of `shape` ([h, w, C]); they live in the
        model's params["codec"]. {} for codecs without any."""
        del key, shape
        return {}

    def aux_loss(self, params: dict):
        """A loss on the codec's `aux_params` only (its gradient reaches no other parameter), which
        the train step adds and their own optimizer minimises (None: none)."""
        del params

    @property
    def fits_data(self) -> bool:
        """Whether `fit` reads training features (else it computes its state from params alone)."""
        return False

    def fit(self, params: dict, features: Iterable[np.ndarray]) -> dict:
        """The codec's state, a dict of numpy arrays, fitted once after training to its trained
        `params` and (when `fits_data`) to `features` (module docstring); {} for codecs with none."""
        del params, features
        return {}

    def side_info_bytes(self, state: dict) -> int:
        """Bytes of the state in the binary form a sender ships once to every receiver."""
        return int(sum(np.asarray(v).nbytes for v in jax.tree.leaves(state)))

    # ------------------------------------------------------------------ in the graph
    def __call__(
        self, x: jax.Array, *, train: bool = False, rng: Any = None, condition: Any = None, params=None, state=None
    ):
        del train, rng, condition, params
        return straight_through(lambda v: self.roundtrip(v, state))(x)

    def roundtrip(self, x: jax.Array, state=None) -> tuple[jax.Array, dict]:
        """x -> (x_hat, stats) without gradient (the default `__call__` makes it straight-through)."""
        raise NotImplementedError

    def condition(self, batch_shape, *, train: bool, rng: Any = None):
        """Per-sample channel condition the encoder may see (channel codecs); None for source codecs."""
        del batch_shape, train, rng
        return None

    def signal_power(self, x: jax.Array) -> jax.Array:
        """Per-sample mean square of what the codec puts on the link (channel codecs: the P of the SNR)."""
        return jnp.mean(jnp.square(x.astype(jnp.float32)), axis=(-3, -2, -1))

    # ------------------------------------------------------------------ off the graph
    def encode(self, x: np.ndarray, state=None) -> list[bytes]:
        raise NotImplementedError

    def decode(self, payloads: Sequence[bytes], shape: Sequence[int], state=None) -> np.ndarray:
        raise NotImplementedError

    def decode_each(self, payloads: Sequence[bytes], shape: Sequence[int], state=None) -> tuple[np.ndarray, list]:
        """`decode`, payload by payload: (features [n, h, w, c], per payload None or the ValueError
        saying why it cannot be decoded, its features then zeros), so that a server decoding many
        requests' payloads in one call fails only the bad ones' requests. Here: one call, and if it
        fails, one call per payload; codecs whose decoder knows which stream failed override it."""
        out, errors = np.zeros(tuple(shape), np.float32), []
        if len(payloads) > 1:
            try:
                out[...] = self.decode(payloads, shape, state=state)
                return out, [None] * len(payloads)
            except Exception:  # noqa: BLE001  (a payload's fault, found below; anything else fails there too)
                pass
        for i, p in enumerate(payloads):
            try:
                out[i] = self.decode([p], (1, *shape[1:]), state=state)[0]
                errors.append(None)
            except Exception as e:  # noqa: BLE001  (whatever a codec raises on bytes that are not its own)
                errors.append(_one_line(e))
        return out, errors

    def warm_up(self, shape: Sequence[int], state=None, batches: Sequence[int] = (1,)) -> None:
        """Compile whatever decoding features of `shape` ([h, w, c]) in batches of these sizes can
        need, so that no payload a server is sent compiles anything later. Here: decode one encoded
        sample per batch size; codecs whose programs depend on more than the batch size override it."""
        body = self.encode(np.zeros((1, *shape), np.float32), state=state)[0]
        for n in batches:
            self.decode([body] * n, (n, *shape), state=state)

    def check_payload(self, payload: bytes, shape: Sequence[int], state=None) -> None:
        """Raise ValueError unless `payload` can be one sample of `shape` ([h, w, c]) from this
        codec, reading only its size and header (a server calls it before any decoding, so a
        payload's claims cannot make it allocate or compute more than the export's shape needs)."""
        raise NotImplementedError

    def settings(self) -> dict:
        """JSON-able settings a receiver needs (a config's codec block; an export's manifest)."""
        return {"name": self.name, **dataclasses.asdict(self)}

    @classmethod
    def split_saved(cls, block: dict) -> tuple[dict, dict]:
        """A saved codec block of an older version -> (its settings, the state it carried inline, as
        arrays; {} if none). Codecs whose state once lived in their settings override it."""
        return block, {}


def _one_line(e: BaseException) -> ValueError:
    """A codec's error as one line (its first), as a ValueError whatever the codec raised."""
    return ValueError(str(e).splitlines()[0] if str(e) else type(e).__name__)


class CodecLayer(nn.Module):
    """Any codec as a layer of the model: creates its parameters (params[name]) and hands it its
    fitted state from the STATE_COLLECTION collection when the caller supplies one."""

    codec: Codec

    @nn.compact
    def __call__(self, x, *, train: bool = False, rng: Any = None, condition: Any = None):
        shape = tuple(x.shape[-3:])
        names = jax.eval_shape(lambda k: self.codec.init_params(k, shape), jax.random.key(0))
        params = {n: self.param(n, lambda key, n=n: self.codec.init_params(key, shape)[n]) for n in names}
        loss = self.codec.aux_loss(params) if params else None
        if loss is not None:
            self.sow("losses", "codec_aux", loss)
        state = self.variables.get(STATE_COLLECTION) or None
        return self.codec(x, train=train, rng=rng, condition=condition, params=params, state=state)
