"""The server-model baseline's fit: held-out early stopping, temperatures and
the shrinkage toward the class frequencies.

Its confidences are the audit's priors kappa_i, so they are tested for
calibration: mean top probability against accuracy on fresh rows.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from splitjax.attacks import baselines, knowledge


def test_temperature_recovers_a_known_one():
  rng = np.random.default_rng(0)
  logits = rng.normal(0.0, 3.0, (20000, 4))
  z = logits / 2.0
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  targets = (p.cumsum(-1) > rng.random((20000, 1))).argmax(-1)
  assert baselines.temperature(logits, targets) == pytest.approx(2.0, rel=0.05)


def _task(rng, n):
  """y follows the first of three categoricals (flipped for 20 % of rows); the
  other two are noise an MLP can memorise."""
  x_cat = rng.integers(0, 16, (n, 3)).astype(np.int32)
  y = ((x_cat[:, 0] < 8) ^ (rng.random(n) < 0.2)).astype(np.int32)
  return (x_cat, np.zeros((n, 0), np.float32)), (np.zeros((n, 0), np.int32),
                                                 np.zeros((n, 0), np.float32), y)


@pytest.mark.parametrize("held_out, calibrated", [(0.0, False), (0.2, True)])
def test_held_out_rows_keep_the_confidence_calibrated(held_out, calibrated):
  """On fresh rows the best guess is right 80 % of the time at best. 1,500
  steps on 1,000 rows memorise the noise (measured: mean top probability
  0.96 against 0.70 accuracy); early stopping and the temperature bring the
  two within 0.04 (measured 0.78 against 0.79; the fresh rows' accuracy has a
  standard error of 0.006)."""
  rng = np.random.default_rng(1)
  inputs, targets = _task(rng, 1000)
  fresh, fresh_targets = _task(rng, 5000)
  clf = baselines.fit(inputs, (16,) * 3, targets, (), 2, hidden=64, num_steps=1500,
                      learning_rate=1e-2, held_out_fraction=held_out, seed=0)
  _, _, label = baselines.predict(clf, fresh)
  label = np.asarray(label)
  confidence = np.exp(label.max(-1)).mean()
  accuracy = (label.argmax(-1) == fresh_targets[2]).mean()
  if calibrated:
    assert abs(confidence - accuracy) < 0.04, (confidence, accuracy)
    assert accuracy > 0.75
  else:
    assert confidence - accuracy > 0.15, (confidence, accuracy)


def test_score_reports_each_predictions_confidence_and_calibration():
  # The server model's scores carry kappa's mean and ECE beside each accuracy,
  # on the masked records only (the fourth record is masked out).
  from types import SimpleNamespace as NS
  from splitjax import evaluation
  schema = NS(private_categorical=[NS(name="a", vocab_size=3)], private_numeric=[],
              num_classes=2)
  truth = NS(x_p_cat=np.array([[0], [1], [2], [0]]), x_p_num=np.zeros((4, 0)),
             y=np.array([0, 1, 1, 0]))
  mask = np.array([True, True, True, False])
  out = evaluation.score(schema, truth, None, mask, np.array([[0], [1], [0], [2]]), None,
                         np.array([0, 1, 1, 1]),
                         confidence={"a": np.array([0.9, 0.9, 0.9, 0.1]),
                                     "label": np.full(4, 0.6)})
  a, label = out["features"]["a"], out["label"]
  assert a["accuracy"] == pytest.approx(2 / 3) and a["mean_confidence"] == pytest.approx(0.9)
  assert a["ece"] == pytest.approx(0.9 - 2 / 3)
  assert label["accuracy"] == 1.0 and label["ece"] == pytest.approx(0.4)
  assert "mean_confidence" not in evaluation.score(
      schema, truth, None, mask, np.array([[0], [1], [0], [2]]), None, None)["features"]["a"]


def test_score_splits_accuracy_by_whether_label_dp_changed_the_sent_label():
  # Rows 0-2 sent their own label, rows 3-4 a changed one, row 5 is masked
  # out: feature a is right on 2 of 3 kept rows and 2 of 2 changed ones, the
  # label on 3 of 3 and 0 of 2. Without a changed label in the mask there
  # is no split.
  from types import SimpleNamespace as NS
  from splitjax import evaluation
  schema = NS(private_categorical=[NS(name="a", vocab_size=3)], private_numeric=[],
              num_classes=2)
  truth = NS(x_p_cat=np.array([[0], [1], [2], [0], [1], [2]]), x_p_num=np.zeros((6, 0)),
             y=np.array([0, 1, 1, 0, 1, 0]))
  noisy = np.array([0, 1, 1, 1, 0, 1])
  mask = np.array([True] * 5 + [False])
  pred_cat, pred_label = np.array([[0], [1], [0], [0], [1], [2]]), np.array([0, 1, 1, 1, 0, 0])
  out = evaluation.score(schema, truth, noisy, mask, pred_cat, None, pred_label)
  split = lambda entry: {k: (v["num_records"], v["accuracy"])
                         for k, v in entry["accuracy_by_sent_label"].items()}
  assert split(out["features"]["a"]) == {"kept": (3, pytest.approx(2 / 3)), "changed": (2, 1.0)}
  assert split(out["label"]) == {"kept": (3, 1.0), "changed": (2, 0.0)}
  kept_only = evaluation.score(schema, truth, truth.y, mask, pred_cat, None, pred_label)
  assert "accuracy_by_sent_label" not in kept_only["features"]["a"]



def test_all_correct_and_calibration_follow_the_joint_guess_when_given():
  # Bayes reports each feature by its own marginal MAP and the all-correct
  # rate and posterior calibration by its MAP candidate (`joint`); without a
  # joint guess all three follow the per-feature predictions.
  from types import SimpleNamespace as NS
  from splitjax import evaluation
  schema = NS(private_categorical=[NS(name="a", vocab_size=3), NS(name="b", vocab_size=2)],
              private_numeric=[], num_classes=2)
  truth = NS(x_p_cat=np.array([[0, 1], [1, 0], [2, 1], [0, 0]]), x_p_num=np.zeros((4, 0)),
             y=np.array([0, 1, 1, 0]))
  mask = np.ones(4, bool)
  per_feature = np.array([[0, 1], [1, 0], [2, 0], [0, 0]])   # b wrong on row 2
  label = np.array([0, 1, 1, 1])                            # wrong on row 3
  joint = (np.array([[0, 1], [1, 1], [2, 1], [0, 0]]), np.array([0, 1, 1, 0]))  # row 1
  posterior = np.full(4, 0.75)
  alone = evaluation.score(schema, truth, None, mask, per_feature, None, label,
                           posterior=posterior)
  assert alone["all_correct"] == 0.5
  assert alone["calibration"]["ece"] == pytest.approx(0.25)
  both = evaluation.score(schema, truth, None, mask, per_feature, None, label,
                          posterior=posterior, joint=joint)
  assert both["all_correct"] == 0.75 and both["calibration"]["ece"] == pytest.approx(0.0)
  assert both["features"]["b"]["accuracy"] == 0.75 and both["label"]["accuracy"] == 0.75

def _mixed_task(rng, n):
  """Two server categoricals, one server numeric, two private categoricals
  and one private numeric; y depends on all of them."""
  x_s = (rng.integers(0, 4, (n, 2)).astype(np.int32), rng.normal(size=(n, 1)).astype(np.float32))
  x_p = (rng.integers(0, 3, (n, 2)).astype(np.int32), rng.normal(size=(n, 1)).astype(np.float32))
  logit = x_s[1][:, 0] + (x_p[0][:, 0] == 1) - x_p[1][:, 0] + 0.5 * (x_s[0][:, 1] == 2)
  y = (rng.random(n) < 1 / (1 + np.exp(-2 * logit))).astype(np.int32)
  return x_s, x_p, y


def test_label_prior_is_the_label_given_private_classifier_split_in_two():
  # Evaluated at each record's own private input (one-hots, then numerics, as
  # CandidateSpace.encode writes them), the split classifier must give what
  # the whole one predicts; records in blocks that do not divide N.
  rng = np.random.default_rng(2)
  x_s, x_p, y = _mixed_task(rng, 600)
  aux = knowledge.AuxSample(jnp.arange(400), x_s[0][:400], x_s[1][:400], x_p[0][:400],
                            x_p[1][:400], y[:400])
  clf = baselines.label_given_private(aux, (4, 4), (3, 3), 2, hidden=16, num_steps=200,
                                      learning_rate=1e-2, held_out_fraction=0.2, seed=0)
  assert clf.temperatures[-1] != 1.0  # the temperature is part of what is split
  whole = np.asarray(baselines.predict_label_given_private(clf, x_s, x_p))
  prior = baselines.conditional_prior(clf, knowledge.ServerData(*x_s), 7)
  private = jnp.concatenate([jax.nn.one_hot(x_p[0][:, 0], 3), jax.nn.one_hot(x_p[0][:, 1], 3),
                             x_p[1]], -1)
  split = np.asarray(prior.log_probs(private[:40], batch=7))   # [600, 40, 2]
  np.testing.assert_allclose(split[np.arange(40), np.arange(40)], whole[:40], atol=1e-5)
  assert np.abs(split[:40] - whole[:40, None]).max() > 0.1  # candidates do matter
  # The whole classifier learnt that y depends on x_p: on the 200 fresh rows
  # it beats the same classifier fed the wrong private values.
  wrong = (x_p[0][400:][::-1], x_p[1][400:][::-1])
  acc = lambda lp: np.mean(np.asarray(lp).argmax(-1) == y[400:])
  assert acc(whole[400:]) > acc(baselines.predict_label_given_private(
      clf, (x_s[0][400:], x_s[1][400:]), wrong)) + 0.05
  # Shrunk toward the frequencies (baselines.shrinkage), the split prior
  # still gives what the whole classifier predicts.
  clf = clf._replace(weights=(0.6,))
  whole = np.asarray(baselines.predict_label_given_private(clf, x_s, x_p))
  split = np.asarray(baselines.conditional_prior(clf, knowledge.ServerData(*x_s), 7)
                     .log_probs(private[:40], batch=7))
  np.testing.assert_allclose(split[np.arange(40), np.arange(40)], whole[:40], atol=1e-5)


def test_chain_links_are_each_feature_given_the_ones_before_split_in_two():
  # x_p[1] copies x_p[0] 80 % of the time, so link 1 must learn it from x_p[0]
  # (which x_s cannot tell). Split at the candidates' full private input
  # (7 columns), link j must read x_p[:j] alone: its zero rows make x_p[j:]
  # and the numeric irrelevant, and at each record's own prefix it gives
  # what the whole classifier predicts.
  rng = np.random.default_rng(4)
  x_s, x_p, y = _mixed_task(rng, 600)
  copy = rng.random(600) < 0.8
  x_p[0][:, 1] = np.where(copy, x_p[0][:, 0], x_p[0][:, 1])
  aux = knowledge.AuxSample(jnp.arange(400), x_s[0][:400], x_s[1][:400], x_p[0][:400],
                            x_p[1][:400], y[:400])
  links = baselines.private_chain(aux, (4, 4), (3, 3), hidden=16, num_steps=200,
                                  learning_rate=1e-2, held_out_fraction=0.2, seed=0)
  assert len(links) == 2
  server = knowledge.ServerData(*x_s)
  one_hot = lambda d: jax.nn.one_hot(d, 3)
  own = jnp.concatenate([one_hot(x_p[0][:, 0]), one_hot(x_p[0][:, 1]), x_p[1]], -1)
  shuffled = jnp.concatenate([one_hot(x_p[0][:, 0]), one_hot(x_p[0][::-1, 1]),
                              x_p[1][::-1]], -1)
  for j, clf in enumerate(links):
    prior = baselines.conditional_prior(clf, server, 7)
    split = np.asarray(prior.log_probs(own[:30], batch=7))[np.arange(30), np.arange(30)]
    whole = baselines.predict(clf, (jnp.concatenate([x_s[0], x_p[0][:, :j]], 1), x_s[1]))[2]
    np.testing.assert_allclose(split, np.asarray(whole)[:30], atol=1e-5)
    np.testing.assert_allclose(np.asarray(prior.log_probs(shuffled[:30], batch=7)),
                               np.asarray(prior.log_probs(own[:30], batch=7)), atol=1e-6)
  # Link 1 learnt the copy: on the 200 fresh rows it beats x_s alone (link 0's
  # accuracy at predicting x_p[0] is chance-like, ~1/3).
  whole = baselines.predict(links[1], (jnp.concatenate([x_s[0], x_p[0][:, :1]], 1), x_s[1]))[2]
  assert np.mean(np.asarray(whole[400:]).argmax(-1) == x_p[0][400:, 1]) > 0.7
  with pytest.raises(ValueError, match="reads 3 private inputs, the candidates have 2"):
    baselines.conditional_prior(links[1], server, 2)


def test_conditional_prior_needs_a_hidden_layer():
  x_s, x_p, y = _mixed_task(np.random.default_rng(3), 200)
  aux = knowledge.AuxSample(jnp.arange(200), *x_s, *x_p, y)
  clf = baselines.label_given_private(aux, (4, 4), (3, 3), 2, hidden=0, num_steps=10,
                                      learning_rate=1e-2, held_out_fraction=0.0, seed=0)
  with pytest.raises(ValueError, match="needs a hidden layer"):
    baselines.conditional_prior(clf, knowledge.ServerData(*x_s), 7)


def test_shrinkage_recovers_a_known_mixture():
  # Targets drawn from 0.6 softmax + 0.4 freq: the held-out weight is 0.6
  # (standard error ~0.01 at 20,000 rows; tolerance 0.05).
  rng = np.random.default_rng(3)
  logits = rng.normal(0.0, 2.0, (20000, 5))
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  freq = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
  mix = 0.6 * p + 0.4 * freq
  targets = (mix.cumsum(-1) > rng.random((20000, 1))).argmax(-1)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  assert baselines.shrinkage(log_p, targets, np.log(freq)) == pytest.approx(0.6, abs=0.05)
  assert baselines.shrinkage(log_p, targets, np.log(freq)) != baselines.shrinkage(
      log_p, (p.cumsum(-1) > rng.random((20000, 1))).argmax(-1), np.log(freq))


@pytest.mark.parametrize("informative", [False, True])
def test_a_head_is_shrunk_toward_the_frequencies_as_far_as_held_out_rows_say(informative):
  # With y independent of the inputs (30 % ones) the memorising MLP is worth
  # nothing on fresh rows, and its head falls back to the fitted rows'
  # frequencies (measured: weight 0.0; fresh NLL 0.6166, the frequencies'
  # exactly, against 0.6246 unshrunk, which fails the 0.005 margin); where y
  # follows x_cat[:, 0] it is trusted (measured weight 0.96, NLL 0.550
  # against the frequencies' 0.694).
  rng = np.random.default_rng(4)
  inputs, targets = _task(rng, 1000)
  fresh, fresh_targets = _task(rng, 5000)
  if not informative:
    targets = targets[:2] + ((rng.random(1000) < 0.3).astype(np.int32),)
    fresh_targets = fresh_targets[:2] + ((rng.random(5000) < 0.3).astype(np.int32),)
  clf = baselines.fit(inputs, (16,) * 3, targets, (), 2, hidden=64, num_steps=1500,
                      learning_rate=1e-2, held_out_fraction=0.2, seed=0)
  label = np.asarray(baselines.predict(clf, fresh)[2])
  nll = -label[np.arange(5000), fresh_targets[2]].mean()
  freq_nll = -np.asarray(clf.log_frequencies[-1])[fresh_targets[2]].mean()
  if informative:
    assert clf.weights[-1] > 0.9 and nll < freq_nll - 0.1, (clf.weights, nll, freq_nll)
  else:
    assert clf.weights[-1] < 0.3 and nll < freq_nll + 0.005, (clf.weights, nll, freq_nll)


def test_a_numeric_prior_mixes_regression_histogram_and_bins_as_held_out_rows_say():
  # Three private numerics on a grid of step 0.25. The first follows x_s
  # (twice the input numeric, plus noise 0.1), so the Laplace around the
  # regression is trusted. The second ignores x_s and sits on 1.0 for 60 %
  # of rows (Adult's 40 hours a week), so the histogram takes over from the
  # Laplace. The third sits on +1 or -1 (by x_cat) for 60 % of rows: the
  # regression's mean and the histogram miss where the spike is, the
  # grid-bin head finds it. Measured weights (Laplace against the histogram,
  # bins against both): (1.00, 1.00), (0.00, 1.00), (0.01, 1.00). Fresh
  # rows' NLL on the grid, with the bins / without / the Laplace alone:
  # 0.677 / 0.821 / 0.821 (the bins fit noise 0.1 on a 0.25 grid better than
  # a Laplace does), 1.695 / 1.693 / 2.683, 1.717 / 2.038 / 2.681
  # (tolerances 0.01 for "no worse", 0.2 and 0.5 for the gains).
  rng = np.random.default_rng(5)

  def task(rows):
    x_num = rng.normal(0.0, 1.0, (rows, 1)).astype(np.float32)
    x_cat = rng.integers(0, 4, (rows, 1)).astype(np.int32)
    follows = 2.0 * x_num[:, 0] + rng.normal(0.0, 0.1, rows)
    on_spike = rng.random(rows) < 0.6
    spike = np.where(on_spike, 1.0, rng.uniform(-2.0, 2.0, rows))
    moves = np.where(on_spike, np.where(x_cat[:, 0] < 2, 1.0, -1.0),
                     rng.uniform(-2.0, 2.0, rows))
    targets = (np.zeros((rows, 0), np.int32),
               np.clip(np.stack([follows, spike, moves], 1), -3, 3).astype(np.float32),
               rng.integers(0, 2, rows).astype(np.int32))
    return (x_cat, x_num), targets

  grid = np.arange(-3.0, 3.01, 0.25)
  grids = (grid,) * 3
  (inputs, targets), (fresh, fresh_t) = task(2000), task(4000)
  clf = baselines.fit(inputs, (4,), targets, (), 2, hidden=32, num_steps=600,
                      learning_rate=1e-2, held_out_fraction=0.2, seed=0,
                      num_grids=grids)
  weights = [(p.laplace_weight, p.bins_weight) for p in clf.num_priors]
  center = np.asarray(baselines.predict(clf, fresh)[1])
  idx = [baselines.grid_index(fresh_t[1][:, k], grid) for k in range(3)]

  def nll(c):
    priors = baselines.numeric_log_priors(c, fresh, center, grids)
    return [float(-np.asarray(p)[np.arange(4000), i].mean()) for p, i in zip(priors, idx)]

  full = nll(clf)
  laplace = nll(clf._replace(num_priors=()))
  no_bins = nll(clf._replace(num_priors=tuple(p._replace(bins_weight=0.0)
                                              for p in clf.num_priors)))
  assert weights[0][0] > 0.9 and weights[1][0] < 0.2 and weights[2][1] > 0.5, weights
  assert no_bins[1] < laplace[1] - 0.5, (no_bins, laplace)
  assert all(f < b + 0.01 for f, b in zip(full, no_bins)), (full, no_bins)
  assert full[2] < no_bins[2] - 0.2, (full, no_bins)
  # Without held-out rows: the Laplace alone; without grids: no numeric priors.
  bare = baselines.fit(inputs, (4,), targets, (), 2, hidden=32, num_steps=10,
                       learning_rate=1e-2, held_out_fraction=0.0, seed=0, num_grids=grids)
  assert [(p.laplace_weight, p.bins, p.bins_weight) for p in bare.num_priors] == [
      (1.0, None, 0.0)] * 3
  assert nll(bare) == nll(bare._replace(num_priors=()))
  assert baselines.fit(inputs, (4,), targets, (), 2, hidden=32, num_steps=10,
                       learning_rate=1e-2, held_out_fraction=0.2, seed=0).num_priors == ()
