"""What the attacking server knows besides its ServerView.

- `ServerData`: its own features x_s of every training record, by record id.
- `AuxSample`: complete records (x_s, x_p, y) of a disjoint auxiliary sample
  (default 10 % of the training split). They are excluded from the targets.
- `Mechanism`: the public parameters of the message defence.
- `ConditionalPrior`: log p(target | x_s, x_p) of any candidate x_p (the
  label, or a private categorical given those before it), from a classifier
  fitted on the auxiliary sample (`baselines.conditional_prior`).
- `CandidateSpace`: every combination of private values an exhaustive attack
  enumerates (categoricals by vocabulary, numerics on a declared grid).

Nothing here holds a target record's x_p or y: the evaluator builds these
(`splitjax.evaluation.split_aux`), keeping only the auxiliary rows' private
values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from splitjax.data.schema import Schema
from splitjax.errors import ConfigError


class ServerData(NamedTuple):
  """The server's own features of every training record (row = record id)."""
  x_s_cat: jax.Array
  x_s_num: jax.Array


class AuxSample(NamedTuple):
  """Complete records the server knows; never attacked."""
  ids: jax.Array      # int32 [A]
  x_s_cat: jax.Array
  x_s_num: jax.Array
  x_p_cat: jax.Array
  x_p_num: jax.Array
  y: jax.Array


class Mechanism(NamedTuple):
  """The public defence: clip norm C (0 = none), noise stddev, and the
  epsilon of label randomized response (inf = none)."""
  clip_norm: float
  noise_stddev: float
  label_epsilon: float = math.inf


class ConditionalPrior(NamedTuple):
  """log p(target | x_s, x_p) for every record and any candidate x_p: a one-
  hidden-layer classifier fitted on the auxiliary sample, its first layer
  split into the part of each record's own x_s (computed once) and the part
  of the candidate's private input, as `CandidateSpace.encode` writes it
  (zero rows where the classifier does not read that input). The target is
  the label, or a private categorical given the ones before it (the 'chain'
  prior).

  Built from the server's x_s alone: it holds no target's x_p or y.
  """
  record_pre: jax.Array      # [N, H] x_s's share of the first layer, with its bias
  private_kernel: jax.Array  # [P, H] the private input's rows of the first layer
  kernel: jax.Array          # [H, V] the target's layer
  bias: jax.Array            # [V]
  temperature: jax.Array     # [] the target's temperature (baselines.temperature)
  log_weight: jax.Array      # [] log w of the mixture with the frequencies (baselines.shrinkage)
  log_rest: jax.Array        # [V] log((1 - w) freq)

  def log_probs(self, private: jax.Array, batch: int = 1024) -> jax.Array:
    """[N, C, V] log p(target | x_s, x_p = private[c]) for private [C, P], in
    blocks of `batch` records (all of them at once would hold an [N, C, H]
    intermediate: ~700 MB for Adult's records and one EXACT chunk)."""
    cand = private @ self.private_kernel                            # [C, H]

    def one(rec):                                                   # [H] -> [C, V]
      logits = jnp.maximum(rec + cand, 0.0) @ self.kernel + self.bias
      return jnp.logaddexp(jax.nn.log_softmax(logits / self.temperature, -1)
                           + self.log_weight, self.log_rest)

    return jax.lax.map(one, self.record_pre, batch_size=batch)


@dataclasses.dataclass(frozen=True)
class CandidateSpace:
  """Private candidates in mixed radix: categoricals first, then numerics.

  Attributes:
    radices: values per private feature, in `model.encode_private` order.
    num_categorical: how many of them are categoricals.
    grids: normalised grid values of each numeric feature.
    raw_grids: the same grids in the feature's own units.
    num_labels: label classes (handled in closed form, not enumerated).
  """
  radices: tuple[int, ...]
  num_categorical: int
  grids: tuple[tuple[float, ...], ...]
  raw_grids: tuple[tuple[float, ...], ...]
  num_labels: int

  @property
  def size(self) -> int:
    return math.prod(self.radices)

  @property
  def width(self) -> int:
    """Columns of `encode`'s private input: one-hots, then numerics."""
    return sum(self.radices[:self.num_categorical]) + len(self.grids)

  def digits(self, index: jax.Array) -> jax.Array:
    """Candidate indices [C] -> per-feature value indices [C, F]."""
    out = []
    for r in reversed(self.radices):
      out.append(index % r)
      index = index // r
    return jnp.stack(out[::-1], axis=-1) if out else index[:, None][:, :0]

  def encode(self, digits: jax.Array) -> jax.Array:
    """Per-feature value indices [C, F] -> the head's private input [C, P]."""
    parts = [jax.nn.one_hot(digits[:, j], r, dtype=jnp.float32)
             for j, r in enumerate(self.radices[:self.num_categorical])]
    for k, grid in enumerate(self.grids):
      parts.append(jnp.asarray(grid, jnp.float32)[digits[:, self.num_categorical + k]][:, None])
    if not parts:  # No private features: the label alone is attacked.
      return jnp.zeros((digits.shape[0], 0), jnp.float32)
    return jnp.concatenate(parts, axis=-1)


def candidate_space(schema: Schema, numeric_grids: tuple[str, ...]) -> CandidateSpace:
  """Builds the space; numeric private features need a 'name:lo:hi:step' grid.

  Raises:
    ConfigError: a numeric private feature without a grid, or a bad grid.
  """
  grids = {}
  for spec in numeric_grids:
    parts = spec.split(":")
    if len(parts) != 4:
      raise ConfigError(f"attack.exact.numeric_grids: {spec!r} is not "
                        "'name:lo:hi:step'")
    try:
      lo, hi, step = (float(x) for x in parts[1:])
    except ValueError:
      raise ConfigError(f"attack.exact.numeric_grids: {spec!r} has a "
                        "non-numeric bound") from None
    if step <= 0 or hi < lo:
      raise ConfigError(f"attack.exact.numeric_grids: {spec!r} needs lo <= hi "
                        "and step > 0")
    grids[parts[0]] = np.arange(lo, hi + step / 2, step)
  names = [f.name for f in schema.private_numeric]
  unknown = sorted(set(grids) - set(names))
  if unknown:
    raise ConfigError(f"attack.exact.numeric_grids: {unknown} are not numeric "
                      f"private features ({names})")
  missing = [n for n in names if n not in grids]
  if missing:
    raise ConfigError(f"attack.exact.numeric_grids: no grid for numeric private "
                      f"features {missing}; add 'name:lo:hi:step'")
  raw = tuple(tuple(float(v) for v in grids[f.name]) for f in schema.private_numeric)
  norm = tuple(tuple((v - f.mean) / f.std for v in g)
               for f, g in zip(schema.private_numeric, raw))
  radices = (tuple(f.vocab_size for f in schema.private_categorical)
             + tuple(len(g) for g in raw))
  return CandidateSpace(radices, len(schema.private_categorical), norm, raw,
                        schema.num_classes)
