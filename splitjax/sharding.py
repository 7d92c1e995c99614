"""Spreading sweeps and attacks over every device with jax.sharding.

One 1-D mesh over all devices (`jax.devices()`, so every host's under
`jax.distributed.initialize()`). Training shards the leading *setting* axis of
a shape group (padded with copies of the last setting to a multiple of the
device count; the copies are dropped afterwards); EXACT shards the *record*
axis of each step's batch, the optimiser that of each batch of records. The data and parameters that every shard needs are
replicated. Under jit, XLA's SPMD partitioner splits the vmapped programs, so
the numbers are those of one device (tested with
XLA_FLAGS=--xla_force_host_platform_device_count=8 on CPU).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "devices"


def mesh() -> Mesh | None:
  """The 1-D mesh over all devices, or None on a single device."""
  devices = jax.devices()
  if len(devices) == 1:
    return None
  return Mesh(np.asarray(devices), (AXIS,))


def pad_leading(tree, multiple: int):
  """Pads every leaf's leading axis to a multiple, repeating the last entry."""
  n = jax.tree.leaves(tree)[0].shape[0]
  extra = -n % multiple
  if not extra:
    return tree
  return jax.tree.map(
      lambda a: np.concatenate([np.asarray(a)] + [np.asarray(a)[-1:]] * extra), tree)


def shard_axis(tree, m: Mesh, axis: int):
  """Places every leaf sharded along `axis` over the mesh."""
  def put(a):
    spec = PartitionSpec(*([None] * axis + [AXIS]))
    return jax.device_put(a, NamedSharding(m, spec))
  return jax.tree.map(put, tree)


def to_host(tree):
  """Every leaf as a whole numpy array on this host: jax.device_get, or, for
  arrays spread over several hosts (not fully addressable), an all-gather
  that every host must call."""
  if all(getattr(a, "is_fully_addressable", True) for a in jax.tree.leaves(tree)):
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def replicate(tree, m: Mesh):
  return jax.tree.map(lambda a: jax.device_put(a, NamedSharding(m, PartitionSpec())),
                      tree)
