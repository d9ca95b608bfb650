"""Codec blocks as older versions saved them (a workdir's config.json, an export's manifest.json).

Only saved files go through here; a config being written is checked strictly by `make_codec`.
"""

from __future__ import annotations

from bottlenet_jax.codecs.base import REGISTRY, codec_settings

# Before codecs owned their settings, every config carried one shared block with all of these.
_SHARED_BLOCK = {
    "quality",
    "layout",
    "optimize",
    "backend",
    "threads",
    "pool",
    "sigma",
    "sigma_range",
    "p",
    "p_range",
    "per_sample",
    "minmax",
}


def upgrade_settings(block: dict) -> dict:
    """A saved codec block -> the current settings of its codec: the shared keys its codec does not
    take are dropped, `threads` is now `workers`, state that once lived in the settings is dropped
    (`read_saved` returns it), and settings added since are there with their defaults (so
    `--config.codec.NEW=...` applies to an old workdir too)."""
    return read_saved(block)[0]


def read_saved(block: dict) -> tuple[dict, dict]:
    """(settings as `upgrade_settings`, the state the block carried inline as arrays, {} if none)."""
    block = dict(block)
    name = block.get("name", "identity")
    defaults = codec_settings(name)
    block, state = REGISTRY[name].split_saved(block)
    if "threads" in block and "workers" in defaults:
        block.setdefault("workers", block.pop("threads"))
    return {**defaults, **{k: v for k, v in block.items() if k in defaults or k not in _SHARED_BLOCK}}, state
