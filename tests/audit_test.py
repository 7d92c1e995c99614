"""Audit: ceilings from trade-off functions; a planted cheat is flagged."""

import json
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from splitjax import audit, data, evaluation
from splitjax.attacks import exact, knowledge
from conftest import small_config


def test_gaussian_ceiling_limits():
  kappa = np.array([0.5, 0.7])
  assert audit.gaussian_ceiling(kappa, 0.0) == pytest.approx(0.6)  # no info: prior
  assert audit.gaussian_ceiling(kappa, math.inf) == 1.0
  # 1 - f(kappa) with f(a) = Phi(Phi^-1(1 - a) - mu), mu = 1, kappa = 0.5.
  assert audit.gaussian_ceiling(np.array([0.5]), 1.0) == pytest.approx(stats.norm.cdf(1.0))


def test_dp_ceiling():
  assert audit.dp_ceiling(np.array([0.5]), math.log(3)) == pytest.approx(1 - 0.5 / 3)
  assert audit.dp_ceiling(np.array([0.1]), math.log(2)) == pytest.approx(0.2)
  assert audit.dp_ceiling(np.array([0.5]), 0.0) == pytest.approx(0.5)


def test_label_ceiling_is_the_tighter_one():
  k = {"label": np.full(10, 0.5), "sex": np.full(10, 0.5)}
  given_private = np.full(10, 0.6)
  caps = audit.ceilings(k, mu=4.0, label_epsilon=0.5, label_kappa_given_private=given_private)
  assert caps["label"] == pytest.approx(audit.dp_ceiling(given_private, 0.5))
  assert caps["sex"] == pytest.approx(audit.gaussian_ceiling(k["sex"], 4.0))
  loose = audit.ceilings(k, mu=0.1, label_epsilon=0.5, label_kappa_given_private=given_private)
  assert loose["label"] == pytest.approx(audit.gaussian_ceiling(k["label"], 0.1))


def test_label_prior_given_private_is_needed_only_with_label_dp():
  k = {"label": np.full(10, 0.5)}
  caps = audit.ceilings(k, mu=1.0, label_epsilon=math.inf, label_kappa_given_private=None)
  assert caps["label"] == pytest.approx(audit.gaussian_ceiling(k["label"], 1.0))
  with pytest.raises(ValueError, match="label DP needs label_kappa_given_private"):
    audit.ceilings(k, mu=1.0, label_epsilon=1.0, label_kappa_given_private=None)


def test_label_dp_ceiling_takes_the_prior_given_the_private_features():
  """Randomized response protects y alone, so an attacker that reads x_p from
  the messages (label DP only, no noise: mu = inf) and predicts y from it is
  legitimate. Here y = x_p and x_s says nothing about y: with the prior given
  x_s (kappa 0.5) the ceiling at eps 0 would be 0.5 and flag that attacker;
  with the prior given x_s and x_p it is ~1."""
  rng = np.random.default_rng(0)
  n, num_aux = 4000, 400
  x_s_cat = rng.integers(0, 3, (n, 1)).astype(np.int32)
  x_p_cat = rng.integers(0, 2, (n, 1)).astype(np.int32)
  records = data.Arrays(x_s_cat, np.zeros((n, 1), np.float32), x_p_cat,
                        np.zeros((n, 0), np.float32), x_p_cat[:, 0].copy())
  aux = knowledge.AuxSample(np.arange(num_aux), *(jnp.asarray(a[:num_aux]) for a in (
      records.x_s_cat, records.x_s_num, records.x_p_cat, records.x_p_num, records.y)))
  feature = lambda v: types.SimpleNamespace(vocab_size=v)
  schema = types.SimpleNamespace(server_categorical=[feature(3)],
                                 private_categorical=[feature(2)], num_classes=2)
  c = small_config().attack.server_model
  given_private = evaluation.label_kappa_given_private(
      records, evaluation.fit_label_given_private(aux, schema, c, 0))
  assert given_private.shape == (n,)
  assert given_private.min() > 0.9
  given_server = np.full(n, 0.5)  # x_s is independent of y
  caps = audit.ceilings({"label": given_server}, mu=math.inf, label_epsilon=0.0,
                        label_kappa_given_private=given_private)
  reads_x_p = audit.check(1.0, n, caps["label"])
  assert not reads_x_p["violation"]
  assert audit.check(1.0, n, audit.dp_ceiling(given_server, 0.0))["violation"]



def test_kappa_of_sharpens_an_underconfident_prior_to_the_accuracy():
  rng = np.random.default_rng(0)
  log_p = np.log(rng.dirichlet(np.ones(4), 2000))
  mask = rng.random(2000) < 0.7
  raw = np.exp(log_p.max(-1))
  # Confident enough already: kept as it is, whatever the other records hold.
  np.testing.assert_allclose(audit.kappa_of(log_p, raw[mask].mean() - 0.01, mask), raw,
                             rtol=1e-12)
  # Short of the accuracy on the masked records: sharpened until it reaches it.
  k = audit.kappa_of(log_p, 0.8, mask)
  assert 0.8 <= k[mask].mean() < 0.8 + 1e-9
  assert np.all(k >= raw - 1e-12)
  # Ties cap it: a uniform prior cannot be sharpened.
  flat = np.full((10, 4), np.log(0.25))
  np.testing.assert_allclose(audit.kappa_of(flat, 0.9, np.ones(10, bool)), 0.25)


def test_numeric_kappa_known_answers():
  # Success within h of the truth under a Laplace(scale b) prior: the best
  # guess is the centre, with mass 1 - exp(-h / b).
  assert audit.laplace_kappa(1.0, 0.5) == pytest.approx(1 - math.exp(-0.5))
  assert audit.laplace_kappa(0.25, 0.5) == pytest.approx(1 - math.exp(-2))
  assert audit.laplace_kappa(0.0, 0.5) == 1.0  # a regression without error
  # On a grid: the most mass any window of half-width h around a grid value
  # holds. Step 1, h 0.5: the top probability; h 1: the best three in a row.
  grid = np.arange(5.0)
  p = np.array([[0.1, 0.2, 0.3, 0.25, 0.15], [0.6, 0.1, 0.1, 0.1, 0.1]])
  np.testing.assert_allclose(audit.grid_kappa(np.log(p), grid, 0.5), [0.3, 0.6])
  np.testing.assert_allclose(audit.grid_kappa(np.log(p), grid, 1.0), [0.75, 0.8])
  np.testing.assert_allclose(audit.grid_kappa(np.log(p), grid, 1.0, block=1), [0.75, 0.8])
  # Held to a measured accuracy: failure probabilities scaled alike, so the
  # mean on the mask reaches it and the order stays; a sharp enough one kept.
  k = np.array([0.1, 0.3, 0.5, 0.9])
  mask = np.array([True, True, True, False])
  held = audit.held_to(k, 0.5, mask)
  assert held[mask].mean() == pytest.approx(0.5)
  assert np.all(np.diff(held) > 0) and np.all(held >= k)
  np.testing.assert_array_equal(audit.held_to(k, 0.2, mask), k)


def test_a_cheat_on_a_private_numeric_fails_the_audit(tmp_path, monkeypatch):
  # A private numeric is audited on its rate within half a unit of the
  # truth, against a ceiling from the Laplace prior's kappa. Honest
  # baselines pass under noise (sigma 4, 2 epochs: mu 0.71, ceiling well
  # under 1); an "optimiser" handed the true values does not.
  from splitjax.attacks import gradmatch
  c = small_config(data__private_features=("p_cat_0", "p_num_0"),
                   data__synthetic__num_private_numeric=1,
                   data__synthetic__num_examples=1600, defence__clip=True,
                   defence__noise=True, defence__clip_norm=0.05,
                   defence__noise_multiplier=4.0)
  c.attack.names = ("prior", "server_model", "gradmatch")
  c.attack.server_model.num_steps = 100
  truth = data.load(c.data).train

  def cheat(model, schema, mech, view, aux, n, **kwargs):
    seen = np.zeros(n, bool)
    seen[np.asarray(view.ids).ravel()] = True
    return gradmatch.GradMatchResult(np.zeros((n, 1), np.int32), np.asarray(truth.x_p_num),
                                     np.zeros(n, np.int32), np.zeros(n, np.float32), seen)

  monkeypatch.setattr(gradmatch, "attack", cheat)
  with pytest.raises(audit.AuditViolation, match=r"failed .*: epoch 2 gradmatch p_num_0: "
                     r"accuracy_within_half_unit 1\.0000 > ceiling 0\.\d{4}$"):
    evaluation.run(c, str(tmp_path / "cheat"))
  got = json.loads((tmp_path / "cheat" / "attack_metrics.json").read_text())["epochs"]["2"]
  assert 0.3 < got["ceilings"]["p_num_0"] < 0.95, got["ceilings"]
  for name in ("prior", "server_model"):  # the honest ones pass
    entry = got[name]["features"]["p_num_0"]
    assert entry["audit"]["ceiling"] == got["ceilings"]["p_num_0"]
    assert not entry["audit"]["violation"], (name, entry)
  assert got["gradmatch"]["features"]["p_num_0"]["audit"]["violation"]


def test_an_underconfident_prior_does_not_fail_a_baseline_at_huge_sigma(tmp_path,
                                                                         monkeypatch):
  """At sigma = 1e6 the ceilings are kappa's mean. The server model, which
  reads no message, made underconfident here (its log-probabilities scaled
  by 0.2: same guesses, flatter probabilities), would fail the audit if
  kappa were its top probability; kappa is raised to its accuracy."""
  from splitjax.attacks import baselines
  real = baselines.server_model

  def flat(*args, **kwargs):
    r = real(*args, **kwargs)
    soften = lambda t: jax.nn.log_softmax(0.2 * jnp.asarray(t), -1)
    return r._replace(log_probs=([soften(t) for t in r.log_probs[0]],
                                 soften(r.log_probs[1])))

  monkeypatch.setattr(baselines, "server_model", flat)
  c = small_config(data__synthetic__num_examples=1600, defence__clip=True,
                   defence__noise=True, defence__noise_multiplier=1e6)
  c.attack.names = ("prior", "server_model")
  c.attack.server_model.num_steps = 100
  out = evaluation.run(c, str(tmp_path / "run"))
  assert out["audit_violations"] == []
  last = out["epochs"]["2"]
  sm = last["server_model"]
  for name in ("p_cat_0", "p_cat_1"):
    f = sm["features"][name]
    assert f["mean_confidence"] < f["accuracy"] - 0.05  # underconfident indeed
    assert last["ceilings"][name] >= f["accuracy"] - 1e-6


def test_bayes_prior_alone_holds_kappa_at_huge_sigma(tmp_path, monkeypatch):
  """At sigma = 1e6 Bayesian EXACT is its prior alone. With the server
  model's guesses scrambled (each record handed the next one's), the 'chain'
  prior, fitted apart from it, guesses better than both baselines: kappa is
  held to that prior-only guess too, or the audit would flag an attack that
  reads nothing."""
  from splitjax.attacks import baselines
  real = baselines.server_model

  def scrambled(*args, **kwargs):
    r = real(*args, **kwargs)
    roll = lambda t: np.roll(np.asarray(t), 1, 0)
    return baselines.Prediction(roll(r.cat), r.num, roll(r.label),
                                ([roll(t) for t in r.log_probs[0]], roll(r.log_probs[1])))

  monkeypatch.setattr(baselines, "server_model", scrambled)
  c = small_config(data__synthetic__num_examples=1600, defence__clip=True,
                   defence__noise=True, defence__noise_multiplier=1e6)
  c.train.num_epochs = 1
  c.attack.names = ("prior", "server_model", "bayes_exact")
  c.attack.bayes.prior = "chain"
  c.attack.server_model.num_steps = 100
  out = evaluation.run(c, str(tmp_path / "run"))
  assert out["audit_violations"] == []
  last = out["epochs"]["1"]
  beaten = 0
  for name in ("p_cat_0", "p_cat_1", "label"):
    get = lambda m: m["label"] if name == "label" else m["features"][name]
    bayes = get(last["bayes_exact"])["accuracy"]
    beaten += bayes > max(get(last[b])["accuracy"] for b in ("prior", "server_model")) + 0.02
    assert last["ceilings"][name] >= bayes - 0.02
  assert beaten  # the case this guards: Bayes's prior beats both baselines


def test_planted_cheat_is_flagged_and_honest_is_not():
  ceiling = audit.gaussian_ceiling(np.full(1000, 0.5), 2 * math.sqrt(3) / 4)  # sigma 4, E 3
  assert audit.check(1.0, 1000, ceiling)["violation"]
  assert not audit.check(ceiling, 1000, ceiling)["violation"]
  assert not audit.check(ceiling + 0.02, 1000, ceiling)["violation"]  # within sampling error


def test_attack_job_fails_loudly_on_a_cheating_attack(tmp_path, monkeypatch):
  c = small_config(data__synthetic__num_examples=1600, defence__clip=True,
                   defence__noise=True, defence__clip_norm=0.05,
                   defence__noise_multiplier=4.0)
  c.attack.names = ("prior", "server_model", "exact", "bayes_exact")
  c.attack.server_model.num_steps = 100
  honest = evaluation.run(c, str(tmp_path / "honest"))
  assert honest["audit_violations"] == []
  entry = honest["epochs"]["2"]["bayes_exact"]["features"]["p_cat_0"]["audit"]
  assert entry["ceiling"] < 1.0

  # The planted cheat: an "attack" handed the private truth.
  from splitjax import data
  truth = data.load(c.data).train
  real = exact.attack_settings

  def cheat(*args, **kwargs):
    r = real(*args, **kwargs)
    shape = r.exact_label.shape
    return r._replace(exact_digits=np.broadcast_to(truth.x_p_cat, shape + (2,)),
                      exact_label=np.broadcast_to(truth.y, shape))

  monkeypatch.setattr(exact, "attack_settings", cheat)
  with pytest.raises(audit.AuditViolation, match="exact p_cat_0: accuracy 1.0000 > ceiling"):
    evaluation.run(c, str(tmp_path / "cheat"))
  assert (tmp_path / "cheat" / "attack_metrics.json").exists()
