"""EXACT (exhaustive gradient matching) and its Bayesian multi-epoch form.

For every observed message g_i the attacker enumerates every combination c of
private values and every label y, computes the message the device would have
sent, g(c, y) = dl/dh at (h_i, c, y) under the device params it knows, passes it
through the same clipping, and scores it against g_i (Qiu et al. 2023, §4).

- EXACT: the candidate nearest one release of the message (L2 or cosine).
  Candidates within float tolerance of the best count as tied, and a fixed
  pseudo-random order per record picks among them (`_pick`): the same pick
  in every program, uniform over what the attacker cannot tell apart.
  Cosine drops the message's scale, (dl/dlogit), so it cannot separate
  candidates that share the head's ReLU pattern; L2 is the default.
- Bayesian EXACT: log p(c, y | releases) = log prior(c, y | x_s)
  - sum_r ||g_r - clip(g_r(c, y))||^2 / (2 (sigma C)^2), over every release r of
  the record seen so far (each with the device params of its step); the prior
  is a product over the private features times the label's, each a table by
  record or a classifier of the candidate's other values
  (`knowledge.ConditionalPrior`: the label given x_p, a feature given the
  features before it). It reports
  the MAP candidate and its posterior probability, and for each private
  feature and the label on its own the value of largest marginal posterior
  (summed over every other feature and the label) with that probability:
  the MAP candidate maximises the chance that everything is right, the
  marginal MAPs each feature's chance. A numeric feature's own pick is its
  marginal posterior median on the grid instead, which minimises the
  expected absolute error its MAE scores; its rate within half a unit of
  the truth scores the grid value whose half-unit window holds the most
  posterior mass (`window_index`). With sigma = 0 the
  likelihood is a point mass; it stands in a Gaussian whose scale is
  `noiseless_scale` times the record's RMS message coordinate, which makes it
  EXACT with a prior tie-break whatever the size of the record's messages.
  Under label DP the device computed every message from its randomized
  label y~, so the likelihood of a true label y mixes over it:
  sum_y~ P(y~ | y) exp(-sum_r ||g_r - clip(g_r(c, y~))||^2 / (2 (sigma C)^2)),
  with P the public k-ary randomized response at epsilon_label. (EXACT,
  which matches messages, finds y~.)

One pass over the releases gives both, after every epoch: each release's
distances are computed once, reduced to that epoch's EXACT answer, and added
to the record's running sum for the Bayesian one. `attack_settings` does this
for a batch of settings (a sweep's shape group) vmapped over a leading setting
axis, each with its own clip norm and noise scale.

Cost: the head's first layer splits into a record part (once per record and
step) and a candidate part (once per candidate chunk and step); the label costs
nothing extra, since dl/dh = (dl/dlogits) J_h and J_h does not depend on y.
Candidates stream in chunks sized so each chunk's buffers stay near
`chunk_mb` (XLA:CPU maps large buffers afresh on every call, SPEC §6), so
memory is bounded whatever the size of the space.
"""

from __future__ import annotations

import functools
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from splitjax import models, sharding
from splitjax.attacks.knowledge import CandidateSpace, ConditionalPrior, Mechanism
from splitjax.defences import rr_probabilities
from splitjax.errors import ConfigError
from splitjax.protocol import ServerView

METRICS = ("l2", "cosine")


class ExactResult(NamedTuple):
  digits: np.ndarray     # int32 [N, F] predicted value index per private feature
  label: np.ndarray      # int32 [N]
  score: np.ndarray      # float32 [N] best score (EXACT) / MAP log posterior
  posterior: np.ndarray  # float32 [N] MAP posterior probability (Bayes), else nan
  seen: np.ndarray       # bool [N] the record had at least one release
  # Bayes only: each feature's and the label's own marginal MAP (a numeric's
  # marginal median), and its marginal posterior probability ([N, F + 1],
  # the label last).
  marginal_digits: np.ndarray | None = None   # int32 [N, F]
  marginal_label: np.ndarray | None = None    # int32 [N]
  marginal_posterior: np.ndarray | None = None  # float32 [N, F + 1]
  # Bayes only: each numeric's grid index that catches the most posterior
  # mass within half a unit (`window_index`), [N, private numerics].
  window_digits: np.ndarray | None = None


class SettingsResult(NamedTuple):
  """EXACT and Bayesian EXACT after every epoch, for every setting.

  Axes: S settings, E epochs (releases), N records, F private features. The
  Bayesian fields at epoch e use the releases of epochs 1..e.
  """
  exact_digits: np.ndarray     # int32 [S, E, N, F]
  exact_label: np.ndarray      # int32 [S, E, N]
  exact_score: np.ndarray      # float32 [S, E, N] distance of the best match
  bayes_digits: np.ndarray     # int32 [S, E, N, F] (empty when bayes=False)
  bayes_label: np.ndarray      # int32 [S, E, N]
  bayes_posterior: np.ndarray  # float32 [S, E, N] MAP posterior probability
  bayes_log_map: np.ndarray    # float32 [S, E, N] MAP unnormalised log posterior
  released: np.ndarray         # bool [S, E, N] the record was released in epoch e
  bayes_marginal_digits: np.ndarray      # int32 [S, E, N, F] marginal MAP (numerics: median)
  bayes_marginal_label: np.ndarray       # int32 [S, E, N] the label's marginal MAP
  bayes_marginal_posterior: np.ndarray   # float32 [S, E, N, F + 1] their probabilities
  bayes_window_digits: np.ndarray        # int32 [S, E, N, M] numerics' window picks

  def exact(self, s: int, e: int) -> ExactResult:
    return ExactResult(self.exact_digits[s, e], self.exact_label[s, e],
                       self.exact_score[s, e],
                       np.full(self.exact_label.shape[-1], np.nan, np.float32),
                       self.released[s, e])

  def bayes(self, s: int, e: int) -> ExactResult:
    return ExactResult(self.bayes_digits[s, e], self.bayes_label[s, e],
                       self.bayes_log_map[s, e], self.bayes_posterior[s, e],
                       self.released[s, :e + 1].any(0), self.bayes_marginal_digits[s, e],
                       self.bayes_marginal_label[s, e], self.bayes_marginal_posterior[s, e],
                       self.bayes_window_digits[s, e])


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


MAX_SEPARATION_CANDIDATES = 4096


class Separation(NamedTuple):
  """`separation`'s per-record figures, each [S * B] over released records."""
  ruled_out: jax.Array       # share of wrong candidates one release rules out
  pattern_differs: jax.Array  # share whose first-layer ReLU pattern differs
  norm: jax.Array            # the true message's unclipped norm
  server_part: jax.Array     # mean |h W_h + b| over the first layer's units
  private_swing: jax.Array   # mean |(p' - p) W_p| over wrong candidates, units
  h_norm: jax.Array          # ||h||, the server's cut-layer output
  w_h_norm: jax.Array        # ||W_h||_F, the head's first-layer weights on h


def separation(model, space: CandidateSpace, view: ServerView, true_digits: jax.Array,
               sent_labels: jax.Array, clip_norm: float, noise_stddev: float) -> Separation:
  """What one release of each message tells apart, as the evaluator sees it,
  per released record:

  - `ruled_out`: the share of the wrong candidates (every x_p of the space
    but the record's own, with the label the device sent) whose noiseless
    clipped message lies over sqrt(2) noise_stddev from the true one's, so
    that the release makes each of them at most 1/e as likely as the truth
    (the Gaussian likelihood ratio exp(-||dg||^2 / (2 (sigma C)^2))).
    Without noise, any difference above float rounding (1e-6 of ||g||^2).
  - `pattern_differs`: the share of the wrong candidates whose x_p turns
    some unit of the head's first layer on or off: clipping keeps only a
    message's direction, and that changes only with this ReLU pattern.
  - `norm`: the true message's norm before clipping.
  - `server_part`: the mean over the head's first-layer units of |h W_h + b|,
    the record's server-side share of the pre-activation, and
    `private_swing`: the mean over the wrong candidates and the units of
    |(p' - p) W_p|, how far a wrong x_p moves it. A unit flips where the
    swing crosses zero from the true pre-activation, so the pattern differs
    more often as the swing grows against the server's part. That part's two
    factors: `h_norm`, ||h||, what the server's tower sends, and `w_h_norm`,
    the Frobenius norm of W_h, the device head's weights on it.

  The evaluator's diagnostic, not an attack: it reads every record's true
  x_p (`true_digits` [N, F], numerics at their nearest grid value) and sent
  label [N].

  Raises:
    ValueError: the space holds more than MAX_SEPARATION_CANDIDATES.
  """
  if space.size > MAX_SEPARATION_CANDIDATES:
    raise ValueError(f"separation: {space.size} candidates; at most "
                     f"{MAX_SEPARATION_CANDIDATES} (categoricals only, or coarse grids)")
  shared = jax.tree.leaves(view.device_params)[0].shape[1] == 1  # SL, stale FSL
  return _separation(model, space, view, jnp.asarray(true_digits),
                     jnp.asarray(sent_labels), jnp.float32(clip_norm),
                     jnp.float32(noise_stddev),
                     written_out=shared and one_layer_binary(model))


def _binary_sent_distances(model, params, h, cand_pre, true_pre, labels, clip_norm):
  """For the default head (one ReLU layer, one logit) and one param set, the
  written-out form of `candidate_messages` (as in `_scores_one_layer_binary`):
  label y's message is (sigmoid(logit) - y) (relu'(pre) w2) @ W_h^T. Returns
  the squared distances [B, C] of the candidates' clipped messages (cand_pre
  [C, H]) to the truth's (true_pre [B, H]) under each record's sent label
  (labels [B]), the truth's unclipped norm [B] and its clipped one squared
  [B]."""
  out = params["params"]["logits"]
  w2 = out["kernel"][:, 0]
  wv = w2[:, None] * models.head_w_h(model, params).T            # [H, d]
  rec = models.head_record_pre(model, params, h)                 # [B, H]

  def sent(pre, y):  # pre [..., H], y broadcast to pre[..., 0]
    logit = jnp.maximum(pre, 0.0) @ w2 + out["bias"][0]
    a = jax.nn.sigmoid(logit) - y
    v = (pre > 0).astype(pre.dtype) @ wv
    return clip(a[..., None] * v, clip_norm), jnp.abs(a) * jnp.linalg.norm(v, axis=-1)

  labels = labels.astype(jnp.float32)
  true, raw = sent(rec + true_pre, labels)                       # [B, d], [B]
  others, _ = sent(rec[:, None, :] + cand_pre[None], labels[:, None])  # [B, C, d]
  return jnp.sum((others - true[:, None]) ** 2, -1), raw, jnp.sum(true ** 2, -1)


@functools.partial(jax.jit, static_argnames=("model", "space", "written_out"))
def _separation(model, space, view, true_digits, sent_labels, clip_norm, noise_stddev,
                written_out):
  """`separation` in one compiled program per model, space and view shape:
  the mechanism's scalars are traced, so every setting and epoch reuses it.
  written_out: the default head with one param set per step, whose messages
  `_binary_sent_distances` computes in a few matmuls instead of a Jacobian
  per candidate."""
  digits = space.digits(jnp.arange(space.size))
  cands = space.encode(digits)                                   # [C, P]
  true_private = space.encode(true_digits)                       # [N, P]
  threshold = 2.0 * noise_stddev ** 2

  def step(args):
    h, ids, index, params_all = args
    # The candidates' share of the first layer depends on the params alone:
    # once per step and param set [P, C, H], not per record.
    cand_all = jax.vmap(lambda prm: models.head_private_pre(model, prm, cands))(params_all)

    def messages(h_i, i, pi):
      """The generic path: (distances [C], unclipped norm, clipped norm^2)."""
      params = jax.tree.map(lambda a: a[pi], params_all)
      rec_pre = models.head_record_pre(model, params, h_i)
      w_h = models.head_w_h(model, params)
      message = lambda cand_pre: candidate_messages(
          model, params, rec_pre, w_h, cand_pre, space.num_labels)[sent_labels[i]]
      raw = message(models.head_private_pre(model, params, true_private[i]))
      true = clip(raw, clip_norm)
      others = clip(jax.vmap(message)(cand_all[pi]), clip_norm)
      return jnp.sum((others - true) ** 2, -1), jnp.linalg.norm(raw), jnp.sum(true ** 2)

    if written_out:
      params = jax.tree.map(lambda a: a[0], params_all)
      dists, raws, true_sqs = _binary_sent_distances(
          model, params, h, cand_all[0], models.head_private_pre(model, params,
                                                                 true_private[ids]),
          sent_labels[ids], clip_norm)
    else:
      dists, raws, true_sqs = jax.vmap(messages)(h, ids, index)

    def record(h_i, i, pi, dist, raw_norm, true_sq):
      params = jax.tree.map(lambda a: a[pi], params_all)
      w_h = models.head_w_h(model, params)
      rec_pre = models.head_record_pre(model, params, h_i)
      true_pre = models.head_private_pre(model, params, true_private[i])
      cand_pre = cand_all[pi]                                    # [C, H]
      floor = jnp.where(noise_stddev > 0, threshold, 1e-6 * true_sq + 1e-30)
      wrong = jnp.any(digits != true_digits[i], -1)
      count = jnp.maximum(jnp.sum(wrong), 1)
      on = (rec_pre + true_pre) > 0
      flips = jnp.any((rec_pre + cand_pre > 0) != on, -1)
      swing = jnp.mean(jnp.abs(cand_pre - true_pre), -1)         # [C]
      return (jnp.sum(wrong & (dist > floor)) / count, jnp.sum(wrong & flips) / count,
              raw_norm, jnp.mean(jnp.abs(rec_pre)),
              jnp.sum(jnp.where(wrong, swing, 0.0)) / count, jnp.linalg.norm(h_i),
              jnp.linalg.norm(w_h))

    return jax.vmap(record)(h, ids, index, dists, raws, true_sqs)

  out = jax.lax.map(step, (view.h, view.ids, view.param_index, view.device_params))
  return Separation(*(a.reshape(-1) for a in out))


def clip(messages: jax.Array, clip_norm) -> jax.Array:
  """Per-message L2 clipping to clip_norm (a float or a traced scalar; <= 0
  means no clipping)."""
  if isinstance(clip_norm, (int, float)) and clip_norm <= 0:
    return messages
  norms = jnp.linalg.norm(messages, axis=-1, keepdims=True)
  factor = jnp.minimum(1.0, clip_norm / jnp.maximum(norms, 1e-12))
  return messages * jnp.where(clip_norm > 0, factor, 1.0)


def score(observed: jax.Array, candidates: jax.Array, metric: str) -> jax.Array:
  """observed [d], candidates [..., d] -> [...]; lower is a better match."""
  if metric == "l2":
    return jnp.sum((candidates - observed) ** 2, axis=-1)
  dots = candidates @ observed
  norms = jnp.linalg.norm(candidates, axis=-1) * jnp.linalg.norm(observed)
  return 1.0 - dots / jnp.maximum(norms, 1e-12)


def one_layer_binary(model) -> bool:
  """The default head (one hidden layer, one logit), which has a written-out
  fast path here and in gradmatch."""
  return len(model.head.hidden) == 1 and model.head.num_outputs == 1


def _scores_one_layer_binary(model, params, p, clip_norm, metric, view_step, mm):
  """_step_scores for the default head (one ReLU layer, one logit), written
  out: with u = relu'(pre) * w2, every label's message is
  (sigmoid(logit) - y) * (u @ W_h^T), so the whole step is one matmul
  [B*C, H] x [H, d]."""
  w_h = models.head_w_h(model, params)                    # [d, H]
  rec_pre = models.head_record_pre(model, params, view_step.h)  # [B, H]
  cand_pre = models.head_private_pre(model, params, p)    # [C, H]
  out = params["params"]["logits"]
  w2 = out["kernel"][:, 0]
  pre = rec_pre[:, None, :] + cand_pre[None, :, :]        # [B, C, H]
  logit = jnp.maximum(pre, 0.0) @ w2 + out["bias"][0]      # [B, C]
  # u @ W_h^T as mask @ (w2 * W_h^T): XLA:CPU then streams the mask and the
  # ReLU in two passes over [B, C, H] (u and u * pre took four).
  mask = (pre > 0).astype(pre.dtype)
  b, c, hidden = mask.shape
  v = (mask.reshape(b * c, hidden) @ (w2[:, None] * w_h.T)).reshape(b, c, -1)  # [B, C, d]
  m = view_step.messages
  vv = jnp.sum(v * v, -1)[..., None]                      # [B, C, 1]
  coef = clipped_coefficients(logit, vv, clip_norm)       # [B, C, 2]
  # ||a_y v - m||^2 summed directly: the expanded a^2|v|^2 - 2a v.m + |m|^2
  # loses everything below ~1e-7 |m|^2 to cancellation, so it cannot tell an
  # exact match from a near one (`_pick`).
  l2 = jnp.sum((coef[..., None] * v[:, :, None, :] - m[:, None, None, :]) ** 2, -1)
  if metric == "l2":
    return l2, l2
  vm = jnp.einsum("bcd,bd->bc", v, m)[..., None]
  cos = coef * vm / jnp.maximum(jnp.abs(coef) * jnp.sqrt(vv * mm[:, None, None]), 1e-12)
  return l2, 1.0 - cos


def binary_distances(logit, vv, vm, mm, clip_norm):
  """||a_y v - m||^2 for both labels y of a one-logit head, [..., 2].

  Label y's message is a_y v with a_y = (sigmoid(logit) - y) times its clip
  factor, so the distance is a_y^2 |v|^2 - 2 a_y v.m + |m|^2: from the
  reductions vv = |v|^2, vm = v.m, mm = |m|^2 [..., 1] (logit [...]), without
  materialising the messages. Cancellation hides distances below ~1e-7 |m|^2:
  enough for the optimiser's loss; EXACT sums its distances directly.
  """
  coef = clipped_coefficients(logit, vv, clip_norm)
  return jnp.maximum(coef * coef * vv - 2.0 * coef * vm + mm, 0.0)


def clipped_coefficients(logit, vv, clip_norm):
  """a_y = (sigmoid(logit) - y) times label y's clip factor, [..., 2], for a
  one-logit head whose messages are a_y v (vv = |v|^2, [..., 1])."""
  sig = jax.nn.sigmoid(logit)
  coef = jnp.stack([sig, sig - 1.0], -1)
  if isinstance(clip_norm, (int, float)) and clip_norm <= 0:
    return coef
  norm = jnp.abs(coef) * jnp.sqrt(vv)
  factor = jnp.minimum(1.0, clip_norm / jnp.maximum(norm, 1e-12))
  return coef * jnp.where(clip_norm > 0, factor, 1.0)


def _step_scores(model, p, clip_norm, metric, num_labels, view_step, mm):
  """L2 distances and match scores [B, C, K] of one step's records against a
  candidate chunk p [C, P]; mm [B] is |m|^2 of the step's messages (the
  written-out path's cosine uses it)."""
  params_all = view_step.device_params  # leading axis P (clients)
  shared = jax.tree.leaves(params_all)[0].shape[0] == 1  # SL, stale FSL
  if shared and one_layer_binary(model):
    params = jax.tree.map(lambda a: a[0], params_all)
    return _scores_one_layer_binary(model, params, p, clip_norm, metric, view_step, mm)
  cand_pre = jax.vmap(lambda prm: models.head_private_pre(model, prm, p))(params_all)
  w_h = jax.vmap(lambda prm: models.head_w_h(model, prm))(params_all)

  def record(h, m, pi):
    i = 0 if shared else pi
    params = jax.tree.map(lambda a: a[i], params_all)
    rec_pre = models.head_record_pre(model, params, h)
    msgs = jax.vmap(candidate_messages, (None, None, None, None, 0, None))(
        model, params, rec_pre, w_h[i], cand_pre[i], num_labels)
    msgs = clip(msgs, clip_norm)
    l2 = score(m, msgs, "l2")
    return l2, (l2 if metric == "l2" else score(m, msgs, metric))  # [C, K] each

  return jax.vmap(record)(view_step.h, view_step.messages, view_step.param_index)


# Ties. Under clipping, every candidate that shares the true one's ReLU pattern
# and label sign sends a message in the same direction, and where both are
# longer than C the same clipped message (where the truth's is shorter, its
# length still tells most of them apart: results/*/clip_only/message_energy/),
# so EXACT's minimum is often tied exactly, and float rounding (which differs
# between vmapped, sharded and single programs and between chunk sizes) would
# break the tie. Scores within
# `_tolerance` of the best count as tied, and a fixed pseudo-random order of
# each record's candidates picks among them: the same pick in every program,
# and uniform over the tied set, so the reported accuracy is that of an
# attacker who guesses among candidates it cannot tell apart.
_RTOL = 1e-5


def _tolerance(metric: str, mm):
  """The tie tolerance of EXACT's scores (minus the distance) for records
  with |m|^2 = mm, as a function of the best score.

  L2: rounding moves a distance d by about eps sqrt(d |m|^2), and an exact
  match, summed directly, by ~eps^2 |m|^2. Cosine: cos is rounded to ~1e-7.
  """
  if metric == "l2":
    return lambda best: _RTOL * jnp.sqrt(jnp.maximum(-best, 0.0) * mm) + 1e-11 * mm
  return lambda best: _RTOL * jnp.sqrt(jnp.maximum(-best, 0.0)) + 1e-6


def _bayes_tolerance(acc, mm_sum, var):
  """The tie tolerance of Bayes's log posterior prior - acc / (2 var), as a
  function of the best: the prior's rounding, plus that of the summed
  distances, bounded as EXACT's for a best candidate whose summed distance
  is `acc` over releases with summed |m|^2 `mm_sum` (all [N])."""
  acc_tol = _RTOL * jnp.sqrt(acc * mm_sum) + 1e-11 * mm_sum
  return lambda best: _RTOL * jnp.abs(best) + acc_tol / (2.0 * var)


def _likelihood_variance(noise, noiseless_scale, mm_sum, count, dim):
  """[N] the variance of each record's Gaussian likelihood: noise^2 (the
  setting's sigma C) under noise; without it, (noiseless_scale x the
  record's RMS message coordinate over its `count` releases)^2. An absolute
  noiseless scale (1e-4, before) was wider than the gaps between candidates
  for records whose messages were tiny (Bank: 555 of 32,488 with median |m|
  6e-5), and the prior outvoted an exact match there."""
  rms2 = mm_sum / (dim * jnp.maximum(count, 1.0))
  return jnp.where(noise > 0, noise ** 2, jnp.maximum(noiseless_scale ** 2 * rms2, 1e-30))


def label_log_rr(label_epsilon, num_labels: int) -> np.ndarray:
  """[S, K, K] log P(reported y~ | true y) of k-ary randomized response at
  each setting's epsilon (inf: the identity, log 1 on the diagonal and -inf
  off it), as splitjax.defences.randomized_response draws it."""
  eps = np.asarray(label_epsilon, np.float64).reshape(-1, 1, 1)
  with np.errstate(divide="ignore"):  # log 0 off the diagonal at inf
    keep, other = rr_probabilities(eps, num_labels, np)
    probs = np.where(np.eye(num_labels, dtype=bool), keep, other)
    return np.log(probs).astype(np.float32)


def _mix_labels(log_lik, log_rr):
  """log sum_y~ P(y~ | y) exp(log_lik[..., y~]) for every true label y,
  [..., K], from log_lik [..., K] over the reported label y~."""
  return jnp.stack([jax.nn.logsumexp(log_lik + log_rr[y], axis=-1)
                    for y in range(log_rr.shape[0])], -1)


def _marginals(value, onehot):
  """One chunk's marginal log masses [N, V + K]: log sum exp of value
  [N, C, K] over the candidates with each value of each private feature
  (onehot [C, V], every feature's values side by side), then over every
  candidate for each label."""
  by_label = jax.nn.logsumexp(value, axis=1)                # [N, K]
  by_candidate = jax.nn.logsumexp(value, axis=2)            # [N, C]
  top = by_candidate.max(-1, keepdims=True)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  by_value = jnp.log(jnp.exp(by_candidate - top) @ onehot) + top
  return jnp.concatenate([by_value, by_label], -1)


def _fmix32(x):
  """MurmurHash3's 32-bit finaliser, a bijection on uint32."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def _tie_order(ids, index):
  """[B, M] uint32 rank of candidate `index` [M] for record `ids` [B]:
  distinct within a record, independent of chunking and programs."""
  return _fmix32(_fmix32(ids.astype(jnp.uint32))[:, None] + index.astype(jnp.uint32)[None, :])


def _pick(value, index, ids, tolerance):
  """(best value, its index, its tie rank) [B] of value [B, M] (higher is
  better): the lowest tie rank among the values within tolerance of the best."""
  best = value.max(-1)
  rank = jnp.where(value >= (best - tolerance(best))[:, None],
                   _tie_order(ids, index), jnp.uint32(0xFFFFFFFF))
  j = rank.argmin(-1)
  return best, index[j], jnp.take_along_axis(rank, j[:, None], -1)[:, 0]


def _merge(old, new, tolerance):
  """The better of two (value, index, rank) picks; within tolerance, the
  lower rank."""
  (v0, i0, r0), (v1, i1, r1) = old, new
  top = jnp.maximum(v0, v1)
  tol = tolerance(top)
  take = (v1 > v0 + tol) | ((jnp.abs(v1 - v0) <= tol) & (r1 < r0))
  return top, jnp.where(take, i1, i0), jnp.where(take, r1, r0)


def log_prior_of(log_prior, digits: jax.Array, private: jax.Array) -> jax.Array:
  """[N, C, K] log prior(c, y | x_s) of candidates c (digits [C, F] and their
  private input [C, P], `CandidateSpace.encode`) and every label, for every
  record of `log_prior` (as `attack_settings` takes it)."""
  cat_tables, label_table = log_prior
  prior = label_log_prior(label_table, private)
  for term in feature_log_priors(cat_tables, digits, private):
    prior = prior + term[:, :, None]
  return prior


def label_log_prior(label_table, private: jax.Array, batch: int = 1024) -> jax.Array:
  """The label's factor of `log_prior_of`: [N, C, K], or [N, 1, K] for a
  table that does not read the candidate (`batch`: `ConditionalPrior.log_probs`'s)."""
  if isinstance(label_table, ConditionalPrior):
    return label_table.log_probs(private, batch)
  return label_table[:, None, :]


def feature_log_priors(tables, digits: jax.Array, private: jax.Array,
                       batch: int = 1024) -> list:
  """Each private feature's factor of `log_prior_of`: [N, C] per table (the
  categoricals', then any numerics' on their grids; `batch` as
  `ConditionalPrior.log_probs`'s). A categorical's factor reads no numeric
  (a chain link reads the categoricals before its own) and a numeric's table
  its own value alone."""
  terms = []
  for j, table in enumerate(tables):
    if isinstance(table, ConditionalPrior):                 # [N, C, V_j] -> [N, C]
      terms.append(jnp.take_along_axis(table.log_probs(private, batch),
                                       digits[None, :, j, None], -1)[..., 0])
    else:
      terms.append(table[:, digits[:, j]])
  return terms


def prior_rows(log_prior, rows: jax.Array):
  """`log_prior` restricted to the records `rows`."""
  def take(t):
    return (t._replace(record_pre=t.record_pre[rows]) if isinstance(t, ConditionalPrior)
            else t[rows])
  cat_tables, label_table = log_prior
  return tuple(take(t) for t in cat_tables), take(label_table)


def _chunk_impl(carry, start, views, select, clip_norm, noise, log_rr, noiseless_scale,
                log_prior, record_ids, *, model, space, metric, chunk, num_records, bayes,
                block):
  """Folds one candidate chunk into every setting's and epoch's running best.

  views: per-epoch ServerViews with a leading [all settings] axis; select [S]:
  the settings to attack; clip_norm, noise [S] and log_rr [S, K, K] (label
  DP, `label_log_rr`) their defences. carry: (EXACT best, index, tie rank,
  Bayes best, index, tie rank, Bayes log-sum-exp), each [S, E, N], and
  Bayes's marginal log masses [S, E, N, sum(radices) + K] (`_marginals`;
  an unused width 1 without Bayes); scores are maximised (EXACT's is minus the
  distance). Views' ids index the carry's N records; record_ids [N] are
  their ids in the training split, which order ties (`_tie_order`; None:
  the same as the views').
  """
  k = space.num_labels
  index = start + jnp.arange(chunk)
  valid = index < space.size
  digits = space.digits(jnp.minimum(index, space.size - 1))
  p = space.encode(digits)
  pair_index = start * k + jnp.arange(chunk * k, dtype=jnp.int32)  # candidate x label
  if bayes:
    prior = log_prior_of(log_prior, digits, p)
    prior = jnp.where(valid[None, :, None], prior, -jnp.inf)  # [N, C, K]
    onehot = jnp.concatenate([jnp.zeros((chunk, 0))]  # [C, V]; V = 0: label only
                             + [jax.nn.one_hot(digits[:, j], r)
                                for j, r in enumerate(space.radices)], -1)

  def one_setting(carry_s, setting, clip_s, noise_s, log_rr_s):
    def step(state, xs):
      vs, mm = xs
      acc, best = state
      l2, match = _step_scores(model, p, clip_s, metric, k, vs, mm)
      match = jnp.where(valid[None, :, None], match, jnp.inf).reshape(match.shape[0], -1)
      tol = _tolerance(metric, mm)
      new = _pick(-match, pair_index, vs.ids if record_ids is None else record_ids[vs.ids],
                  tol)
      old = tuple(b[vs.ids] for b in best)
      best = tuple(b.at[vs.ids].set(x) for b, x in zip(best, _merge(old, new, tol)))
      if bayes:
        acc = acc.at[vs.ids].add(l2)
      return (acc, best), None

    acc = jnp.zeros((num_records, chunk, k) if bayes else (), jnp.float32)
    mm_sum = jnp.zeros(num_records if bayes else (), jnp.float32)
    count = jnp.zeros(num_records if bayes else (), jnp.float32)
    outs = []
    # Epochs unrolled: each epoch's view stays where training left it (no
    # stacked copy); this setting's slice is taken here.
    for e, view in enumerate(views):
      view_e = jax.tree.map(lambda a: a[setting], view)
      carry_e = tuple(c[e] for c in carry_s)
      ex, bx, bl, bm = carry_e[:3], carry_e[3:6], carry_e[6], carry_e[7]
      # |m|^2 of every release, before the step loop: inside it XLA:CPU fused
      # the reduction into the small per-label kernel, which then took 0.3 ms
      # a step (results/benchmarks/trace_cpu-x86_64-2cores.md, W1).
      mm_e = jnp.sum(view_e.messages ** 2, -1)
      (acc, ex), _ = jax.lax.scan(step, (acc, ex), (view_e, mm_e))
      if bayes:
        ids_e = view_e.ids.reshape(-1)
        mm_sum = mm_sum.at[ids_e].add(mm_e.reshape(-1))
        count = count.at[ids_e].add(1.0)
        var = _likelihood_variance(noise_s, noiseless_scale, mm_sum, count,
                                   view_e.messages.shape[-1])
        log_lik = -acc / (2.0 * var)[:, None, None]  # [N, C, K] by the label sent
        # Label DP: the messages carry the randomized label, so a true label's
        # likelihood mixes over the labels it may have been reported as. A cond,
        # not a where: without label DP the mixture is not computed (it made
        # Bayes over W1's view 1.4-1.6x slower), wherever the settings are not
        # vmapped together (a block of one).
        label_dp = jnp.isfinite(log_rr_s[0, -1])
        value = jax.lax.cond(label_dp, lambda: prior + _mix_labels(log_lik, log_rr_s),
                             lambda: prior + log_lik)
        bm = jnp.logaddexp(bm, _marginals(value, onehot))
        value = value.reshape(num_records, -1)
        top = value.argmax(-1)
        rows = jnp.arange(num_records)
        acc_c = acc[rows, top // k]                          # [N, K] by the label sent
        y_top = top % k
        # The distance behind the top value: its own label's, or under label
        # DP that of the reported label that dominates its mixture.
        sent = jnp.where(label_dp, (log_rr_s[y_top] + log_lik[rows, top // k]).argmax(-1),
                         y_top)
        acc_top = acc_c[rows, sent]
        tol = _bayes_tolerance(acc_top, mm_sum, var)
        new = _pick(value, pair_index,
                    jnp.arange(num_records) if record_ids is None else record_ids, tol)
        bx = _merge(bx, new, tol)
        bl = jnp.logaddexp(bl, jax.nn.logsumexp(value, axis=-1))
      outs.append(ex + bx + (bl, bm))
    return tuple(jnp.stack(x) for x in zip(*outs))

  # Settings go through in blocks of `block`, vmapped within a block, so the
  # buffers scale with the block and not with the whole group. A block of one
  # is a plain loop: vmap over a unit axis made XLA:CPU's dots and scatters
  # batched, and the step 5x slower.
  return jax.lax.map(lambda xs: one_setting(*xs), (carry, select, clip_norm, noise, log_rr),
                     batch_size=block if block > 1 else None)


def median_index(probs: jax.Array) -> jax.Array:
  """The posterior median of probs [..., V] (on an ascending grid, summing to
  1): the first value whose cumulative mass reaches 1/2, less 1e-4 so that a
  posterior split evenly does not pick by rounding. It minimises the
  expected absolute error."""
  return jnp.argmax(jnp.cumsum(probs, -1) >= 0.5 - 1e-4, -1)


def half_unit_windows(space: CandidateSpace) -> tuple[np.ndarray, ...]:
  """Per private numeric, [G, G] with 1 where grid values j and k lie within
  half a unit of each other (in the feature's own units), else 0."""
  return tuple((np.abs(np.subtract.outer(np.asarray(g, np.float64), np.asarray(g)))
                <= 0.5 + 1e-6).astype(np.float32) for g in space.raw_grids)


def window_index(probs: jax.Array, window: jax.Array) -> jax.Array:
  """The grid index whose half-unit window (`half_unit_windows`) holds the
  most of probs [..., G]: the guess most likely within half a unit of the
  truth, the success the audit and the tables' rate count (on an integer
  grid of step 1, the mode). Windows within 1e-6 of the fullest tie (a
  point mass fills every window around it) go to the one whose own value
  holds the most mass."""
  held = probs @ window
  near = held >= held.max(-1, keepdims=True) - 1e-6
  return jnp.argmax(jnp.where(near, probs, -1.0), -1)


@functools.partial(jax.jit, static_argnames=("widths", "num_categorical"))
def _marginal_picks(log_mass, widths, num_categorical, record_ids, windows=()):
  """(index [..., G], probability [..., G]) of each group of log_mass
  [..., N, sum(widths)] (G groups: the features, then the label), N the
  records (record_ids [N] their ids for the tie order, None: 0..N-1). A
  categorical's and the label's pick is its marginal MAP, the largest mass:
  values within rounding of the best are tied, and a fixed pseudo-random
  order per record picks among them, as `_pick` does. A numeric
  feature's (the groups after the first `num_categorical`) is its posterior
  median (`median_index`): numerics are scored by absolute error. The
  probability is the pick's mass; a record without a release gets index 0
  and probability nan. Third, [..., M] each numeric's `window_index` under
  its `windows` entry (the success within half a unit is scored by it)."""
  ids = jnp.arange(log_mass.shape[-2]) if record_ids is None else record_ids
  picks, probs, in_window, start = [], [], [], 0
  for g, w in enumerate(widths):
    x = log_mass[..., start:start + w]
    start += w
    best = x.max(-1, keepdims=True)
    ok = jnp.isfinite(best)
    log_p = x - jax.nn.logsumexp(jnp.where(ok, x, 0.0), -1, keepdims=True)
    if num_categorical <= g < len(widths) - 1:
      mass = jnp.exp(jnp.where(ok, log_p, 0.0))
      j = median_index(mass)
      in_window.append(window_index(mass, windows[g - num_categorical]).astype(jnp.int32))
    else:
      near = ok & (x >= best - (_RTOL * jnp.abs(best) + 1e-4))
      rank = jnp.where(near, _tie_order(ids, jnp.arange(w)), jnp.uint32(0xFFFFFFFF))
      j = rank.argmin(-1)
    p = jnp.exp(jnp.take_along_axis(log_p, j[..., None], -1))[..., 0]
    picks.append(j.astype(jnp.int32))
    probs.append(jnp.where(ok[..., 0], p, jnp.nan))
  window_shape = log_mass.shape[:-1] + (0,)
  return (jnp.stack(picks, -1), jnp.stack(probs, -1),
          jnp.stack(in_window, -1) if in_window else jnp.zeros(window_shape, jnp.int32))


_STATIC = ("model", "space", "metric", "chunk", "num_records", "bayes", "block")
_chunk = jax.jit(_chunk_impl, static_argnames=_STATIC, donate_argnums=(0,))


@functools.partial(jax.jit, static_argnames=_STATIC + ("mesh",), donate_argnums=(0,))
def _chunk_sharded(carry, start, views, select, clip_norm, noise, log_rr, noiseless_scale,
                   log_prior, record_ids, *, mesh, **static):
  """_chunk with the settings spread over the mesh: each device runs its own
  settings' block (views, carry and defences sharded on their leading
  setting axis; `select` holds local indices), with no communication."""
  per = PartitionSpec(sharding.AXIS)
  rep = PartitionSpec()
  fn = jax.shard_map(functools.partial(_chunk_impl, **static), mesh=mesh,
                     in_specs=(per, rep, per, per, per, per, per, rep, rep, rep),
                     out_specs=per, check_vma=False)
  return fn(carry, start, views, select, clip_norm, noise, log_rr, noiseless_scale,
            log_prior, record_ids)


def chunk_bytes(space: CandidateSpace, num_records: int, batch: int, hidden: int,
                bayes: bool) -> tuple[int, int]:
  """Approximate buffer bytes per candidate and setting: (the per-step
  intermediates, the per-record running sums, prior and posterior of Bayes,
  and its two per-candidate sums for the marginals)."""
  k = space.num_labels
  return 4 * batch * (3 * hidden + 2 * k), (4 * (3 * k + 2) * num_records if bayes else 0)


def check_memory(space: CandidateSpace, num_records: int, batch: int,
                 hidden: int, chunk: int, max_chunk_mb: float,
                 max_candidates: int, block: int = 1, bayes: bool = True) -> None:
  """Raises ConfigError when the space or one chunk's buffers are too large."""
  if space.size > max_candidates:
    raise ConfigError(
        f"attack.exact.max_candidates: the candidate space has {space.size:,} "
        f"private combinations per record (radices {space.radices}), above "
        f"{max_candidates:,}; raise it or make fewer features private")
  mb = chunk * block * sum(chunk_bytes(space, num_records, batch, hidden, bayes)) / 2**20
  if mb > max_chunk_mb:
    raise ConfigError(
        f"attack.exact.chunk_candidates: {chunk} candidates need ~{mb:,.0f} MiB "
        f"of buffers for {num_records:,} records, above "
        f"attack.exact.max_chunk_mb={max_chunk_mb:,.0f}; lower the chunk")


def _empty_carry_impl(shape, width):
  """The running bests before any chunk, in one dispatch (width: Bayes's
  marginal values per record)."""
  pick = (jnp.full(shape, -jnp.inf), jnp.zeros(shape, jnp.int32),
          jnp.full(shape, 0xFFFFFFFF, jnp.uint32))
  return pick + pick + (jnp.full(shape, -jnp.inf), jnp.full(shape + (width,), -jnp.inf))


_empty_carry = jax.jit(_empty_carry_impl, static_argnames=("shape", "width"))


@jax.jit
def _with_setting_axis(views):
  return jax.tree.map(lambda a: a[None], views)


def default_chunk_mb() -> float:
  """The per-step buffer target when none is given: 16 MiB on a CPU, 512 MiB
  on an accelerator, where larger steps mean fewer, fuller kernels
  (benchmarks/exact_chunks.py measures both).

  On a CPU the step's buffers are re-touched every step and must stay in
  cache: ~100 MiB ran 1.7x slower than 32 on a 2-core Xeon VM, where 32 ran
  5-10 % faster than 16; on a 2-core AMD EPYC family 25 (32 MiB L3) 16 ran
  11-20 % faster than 32 (results/benchmarks/README.md). The default is one
  figure for every CPU, not read off the cache, because the chunk moves a few
  of EXACT's picks under noise by rounding (Adult: up to 1.6e-4 of a
  feature's accuracy), and the same config should give the same numbers on
  every machine that runs it the same way.
  """
  return 16.0 if jax.devices()[0].platform == "cpu" else 512.0


def plan_chunk(space: CandidateSpace, num_settings: int, num_records: int,
               batch: int, hidden: int, bayes: bool, chunk_candidates: int,
               chunk_mb: float, max_chunk_mb: float = 1024.0) -> tuple[int, int]:
  """(candidates per chunk, settings vmapped together).

  The chunk is as large as chunk_candidates allows while one step's
  intermediates stay near chunk_mb (they are re-touched every step: on CPU,
  ~32 MiB ran 1.7x faster than ~100 MiB) and all buffers within max_chunk_mb;
  it is then evened out so the last chunk is not mostly padding. Settings are
  vmapped in blocks only while the step buffers still fit chunk_mb and all
  of a block's buffers max_chunk_mb.
  """
  step, records = chunk_bytes(space, num_records, batch, hidden, bayes)
  fit = min(chunk_mb * 2**20 // step, max_chunk_mb * 2**20 // (step + records))
  chunk = int(min(chunk_candidates, space.size, max(1, fit)))
  chunk = math.ceil(space.size / math.ceil(space.size / chunk))
  block = int(min(num_settings, max(1, chunk_mb * 2**20 // (step * chunk)),
                  max(1, max_chunk_mb * 2**20 // ((step + records) * chunk))))
  return chunk, block


@functools.lru_cache(maxsize=4)
def _empty_carry_on(mesh):
  """_empty_carry, its leading setting axis sharded over the mesh."""
  return jax.jit(_empty_carry_impl, static_argnames=("shape", "width"),
                 out_shardings=NamedSharding(mesh, PartitionSpec(sharding.AXIS)))


def attack_settings(model, space: CandidateSpace, views: list[ServerView],
                    num_records: int, *, clip_norm, noise_stddev, label_epsilon=None,
                    select=None, bayes: bool = True, log_prior=None, metric: str = "l2",
                    noiseless_scale: float = 1e-4, chunk_candidates: int = 4096,
                    chunk_mb: float = 0.0, max_chunk_mb: float = 1024.0,
                    max_candidates: int = 2_000_000) -> SettingsResult:
  """EXACT and (if `bayes`) Bayesian EXACT after every epoch, every setting.

  Args:
    model: the split model (its architecture is public).
    space: the candidate space.
    views: per-epoch ServerViews, each with a leading [settings] axis.
    num_records: training records (ids index 0..num_records-1).
    clip_norm, noise_stddev: [S] the public message defence of each attacked
      setting (clip norm 0 = none).
    label_epsilon: [S] each setting's label randomized response (inf or None
      = none), which Bayes's likelihood mixes over.
    select: [S] which settings of `views` to attack (default: all).
    bayes: also run Bayesian EXACT.
    log_prior: (one per private categorical, then optionally one per private
      numeric, the label's) log-probabilities for Bayes, shared by the
      settings: each an [N, V_j] (numeric: [N, G_j] on its grid; label:
      [N, K]) table, or a knowledge.ConditionalPrior of the candidate's
      private values; None = uniform (so are numerics without a table).
    metric: EXACT's 'l2' or 'cosine' (Bayes uses the Gaussian L2).
    noiseless_scale: when a setting adds no noise, the likelihood's scale
      relative to each record's RMS message coordinate.
    chunk_candidates, chunk_mb: the chunk size cap and its buffer target
      (0 = default_chunk_mb() for the device).
    max_chunk_mb, max_candidates: hard limits (ConfigError beyond).
  """
  if metric not in METRICS:
    raise ConfigError(f"attack.exact.metric: unknown {metric!r}; known: {list(METRICS)}")
  views = list(views)
  if any(v.device_params is None for v in views):
    raise ConfigError("EXACT needs the device model: view.knowledge must be "
                      "'white_box' or 'stale', not 'none'")
  select = np.arange(views[0].ids.shape[0]) if select is None else np.asarray(select)
  kwargs = dict(clip_norm=clip_norm, noise_stddev=noise_stddev, label_epsilon=label_epsilon,
                select=select, bayes=bayes, log_prior=log_prior, metric=metric,
                noiseless_scale=noiseless_scale, chunk_candidates=chunk_candidates,
                chunk_mb=chunk_mb, max_chunk_mb=max_chunk_mb, max_candidates=max_candidates)
  rows = _released_rows(views, num_records)
  if rows is None:
    return _attack_records(model, space, views, num_records, None, **kwargs)
  # Few records released (attack.exact.max_steps): attack those alone, so
  # that Bayes's per-record buffers, its prior and its sums scale with them
  # and not with the training split; ties keep each record's own order.
  position = np.zeros(num_records, np.int32)
  position[rows] = np.arange(len(rows), dtype=np.int32)
  position = jnp.asarray(position)
  views = [v._replace(ids=position[v.ids]) for v in views]
  if log_prior is not None:
    kwargs["log_prior"] = prior_rows(log_prior, jnp.asarray(rows))
  return _expand(_attack_records(model, space, views, len(rows), jnp.asarray(rows), **kwargs),
                 rows, num_records)


def _released_rows(views, num_records: int) -> np.ndarray | None:
  """The records `views` release, sorted, where they are under half of the
  `num_records` (a single process); None otherwise."""
  if jax.process_count() > 1:
    return None
  rows = np.unique(np.concatenate([np.asarray(v.ids).ravel() for v in views]))
  return rows.astype(np.int32) if 2 * len(rows) < num_records else None


def _expand(r: SettingsResult, rows: np.ndarray, num_records: int) -> SettingsResult:
  """`r` over the records `rows` -> over all `num_records`: the others are
  not released, and their picks and scores hold empty values (index 0, no
  score, probability nan), which the released mask hides."""
  empty = dict(exact_score=np.inf, bayes_posterior=np.nan, bayes_log_map=-np.inf,
               bayes_marginal_posterior=np.nan)

  def grow(name, a):
    full = np.full(a.shape[:2] + (num_records,) + a.shape[3:], empty.get(name, 0), a.dtype)
    full[:, :, rows] = a
    return full

  return SettingsResult(*(grow(n, a) for n, a in zip(SettingsResult._fields, r)))


def _attack_records(model, space: CandidateSpace, views: list[ServerView],
                    num_records: int, record_ids, *, clip_norm, noise_stddev,
                    label_epsilon, select, bayes, log_prior, metric, noiseless_scale,
                    chunk_candidates, chunk_mb, max_chunk_mb,
                    max_candidates) -> SettingsResult:
  """attack_settings over N = num_records records, whose ids in the training
  split are record_ids [N] (None: 0..N-1; the views' ids index them)."""
  num_settings, num_epochs = len(select), len(views)
  hidden = (model.head.hidden or (model.head.num_outputs,))[0]
  batch = views[0].ids.shape[-1]
  chunk_mb = chunk_mb or default_chunk_mb()
  chunk, block = plan_chunk(space, num_settings, num_records, batch, hidden, bayes,
                            chunk_candidates, chunk_mb, max_chunk_mb)
  check_memory(space, num_records, batch, hidden, chunk, max_chunk_mb,
               max_candidates, block, bayes)
  if bayes and log_prior is None:
    cats = tuple(jnp.zeros((num_records, r)) for r in space.radices[:space.num_categorical])
    log_prior = (cats, jnp.zeros((num_records, space.num_labels)))
  noise = np.asarray(noise_stddev, np.float32)
  clip_norm = np.asarray(clip_norm, np.float32)
  log_rr = label_log_rr([math.inf] * num_settings if label_epsilon is None
                        else label_epsilon, space.num_labels)
  if log_rr.shape[0] != num_settings:
    raise ValueError(f"label_epsilon: {log_rr.shape[0]} values for {num_settings} settings")
  shape = (num_settings, num_epochs, num_records)
  widths = tuple(space.radices) + (space.num_labels,)
  # Without Bayes one unused column: lax.map's batching cannot reshape a
  # zero-size carry.
  width = sum(widths) if bayes else 1
  static = dict(model=model, space=space, metric=metric, chunk=chunk,
                num_records=num_records, bayes=bayes, block=block)
  m = sharding.local_mesh()
  if m is None or num_settings < m.size:
    if m is not None and batch % m.size == 0:
      # Fewer settings than devices: each step's records over every device,
      # the params they share replicated. This costs collectives in every
      # step (for the running bests, and Bayes's sums).
      def spread(v):
        per_record = sharding.shard_axis((v.ids, v.h, v.messages, v.param_index), m, 2)
        shared = sharding.replicate((v.step, v.epoch, v.device_params), m)
        return ServerView(*per_record[:3], shared[0], shared[1], per_record[3], shared[2])
      views = [spread(v) for v in views]
    run, args = _chunk, (tuple(views), np.asarray(select, np.int32), clip_norm, noise,
                         log_rr)
    carry = _empty_carry(shape, width)
  else:
    # The attacked settings over every device, padded with copies of the
    # last to a multiple of the device count; each device attacks its own,
    # without communication. (Sharding the records instead made the Adult
    # sweep's attacks 2.6x slower on two CPU devices, 7x over two processes.)
    local = math.ceil(num_settings / m.size)
    logging.info("EXACT: %d settings over %d devices, %d each", num_settings, m.size,
                 local)
    static["block"] = min(block, local)
    run = functools.partial(_chunk_sharded, mesh=m)
    picked = tuple(jax.tree.map(lambda a: a[select], v) for v in views)
    picked, clip_p, noise_p, rr_p = sharding.pad_leading((picked, clip_norm, noise, log_rr),
                                                         m.size)
    local_select = np.tile(np.arange(local, dtype=np.int32), m.size)
    args = sharding.shard_axis((picked, local_select, clip_p, noise_p, rr_p), m, 0)
    carry = _empty_carry_on(m)(shape=(local * m.size,) + shape[1:], width=width)
  num_chunks = math.ceil(space.size / chunk)
  start = last_log = time.perf_counter()
  for i in range(num_chunks):
    carry = run(carry, np.int32(i * chunk), *args, np.float32(noiseless_scale),
                log_prior if bayes else None, record_ids, **static)
    jax.block_until_ready(carry)  # Dispatch is asynchronous; time real work.
    if time.perf_counter() - last_log > 15 and i + 1 < num_chunks:
      now = time.perf_counter()
      last_log = now
      logging.info("EXACT%s: %d/%d candidate chunks of %d (%d settings x %d epochs), "
                   "ETA %.0f s", " + Bayes" if bayes else "", i + 1, num_chunks, chunk,
                   num_settings, num_epochs, (now - start) / (i + 1) * (num_chunks - i - 1))
  # One transfer for everything the host needs (the copies overlap), and
  # only the Bayes sums when Bayes ran: on a GPU each transfer costs a sync.
  ex_best, ex_arg, _, b_best, b_arg, _, b_lse, b_mass = carry
  bayes_out = ((b_best, b_arg, b_lse)
               + _marginal_picks(b_mass, widths, space.num_categorical, record_ids,
                                 half_unit_windows(space))
               if bayes else ())
  ex_best, ex_arg, bayes_out, all_ids = sharding.to_host(
      (ex_best, ex_arg, bayes_out, [v.ids for v in views]))
  ex_best, ex_arg, bayes_out = jax.tree.map(lambda a: a[:num_settings],
                                            (ex_best, ex_arg, bayes_out))
  released = np.zeros(shape, bool)
  for e, ids in enumerate(all_ids):
    ids = np.asarray(ids).reshape(ids.shape[0], -1)
    for s, setting in enumerate(select):
      released[s, e, ids[setting]] = True

  def unpack(index):  # On the host: a few numpy ops, no device round trips.
    combo = index // space.num_labels
    digits = np.zeros(shape + (len(space.radices),), np.int32)
    for j in reversed(range(len(space.radices))):
      combo, digits[..., j] = np.divmod(combo, space.radices[j])
    return digits, (index % space.num_labels).astype(np.int32)

  ex_digits, ex_label = unpack(ex_arg)
  if bayes:
    b_best, b_arg, b_lse, m_pick, m_prob, w_pick = bayes_out
    b_digits, b_label = unpack(b_arg)
    posterior = np.exp(b_best - b_lse).astype(np.float32)
    m_digits, m_label = m_pick[..., :-1], m_pick[..., -1]
  else:
    b_digits = m_digits = np.zeros(shape + (0,), np.int32)
    b_label = m_label = np.zeros(shape, np.int32)
    posterior = np.full(shape, np.nan, np.float32)
    b_best = np.full(shape, -np.inf, np.float32)
    m_prob = np.zeros(shape + (0,), np.float32)
    w_pick = np.zeros(shape + (0,), np.int32)
  return SettingsResult(ex_digits, ex_label, (-ex_best).astype(np.float32),
                        b_digits, b_label, posterior, b_best.astype(np.float32),
                        released, m_digits, m_label, m_prob, w_pick)


def attack(model, space: CandidateSpace, mech: Mechanism, views: list[ServerView],
           num_records: int, *, metric: str = "l2", bayes: bool = False,
           log_prior=None, noiseless_scale: float = 1e-4,
           chunk_candidates: int = 4096, chunk_mb: float = 0.0,
           max_chunk_mb: float = 1024, max_candidates: int = 2_000_000) -> ExactResult:
  """EXACT on the last of `views`, or Bayesian EXACT on all of them, for one
  setting (views without a setting axis, one per epoch)."""
  views = views if bayes else views[-1:]
  r = attack_settings(model, space, [_with_setting_axis(v) for v in views],
                      num_records,
                      clip_norm=[mech.clip_norm], noise_stddev=[mech.noise_stddev],
                      label_epsilon=[mech.label_epsilon], bayes=bayes,
                      log_prior=log_prior, metric=metric, noiseless_scale=noiseless_scale,
                      chunk_candidates=chunk_candidates, chunk_mb=chunk_mb,
                      max_chunk_mb=max_chunk_mb, max_candidates=max_candidates)
  last = len(views) - 1
  return r.bayes(0, last) if bayes else r.exact(0, last)
