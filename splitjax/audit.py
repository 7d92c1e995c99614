"""The privacy audit: the most any attack may achieve under a mechanism.

Hayes, Mahloujifar, Balle (2023), "Bounding data reconstruction attacks with
the hypothesis testing interpretation of differential privacy": if a mechanism
has trade-off function f, any reconstruction attack whose success the
attacker's prior alone would give with probability kappa succeeds with
probability at most 1 - f(kappa).

- Gaussian releases (mu-GDP, Dong, Roth, Su 2019): f(a) = Phi(Phi^-1(1 - a) - mu),
  mu = 2 sqrt(E) / sigma for E releases with sensitivity 2C and noise sigma C.
- Randomized response (eps-DP): f(a) = max(0, 1 - e^eps a, e^-eps (1 - a)).

With a per-record prior, each record's kappa_i (the prior's probability of its
most likely value) gives a ceiling and the ceilings are averaged. With label
DP the label's ceiling is the tighter of the two. A measured accuracy whose
95 % Wilson interval lies wholly above its ceiling is a violation: a bug in
the mechanism, the accountant or the attack.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from splitjax.errors import SplitjaxError


class AuditViolation(SplitjaxError):
  """An attack beat the ceiling its mechanism allows."""


def gaussian_ceiling(kappa: np.ndarray, mu: float) -> float:
  """mean_i 1 - f_mu(kappa_i) for mu-GDP."""
  kappa = np.clip(np.asarray(kappa, np.float64), 0.0, 1.0)
  if math.isinf(mu):
    return 1.0
  return float(np.mean(stats.norm.cdf(stats.norm.ppf(kappa) + mu)))


def dp_ceiling(kappa: np.ndarray, epsilon: float) -> float:
  """mean_i 1 - f_eps(kappa_i) for eps-DP (delta = 0)."""
  kappa = np.clip(np.asarray(kappa, np.float64), 0.0, 1.0)
  if math.isinf(epsilon):
    return 1.0
  return float(np.mean(np.minimum.reduce([
      np.ones_like(kappa), math.exp(epsilon) * kappa,
      1.0 - math.exp(-epsilon) * (1.0 - kappa)])))


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
  """The 95 % Wilson score interval of a binomial proportion."""
  if n == 0:
    return 0.0, 1.0
  p = successes / n
  denom = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  return centre - half, centre + half


def check(accuracy: float, n: int, ceiling: float) -> dict:
  """The audit entry of one measured accuracy against its ceiling."""
  lo, hi = wilson_interval(int(round(accuracy * n)), n)
  return {"ceiling": ceiling, "accuracy": accuracy, "interval_95": [lo, hi],
          "violation": bool(lo > ceiling + 1e-12)}


def ceilings(kappas: dict[str, np.ndarray], mu: float, label_epsilon: float,
             label_name: str = "label") -> dict[str, float]:
  """The ceiling of every private attribute and the label.

  Args:
    kappas: attribute -> per-record prior success probability kappa_i.
    mu: mu-GDP of the cut-layer releases so far (inf = no guarantee).
    label_epsilon: epsilon of label randomized response (inf = none).
  """
  out = {}
  for name, kappa in kappas.items():
    c = gaussian_ceiling(kappa, mu)
    if name == label_name:
      c = min(c, dp_ceiling(kappa, label_epsilon))
    out[name] = c
  return out
