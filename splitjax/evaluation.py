"""The attack job: train with view capture, attack, and score against the truth.

This module is the evaluator, not the attacker: it is the one place where an
attack's predictions meet the private values they try to recover. The attacks
in `splitjax.attacks` receive a ServerView, the server's own features, the
auxiliary sample and the public mechanism, and never the targets' x_p or y.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from splitjax import audit, configlib, data, errors, models, report, sharding, training
from splitjax import workdir as wd
from splitjax.attacks import baselines, exact, gradmatch, knowledge, label_only
from splitjax.data.schema import Arrays


def split_aux(train: Arrays, fraction: float, seed: int
              ) -> tuple[knowledge.ServerData, knowledge.AuxSample, np.ndarray]:
  """Splits the training records into the server's knowledge and the targets.

  Returns:
    ServerData for all records, the AuxSample, and a boolean [N] mask of the
    target records (those not in the auxiliary sample).
  """
  if not 0 < fraction < 1:
    raise errors.ConfigError(f"attack.aux_fraction: must be in (0, 1), got {fraction}")
  n = train.num_examples
  num_aux = max(1, int(round(n * fraction)))
  ids = np.sort(np.random.default_rng(seed).permutation(n)[:num_aux])
  targets = np.ones(n, bool)
  targets[ids] = False
  aux = knowledge.AuxSample(jnp.asarray(ids, jnp.int32), *(jnp.asarray(a[ids]) for a in (
      train.x_s_cat, train.x_s_num, train.x_p_cat, train.x_p_num, train.y)))
  return knowledge.ServerData(jnp.asarray(train.x_s_cat), jnp.asarray(train.x_s_num)), aux, targets


def _acc(pred, true, mask):
  return float(np.mean(pred[mask] == true[mask])) if mask.any() else math.nan


def confusion(pred, true, mask, k):
  return np.bincount(true[mask] * k + pred[mask], minlength=k * k).reshape(k, k).tolist()


def calibration(confidence, correct, num_bins=10):
  """Expected calibration error and the reliability table of a posterior."""
  bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
  table, ece = [], 0.0
  for b in range(num_bins):
    sel = bins == b
    if sel.any():
      conf, acc = float(confidence[sel].mean()), float(correct[sel].mean())
      ece += sel.mean() * abs(conf - acc)
      table.append({"bin": b, "count": int(sel.sum()), "confidence": conf,
                    "accuracy": acc})
  return {"ece": float(ece), "reliability": table}


def score(schema, truth, noisy_labels, mask, pred_cat, pred_num, pred_label,
          prior_scores=None, posterior=None, confidence=None, joint=None,
          num_in_window=None):
  """Per-feature and label accuracy, all-correct rate, advantage over the
  prior, MAE in standard deviations for numerics, confusion matrices, the
  posterior's calibration, and with `confidence` ({feature or "label": [N]
  probability of the predicted value}) each prediction's mean confidence and
  expected calibration error.

  joint: (categorical codes, label) of one joint guess (Bayes's MAP
  candidate) that the all-correct rate and `posterior`'s calibration score,
  where the per-feature predictions are each feature's own best guess.
  num_in_window: [N, M] numeric guesses that the rate within half a unit
  scores, where `pred_num` (the MAE's) is not the best guess for it (Bayes:
  the posterior median for the MAE, the fullest half-unit window for the
  rate).
  """
  out = {"num_records": int(mask.sum()), "features": {}}
  joint_cat, joint_label = (pred_cat, pred_label) if joint is None else joint
  correct_all = np.ones(mask.sum(), bool)
  for j in range(0 if joint_cat is None else joint_cat.shape[1]):
    correct_all &= (joint_cat[:, j] == truth.x_p_cat[:, j])[mask]
  if joint_label is not None:
    correct_all &= (joint_label == truth.y)[mask]
  for j, f in enumerate(schema.private_categorical):
    if pred_cat is None:
      break
    t, p = truth.x_p_cat[:, j], pred_cat[:, j]
    acc = _acc(p, t, mask)
    out["features"][f.name] = {"accuracy": acc,
                               "confusion": confusion(p, t, mask, f.vocab_size)}
  for k, f in enumerate(schema.private_numeric):
    if pred_num is None:
      break
    err = np.abs(pred_num[:, k] - truth.x_p_num[:, k])[mask]  # normalised units
    hit = err if num_in_window is None else np.abs(
        num_in_window[:, k] - truth.x_p_num[:, k])[mask]
    out["features"][f.name] = {"mae_std": float(err.mean()),
                               "accuracy_within_half_unit": float(np.mean(hit * f.std <= 0.5))}
  if pred_label is not None:
    out["label"] = {"accuracy": _acc(pred_label, truth.y, mask),
                    "confusion": confusion(pred_label, truth.y, mask, schema.num_classes)}
    if noisy_labels is not None:
      out["label"]["noisy_label_accuracy"] = _acc(pred_label, noisy_labels, mask)
    if pred_cat is not None:
      out["all_correct"] = float(correct_all.mean())
  kept = None if noisy_labels is None else np.asarray(noisy_labels) == truth.y
  if kept is not None and (mask & ~kept).any():
    # Under label DP, each categorical's and the label's accuracy on the
    # records whose sent label randomized response kept and on those it
    # changed: where the two differ, the changes are what moved the leakage.
    preds = {f.name: (pred_cat[:, j], truth.x_p_cat[:, j], out["features"][f.name])
             for j, f in enumerate(schema.private_categorical) if pred_cat is not None}
    if pred_label is not None:
      preds["label"] = (pred_label, truth.y, out["label"])
    for p, t, entry in preds.values():
      entry["accuracy_by_sent_label"] = {
          name: {"num_records": int((mask & m).sum()), "accuracy": _acc(p, t, mask & m)}
          for name, m in (("kept", kept), ("changed", ~kept))}
  if prior_scores is not None:
    for name, m in out["features"].items():
      if "accuracy" in m and name in prior_scores["features"]:
        m["advantage_over_prior"] = m["accuracy"] - prior_scores["features"][name]["accuracy"]
    if "label" in out and "label" in prior_scores:
      out["label"]["advantage_over_prior"] = (out["label"]["accuracy"]
                                              - prior_scores["label"]["accuracy"])
  if confidence is not None:
    preds = {f.name: (pred_cat[:, j], truth.x_p_cat[:, j])
             for j, f in enumerate(schema.private_categorical) if pred_cat is not None}
    if pred_label is not None:
      preds["label"] = (pred_label, truth.y)
    for name, (p, t) in preds.items():
      if name in confidence and mask.any():
        entry = out["label"] if name == "label" else out["features"][name]
        conf = np.asarray(confidence[name])[mask]
        entry["mean_confidence"] = float(conf.mean())
        entry["ece"] = calibration(conf, (p == t)[mask])["ece"]
  if posterior is not None:
    ok = (correct_all if pred_cat is not None or joint is not None
          else (pred_label == truth.y)[mask])
    out["calibration"] = calibration(posterior[mask], ok)
    out["mean_posterior"] = float(posterior[mask].mean())
  return out


def _auc(score_, labels):
  return float(training.binary_auc(jnp.asarray(score_), jnp.asarray(labels)))


@dataclasses.dataclass
class AttackContext:
  """What the evaluator prepares once per data set and shares between runs:
  the attacker's knowledge (server data, auxiliary sample, baselines fitted on
  it) and, kept apart, the truth it scores against."""
  config: Any
  schema: Any
  model: models.SplitModel
  truth: Arrays
  server: knowledge.ServerData
  aux: knowledge.AuxSample
  targets: np.ndarray
  space: knowledge.CandidateSpace | None
  prior_pred: baselines.Prediction
  server_model: baselines.Prediction
  server_confidence: dict[str, np.ndarray]  # its own top probability [N]
  kappa: dict[str, np.ndarray]  # the audit's prior kappa_i [N] (audit.kappa_of)
  best_guess: dict[str, float]  # the best prior-only accuracy on the targets
  names: tuple[str, ...]  # the attacks to run
  # Bayes priors scored alone on the targets (`prior_guess`), by kind.
  prior_guesses: dict[str, tuple] = dataclasses.field(default_factory=dict)

  @functools.cached_property
  def label_given_private(self) -> baselines.Classifier:
    """x_s, x_p -> y on the auxiliary sample, fitted on first use: only runs
    with label DP or Bayes's 'label_given_private' prior need it."""
    return fit_label_given_private(self.aux, self.schema, self.config.attack.server_model,
                                   self.config.attack.aux_seed)

  @functools.cached_property
  def private_chain(self) -> tuple[baselines.Classifier, ...]:
    """x_s, x_p[:j] -> x_p[j] for each private categorical, on the auxiliary
    sample, fitted on first use (Bayes's 'chain' prior)."""
    return baselines.private_chain(
        self.aux, [f.vocab_size for f in self.schema.server_categorical],
        [f.vocab_size for f in self.schema.private_categorical],
        **fit_args(self.config.attack.server_model, self.config.attack.aux_seed))

  @functools.cached_property
  def label_kappa_given_private(self) -> np.ndarray:
    """The label-DP ceiling's prior (audit), from the records' own x_p."""
    return label_kappa_given_private(self.truth, self.label_given_private, self.targets,
                                     self.best_guess["label"])

  @property
  def num_records(self) -> int:
    return self.truth.num_examples


def prepare(config, dataset: data.Dataset, model, spec) -> AttackContext:
  """Splits off the auxiliary sample, sizes the candidate space and fits the
  baselines (before any training, so a bad config fails fast)."""
  schema = dataset.schema
  names = tuple(config.attack.names)
  n = dataset.train.num_examples
  space = None
  if "gradmatch" in names and not schema.private:
    raise errors.ConfigError("attack.names: gradmatch optimises private features, and "
                             "data.private_features is empty (EXACT attacks the label "
                             "alone)")
  if {"exact", "bayes_exact"} & set(names):
    ex = config.attack.exact
    space = knowledge.candidate_space(schema, tuple(ex.numeric_grids))
    exact.check_memory(space, n, spec.batch_size, (model.head.hidden or (1,))[0], 1,
                       ex.max_chunk_mb, ex.max_candidates)
  server, aux, targets = split_aux(dataset.train, config.attack.aux_fraction,
                                   config.attack.aux_seed)
  vocab = [f.vocab_size for f in schema.private_categorical]
  prior_pred = baselines.prior(aux, n, vocab, schema.num_classes)
  # The server model is always fitted: its probabilities are the attacker's
  # per-record prior kappa_i for the audit's ceilings.
  sm = baselines.server_model(aux, server, vocab,
                              [f.vocab_size for f in schema.server_categorical],
                              schema.num_classes,
                              **fit_args(config.attack.server_model, config.attack.aux_seed),
                              num_grids=space.grids if space else None)
  log_probs = {f.name: np.asarray(t) for f, t in zip(schema.private_categorical,
                                                      sm.log_probs[0])}
  log_probs["label"] = np.asarray(sm.log_probs[1])
  confidence = {k: np.exp(v.max(-1)) for k, v in log_probs.items()}
  # The ceilings are as fair as kappa is calibrated: say how it fares on the
  # targets, and raise it to the prior-only guesses' best accuracy there where
  # it falls short (the evaluator's truth; no attack reads this).
  fit = score(schema, dataset.train, None, targets, sm.cat, sm.num, sm.label,
              confidence=confidence)
  guess = score(schema, dataset.train, None, targets, prior_pred.cat, prior_pred.num,
                prior_pred.label)
  numerics = [f.name for f in schema.private_numeric]
  best = {k: max(_accuracy(fit, k), _accuracy(guess, k)) for k in [*log_probs, *numerics]}
  logging.info("server model (the audit's prior kappa) on the %d target records, "
               "mean kappa / accuracy: %s", targets.sum(), ", ".join(
                   f"{k} {e['mean_confidence']:.3f}/{e['accuracy']:.3f}"
                   for k, e in [*fit["features"].items(), ("label", fit["label"])]
                   if "mean_confidence" in e))
  ctx = AttackContext(config, schema, model, dataset.train, server, aux, targets,
                      space, prior_pred, sm, confidence, {}, best, names)
  kind = config.attack.bayes.prior
  if "bayes_exact" in names and kind != "uniform":
    # Bayesian EXACT's prior is a prior-only guess too (sigma -> inf): kappa
    # is the best such guess's success, so it is held to this one as well.
    start = time.time()
    ctx.prior_guesses[kind] = prior_guess(ctx, kind, space)
    cat, num, label, _, num_in_window = ctx.prior_guesses[kind]
    # A numeric's rate within half a unit by both of its guesses: the
    # window pick is the one meant for it, but under a flat prior the
    # median can do better, and kappa is held to the best.
    alone = [score(schema, dataset.train, None, targets, cat, num, label,
                   num_in_window=w) for w in (num_in_window, None)]
    rate = {k: max(_accuracy(a, k) for a in alone) for k in best}
    best.update({k: max(v, rate[k]) for k, v in best.items()})
    logging.info("Bayes's %s prior alone on the targets (%.1f s), accuracy: %s",
                 kind, time.time() - start, ", ".join(f"{k} {rate[k]:.4f}" for k in best))
  ctx.kappa = kappa = {k: audit.kappa_of(v, best[k], targets) for k, v in log_probs.items()}
  # A numeric's kappa (success: within half a unit of the truth): the most
  # mass a guess catches under Bayes's prior from the server model (on the
  # grid, `Prediction.num_log_priors`; without one, the Laplace).
  prior_kappa = dict(confidence)
  for k, f in enumerate(schema.private_numeric):
    half = 0.5 / f.std
    prior_kappa[f.name] = (
        audit.grid_kappa(sm.num_log_priors[k], space.grids[k], half) if space
        else np.full(n, audit.laplace_kappa(float(sm.num_scale[k]), half)))
    kappa[f.name] = audit.held_to(prior_kappa[f.name], best[f.name], targets)
    logging.info("%s: the prior's kappa (within half a unit) %.4f on the targets, "
                 "the best prior-only guess's rate %.4f%s", f.name,
                 prior_kappa[f.name][targets].mean(), best[f.name],
                 ", Laplace weight {:.2f} against the histogram, grid-bin head's "
                 "{:.2f} against both".format(*sm.num_weights[k]) if sm.num_weights else "")
  raised = [f"{k} {prior_kappa[k][targets].mean():.4f} -> {kappa[k][targets].mean():.4f}"
            for k in kappa if kappa[k][targets].mean() > prior_kappa[k][targets].mean() + 1e-6]
  if raised:
    logging.info("the audit's kappa, sharpened to the prior-only guesses' accuracy: %s",
                 ", ".join(raised))
  return ctx


def _accuracy(scores: dict, name: str) -> float:
  """An attribute's success rate in `score`'s output: accuracy, or for a
  numeric the rate within half a unit of the truth."""
  m = scores["label"] if name == "label" else scores["features"][name]
  return m["accuracy"] if "accuracy" in m else m["accuracy_within_half_unit"]


def fit_args(server_model_config, seed: int) -> dict:
  """The fitting arguments of every classifier on the auxiliary sample (the
  server model, the label-given-private classifier, the chain's links):
  attack.server_model.* and the aux seed."""
  c = server_model_config
  return dict(hidden=c.hidden, num_steps=c.num_steps, learning_rate=c.learning_rate,
              held_out_fraction=c.held_out_fraction, seed=seed)


def fit_label_given_private(aux: knowledge.AuxSample, schema, server_model_config,
                            seed: int) -> baselines.Classifier:
  """The classifier x_s, x_p -> y, fitted on the auxiliary sample like the
  server model: the label-DP ceiling's prior and Bayesian EXACT's label
  prior ('chain', 'label_given_private')."""
  return baselines.label_given_private(
      aux, [f.vocab_size for f in schema.server_categorical],
      [f.vocab_size for f in schema.private_categorical], schema.num_classes,
      **fit_args(server_model_config, seed))


def label_kappa_given_private(records: Arrays, clf: baselines.Classifier,
                              mask: np.ndarray | None = None,
                              accuracy: float = 0.0) -> np.ndarray:
  """kappa_i of the label given x_s and x_p, for every record [N]: the
  randomized-response ceiling's prior (splitjax/audit.py), from
  `fit_label_given_private`'s classifier, sharpened (`audit.kappa_of`) where
  its mean on `mask` (default all) falls short of its own accuracy there or
  of `accuracy` (the best prior-only guess's, `AttackContext.best_guess`).

  It reads the records' own x_p and labels: it is the audit's prior, fixed
  by the evaluator, and never reaches an attack.
  """
  log_p = np.asarray(baselines.predict_label_given_private(
      clf, (records.x_s_cat, records.x_s_num), (records.x_p_cat, records.x_p_num)))
  mask = np.ones(len(log_p), bool) if mask is None else mask
  own = float((log_p.argmax(-1) == records.y)[mask].mean()) if mask.any() else 0.0
  return audit.kappa_of(log_p, max(own, accuracy), mask)


def attack_settings(ctx: AttackContext, views: list, select: list[int],
                    mechs: list[dict], noisy_labels: np.ndarray | None,
                    accounting: list[list[dict]], epochs: list[int],
                    heavy_epochs: list[int]) -> list[dict]:
  """Runs the configured attacks on a batch of settings trained together.

  Args:
    ctx: the prepared context.
    views: per-epoch ServerViews with a leading setting axis (at least
      max(epochs) of them).
    select: the settings (indices into that axis) to attack; the following
      arguments are per selected setting.
    mechs: per setting, its defence (clip_norm, noise_stddev, label_epsilon).
    noisy_labels: [S, N] the labels each device trained on, or None.
    accounting: per setting, the per-epoch rows of splitjax.accounting.report.
    epochs: 1-based epochs to score EXACT, Bayes, label-only and baselines at.
    heavy_epochs: the epochs at which the gradient-matching optimiser runs.

  Returns:
    Per setting: {"epochs": {epoch: {attack: scores, "ceilings": ...}},
    "violations": [...]}.
  """
  names, n = ctx.names, ctx.num_records
  num_settings, last = len(mechs), max(epochs)
  ex = ctx.config.attack.exact
  ex_res, ex_seconds = None, 0.0
  if {"exact", "bayes_exact"} & set(names):
    start = time.perf_counter()
    # Bayes needs every release up to the last epoch; EXACT alone only the
    # epochs it reports.
    ex_epochs = list(range(1, last + 1)) if "bayes_exact" in names else sorted(epochs)
    used = [views[e - 1] for e in ex_epochs]
    if ex.max_steps:
      used = [jax.tree.map(lambda a: a[:, :ex.max_steps], v) for v in used]
    bayes = "bayes_exact" in names
    log_prior = _bayes_prior(ctx) if bayes else None
    ex_res = _ByEpoch(ex_epochs, exact.attack_settings(
        ctx.model, ctx.space, used, n, select=select,
        clip_norm=[m["clip_norm"] for m in mechs],
        noise_stddev=[m["noise_stddev"] for m in mechs],
        label_epsilon=[m["label_epsilon"] for m in mechs], bayes=bayes,
        log_prior=log_prior, metric=ex.metric,
        noiseless_scale=ctx.config.attack.bayes.noiseless_scale,
        chunk_candidates=ex.chunk_candidates, chunk_mb=ex.chunk_mb,
        max_chunk_mb=ex.max_chunk_mb, max_candidates=ex.max_candidates))
    ex_seconds = (time.perf_counter() - start) / num_settings
  out = []
  for s in range(num_settings):
    noisy = None if noisy_labels is None else noisy_labels[s]
    per_epoch, violations = {}, []
    for epoch in epochs:
      view = jax.tree.map(lambda a: a[select[s]], views[epoch - 1])
      mask = _targets_seen(ctx, view)
      per, subsets = _attack_one(ctx, view, mask, mechs[s], noisy, ex_res, s,
                                 epoch, epoch in heavy_epochs)
      if ex_res is not None:
        for name in ("exact", "bayes_exact"):
          if name in per:
            per[name]["seconds_per_setting_all_epochs"] = ex_seconds
      label_eps = mechs[s]["label_epsilon"]

      def ceilings(m):
        return audit.ceilings({k: v[m] for k, v in ctx.kappa.items()},
                              accounting[s][epoch - 1]["mu_gdp"], label_eps,
                              ctx.label_kappa_given_private[m]
                              if math.isfinite(label_eps) else None)

      caps = ceilings(mask)
      # An attack scored on fewer records is audited on the same records
      # (EXACT and Bayes under max_steps share theirs: computed once).
      by_records, own = {}, {}
      for name, m in subsets.items():
        if m.tobytes() not in by_records:
          by_records[m.tobytes()] = ceilings(m)
        own[name] = per[name]["ceilings"] = by_records[m.tobytes()]
      violations += _audit(per, caps, epoch, own)
      per["ceilings"] = caps
      per_epoch[str(epoch)] = per
    out.append({"epochs": per_epoch, "violations": violations})
  return out


def _bayes_prior(ctx: AttackContext, kind: str | None = None):
  """Bayesian EXACT's log prior as `exact.attack_settings` takes it (None:
  uniform), by `kind` (default attack.bayes.prior)."""
  schema, kind = ctx.schema, kind or ctx.config.attack.bayes.prior
  grids = ctx.space.grids
  if kind == "marginal":
    cats, label = baselines.marginal_log_probs(
        ctx.aux, ctx.num_records, [f.vocab_size for f in schema.private_categorical],
        schema.num_classes)
    return cats + baselines.numeric_marginal_log_probs(ctx.aux, ctx.num_records, grids), label
  if kind not in ("server_model", "label_given_private", "chain"):
    return None
  # Each private numeric: the server model's prior on its grid (the Laplace
  # around its regression, the histogram and the grid-bin head).
  sm = ctx.server_model
  numerics = sm.num_log_priors
  if kind == "server_model":
    return sm.log_probs[0] + numerics, sm.log_probs[1]
  # The label given x_s and the candidate's x_p: the prior then carries how
  # the label depends on x_p. 'chain' does the same for each private
  # categorical given the ones before it, where 'label_given_private' takes
  # them from x_s alone (the server model), independently.
  width = ctx.space.width
  label = baselines.conditional_prior(ctx.label_given_private, ctx.server, width)
  if kind == "label_given_private":
    return sm.log_probs[0] + numerics, label
  return (tuple(baselines.conditional_prior(clf, ctx.server, width)
                for clf in ctx.private_chain) + numerics, label)


class _ByEpoch(NamedTuple):
  """An exact.SettingsResult looked up by 1-based epoch."""
  epochs: list[int]
  result: exact.SettingsResult

  def exact(self, s: int, epoch: int):
    return self.result.exact(s, self.epochs.index(epoch))

  def bayes(self, s: int, epoch: int):
    return self.result.bayes(s, self.epochs.index(epoch))


def _targets_seen(ctx, view):
  seen = np.zeros(ctx.num_records, bool)
  seen[np.asarray(view.ids).ravel()] = True
  return ctx.targets & seen


def _audit(per: dict, caps: dict, epoch: int, own: dict) -> list[str]:
  """Adds an audit entry to every accuracy, against `own[attack]`'s ceilings
  where it has them (its records' own), else `caps`; returns the violations."""
  violations = []
  for name, m in per.items():
    for attr, ceiling in own.get(name, caps).items():
      entry = m.get("label") if attr == "label" else m["features"].get(attr)
      metric = next((k for k in ("accuracy", "accuracy_within_half_unit")
                     if entry and k in entry), None)
      if metric:
        entry["audit"] = audit.check(entry[metric], m["num_records"], ceiling)
        if entry["audit"]["violation"]:
          violations.append(f"epoch {epoch} {name} {attr}: {metric} "
                            f"{entry[metric]:.4f} > ceiling {ceiling:.4f}")
  return violations


def _attack_one(ctx, view, mask, mech, noisy, ex_res, s, epoch, heavy):
  """Every configured attack on one setting's view of one epoch, scored on
  `mask` (the target records the view released), or on those of them the
  attack reached (EXACT under attack.exact.max_steps, the optimiser's
  max_records).

  Returns:
    ({attack: scores}, {attack: its records [N] bool, where fewer than
    `mask`'s}). Such an attack's advantage over the prior is over the prior's
    accuracy on its own records, and its scores carry the baselines' there
    ("baselines_on_same_records"), so that no comparison mixes record sets.
  """
  names, schema, truth, n = ctx.names, ctx.schema, ctx.truth, ctx.num_records
  args = (schema, truth, noisy, mask)
  per, subsets = {}, {}
  p, sm = ctx.prior_pred, ctx.server_model
  prior_scores = score(*args, p.cat, p.num, p.label)

  same_records = {}  # records' bytes -> (the prior's scores, both baselines' brief)

  def scored(name, m, *preds, **kw):
    """Scores `name` on m, against the baselines on the same records."""
    if (m == mask).all():
      per[name] = score(schema, truth, noisy, mask, *preds, prior_scores, **kw)
      return
    subsets[name] = m
    if m.tobytes() not in same_records:  # EXACT and Bayes share theirs
      own = score(schema, truth, noisy, m, p.cat, p.num, p.label)
      same = {"prior": own,
              "server_model": score(schema, truth, noisy, m, sm.cat, sm.num, sm.label)}
      same_records[m.tobytes()] = own, {k: _brief(v) for k, v in same.items()}
    own, brief = same_records[m.tobytes()]
    per[name] = score(schema, truth, noisy, m, *preds, own, **kw)
    per[name]["baselines_on_same_records"] = brief

  if "prior" in names:
    per["prior"] = prior_scores
  if "server_model" in names:
    per["server_model"] = score(*args, sm.cat, sm.num, sm.label, prior_scores,
                                confidence=ctx.server_confidence)
  if "exact" in names:
    r = ex_res.exact(s, epoch)
    scored("exact", mask & r.seen, *_split(ctx.space, r.digits), r.label)
  if "bayes_exact" in names:
    # Each categorical and the label scored by its own marginal MAP, each
    # numeric's MAE by its marginal median and its rate within half a unit
    # by its fullest half-unit window; the all-correct rate and the
    # posterior's calibration by the MAP candidate.
    r = ex_res.bayes(s, epoch)
    cat, num = _split(ctx.space, r.marginal_digits)
    in_window = _split(ctx.space, np.concatenate(
        [r.marginal_digits[:, :ctx.space.num_categorical], r.window_digits], 1))[1]
    names_p = [f.name for f in schema.private_categorical] + ["label"]
    cols = list(range(ctx.space.num_categorical)) + [-1]
    scored(
        "bayes_exact", mask & r.seen, cat, num, r.marginal_label,
        posterior=r.posterior,
        confidence={n_: r.marginal_posterior[:, c] for n_, c in zip(names_p, cols)},
        joint=(_split(ctx.space, r.digits)[0], r.label), num_in_window=in_window)
    per["bayes_exact"]["releases_per_record"] = epoch
  if "gradmatch" in names and heavy:
    g = ctx.config.attack.gradmatch
    start = time.perf_counter()
    r = gradmatch.attack(ctx.model, schema,
                         knowledge.Mechanism(float(mech["clip_norm"]),
                                             float(mech["noise_stddev"])),
                         view, ctx.aux, n, num_restarts=g.num_restarts,
                         num_steps=g.num_steps, learning_rate=g.learning_rate,
                         max_records=g.max_records, hybrid=g.hybrid,
                         beta_start=g.beta_start, beta_end=g.beta_end,
                         seed=ctx.config.seed)
    scored("gradmatch", mask & r.seen, r.cat, r.num, r.label)
    per["gradmatch"]["seconds"] = time.perf_counter() - start
  for name, fn in (("label_norm", label_only.norm_attack),
                   ("label_direction", label_only.direction_attack)):
    if name in names:
      r = fn(view, ctx.aux, n, schema.num_classes)
      m = mask & r.seen
      scored(name, m, None, None, r.label)
      per[name]["label"]["auc"] = _auc(r.score[m], truth.y[m])
  return per, subsets


def _brief(scores: dict) -> dict:
  """A baseline's scores without its confusion matrices."""
  out = {"num_records": scores["num_records"],
         "features": {k: {a: v for a, v in m.items() if a != "confusion"}
                      for k, m in scores["features"].items()}}
  if "label" in scores:
    out["label"] = {"accuracy": scores["label"]["accuracy"]}
  return out


def log_scores(per: dict, epoch: int, prefix: str = "") -> None:
  """One line per attack; an attack scored on fewer records than the others
  adds a line per baseline on its records."""
  def line(name, m):
    feats = ", ".join(f"{k} {v['accuracy']:.4f}" if "accuracy" in v
                      else f"{k} MAE {v['mae_std']:.4f} sd"
                      for k, v in m["features"].items())
    label = m.get("label", {}).get("accuracy", math.nan)
    logging.info("%sepoch %d %s (%d records): %s%slabel %.4f", prefix, epoch, name,
                 m["num_records"], feats, ", " if feats else "", label)

  for name, m in per.items():
    if name == "ceilings":
      continue
    line(name, m)
    for base, b in m.get("baselines_on_same_records", {}).items():
      line(f"{base} on {name}'s records", b)


def run(config, workdir: str) -> dict:
  """Trains with view capture, runs `config.attack.names` after the chosen
  epochs, and writes attack_metrics.json (and config.json) to workdir."""
  configlib.check(config)
  wd.refuse_finished(workdir, "attack_metrics.json")
  dataset = data.load(config.data)
  schema = dataset.schema
  model = models.make_model(schema, config.model)
  spec = dataclasses.replace(training.make_spec(config, model, dataset.train),
                             capture_view=True)
  ctx = prepare(config, dataset, model, spec)
  defence = training.defence_setting(config, spec)
  eps = training.accounting_rows(config, spec, defence)
  epochs = sorted(set(config.attack.epochs)) or [config.train.num_epochs]
  provenance = wd.provenance(configlib.config_hash(config), seed=config.seed)
  wd.write_json(os.path.join(workdir, "config.json"),
                {"config": config.to_dict(), "schema": schema.to_json(), **provenance})

  settings = training.make_settings([dict(seed=config.seed, **defence, use_private=1.0)])
  trainer = training.Trainer(spec)

  def on_epoch(epoch, rows, seconds):
    logging.info("epoch %d/%d: test AUC %.4f, train loss %.4f (%.1f s)", epoch + 1,
                 config.train.num_epochs, rows[0]["test_auc"], rows[0]["train_loss"], seconds)

  state, history, views = training.train(
      trainer, jax.device_put(dataset.train), jax.device_put(dataset.test), settings,
      config.train.num_epochs, on_epoch)
  noisy = (np.asarray(state.labels) if math.isfinite(config.defence.label_epsilon)
           else None)
  res = None
  if sharding.host_rows(1):  # Several hosts: the one that trained the setting.
    [res] = attack_settings(ctx, views, [0], [defence], noisy, [eps], epochs, epochs)
  [res] = [r for r in sharding.allgather_json(res) if r is not None]
  for epoch in epochs:
    log_scores(res["epochs"][str(epoch)], epoch)
  results = {"epochs": res["epochs"], "history": [r[0] for r in history],
             "accounting": eps, "noise_multiplier": defence["noise_multiplier"],
             "aux_records": int(ctx.aux.ids.shape[0]),
             "audit_violations": res["violations"], **provenance}
  wd.write_json(os.path.join(workdir, "attack_metrics.json"), results)
  if res["violations"]:
    raise audit.AuditViolation("privacy audit failed (a bug in the mechanism, "
                               "accountant or attack): " + "; ".join(res["violations"]))
  return results


def _split(space, digits):
  """EXACT's digits -> (categorical codes, normalised numeric values)."""
  cat = digits[:, :space.num_categorical]
  num = np.stack([np.asarray(space.grids[k], np.float32)[digits[:, space.num_categorical + k]]
                  for k in range(len(space.grids))], 1) if space.grids else None
  return cat if space.num_categorical else None, num


# The bytes of a conditional prior's hidden layer in one step of its lax.map
# over records (`prior_marginals`).
HIDDEN_BYTES = 8 << 20


def _prior_hidden(log_prior) -> int:
  """The widest hidden layer among a Bayes prior's conditional tables (1
  without one)."""
  return max((t.record_pre.shape[-1] for t in (*log_prior[0], log_prior[1])
              if isinstance(t, knowledge.ConditionalPrior)), default=1)


def prior_marginals(log_prior, space: knowledge.CandidateSpace, rows: np.ndarray,
                    block: int = 512):
  """A Bayes prior alone, with no release: for the records `rows`, each
  private categorical's and the label's marginal MAP, each numeric's
  marginal median (`exact.median_index`) and its fullest half-unit window
  (`exact.window_index`), and the MAP candidate.

  The categoricals' factors read no numeric (`exact.feature_log_priors`), so
  they are evaluated once per combination of categoricals, and the numerics'
  tables once per combination of grid values; only the label's factor, which
  may read every private value, runs over the whole space.

  Returns (marginal codes [R, F], the numerics' window picks [R, M],
  marginal labels [R], MAP codes [R, F], MAP labels [R]): a numeric's code
  in the first is its median, which the MAE scores; the window pick is the
  guess the rate within half a unit scores. Records go in padded blocks of
  `block` (one compile).
  """
  nc, k = space.num_categorical, space.num_labels
  combos = math.prod(space.radices[:nc])
  grid = space.size // combos  # numeric grid points per categorical combination
  digits = space.digits(jnp.arange(space.size))
  private = space.encode(digits)
  # Every categorical combination once, its numerics at their first grid value.
  cat_digits, cat_private = digits[::grid], private[::grid]
  onehot = jnp.concatenate([jnp.zeros((combos, 0))]
                           + [jax.nn.one_hot(cat_digits[:, j], r)
                              for j, r in enumerate(space.radices[:nc])], -1)
  splits = np.cumsum(space.radices[:nc])[:-1]
  windows = [jnp.asarray(w) for w in exact.half_unit_windows(space)]

  hidden = _prior_hidden(log_prior)

  def batch(candidates):
    # Records per step of a classifier's lax.map: an [records, C, H] hidden
    # layer larger than the caches ran 4x slower (Adult with age and hours
    # per week on their grids: 73,260 candidates, H 64, 18 records a step).
    return max(1, HIDDEN_BYTES // (candidates * hidden * 4))

  @jax.jit
  def one(idx):
    cat_tables, label_table = exact.prior_rows(log_prior, idx)
    b = len(idx)
    lp = jnp.broadcast_to(exact.label_log_prior(label_table, private, batch(space.size)),
                          (b, space.size, k))
    lp = lp.reshape(b, combos, grid, k)
    for term in exact.feature_log_priors(cat_tables[:nc], cat_digits, cat_private,
                                         batch(combos)):
      lp = lp + term[:, :, None, None]
    if cat_tables[nc:]:  # the numerics' tables, over the first combination's grid
      lp = lp + sum(t[:, digits[:grid, nc + j]] for j, t in
                    enumerate(cat_tables[nc:]))[:, None, :, None]
    post = jax.nn.softmax(lp.reshape(b, -1), -1).reshape(lp.shape)
    picks = ([f.argmax(-1) for f in
              jnp.split(jnp.einsum("bcgk,cv->bv", post, onehot), splits, -1)] if nc else [])
    in_window = []
    if grid > 1:
      numerics = post.sum((1, 3)).reshape((b,) + space.radices[nc:])
      for j in range(len(space.radices) - nc):
        others = tuple(a + 1 for a in range(len(space.radices) - nc) if a != j)
        marginal = numerics.sum(others)
        picks.append(exact.median_index(marginal))
        in_window.append(exact.window_index(marginal, windows[j]))
    best = jnp.argmax(lp.reshape(b, -1), -1)
    return picks, in_window, post.sum((1, 2)).argmax(-1), digits[best // k], best % k

  outs = []
  start = last_log = time.perf_counter()
  for lo in range(0, len(rows), block):
    idx = rows[lo:lo + block]
    pad = np.pad(idx, (0, block - len(idx)), mode="edge")
    feats, in_window, label, map_cat, map_label = jax.device_get(one(jnp.asarray(pad)))
    n = len(idx)
    stack = lambda z: np.stack(z, 1)[:n] if z else np.zeros((n, 0), np.int32)
    outs.append((stack(feats), stack(in_window), label[:n], map_cat[:n], map_label[:n]))
    now = time.perf_counter()
    if now - last_log > 15 and lo + n < len(rows):
      last_log = now
      logging.info("the prior alone: %d/%d records, ETA %.0f s", lo + n, len(rows),
                   (now - start) / (lo + n) * (len(rows) - lo - n))
  return tuple(np.concatenate(z) for z in zip(*outs))


def prior_guess(ctx: AttackContext, kind: str | None, space: knowledge.CandidateSpace):
  """A Bayes prior alone (`prior_marginals`, `kind` as `_bayes_prior`'s) on
  the targets: (marginal MAP codes [N, F_cat], marginal medians [N, F_num]
  in normalised units (None without numerics), labels [N], its MAP
  candidate's (codes [N, F_cat], labels), the numerics' fullest half-unit
  windows [N, F_num] (None without numerics)); off the targets, codes 0
  and the grids' first values. Blocks of records are sized to
  attack.exact.max_chunk_mb."""
  rows = np.flatnonzero(ctx.targets)
  # Per record and candidate: the label's log prior, the joint and the
  # posterior (3 K); beside them, a classifier's hidden layer over
  # HIDDEN_BYTES' worth of records, or over one record if that is larger.
  log_prior = _bayes_prior(ctx, kind)
  per_record = space.size * (3 * space.num_labels + 1) * 4
  hidden = space.size * _prior_hidden(log_prior) * 4
  budget = ctx.config.attack.exact.max_chunk_mb * 2**20 - max(HIDDEN_BYTES, hidden)
  block = int(np.clip(budget // per_record, 1, 512))
  marg, in_window, label, map_cat, map_label = prior_marginals(log_prior, space, rows,
                                                                block)
  f = space.num_categorical
  outs = (marg, label, map_cat[:, :f], map_label, np.concatenate([marg[:, :f], in_window], 1))
  full = [np.zeros((ctx.num_records,) + a.shape[1:], np.int64) for a in outs]
  for a, b in zip(full, outs):
    a[rows] = b
  _, num = _split(space, full[0])
  _, num_in_window = _split(space, full[4])
  return full[0][:, :f], num, full[1], (full[2], full[3]), num_in_window


def prior_accuracy(config, workdir: str) -> dict:
  """How well each of Bayes's priors guesses the targets with no release at
  all (the limit sigma -> inf of Bayesian EXACT), beside the two baselines:
  each private categorical's and the label's accuracy and the all-correct
  rate, written to prior_accuracy.json and .md in workdir. No training.

  Private numerics are scored on the grid of attack.exact.numeric_grids:
  the MAE by each prior's marginal median, the rate within half a unit by
  its fullest half-unit window.

  Raises:
    ConfigError: a private numeric without a grid, or a workdir that
      already holds the result.
  """
  configlib.check(config)
  wd.refuse_finished(workdir, "prior_accuracy.json")
  dataset = data.load(config.data)
  schema = dataset.schema
  space = knowledge.candidate_space(schema, tuple(config.attack.exact.numeric_grids))
  model = models.make_model(schema, config.model)
  spec = training.make_spec(config, model, dataset.train)
  ctx = prepare(config, dataset, model, spec)
  # In place, keeping its fitted classifiers: the space prepare scored
  # Bayes's own prior in (ctx.prior_guesses).
  ctx.space = space
  out = {}
  for name, pred in (("prior", ctx.prior_pred), ("server_model", ctx.server_model)):
    out[name] = score(schema, dataset.train, None, ctx.targets, pred.cat, pred.num,
                      pred.label)
  kinds = [k for k in configlib.BAYES_PRIORS if k != "uniform"]
  for kind in kinds:
    if kind in ("chain", "label_given_private") and not config.attack.server_model.hidden:
      continue
    start = time.time()
    cat, num, lab, joint, num_in_window = (ctx.prior_guesses.get(kind)
                                           or prior_guess(ctx, kind, ctx.space))
    out[f"bayes/{kind}"] = score(schema, dataset.train, None, ctx.targets, cat, num, lab,
                                 joint=joint, num_in_window=num_in_window)
    logging.info("prior %s: %.1f s", kind, time.time() - start)
  provenance = wd.provenance(configlib.config_hash(config))
  result = {"scores": out, "num_targets": int(ctx.targets.sum()), "command": wd.command_line(),
            **provenance}
  wd.write_json(os.path.join(workdir, "config.json"),
                {"config": config.to_dict(), "schema": schema.to_json(), **provenance})
  wd.write_text(os.path.join(workdir, "prior_accuracy.md"), report.prior_accuracy_markdown(result))
  wd.write_json(os.path.join(workdir, "prior_accuracy.json"), result)
  print(report.prior_accuracy_markdown(result))
  return result
