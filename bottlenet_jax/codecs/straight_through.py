"""BottleNet's straight-through rule for a non-differentiable codec step, correct under shard_map.

A host callback's result is typed device-invariant inside shard_map. Left so, the transpose of the
implicit invariant -> varying cast psums the cotangent and the gradient comes out N x too large,
silently; casting in the primal and the fwd rule keeps the types honest (tests/test_parallel.py).
"""

from __future__ import annotations

from collections.abc import Callable

import jax


def varying_axes(x) -> frozenset:
    """Manual mesh axes along which `x` varies (empty outside shard_map).

    Newer JAX spells this `typeof(x).vma`, 0.10 `typeof(x).manual_axis_type.varying`.
    """
    t = jax.typeof(x)
    vma = getattr(t, "vma", None)
    if vma is None:
        mat = getattr(t, "manual_axis_type", None)
        vma = mat.varying if mat is not None else frozenset()
    return frozenset(vma)


def match_varying(tree, like):
    """Give every leaf of `tree` the varying type of `like` (module docstring)."""
    want = varying_axes(like)

    def fix(leaf):
        missing = tuple(sorted(want - varying_axes(leaf)))
        return jax.lax.pcast(leaf, missing, to="varying") if missing else leaf

    return jax.tree.map(fix, tree)


def straight_through(roundtrip: Callable[[jax.Array], tuple[jax.Array, dict]]):
    """Wrap a non-differentiable `x -> (x_hat, stats)` so its backward pass is the identity: the
    compressor/decompressor pair is treated as identity in backprop."""

    @jax.custom_vjp
    def f(x):
        return match_varying(roundtrip(x), x)

    def fwd(x):
        return match_varying(roundtrip(x), x), None

    def bwd(_, cotangents):
        g_x_hat, _ = cotangents
        return (g_x_hat,)

    f.defvjp(fwd, bwd)
    return f
