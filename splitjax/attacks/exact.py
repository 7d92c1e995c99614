"""EXACT (exhaustive gradient matching) and its Bayesian multi-epoch form.

For every observed message g_i the attacker enumerates every combination c of
private values and every label y, computes the message the device would have
sent, g(c, y) = dl/dh at (h_i, c, y) under the device params it knows, passes it
through the same clipping, and scores it against g_i (Qiu et al. 2023, §4).

- EXACT: the candidate nearest the message (L2 or cosine), one release.
  Cosine drops the message's scale, (dl/dlogit), so it cannot separate
  candidates that share the head's ReLU pattern; L2 is the default.
- Bayesian EXACT: log p(c, y | releases) = log prior(c, y | x_s)
  - sum_r ||g_r - clip(g_r(c, y))||^2 / (2 (sigma C)^2), over every release r of
  the record seen so far (each with the device params of its step). It reports
  the MAP candidate and its posterior probability. With sigma = 0 the
  likelihood uses `noiseless_scale`, which makes it EXACT with a prior
  tie-break.

Cost: the head's first layer splits into a record part (once per record and
step) and a candidate part (once per candidate chunk and step); the label costs
nothing extra, since dl/dh = (dl/dlogits) J_h and J_h does not depend on y.
Candidates stream in chunks of `chunk_candidates`, so memory is
O(records x chunk), whatever the size of the space.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from splitjax import models
from splitjax.attacks.knowledge import CandidateSpace, Mechanism
from splitjax.errors import ConfigError
from splitjax.protocol import ServerView

METRICS = ("l2", "cosine")


class ExactResult(NamedTuple):
  digits: np.ndarray     # int32 [N, F] predicted value index per private feature
  label: np.ndarray      # int32 [N]
  score: np.ndarray      # float32 [N] best score (EXACT) / MAP log posterior
  posterior: np.ndarray  # float32 [N] MAP posterior probability (Bayes), else nan
  seen: np.ndarray       # bool [N] the record had at least one release


def label_cotangents(logits: jax.Array, num_labels: int) -> jax.Array:
  """dl/dlogits for every label y, [num_labels, num_outputs]."""
  if num_labels == 2:
    s = jax.nn.sigmoid(logits[0])
    return jnp.stack([s, s - 1.0])[:, None]
  return jax.nn.softmax(logits)[None, :] - jnp.eye(num_labels)


def candidate_messages(model, params, rec_pre, w_h, cand_pre, num_labels,
                       activation=jax.nn.relu) -> jax.Array:
  """The messages [K, d] one record would send for one candidate, every label."""
  tail = lambda pre: models.head_tail(model, params, pre, activation)
  pre = rec_pre + cand_pre
  logits = tail(pre)
  j_pre = jax.jacrev(tail)(pre)  # [outputs, H]
  return label_cotangents(logits, num_labels) @ (j_pre @ w_h.T)


def clip(messages: jax.Array, clip_norm: float) -> jax.Array:
  if clip_norm <= 0:
    return messages
  norms = jnp.linalg.norm(messages, axis=-1, keepdims=True)
  return messages * jnp.minimum(1.0, clip_norm / jnp.maximum(norms, 1e-12))


def score(observed: jax.Array, candidates: jax.Array, metric: str) -> jax.Array:
  """observed [d], candidates [..., d] -> [...]; lower is a better match."""
  if metric == "l2":
    return jnp.sum((candidates - observed) ** 2, axis=-1)
  dots = candidates @ observed
  norms = jnp.linalg.norm(candidates, axis=-1) * jnp.linalg.norm(observed)
  return 1.0 - dots / jnp.maximum(norms, 1e-12)


def _step_scores(model, space, mech, metric, p, view_step):
  """Scores [B, C, K] of every record of one step against a candidate chunk."""
  params_all = view_step.device_params  # leading axis P
  cand_pre = jax.vmap(lambda prm: models.head_private_pre(model, prm, p))(params_all)
  w_h = jax.vmap(lambda prm: models.head_w_h(model, prm))(params_all)

  def record(h, m, pi):
    params = jax.tree.map(lambda a: a[pi], params_all)
    rec_pre = models.head_record_pre(model, params, h)
    msgs = jax.vmap(candidate_messages, (None, None, None, None, 0, None))(
        model, params, rec_pre, w_h[pi], cand_pre[pi], space.num_labels)
    return score(m, clip(msgs, mech.clip_norm), metric)  # [C, K]

  return jax.vmap(record)(view_step.h, view_step.messages, view_step.param_index)


@functools.partial(jax.jit, static_argnames=("model", "space", "mech", "metric",
                                              "chunk", "num_records", "bayes",
                                              "scale"), donate_argnums=(0,))
def _chunk(carry, start, views, log_prior, *, model, space, mech, metric, chunk,
           num_records, bayes, scale):
  """Folds one candidate chunk into the running best (and log-sum-exp)."""
  index = start + jnp.arange(chunk)
  valid = index < space.size
  digits = space.digits(jnp.minimum(index, space.size - 1))
  p = space.encode(digits)
  step = functools.partial(_step_scores, model, space, mech, metric, p)

  def body(acc, view_step):
    return acc.at[view_step.ids].add(step(view_step)), None

  acc = jnp.zeros((num_records, chunk, space.num_labels), jnp.float32)
  acc, _ = jax.lax.scan(body, acc, views)
  if bayes:
    cat_tables, label_table = log_prior
    prior = label_table[:, None, :]
    for j, table in enumerate(cat_tables):
      prior = prior + table[:, digits[:, j]][:, :, None]
    value = prior - acc / (2.0 * scale ** 2)  # maximise
  else:
    value = -acc
  value = jnp.where(valid[None, :, None], value, -jnp.inf).reshape(num_records, -1)
  best_score, best_index, lse = carry
  chunk_best = value.max(-1)
  chunk_arg = value.argmax(-1).astype(jnp.int32) + start * space.num_labels
  better = chunk_best > best_score
  return (jnp.where(better, chunk_best, best_score),
          jnp.where(better, chunk_arg, best_index),
          jnp.logaddexp(lse, jax.nn.logsumexp(value, axis=-1)))


def check_memory(space: CandidateSpace, num_records: int, batch: int,
                 hidden: int, chunk: int, max_chunk_mb: float,
                 max_candidates: int) -> None:
  """Raises ConfigError when the space or one chunk's buffers are too large."""
  if space.size > max_candidates:
    raise ConfigError(
        f"attack.exact.max_candidates: the candidate space has {space.size:,} "
        f"private combinations per record (radices {space.radices}), above "
        f"{max_candidates:,}; raise it or make fewer features private")
  mb = 4 * chunk * (3 * num_records * space.num_labels + 3 * batch * hidden) / 2**20
  if mb > max_chunk_mb:
    raise ConfigError(
        f"attack.exact.chunk_candidates: {chunk} candidates need ~{mb:,.0f} MiB "
        f"of buffers for {num_records:,} records, above "
        f"attack.exact.max_chunk_mb={max_chunk_mb:,.0f}; lower the chunk")


def stack_views(views: list[ServerView]) -> ServerView:
  """Concatenates per-epoch views along the step axis."""
  return jax.tree.map(lambda *a: jnp.concatenate(a, 0), *views)


def attack(model, space: CandidateSpace, mech: Mechanism, views: list[ServerView],
           num_records: int, *, metric: str = "l2", bayes: bool = False,
           log_prior=None, noiseless_scale: float = 1e-4,
           chunk_candidates: int = 256, max_chunk_mb: float = 1024,
           max_candidates: int = 2_000_000) -> ExactResult:
  """Runs EXACT (one view) or Bayesian EXACT (all views) on every record.

  Args:
    model: the split model (its architecture is public).
    space: the candidate space.
    mech: the public message defence (clipping, noise).
    views: ServerViews of the releases to use; EXACT expects one epoch.
    num_records: training records (ids index 0..num_records-1).
    metric: 'l2' or 'cosine' (EXACT only; Bayes uses the Gaussian L2).
    bayes: Bayesian EXACT instead of EXACT.
    log_prior: (tuple of [N, V_j] per private categorical, [N, K] label)
      log-probabilities, for Bayes.
    noiseless_scale: the likelihood's scale when the mechanism adds no noise.
    chunk_candidates, max_chunk_mb, max_candidates: memory bounds.

  Returns:
    ExactResult per record id.
  """
  if metric not in METRICS:
    raise ConfigError(f"attack.exact.metric: unknown {metric!r}; known: {list(METRICS)}")
  if any(v.device_params is None for v in views):
    raise ConfigError("EXACT needs the device model: view.knowledge must be "
                      "'white_box' or 'stale', not 'none'")
  view = stack_views(views)
  hidden = (model.head.hidden or (model.head.num_outputs,))[0]
  chunk = int(min(chunk_candidates, space.size))
  check_memory(space, num_records, view.ids.shape[-1], hidden, chunk,
               max_chunk_mb, max_candidates)
  if bayes and log_prior is None:
    cats = tuple(jnp.zeros((num_records, r)) for r in space.radices[:space.num_categorical])
    log_prior = (cats, jnp.zeros((num_records, space.num_labels)))
  scale = mech.noise_stddev if mech.noise_stddev > 0 else noiseless_scale
  carry = (jnp.full(num_records, -jnp.inf), jnp.zeros(num_records, jnp.int32),
           jnp.full(num_records, -jnp.inf))
  num_chunks = math.ceil(space.size / chunk)
  for i in range(num_chunks):
    carry = _chunk(carry, jnp.int32(i * chunk), view, log_prior if bayes else None,
                   model=model, space=space, mech=mech,
                   metric="l2" if bayes else metric, chunk=chunk,
                   num_records=num_records, bayes=bayes, scale=float(scale))
    if num_chunks >= 20 and (i + 1) % max(1, num_chunks // 10) == 0:
      logging.info("%s: %d/%d candidate chunks", "Bayesian EXACT" if bayes else
                   "EXACT", i + 1, num_chunks)
  best, index, lse = jax.device_get(carry)
  seen = np.bincount(np.asarray(view.ids).ravel(), minlength=num_records) > 0
  label = index % space.num_labels
  digits = np.asarray(space.digits(jnp.asarray(index // space.num_labels)))
  posterior = np.exp(best - lse) if bayes else np.full(num_records, np.nan)
  return ExactResult(digits.astype(np.int32), label.astype(np.int32),
                     (best if bayes else -best).astype(np.float32),
                     posterior.astype(np.float32), seen)
