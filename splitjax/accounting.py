"""Privacy accounting for the split-learning threat model, with dp-accounting.

Threat model (SPEC §4): the server sees each record's message once per epoch
and knows whose it is. A record's privacy is therefore the composition of E
Gaussian releases with L2 sensitivity 2C under replacement of that record's
(x_p, y), with noise stddev sigma * C, and no amplification by subsampling.

dp-accounting's `GaussianDpEvent(noise_multiplier)` is the Gaussian mechanism
with noise stddev / sensitivity = noise_multiplier. Our stddev / sensitivity is
sigma C / (2 C) = sigma / 2, so each epoch is `GaussianDpEvent(sigma / 2)`;
stated this way the event means the same under any neighbouring relation.

Label DP (k-ary randomized response with epsilon_label, drawn once) is a
separate epsilon_label-DP release of y; the total adds the two epsilons (basic
composition, delta unchanged).

The DP-SGD-style number (Poisson sampling q = B/N, noise multiplier sigma,
add/remove, one event per step) is reported beside these only as what a
DP-SGD accountant would say; it does not match this threat model, because the
server knows which records are in each batch.

This module imports no model code.
"""

from __future__ import annotations

import functools
import math

import dp_accounting
import numpy as np
from absl import logging as absl_logging
from dp_accounting import pld, rdp

from splitjax import defences
from splitjax.errors import ConfigError

ACCOUNTANTS = ("pld", "rdp")
# The PLD accountant's grid step: dp-accounting's default up to epsilon
# PLD_GRID_EPSILON (every committed result), then growing with epsilon, so the
# grid keeps the size, and the seconds, that epsilon costs. At the default
# step a noise multiplier of 0.05 takes 2 minutes an epsilon, and 1e-6 asks
# for petabytes. The discretisation is pessimistic at any step.
PLD_STEP = 1e-4
PLD_GRID_EPSILON = 250.0
# Past this epsilon (by RDP, an upper bound) the PLD grid step would overflow.
MAX_EPSILON = 1e8


def cut_layer_event(noise_multiplier: float, num_epochs: int) -> dp_accounting.DpEvent:
  """E releases of one record's clipped, noised message.

  Guarantee: replace-one neighbouring relation on (x_p, y); L2 sensitivity 2C;
  noise N(0, (sigma C)^2 I); one release per epoch; no subsampling.
  """
  return dp_accounting.SelfComposedDpEvent(
      dp_accounting.GaussianDpEvent(noise_multiplier / 2.0), num_epochs)


def dpsgd_event(noise_multiplier: float, sampling_probability: float,
                num_steps: int) -> dp_accounting.DpEvent:
  """What DP-SGD accounting would assume: Poisson sampling, add/remove."""
  return dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          sampling_probability, dp_accounting.GaussianDpEvent(noise_multiplier)),
      num_steps)


def _accountant(name: str, step: float = PLD_STEP):
  relation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
  if name == "pld":
    return pld.PLDAccountant(relation, value_discretization_interval=step)
  if name == "rdp":
    return rdp.RdpAccountant(neighboring_relation=relation)
  raise ConfigError(f"accountant: unknown {name!r}; known: {list(ACCOUNTANTS)}")


def _pld_step(event: dp_accounting.DpEvent, delta: float) -> float:
  """The PLD grid step for an event (PLD_STEP, or more past PLD_GRID_EPSILON).

  Raises:
    ConfigError: epsilon above MAX_EPSILON (a noise multiplier under 1.5e-4
      for one epoch, 3.3e-4 for five), which the PLD accountant cannot
      represent.
  """
  upper = epsilon(event, delta, "rdp")  # an upper bound, a little above PLD's
  if upper > MAX_EPSILON:
    raise ConfigError(
        f"noise multiplier: epsilon above {MAX_EPSILON:.0e} (RDP: {upper:.3g}) is "
        "beyond what the PLD accountant represents; a sigma of 1e-3 already "
        "makes the noise negligible (scripts/message_energy.py, which does not "
        "account, takes any sigma)")
  return PLD_STEP * max(1.0, upper / PLD_GRID_EPSILON)


def epsilon(event: dp_accounting.DpEvent, delta: float, accountant: str = "pld") -> float:
  """epsilon at delta of an event, from the named accountant (PLD on a grid
  whose step `_pld_step` sets)."""
  acc = _accountant(accountant, _pld_step(event, delta) if accountant == "pld" else PLD_STEP)
  acc.compose(event)
  return float(acc.get_epsilon(delta))


def label_epsilon(epsilon_label: float, num_classes: int) -> float:
  """epsilon of k-ary randomized response under replace-one on y.

  The likelihood ratio of any output between two labels is at most
  keep / other = e^eps_label, so epsilon is computed from the mechanism's own
  probabilities. (dp-accounting's RandomizedResponseDpEvent is defined only
  for add/remove and REPLACE_SPECIAL, i.e. against a uniform output, which
  understates the replace-one epsilon.)

  Raises:
    ConfigError: a finite epsilon_label above defences.MAX_LABEL_EPSILON,
      which the float32 draw does not realise.
  """
  if not defences.label_epsilon_ok(epsilon_label):
    raise ConfigError(f"defence.label_epsilon: must be in (0, "
                      f"{defences.MAX_LABEL_EPSILON:g}] or inf, got {epsilon_label}")
  if math.isinf(epsilon_label):
    return math.inf
  keep, other = defences.rr_probabilities(np.float64(epsilon_label), num_classes, np)
  return float(np.log(keep / other))


def _quietly(fn):
  """Runs fn with absl warnings off: the RDP accountant warns for every order
  it drops at small sigma, which buries the job's own progress lines."""
  level = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    return fn()
  finally:
    absl_logging.set_verbosity(level)


def check_delta(delta: float) -> None:
  if not 0 < delta < 1:
    raise ConfigError(f"defence.delta: must be in (0, 1), got {delta}")


def report(*, clip_norm: float, noise_multiplier: float, clip: bool,
           label_epsilon_: float, num_classes: int, num_epochs: int,
           batch_size: int, num_train: int, delta: float) -> list[dict]:
  """epsilon after each epoch: both accountants, label DP, total, DP-SGD's.

  Without clipping (or without noise) a message's sensitivity is unbounded
  (or it is released exactly): epsilon is inf.
  """
  check_delta(delta)
  rows = []
  eps_label = label_epsilon(label_epsilon_, num_classes)
  private = clip and clip_norm > 0 and noise_multiplier > 0
  steps_per_epoch = num_train // batch_size
  for e in range(1, num_epochs + 1):
    if private:
      eps_pld, eps_rdp, eps_dpsgd = _cut_layer_epsilons(
          noise_multiplier, e, delta, batch_size / num_train, e * steps_per_epoch)
      mu = mu_gdp(noise_multiplier, e)
    else:
      eps_pld = eps_rdp = eps_dpsgd = mu = math.inf
    rows.append({"epoch": e, "delta": delta, "epsilon_pld": eps_pld,
                 "epsilon_rdp": eps_rdp, "mu_gdp": mu,
                 "epsilon_label": eps_label,
                 "epsilon_total": eps_pld + (0.0 if math.isinf(label_epsilon_) else eps_label),
                 "epsilon_dpsgd_not_this_threat_model": eps_dpsgd})
  return rows


@functools.lru_cache(maxsize=256)
def _cut_layer_epsilons(noise_multiplier: float, num_epochs: int, delta: float,
                        sampling_probability: float, steps: int
                        ) -> tuple[float, float, float]:
  """(PLD, RDP, DP-SGD-style) epsilon of the cut layer's releases; cached,
  since a sweep reports one noise multiplier at several label epsilons."""
  ev = cut_layer_event(noise_multiplier, num_epochs)
  return (epsilon(ev, delta, "pld"), epsilon(ev, delta, "rdp"), _quietly(
      lambda: epsilon(dpsgd_event(noise_multiplier, sampling_probability, steps),
                      delta, "rdp")))


def mu_gdp(noise_multiplier: float, num_epochs: int) -> float:
  """mu of E composed Gaussian releases, sensitivity 2C, noise sigma C:
  mu = sqrt(E) * 2C / (sigma C) = 2 sqrt(E) / sigma (Dong, Roth, Su 2019)."""
  if noise_multiplier <= 0:
    return math.inf
  return 2.0 * math.sqrt(num_epochs) / noise_multiplier


def calibrate_noise_multiplier(target_epsilon: float, num_epochs: int, delta: float,
                               accountant: str = "pld", lower: float = 0.05,
                               upper: float = 500.0) -> float:
  """The smallest sigma whose E releases give epsilon <= target at delta.

  Raises:
    ConfigError: the target is out of reach for sigma in [lower, upper].
  """
  check_delta(delta)
  if not target_epsilon > 0:
    raise ConfigError(f"defence.target_epsilon: must be > 0, got {target_epsilon}")
  make_event = lambda sigma: cut_layer_event(sigma, num_epochs)

  def calibrate(name: str, lo: float, hi: float) -> float:
    # One PLD grid for the whole search: the step at its smallest sigma, the
    # coarsest, so every epsilon it compares is at least `epsilon`'s. It is
    # sized once, not for each accountant the search makes.
    step = _pld_step(make_event(lo), delta) if name == "pld" else PLD_STEP
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: _accountant(name, step), make_event, target_epsilon, delta,
        dp_accounting.ExplicitBracketInterval(lo, hi), tol=1e-4))

  reach = epsilon(make_event(upper), delta, accountant)
  if not reach <= target_epsilon:
    raise ConfigError(
        f"defence.target_epsilon: {target_epsilon} is below the epsilon "
        f"{reach:.4g} of the largest noise multiplier searched ({upper}) "
        f"for {num_epochs} epochs at delta {delta}")
  # RDP is cheap at any sigma; PLD costs seconds to minutes at small sigma
  # (large epsilon). RDP's epsilon is never below PLD's, so the RDP answer is
  # an upper end for the PLD search, which then stays near the answer.
  if epsilon(make_event(lower), delta, "rdp") <= target_epsilon:
    return lower
  hi = calibrate("rdp", lower, upper)
  if accountant == "rdp":
    return hi
  lo = hi
  while lo > lower and epsilon(make_event(lo), delta, "pld") <= target_epsilon:
    lo = max(lower, lo * 0.8)
  if lo == hi:
    return hi
  return calibrate("pld", lo, hi)
