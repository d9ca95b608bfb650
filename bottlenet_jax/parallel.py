"""Data parallelism with pmap semantics, written as jax.jit(jax.shard_map(...)) over a 1-D mesh.

The batch is sharded on axis ``data``; params/optimizer state are replicated. Inside the mapped
function each device sees its own slice, so a host codec callback codes only that slice.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
BATCH = P(AXIS)
REPLICATED = P()


def make_mesh(devices=None) -> Mesh:
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def data_parallel(fn, mesh: Mesh, in_specs, out_specs, donate_argnums=()):
    """jit of a shard_map: `fn` runs per device with named axis AXIS (use lax.pmean over it)."""
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs), donate_argnums=donate_argnums)


def shard_batch(batch, mesh: Mesh):
    """Host-local numpy batch -> global array sharded over the mesh (works across processes)."""
    sharding = NamedSharding(mesh, BATCH)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, REPLICATED))


def to_host(x) -> np.ndarray:
    """A batch-sharded global array -> numpy on every process (all-gather across hosts)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def maybe_initialize_distributed() -> None:
    """Join a multi-process job when the environment describes one (no-op otherwise).

    Explicit: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID. Cluster environments
    jax auto-detects (SLURM, TPU pods, ...) are handled by a bare initialize() when
    BOTTLENET_DISTRIBUTED=1. CPU processes use gloo collectives.
    """
    addr = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not addr and os.environ.get("BOTTLENET_DISTRIBUTED") != "1":
        return
    if jax.distributed.is_initialized():
        return
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if addr:
        jax.distributed.initialize(addr, int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"]))
    else:
        jax.distributed.initialize()
