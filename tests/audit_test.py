"""Audit: ceilings from trade-off functions; a planted cheat is flagged."""

import math

import numpy as np
import pytest
from scipy import stats

from splitjax import audit, evaluation
from splitjax.attacks import exact
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
  caps = audit.ceilings(k, mu=4.0, label_epsilon=0.5)
  assert caps["label"] == pytest.approx(audit.dp_ceiling(k["label"], 0.5))
  assert caps["sex"] == pytest.approx(audit.gaussian_ceiling(k["sex"], 4.0))


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
