"""Spreading sweeps and attacks over every device with jax.sharding.

One 1-D mesh over all devices (`jax.devices()`, so every host's under
`jax.distributed.initialize()`). Training shards the leading *setting* axis of
a shape group (padded with copies of the last setting to a multiple of the
device count; the copies are dropped afterwards); EXACT its attacked
*settings* (or, with fewer settings than devices, the *record* axis of each
step's batch); the optimiser the records of each batch. The
data and parameters that every shard needs are replicated. Under jit, XLA's
SPMD partitioner splits the vmapped programs, so the numbers are those of one
device (tested with XLA_FLAGS=--xla_force_host_platform_device_count=8 on
CPU, and with two processes of one CPU device each).

Several hosts: training spreads the settings over every host's devices.
A sweep lays a batch's runs along the axis so that every host gets a like
share of the runs to attack (`placement`). Afterwards each host keeps only
the settings on its own devices (`host_rows`, `host_part`) and attacks them
on its own devices (`local_mesh`), without communication; the attack
results, small, then go to every process (`allgather_json`). What the
host reads of arrays spread over several hosts goes through `to_host` or
`gather` (all-gathers), and what process 0 reads of the workdir through
`from_process_0`, so that every process takes the same path.
"""

from __future__ import annotations

import collections
import json

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from splitjax.errors import ConfigError

AXIS = "devices"


def mesh() -> Mesh | None:
  """The 1-D mesh over all devices, or None on a single device."""
  return _mesh(jax.devices())


def local_mesh() -> Mesh | None:
  """The 1-D mesh over this process's devices, or None on a single one (the
  attacks' mesh: each host attacks the settings it holds). On one host the
  same as `mesh()`."""
  return _mesh(jax.local_devices())


def _mesh(devices) -> Mesh | None:
  if len(devices) == 1:
    return None
  return Mesh(np.asarray(devices), (AXIS,))


def host_rows(num_rows: int) -> list[int]:
  """The rows of a leading axis of `num_rows` that this process holds once
  it is padded to the device count and sharded over `mesh()` (as training
  does): each device holds a contiguous block, in the mesh's device order.
  Padding rows are left out. On one host: all rows."""
  m = mesh()
  if m is None or jax.process_count() == 1:
    return list(range(num_rows))
  return [r for d, rows in zip(m.devices.flat, _blocks(num_rows, m.size))
          if d.process_index == jax.process_index() for r in rows]


def _blocks(num_rows: int, num_devices: int) -> list[range]:
  """The rows of each device, in mesh order, once an axis of `num_rows` is
  padded to a multiple of the device count and sharded: contiguous blocks
  of ceil(num_rows / num_devices), padding left out (so the last ones may
  be short or empty)."""
  block = -(-num_rows // num_devices)
  return [range(min(num_rows, i * block), min(num_rows, (i + 1) * block))
          for i in range(num_devices)]


def placement(weights: list[float]) -> list[int]:
  """The order in which to lay `len(weights)` runs along a sharded setting
  axis (row r holds run order[r]) so that each host's share of the attacks,
  and each of its devices' share, carries about the same total weight (e.g.
  0 for a run that is trained but not attacked): `balanced_order` over the
  mesh's devices. The identity on one host, where one process attacks every
  run whatever the order."""
  m = mesh()
  if m is None or jax.process_count() == 1:
    return list(range(len(weights)))
  return balanced_order(weights, [d.process_index for d in m.devices.flat])


def balanced_order(weights: list[float], device_hosts: list[int]) -> list[int]:
  """Runs to the rows that sharding gives each device (`_blocks`); device i
  is on host device_hosts[i]. The heaviest run first, each to a device with
  a free row: on the host with the least weight per device so far, then
  that host's device with the least weight (ties: the first). Returns the
  runs in row order, each device's in their given order."""
  n, num = len(weights), len(device_hosts)
  free = [len(rows) for rows in _blocks(n, num)]
  size = collections.Counter(device_hosts)
  load = [0.0] * num
  host_load = collections.Counter()
  rows = [[] for _ in range(num)]
  for j in sorted(range(n), key=lambda j: -weights[j]):  # Stable: ties keep order.
    i = min((i for i in range(num) if free[i]),
            key=lambda i: (host_load[device_hosts[i]] / size[device_hosts[i]], load[i]))
    rows[i].append(j)
    free[i] -= 1
    load[i] += weights[j]
    host_load[device_hosts[i]] += weights[j]
  return [j for r in rows for j in sorted(r)]


def host_devices() -> tuple[int, int]:
  """(the most devices one process has, all devices) for the sharding of
  `host_rows`: a host holds at most ceil(rows / all) * most rows. (1, 1) on
  one host, where it holds every row. The same on every process, so that
  checks built on it agree."""
  m = mesh()
  if m is None or jax.process_count() == 1:
    return 1, 1
  per_process = collections.Counter(d.process_index for d in m.devices.flat)
  return max(per_process.values()), m.size


def host_part(tree, rows: list[int], num_rows: int):
  """The given rows (`host_rows`) of every leaf's leading axis, which has
  `num_rows` real rows and maybe padding after them. A leaf this process holds
  whole is sliced as it is (device arrays stay on their devices); a leaf
  spread over several hosts is read from this host's shards into numpy,
  without communication."""
  want = np.asarray(rows, np.int64)
  every = rows == list(range(num_rows))

  def take(a):
    if getattr(a, "is_fully_addressable", True):
      if every:
        return a if a.shape[0] == num_rows else a[:num_rows]
      return a[want]
    out = np.empty((len(rows),) + a.shape[1:], a.dtype)
    filled = np.zeros(len(rows), bool)
    for shard in a.addressable_shards:
      lead, *rest = shard.index
      if any(sl != slice(None) for sl in rest):
        raise ValueError(f"host_part: a leaf of shape {a.shape} is split along "
                         "more than its leading axis")
      start, stop, _ = lead.indices(a.shape[0])
      hit = (want >= start) & (want < stop)
      if hit.any():
        out[hit] = np.asarray(shard.data)[want[hit] - start]
        filled |= hit
    if not filled.all():
      raise ValueError(f"host_part: rows {want[~filled].tolist()} are not on this host")
    return out
  return jax.tree.map(take, tree)


def allgather_json(obj) -> list:
  """`obj` (JSON-able) of every process, in process order, on every process
  (a collective: every process must call it). On one process: [obj]."""
  if jax.process_count() == 1:
    return [obj]
  data = np.frombuffer(json.dumps(obj, default=str).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.int64(data.size))).ravel()
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:data.size] = data
  held = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(held[i, :sizes[i]].tobytes()) for i in range(len(sizes))]


def pad_leading(tree, multiple: int):
  """Pads every leaf's leading axis to a multiple, repeating the last entry
  (numpy leaves stay on the host, device arrays on their devices)."""
  n = jax.tree.leaves(tree)[0].shape[0]
  extra = -n % multiple
  if not extra:
    return tree
  def pad(a):
    cat = np.concatenate if isinstance(a, np.ndarray) else jnp.concatenate
    return cat([a] + [a[-1:]] * extra)
  return jax.tree.map(pad, tree)


def shard_axis(tree, m: Mesh, axis: int):
  """Places every leaf sharded along `axis` over the mesh."""
  def put(a):
    spec = PartitionSpec(*([None] * axis + [AXIS]))
    return jax.device_put(a, NamedSharding(m, spec))
  return jax.tree.map(put, tree)


def to_host(tree):
  """Every leaf as a whole numpy array on this host (see gather: every host
  must call it when a leaf is spread over several)."""
  return jax.device_get(gather(tree))


def gather(tree):
  """`tree` unchanged when this process holds every leaf whole (one host);
  else each leaf spread over several hosts all-gathered to a numpy array on
  every host (a collective: every process must call it)."""
  leaves, treedef = jax.tree.flatten(tree)
  spread = [i for i, a in enumerate(leaves)
            if not getattr(a, "is_fully_addressable", True)]
  if not spread:
    return tree
  whole = multihost_utils.process_allgather([leaves[i] for i in spread], tiled=True)
  for i, a in zip(spread, whole):
    leaves[i] = a
  return jax.tree.unflatten(treedef, leaves)


def from_process_0(fn, *args):
  """fn(*args) on process 0 only, its result (JSON-able) given to every
  process, so that all take the same branch. An error it raises is raised
  on every process (a ConfigError as one, anything else as RuntimeError).
  Multi-host runs use it for what process 0 reads from the workdir (the
  hosts' workdirs need not be shared). On one process: fn(*args)."""
  if jax.process_count() == 1:
    return fn(*args)
  out, failure = None, None
  if jax.process_index() == 0:
    try:
      out = {"value": fn(*args)}
    except Exception as e:  # Told to every process before it is raised here.
      failure = e
      out = {"error": str(e), "config": isinstance(e, ConfigError)}
  out = allgather_json(out)[0]
  if failure is not None:
    raise failure
  if "error" in out:
    if out["config"]:
      raise ConfigError(out["error"])
    raise RuntimeError(f"process 0 failed: {out['error']}")
  return out["value"]


def replicate(tree, m: Mesh):
  return jax.tree.map(lambda a: jax.device_put(a, NamedSharding(m, PartitionSpec())),
                      tree)
