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
most likely value) gives a ceiling and the ceilings are averaged. A private
numeric's success is a guess within half a unit of the truth (`laplace_kappa`,
`grid_kappa`, `held_to`). The prior
is estimated, so its kappa is held to what a guess without the mechanism's
output measurably achieves (`kappa_of`). With label
DP the label's ceiling is the tighter of the two. A measured accuracy whose
95 % Wilson interval lies wholly above its ceiling is a violation: a bug in
the mechanism, the accountant or the attack.

The prior is conditional on everything outside the mechanism's neighbouring
relation, which the attacker may know (Hayes et al. fix the rest of the data
set). The Gaussian releases protect a record's whole (x_p, y), so their
kappa_i is the prior given x_s. Randomized response protects y alone: the
record's x_p lies outside it, and the messages may reveal x_p exactly (they
do without noise), so the label's randomized-response kappa_i is the prior
given x_s and x_p. The prior given x_s alone would make that ceiling too
tight wherever x_p predicts y.

What the ceilings cover: the messages and randomized response, as accounted
(splitjax/accounting.py). Under white-box or stale knowledge the server also
holds the device params, which the device updates from its batches' exact
(un-noised) gradients; from the step after a record's first release they
depend on its (x_p, y) through a channel no epsilon here covers (SPEC §4
accounts the messages, as the paper does). The attacks here read those params
only to compute candidate messages, not their updates, so they are held to
the message mechanism's ceilings; an attack that read the updates could
exceed them without a bug. Under label DP the device trains on the noisy
labels, so its params depend on y only through randomized response too, and
the label's randomized-response ceiling covers them.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from splitjax.errors import SplitjaxError


class AuditViolation(SplitjaxError):
  """An attack beat the ceiling its mechanism allows."""


def kappa_of(log_probs: np.ndarray, accuracy: float, mask: np.ndarray) -> np.ndarray:
  """kappa_i, each record's prior success max_v p_i(v), from a prior's log
  probabilities [N, V]; sharpened where they fall short of `accuracy`.

  kappa is the success of the best guess from the prior alone, so on the
  records `mask` its mean can be no lower than the measured accuracy of any
  guess made without the mechanism's output (`accuracy`: the best such
  guess the evaluator has). An underconfident estimate would put the
  ceiling under that guess's own accuracy once mu is small: a baseline that
  reads no message would then fail the audit (Adult's sex at sigma = 1000:
  mean top probability 0.711 against the server model's 0.737). The
  probabilities are then sharpened, p_i ~ p_i^(1/T), with the largest
  T < 1 whose mean kappa on `mask` reaches `accuracy` (each record's most
  likely value stays the same); otherwise they are taken as they are.
  """
  z = np.asarray(log_probs, np.float64)
  z = z - z.max(-1, keepdims=True)

  def at(t):  # max softmax(z / t) = 1 / sum exp(z / t), as z's max is 0
    return 1.0 / np.exp(z / t).sum(-1)

  kappa = at(1.0)
  if not mask.any() or kappa[mask].mean() >= accuracy:
    return kappa
  lo, hi = -12.0, 0.0  # log T: lo reaches it (unless ties cap kappa), hi does not
  sharpest = at(math.exp(lo))
  if sharpest[mask].mean() < accuracy:
    return sharpest
  for _ in range(50):
    mid = (lo + hi) / 2
    if at(math.exp(mid))[mask].mean() >= accuracy:
      lo = mid
    else:
      hi = mid
  return at(math.exp(lo))


def laplace_kappa(scale: float, half_width: float) -> float:
  """kappa of a private numeric, where a guess succeeds within `half_width`
  of the truth (normalised units; the scores' accuracy_within_half_unit),
  under a Laplace prior of `scale` around a regression of x_s (Bayes's prior
  without a grid): the best guess is the centre, which catches
  1 - exp(-half_width / scale) of the mass, for every record alike."""
  return 1.0 if scale <= 0 else 1.0 - math.exp(-half_width / scale)


def grid_kappa(log_prior: np.ndarray, grid, half_width: float,
               block: int = 4096) -> np.ndarray:
  """kappa_i of a private numeric from a prior on its grid [N, G] (log, each
  row normalised): the most mass a guess at a grid value catches within
  `half_width` of it."""
  grid = np.asarray(grid, np.float64)
  lo = np.searchsorted(grid, grid - half_width - 1e-9, "left")
  hi = np.searchsorted(grid, grid + half_width + 1e-9, "right")
  out = []
  for start in range(0, len(log_prior), block):
    p = np.exp(np.asarray(log_prior[start:start + block], np.float64))
    cdf = np.concatenate([np.zeros((len(p), 1)), np.cumsum(p, -1)], -1)
    out.append((cdf[:, hi] - cdf[:, lo]).max(-1))
  return np.clip(np.concatenate(out), 0.0, 1.0)


def held_to(kappa: np.ndarray, accuracy: float, mask: np.ndarray) -> np.ndarray:
  """A numeric's kappa_i held, like `kappa_of`'s, to `accuracy` (the best
  measured prior-only guess's success) on the records `mask`: where its mean
  falls short, every record's failure probability 1 - kappa_i is scaled by
  the same factor until the mean reaches it (the order of the records
  stays); otherwise it is kept as it is."""
  kappa = np.asarray(kappa, np.float64)
  mean = kappa[mask].mean() if mask.any() else 1.0
  if mean >= accuracy:
    return kappa
  return 1.0 - (1.0 - kappa) * (1.0 - accuracy) / (1.0 - mean)


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
             label_kappa_given_private: np.ndarray | None,
             label_name: str = "label") -> dict[str, float]:
  """The ceiling of every private attribute and the label.

  Args:
    kappas: attribute -> per-record prior success probability kappa_i given
      x_s (the Gaussian ceilings' prior).
    mu: mu-GDP of the cut-layer releases so far (inf = no guarantee).
    label_epsilon: epsilon of label randomized response (inf = none).
    label_kappa_given_private: [records] the label's kappa_i given x_s and
      x_p, the randomized-response ceiling's prior (module docstring); may
      be None without label DP (label_epsilon = inf).
  """
  if math.isfinite(label_epsilon) and label_kappa_given_private is None:
    raise ValueError("ceilings: label DP needs label_kappa_given_private")
  out = {}
  for name, kappa in kappas.items():
    c = gaussian_ceiling(kappa, mu)
    if name == label_name and math.isfinite(label_epsilon):
      c = min(c, dp_ceiling(label_kappa_given_private, label_epsilon))
    out[name] = c
  return out
