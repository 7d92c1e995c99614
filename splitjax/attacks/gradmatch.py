"""Gradient-matching optimiser for numeric and mixed private features.

For each target message g_i it searches the private input x that makes the
device's message match: minimise over x of min_y ||g_i - clip(g(h_i, x, y))||^2.
- Categoricals are relaxed to softmax(z_j); numerics are bounded to the
  auxiliary sample's range, x = lo + (hi - lo) sigmoid(u). The label is handled
  in closed form (every label from one Jacobian), so it is not relaxed.
- Hybrid mode enumerates every combination of the categoricals and optimises
  only the numerics for each.
- The matching loss is piecewise in x because the head's ReLU pattern switches
  with it, and plain Adam stalls there. The attacker therefore optimises a
  smoothed surrogate of its own making: ReLU -> softplus(beta x) / beta, with
  beta annealed geometrically from `beta_start` to `beta_end`, and picks the
  best restart by the exact (ReLU) loss. Restarts start on a stratified
  (Latin hypercube) spread of the numeric box instead of at random.
Batched over records x restarts (x combinations) with vmap; one `lax.scan`
over the Adam iterations (optax). The records of one step share its device
params, so a batch takes them once and every matmul runs over all its
rows; the default head's loss is written out (as in EXACT), with one exp
per hidden unit for the surrogate and its slope.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from splitjax import models, sharding
from splitjax.attacks import exact
from splitjax.attacks.knowledge import AuxSample, Mechanism
from splitjax.protocol import ServerView


class GradMatchResult(NamedTuple):
  cat: np.ndarray    # int32 [N, private categoricals]
  num: np.ndarray    # float32 [N, private numerics], normalised units
  label: np.ndarray  # int32 [N]
  loss: np.ndarray   # float32 [N] best exact matching loss
  seen: np.ndarray   # bool [N] attacked records


def _encode(z_list, x_num, fixed_cat, vocab):
  """Relaxed (softmax) or fixed (one-hot) categoricals, then numerics."""
  parts = []
  for j, v in enumerate(vocab):
    parts.append(jax.nn.one_hot(fixed_cat[j], v) if fixed_cat is not None
                 else jax.nn.softmax(z_list[j]))
  return jnp.concatenate(parts + [x_num], -1)


@jax.custom_jvp
def _softplus_pair(y):
  """(softplus(y), sigmoid(y)) from one exp, with the derivatives written out
  (sigmoid and sigmoid (1 - sigmoid)), so autodiff adds no transcendentals."""
  e = jnp.exp(-jnp.abs(y))
  return jax.nn.relu(y) + jnp.log1p(e), jnp.where(y >= 0, 1.0, e) / (1.0 + e)


@_softplus_pair.defjvp
def _softplus_pair_jvp(primals, tangents):
  (y,), (dy,) = primals, tangents
  sp, sg = _softplus_pair(y)
  return (sp, sg), (sg * dy, sg * (1.0 - sg) * dy)


def _surrogate(pre, beta):
  """(act(pre), act'(pre)): ReLU when beta is None, else softplus(beta x) /
  beta and its derivative sigmoid(beta x)."""
  if beta is None:
    return jax.nn.relu(pre), (pre > 0).astype(pre.dtype)
  sp, sg = _softplus_pair(beta * pre)
  return sp / beta, sg


def _loss(model, params, rec_pre, w_h, p, m, mech, num_labels, beta):
  """(best distance over the labels, its label) of one candidate input p."""
  cand_pre = models.head_private_pre(model, params, p)
  if exact.one_layer_binary(model):
    # The default head written out (as EXACT's fast path): one exp per unit,
    # two reductions of the message direction v, no per-label messages.
    out = params["params"]["logits"]
    act, slope = _surrogate(rec_pre + cand_pre, beta)
    w2 = out["kernel"][:, 0]
    v = (slope * w2) @ w_h.T
    d = exact.binary_distances(act @ w2 + out["bias"][0], (v @ v)[None], (v @ m)[None],
                               (m @ m)[None], mech.clip_norm)
  else:
    act = (jax.nn.relu if beta is None
           else (lambda x: jax.nn.softplus(beta * x) / beta))
    msgs = exact.candidate_messages(model, params, rec_pre, w_h, cand_pre, num_labels, act)
    d = jnp.sum((exact.clip(msgs, mech.clip_norm) - m) ** 2, -1)  # [K]
  return d.min(), d.argmin()


def _optimise_one(model, mech, vocab, num_labels, lo, hi, num_steps, lr,
                  beta_start, beta_end, params, h, m, z0, u0, fixed_cat):
  """Adam on one (record, restart[, combination]); returns (loss, x, label)."""
  rec_pre = models.head_record_pre(model, params, h)
  w_h = models.head_w_h(model, params)

  def x_of(u):
    return lo + (hi - lo) * jax.nn.sigmoid(u)

  def objective(var, beta):
    z, u = var
    p = _encode(z, x_of(u), fixed_cat, vocab)
    return _loss(model, params, rec_pre, w_h, p, m, mech, num_labels, beta)[0]

  opt = optax.adam(lr)
  var = (z0, u0)
  ratio = (beta_end / beta_start) if beta_start > 0 else 1.0

  def step(carry, t):
    var, state = carry
    beta = (beta_start * ratio ** (t / max(num_steps - 1, 1))) if beta_start > 0 else None
    grads = jax.grad(objective)(var, beta)
    updates, state = opt.update(grads, state, var)
    return (optax.apply_updates(var, updates), state), None

  (var, _), _ = jax.lax.scan(step, (var, opt.init(var)), jnp.arange(num_steps))
  z, u = var
  cats = (fixed_cat if fixed_cat is not None
          else jnp.stack([jnp.argmax(zj) for zj in z]) if vocab else jnp.zeros(0, jnp.int32))
  p = _encode(None, x_of(u), cats, vocab)  # Score the rounded, exact input.
  loss, label = _loss(model, params, rec_pre, w_h, p, m, mech, num_labels, None)
  return loss, cats, x_of(u), label


def _stratified(key, num_restarts, dims):
  """Latin-hypercube points in (0, 1)^dims, one per restart."""
  keys = jax.random.split(key, dims + 1)
  cols = []
  for d in range(dims):
    perm = jax.random.permutation(keys[d], num_restarts)
    jitter = jax.random.uniform(keys[-1], (num_restarts,), minval=0.05, maxval=0.95)
    cols.append((perm + jitter) / num_restarts)
  return jnp.stack(cols, -1) if cols else jnp.zeros((num_restarts, 0))


@functools.partial(jax.jit, static_argnames=("model", "mech", "vocab", "num_labels",
                                              "num_steps", "lr", "beta_start",
                                              "beta_end", "num_restarts", "hybrid", "shared"))
def _run(params, h, m, lo, hi, key, *, model, mech, vocab, num_labels, num_steps,
         lr, beta_start, beta_end, num_restarts, hybrid, shared):
  """Every record of h [N, d], m [N, d]: params [N, ...] one per record, or
  one for all of them when `shared` (then every matmul runs over the records
  x restarts at once instead of one small one per record)."""
  r, f_num = num_restarts, lo.shape[0]
  k_strat, k_z = jax.random.split(key)
  q = _stratified(k_strat, r, f_num)
  u0 = jnp.log(q) - jnp.log1p(-q)  # sigmoid^-1
  z0 = [0.1 * jax.random.normal(jax.random.fold_in(k_z, j), (r, v))
        for j, v in enumerate(vocab)]
  one = functools.partial(_optimise_one, model, mech, vocab, num_labels, lo, hi,
                          num_steps, lr, beta_start, beta_end)
  if hybrid and vocab:
    combos = jnp.stack(jnp.meshgrid(*[jnp.arange(v) for v in vocab], indexing="ij"),
                       -1).reshape(-1, len(vocab))
    fn = jax.vmap(jax.vmap(one, (None, None, None, None, 0, None)),  # restarts
                  (None, None, None, None, None, 0))                   # combos
    per_record = lambda prm, hh, mm: fn(prm, hh, mm, None, u0, combos)
  else:
    fn = jax.vmap(one, (None, None, None, 0, 0, None))
    per_record = lambda prm, hh, mm: fn(prm, hh, mm, z0, u0, None)
  loss, cats, x, label = jax.vmap(per_record, (None if shared else 0, 0, 0))(params, h, m)
  b = loss.shape[0]
  loss, cats, x, label = (a.reshape((b, -1) + a.shape[loss.ndim:])
                          for a in (loss, cats, x, label))
  best = loss.argmin(-1)
  take = lambda a: jnp.take_along_axis(a, best.reshape((b, 1) + (1,) * (a.ndim - 2)),
                                       1)[:, 0]
  return take(loss), take(cats), take(x), take(label)


def numeric_box(aux: AuxSample) -> tuple[jax.Array, jax.Array]:
  """(lo, hi) per private numeric: the auxiliary sample's range."""
  x_num = np.asarray(aux.x_p_num)
  lo = x_num.min(0) if x_num.shape[1] else np.zeros(0)
  hi = x_num.max(0) if x_num.shape[1] else np.zeros(0)
  return jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)


def default_batch_records(rows_per_record: int) -> int:
  """Records per compiled call: on a CPU, ~1,024 optimisation rows (records
  x restarts [x combinations]), whose [rows, hidden] intermediates stay in
  L2 (2,048 rows ran 1.35x slower on the 2-core VM); 256 records on an
  accelerator, where larger calls fill it better."""
  if jax.devices()[0].platform == "cpu":
    return max(1, 1024 // rows_per_record)
  return 256


def _batches(total: int, group: int, size: int) -> list[slice]:
  """Slices of at most `size` over range(total) that never cross a multiple
  of `group` (a step's records, when they share params)."""
  return [slice(start, min(start + size, g + group, total))
          for g in range(0, total, group) for start in range(g, min(g + group, total), size)]


def attack(model, schema, mech: Mechanism, view: ServerView, aux: AuxSample,
           num_records: int, *, num_restarts: int, num_steps: int,
           learning_rate: float, max_records: int, hybrid: bool, beta_start: float,
           beta_end: float, seed: int, batch_records: int = 0) -> GradMatchResult:
  """Attacks the first `max_records` releases of `view` (one epoch), in
  batches of `batch_records` records (0: `default_batch_records`)."""
  vocab = tuple(f.vocab_size for f in schema.private_categorical)
  if batch_records <= 0:
    batch_records = default_batch_records(
        num_restarts * (int(np.prod(vocab)) if hybrid and vocab else 1))
  lo, hi = numeric_box(aux)
  steps, b = view.ids.shape
  flat = lambda a: a.reshape((steps * b,) + a.shape[2:])
  total = min(max_records or steps * b, steps * b)
  ids = np.asarray(flat(view.ids))[:total]
  step_of = np.repeat(np.arange(steps), b)[:total]
  pidx = np.asarray(flat(view.param_index))[:total]
  h, m = flat(view.h)[:total], flat(view.messages)[:total]
  # SL (and stale FSL) messages of one step share its device params: such a
  # batch takes them once, not a copy per record.
  shared = jax.tree.leaves(view.device_params)[0].shape[1] == 1
  outs = []
  mesh = sharding.local_mesh()
  for sl in _batches(total, b if shared else total, batch_records):
    if shared:
      params = jax.tree.map(lambda a: a[step_of[sl.start], 0], view.device_params)
    else:
      params = jax.tree.map(lambda a: a[step_of[sl], pidx[sl]], view.device_params)
    hs, ms = h[sl], m[sl]
    if mesh is not None and hs.shape[0] % mesh.size == 0:
      # The records of the batch over every device (splitjax/sharding.py).
      hs, ms = sharding.shard_axis((hs, ms), mesh, 0)
      params = (sharding.replicate(params, mesh) if shared
                else sharding.shard_axis(params, mesh, 0))
    outs.append(_run(params, hs, ms, lo, hi,
                     jax.random.fold_in(jax.random.key(seed), sl.start),
                     model=model, mech=mech, vocab=vocab,
                     num_labels=schema.num_classes, num_steps=num_steps,
                     lr=learning_rate, beta_start=beta_start, beta_end=beta_end,
                     num_restarts=num_restarts, hybrid=hybrid, shared=shared))
  outs = sharding.to_host(outs)
  loss, cats, x, label = (np.concatenate([o[i] for o in outs]) for i in range(4))
  out_cat = np.zeros((num_records, len(vocab)), np.int32)
  out_num = np.zeros((num_records, lo.shape[0]), np.float32)
  out_label = np.zeros(num_records, np.int32)
  out_loss = np.full(num_records, np.nan, np.float32)
  seen = np.zeros(num_records, bool)
  out_cat[ids], out_num[ids], out_label[ids], out_loss[ids] = cats, x, label, loss
  seen[ids] = True
  return GradMatchResult(out_cat, out_num, out_label, out_loss, seen)
