"""Baselines: what the server knows without any gradient.

- `prior`: the most frequent value of each private categorical and of the
  label in the auxiliary sample (the median for a numeric).
- `server_model`: a small MLP trained on the auxiliary sample to predict each
  private feature and the label from x_s. Its log-probabilities also serve as
  Bayesian EXACT's prior.
- Bayesian EXACT's conditional priors: MLPs of x_s and (some of) x_p, split
  by `conditional_prior` so that any candidate's x_p can be scored: the label
  given x_s and x_p (`label_given_private`), and each private categorical
  given x_s and the categoricals before it (`private_chain`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from splitjax.attacks.knowledge import AuxSample, ConditionalPrior, ServerData


class Prediction(NamedTuple):
  """A baseline's prediction for every training record."""
  cat: np.ndarray   # int32 [N, private categoricals]
  num: np.ndarray   # float32 [N, private numerics], normalised units
  label: np.ndarray # int32 [N]
  log_probs: tuple  # ([N, V_j] per categorical, [N, K] label), or None
  # [private numerics] how far `num` typically misses (the server model's
  # held-out mean absolute error), or None.
  num_scale: np.ndarray | None = None
  # Per private numeric with a grid, its [N, G] log prior on the grid
  # (`numeric_log_priors`) and its `NumericPrior`'s two weights (the
  # Laplace's against the histogram, the grid-bin head's against both);
  # () without grids.
  num_log_priors: tuple = ()
  num_weights: tuple = ()


def prior(aux: AuxSample, num_records: int, vocab_sizes, num_labels) -> Prediction:
  """Most frequent value in the auxiliary sample, for every record."""
  x_p_cat, x_p_num, y = (np.asarray(a) for a in (aux.x_p_cat, aux.x_p_num, aux.y))
  cat = [np.bincount(x_p_cat[:, j], minlength=v).argmax()
         for j, v in enumerate(vocab_sizes)]
  num = np.median(x_p_num, axis=0) if x_p_num.shape[1] else np.zeros(0)
  label = np.bincount(y, minlength=num_labels).argmax()
  return Prediction(np.tile(np.asarray(cat, np.int32), (num_records, 1)),
                    np.tile(num.astype(np.float32), (num_records, 1)),
                    np.full(num_records, label, np.int32), None)


def _laplace_on_grid(grid, center: np.ndarray, scale: float) -> np.ndarray:
  """[N, G] log of a Laplace around each of `center` [N], normalised over
  the grid."""
  lp = -np.abs(np.asarray(grid, np.float32)[None] - center[:, None]) / scale
  return lp - np.logaddexp.reduce(lp, -1, keepdims=True)


def grid_index(values: np.ndarray, grid) -> np.ndarray:
  """Each value's nearest grid index."""
  return np.abs(np.asarray(values)[:, None] - np.asarray(grid, np.float32)).argmin(-1)


def _mix(log_a, w: float, log_b):
  """log(w exp(log_a) + (1 - w) exp(log_b)), exact at w = 0 and w = 1."""
  if w == 1.0:
    return log_a
  log_b = np.broadcast_to(np.log1p(-w) + np.asarray(log_b, np.float32), np.shape(log_a))
  return log_b if w == 0.0 else np.logaddexp(log_a + np.float32(math.log(w)), log_b)


def numeric_log_priors(clf: Classifier, inputs, center: np.ndarray, grids) -> tuple:
  """A log prior on each private numeric's grid ([N, G_k] per numeric) for
  the rows inputs = (x_cat, x_num): a Laplace distribution around each row's
  `center` [N, M] (`clf`'s regression of them) with `clf.num_scales` (its
  mean absolute error, the Laplace scale's maximum-likelihood estimate),
  normalised over the grid; where `fit` was given the grids, mixed with the
  histogram and the grid-bin head as `clf.num_priors` says."""
  out = []
  for k, grid in enumerate(grids):
    lp = _laplace_on_grid(grid, np.asarray(center)[:, k], clf.num_scales[k])
    if clf.num_priors:
      p = clf.num_priors[k]
      lp = _mix(lp, p.laplace_weight, p.log_frequencies)
      if p.bins_weight > 0.0:
        lp = _mix(np.asarray(predict(p.bins, inputs)[2]), p.bins_weight, lp)
    out.append(jnp.asarray(lp))
  return tuple(out)


def numeric_marginal_log_probs(aux: AuxSample, num_records: int, grids) -> tuple:
  """The auxiliary sample's values of each private numeric, each at its
  nearest grid value, as an add-one smoothed per-record log prior on the grid
  ([N, G_k] per numeric)."""
  x = np.asarray(aux.x_p_num)
  return tuple(_frequency_table(grid_index(x[:, k], g), len(g), num_records)
               for k, g in enumerate(grids))


def _frequency_table(values, num_values: int, num_records: int) -> jax.Array:
  """[num_records, num_values] the add-one smoothed log frequencies of
  `values`, the same for every record."""
  counts = np.bincount(np.asarray(values), minlength=num_values) + 1.0
  return jnp.tile(jnp.log(counts / counts.sum()), (num_records, 1))


def marginal_log_probs(aux: AuxSample, num_records: int, vocab_sizes, num_labels):
  """Aux-sample marginals (add-one smoothed) as a per-record log prior."""
  return (tuple(_frequency_table(aux.x_p_cat[:, j], v, num_records)
                for j, v in enumerate(vocab_sizes)),
          _frequency_table(aux.y, num_labels, num_records))


class _Heads(nn.Module):
  """One-hot categoricals and numerics in; a softmax head per categorical
  target, a regression head for the numeric targets, and the label head out."""
  vocab_sizes: tuple[int, ...]
  input_vocab_sizes: tuple[int, ...]
  num_numeric: int
  num_labels: int
  hidden: int

  @nn.compact
  def __call__(self, x_cat, x_num):
    parts = [jax.nn.one_hot(x_cat[:, j], v) for j, v in enumerate(self.input_vocab_sizes)]
    x = jnp.concatenate(parts + [x_num], -1)
    if self.hidden:
      x = nn.relu(nn.Dense(self.hidden)(x))
    cats = [nn.Dense(v, name=f"cat_{j}")(x) for j, v in enumerate(self.vocab_sizes)]
    num = (nn.Dense(self.num_numeric, name="num")(x) if self.num_numeric
           else jnp.zeros((x.shape[0], 0)))
    label = nn.Dense(self.num_labels, name="label")(x)
    return cats, num, label


def temperature(logits: np.ndarray, targets: np.ndarray) -> float:
  """The temperature T minimising the NLL of softmax(logits / T) on held-out
  rows (Guo et al. 2017, temperature scaling), over a log grid in [0.1, 20]."""
  logits = np.asarray(logits, np.float64)
  logits = logits - logits.max(-1, keepdims=True)
  true = np.take_along_axis(logits, np.asarray(targets)[:, None], -1)[:, 0]

  def nll(t):  # One [rows, classes] pass per candidate T: memory stays flat.
    return np.mean(np.log(np.exp(logits / t).sum(-1)) - true / t)

  grid = np.exp(np.linspace(np.log(0.1), np.log(20.0), 241))
  return float(grid[np.argmin([nll(t) for t in grid])])


def best_weight(p: np.ndarray, q: np.ndarray) -> float:
  """The weight w in [0, 1], over a grid of step 0.01, minimising the NLL
  -mean log(w p + (1 - w) q) of two models' probabilities p, q [R] of the
  same held-out rows' true values."""
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
  grid = np.linspace(0.0, 1.0, 101)
  nll = [-np.mean(np.log(w * p + (1.0 - w) * q)) for w in grid]
  return float(grid[np.argmin(nll)])


def shrinkage(log_probs: np.ndarray, targets: np.ndarray, log_freq: np.ndarray) -> float:
  """The weight w of the mixture w softmax + (1 - w) freq that the held-out
  rows prefer (`best_weight`): how far a head's predictions should be
  trusted over the class frequencies of the rows it was fitted on (1: fully;
  0: its inputs tell it nothing it can use)."""
  probs = np.exp(np.take_along_axis(np.asarray(log_probs, np.float64),
                                    np.asarray(targets)[:, None], -1)[:, 0])
  return best_weight(probs, np.exp(np.asarray(log_freq, np.float64))[np.asarray(targets)])


def log_frequencies(values: np.ndarray, num_classes: int) -> np.ndarray:
  """[num_classes] log class frequencies of `values`, add-one smoothed."""
  counts = np.bincount(np.asarray(values), minlength=num_classes) + 1.0
  return np.log(counts / counts.sum()).astype(np.float32)


class Classifier(NamedTuple):
  """A fitted `_Heads` MLP: the module, its params, and per softmax head (the
  categoricals', then the label's) a temperature and the mixture that shrinks
  it toward the class frequencies of its fitted rows (`shrinkage`)."""
  net: _Heads
  params: dict
  temperatures: tuple[float, ...]
  weights: tuple[float, ...]              # w per head
  log_frequencies: tuple[np.ndarray, ...]  # [V] per head
  # Per numeric head, its mean absolute error on the held-out rows (on the
  # fitted rows without any), floored at 1e-3: a Laplace prior's scale.
  num_scales: tuple[float, ...] = ()
  # Per numeric head with a grid (`fit`'s num_grids), its `NumericPrior`.
  num_priors: tuple = ()

  def mixture(self, j: int) -> tuple[jax.Array, jax.Array]:
    """Head j's shrinkage in log space: (log w, [V] log((1 - w) freq)), so
    that its log-probabilities are logaddexp(log_softmax + log w, the rest)."""
    w, log_freq = self.weights[j], self.log_frequencies[j]
    log_w = jnp.float32(math.log(w) if w > 0 else -np.inf)
    if w == 1.0:
      return log_w, jnp.full(log_freq.shape, -jnp.inf, jnp.float32)
    return log_w, jnp.log1p(-w) + log_freq

  def calibrate(self, j: int, logits: jax.Array) -> jax.Array:
    """Head j's log-probabilities from its logits [..., V]: temperature, then
    log(w softmax + (1 - w) freq). At w = 1, exactly the tempered softmax."""
    log_p = jax.nn.log_softmax(logits / self.temperatures[j], -1)
    if self.weights[j] == 1.0:
      return log_p
    log_w, log_rest = self.mixture(j)
    return jnp.logaddexp(log_p + log_w, log_rest)


class NumericPrior(NamedTuple):
  """How `numeric_log_priors` builds a private numeric's prior on its grid:
  the Laplace around the regression, mixed with the fitted rows' histogram
  by `laplace_weight`, then that mixed with a softmax head over the grid's
  bins (x_s -> the nearest grid value, a `fit` of its own, calibrated like
  every softmax head) by `bins_weight`. Both weights are the held-out rows'
  (`best_weight`)."""
  laplace_weight: float
  log_frequencies: np.ndarray  # [G] of the fitted rows on the grid
  bins: Classifier | None      # None without held-out rows
  bins_weight: float           # 0 without held-out rows


def fit(inputs, input_vocab_sizes, targets, vocab_sizes, num_labels: int, *,
        hidden: int, num_steps: int, learning_rate: float,
        held_out_fraction: float, seed: int, num_grids=None) -> Classifier:
  """Fits the MLP of `_Heads` (full batch, Adam); with held-out rows,
  early-stopped and temperature-scaled on them.

  Full-batch Adam overfits a few thousand rows: on Adult's auxiliary sample,
  500 steps left the label's mean top probability at 0.88 against 0.80
  accuracy on the targets, and marital-status's at 0.76 against 0.56, where
  50 steps gave 0.82 and 0.63 accuracy. Those confidences are the audit's
  per-record priors kappa_i and Bayesian EXACT's prior, and the predictions
  are the server-model baseline. So a fraction of the rows is held out: the
  params of the step with the lowest held-out loss are kept, and each softmax
  head's logits are divided by the temperature that fits the held-out rows
  best (which keeps each row's most likely value). Each head is then mixed
  with the class frequencies of the fitted rows by the weight the held-out
  rows prefer (`shrinkage`): early stopping on the heads' summed loss keeps
  the step best for all of them, where a head that x_s cannot predict (on
  MovieLens, the rater's gender from the movie) is already worse than the
  frequencies.

  Args:
    inputs: (x_cat int [A, I], x_num [A, J]) of the training rows.
    input_vocab_sizes: vocabulary of each input categorical.
    targets: (x_cat int [A, len(vocab_sizes)], x_num [A, M], y [A]).
    vocab_sizes, num_labels: the categorical targets' and the label's classes.
    held_out_fraction: rows held out for early stopping, the temperatures
      and the shrinkage (0 = none: all num_steps, T = 1, no shrinkage).
    seed: the MLP's init and the held-out rows.
    num_grids: a grid (normalised units) per numeric target, or None. With
      them and held-out rows, each numeric's Laplace around the regression
      is mixed with the fitted rows' histogram on its grid, and that with a
      softmax head over the grid's bins, by the weights the held-out rows
      prefer (`Classifier.num_priors`, `NumericPrior`): a regression of x_s
      misses a spike such as Adult's 40 hours a week, which the histogram
      holds, and the histogram is the same for every record, where the
      bins' head can move the spike's mass with x_s.
  """
  rows = np.asarray(targets[2]).shape[0]
  order = np.random.default_rng(seed).permutation(rows)
  num_held = min(int(round(rows * held_out_fraction)), rows - 1)
  held, fit_rows = np.sort(order[:num_held]), np.sort(order[num_held:])
  pick = lambda tree, idx: jax.tree.map(lambda a: jnp.asarray(a)[idx], tree)
  x, t = pick(inputs, fit_rows), pick(targets, fit_rows)
  x_held, t_held = pick(inputs, held), pick(targets, held)
  net = _Heads(tuple(vocab_sizes), tuple(input_vocab_sizes), t[1].shape[1],
               num_labels, hidden)
  params = net.init(jax.random.key(seed), x[0][:1], x[1][:1])
  opt = optax.adam(learning_rate)

  def loss_fn(params, x, t):
    t_cat, t_num, y = t
    cats, num, label = net.apply(params, *x)
    loss = optax.softmax_cross_entropy_with_integer_labels(label, y).mean()
    for j, logits in enumerate(cats):
      loss += optax.softmax_cross_entropy_with_integer_labels(logits, t_cat[:, j]).mean()
    if t_num.shape[1]:
      loss += jnp.mean((num - t_num) ** 2)
    return loss

  @jax.jit
  def train(params):
    # With held-out rows, the params of the step with the lowest held-out loss
    # are kept (early stopping): full-batch Adam overfits a few thousand rows
    # long before num_steps.
    def step(carry, _):
      params, state, best, best_loss = carry
      grads = jax.grad(loss_fn)(params, x, t)
      updates, state = opt.update(grads, state, params)
      params = optax.apply_updates(params, updates)
      if not num_held:
        return (params, state, params, best_loss), None
      loss = loss_fn(params, x_held, t_held)
      better = loss < best_loss
      best = jax.tree.map(lambda new, old: jnp.where(better, new, old), params, best)
      return (params, state, best, jnp.minimum(loss, best_loss)), None
    start = (params, opt.init(params), params, jnp.asarray(jnp.inf, jnp.float32))
    (_, _, best, _), _ = jax.lax.scan(step, start, None, length=num_steps)
    return best

  params = train(params)
  fit_cat, _, fit_y = (np.asarray(a) for a in t)
  freqs = tuple([log_frequencies(fit_cat[:, j], v) for j, v in enumerate(vocab_sizes)]
                + [log_frequencies(fit_y, num_labels)])
  x_err, t_err = (x_held, t_held) if num_held else (x, t)
  pred_err = np.asarray(net.apply(params, *x_err)[1])
  err = np.abs(pred_err - np.asarray(t_err[1]))
  clf = Classifier(net, params, (1.0,) * len(freqs), (1.0,) * len(freqs), freqs,
                   tuple(float(max(e, 1e-3)) for e in err.mean(0)))
  if num_grids:
    fit_num, true_err = np.asarray(t[1]), np.asarray(t_err[1])
    priors = []
    for k, grid in enumerate(num_grids):
      log_freq = log_frequencies(grid_index(fit_num[:, k], grid), len(grid))
      if not num_held:
        priors.append(NumericPrior(1.0, log_freq, None, 0.0))
        continue
      true_idx = grid_index(true_err[:, k], grid)
      laplace = _laplace_on_grid(grid, pred_err[:, k], clf.num_scales[k])
      w = shrinkage(laplace, true_idx, log_freq)
      # The bins' head: x_s -> the nearest grid value over every row (the
      # same seed holds out the same rows), its own early stopping.
      all_idx = grid_index(np.asarray(targets[1])[:, k], grid).astype(np.int32)
      bins = fit(inputs, input_vocab_sizes,
                 (np.zeros((rows, 0), np.int32), np.zeros((rows, 0), np.float32), all_idx),
                 (), len(grid), hidden=hidden, num_steps=num_steps,
                 learning_rate=learning_rate, held_out_fraction=held_out_fraction,
                 seed=seed)
      on_held = lambda lp: np.exp(np.take_along_axis(np.asarray(lp), true_idx[:, None], -1)[:, 0])
      v = best_weight(on_held(predict(bins, x_held)[2]),
                      on_held(_mix(laplace, w, log_freq)))
      priors.append(NumericPrior(w, log_freq, bins, v))
    clf = clf._replace(num_priors=tuple(priors))
  if not num_held:
    return clf
  h_cat, _, h_y = (np.asarray(a) for a in t_held)
  h_cats, _, h_label = net.apply(params, *x_held)
  logits, held_targets = [*h_cats, h_label], [*h_cat.T, h_y]
  temps = tuple(temperature(np.asarray(z), y) for z, y in zip(logits, held_targets))
  clf = clf._replace(temperatures=temps)
  weights = tuple(shrinkage(np.asarray(clf.calibrate(j, z)), y, freqs[j])
                  for j, (z, y) in enumerate(zip(logits, held_targets)))
  return clf._replace(weights=weights)


def predict(clf: Classifier, inputs):
  """([N, V_j] log-probabilities per categorical target, [N, M] numerics,
  [N, K] label log-probabilities) of the rows inputs = (x_cat, x_num)."""
  cats, num, label = clf.net.apply(clf.params, *inputs)
  return ([clf.calibrate(j, c) for j, c in enumerate(cats)], num,
          clf.calibrate(len(cats), label))


def _with_private(x_s, x_p):
  """The label-given-private classifier's input: categoricals x_s then x_p,
  numerics x_s then x_p (x_s, x_p: (x_cat, x_num) pairs)."""
  return (jnp.concatenate([jnp.asarray(x_s[0]), jnp.asarray(x_p[0])], 1),
          jnp.concatenate([jnp.asarray(x_s[1]), jnp.asarray(x_p[1])], 1))


def _fit_given(aux: AuxSample, server_vocab_sizes, given, given_vocab_sizes, target,
               num_classes: int, **kwargs) -> Classifier:
  """Fits x_s and `given` (an (x_cat, x_num) pair of private columns, with
  their vocabularies) -> `target` [A] on the auxiliary sample, as `_Heads`'
  one softmax head (keyword arguments as `fit`'s)."""
  rows = aux.y.shape[0]
  only = (jnp.zeros((rows, 0), jnp.int32), jnp.zeros((rows, 0), jnp.float32), target)
  return fit(_with_private((aux.x_s_cat, aux.x_s_num), given),
             list(server_vocab_sizes) + list(given_vocab_sizes), only, (), num_classes,
             **kwargs)


def label_given_private(aux: AuxSample, server_vocab_sizes, private_vocab_sizes,
                        num_labels: int, **kwargs) -> Classifier:
  """Fits x_s, x_p -> y on the auxiliary sample (keyword arguments as
  `fit`'s; its first layer must be hidden, for `conditional_prior`)."""
  return _fit_given(aux, server_vocab_sizes, (aux.x_p_cat, aux.x_p_num),
                    private_vocab_sizes, aux.y, num_labels, **kwargs)


def private_chain(aux: AuxSample, server_vocab_sizes, private_vocab_sizes,
                  **kwargs) -> tuple[Classifier, ...]:
  """Fits x_s, x_p[:j] -> x_p[j] for each private categorical j on the
  auxiliary sample: p(x_p | x_s) = prod_j p(x_p[j] | x_s, x_p[:j]), the
  chain rule, where the server model's prior takes each x_p[j] from x_s
  alone (keyword arguments as `fit`'s; the 'chain' prior)."""
  no_numerics = jnp.zeros((aux.y.shape[0], 0), jnp.float32)
  return tuple(_fit_given(aux, server_vocab_sizes, (aux.x_p_cat[:, :j], no_numerics),
                          private_vocab_sizes[:j], aux.x_p_cat[:, j], vocab, **kwargs)
               for j, vocab in enumerate(private_vocab_sizes))


def predict_label_given_private(clf: Classifier, x_s, x_p) -> jax.Array:
  """[N, K] log p(y | x_s, x_p) of rows with their own x_s and x_p."""
  return predict(clf, _with_private(x_s, x_p))[2]


def conditional_prior(clf: Classifier, server: ServerData, width: int) -> ConditionalPrior:
  """A classifier of x_s and x_p's leading inputs (`label_given_private`,
  `private_chain`) as a Bayesian EXACT prior: its first layer split into
  every record's x_s part and the rows that a candidate's private input
  (`CandidateSpace.encode`: one-hots, then normalised numerics; `width`
  columns) multiplies, zero for the columns it does not read.

  Raises:
    ValueError: the classifier has no hidden layer, or reads more than
      `width` private inputs.
  """
  net = clf.net
  if not net.hidden:
    raise ValueError("conditional_prior: the classifier needs a hidden layer "
                     "(attack.server_model.hidden > 0)")
  num_s = server.x_s_cat.shape[1]
  s_vocab, p_vocab = net.input_vocab_sizes[:num_s], net.input_vocab_sizes[num_s:]
  num_s_num = server.x_s_num.shape[1]
  first = clf.params["params"]["Dense_0"]
  rows = np.cumsum([0, sum(s_vocab), sum(p_vocab), num_s_num])
  w = first["kernel"]
  w_s = jnp.concatenate([w[:rows[1]], w[rows[2]:rows[3]]])
  w_p = jnp.concatenate([w[rows[1]:rows[2]], w[rows[3]:]])
  if w_p.shape[0] > width:
    raise ValueError(f"conditional_prior: the classifier reads {w_p.shape[0]} private "
                     f"inputs, the candidates have {width}")
  w_p = jnp.pad(w_p, ((0, width - w_p.shape[0]), (0, 0)))
  x_s = jnp.concatenate([jax.nn.one_hot(server.x_s_cat[:, j], v)
                         for j, v in enumerate(s_vocab)] + [server.x_s_num], -1)
  out = clf.params["params"]["label"]
  return ConditionalPrior(x_s @ w_s + first["bias"], w_p, out["kernel"], out["bias"],
                          jnp.float32(clf.temperatures[-1]), *clf.mixture(-1))


def server_model(aux: AuxSample, server: ServerData, vocab_sizes, server_vocab_sizes,
                 num_labels: int, *, hidden: int, num_steps: int,
                 learning_rate: float, held_out_fraction: float,
                 seed: int, num_grids=None) -> Prediction:
  """Trains the x_s -> (x_p, y) classifier on the auxiliary sample (full batch,
  Adam, early-stopped and temperature-scaled on `held_out_fraction` of it) and
  predicts every record from its x_s (`num_grids` as `fit`'s)."""
  clf = fit((aux.x_s_cat, aux.x_s_num), server_vocab_sizes,
            (aux.x_p_cat, aux.x_p_num, aux.y), vocab_sizes, num_labels, hidden=hidden,
            num_steps=num_steps, learning_rate=learning_rate,
            held_out_fraction=held_out_fraction, seed=seed, num_grids=num_grids)
  inputs = (server.x_s_cat, server.x_s_num)
  cats, num, label = predict(clf, inputs)
  num = np.asarray(num, np.float32)
  cat_pred = (np.stack([np.asarray(c.argmax(-1)) for c in cats], 1) if cats
              else np.zeros((label.shape[0], 0)))
  return Prediction(cat_pred.astype(np.int32), num,
                    np.asarray(label.argmax(-1), np.int32), (tuple(cats), label),
                    np.asarray(clf.num_scales, np.float32),
                    numeric_log_priors(clf, inputs, num, num_grids) if num_grids else (),
                    tuple((p.laplace_weight, p.bins_weight) for p in clf.num_priors))
