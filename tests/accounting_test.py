"""Accounting: dp-accounting against known answers for this threat model."""

import math

import pytest
from scipy import optimize, stats

from splitjax import accounting
from splitjax.errors import ConfigError


def analytic_gaussian_epsilon(sensitivity, stddev, delta, upper=500.0):
  """Balle & Wang (2018), Theorem 8: the exact epsilon of one Gaussian release,
  solved by bisection here, independently of dp-accounting (e^eps times the
  second tail in logs, for epsilon in the millions)."""
  def delta_of(eps):
    a = sensitivity / (2 * stddev)
    b = eps * stddev / sensitivity
    return (stats.norm.cdf(a - b) - math.exp(eps + stats.norm.logcdf(-a - b))
            - delta)
  return optimize.brentq(delta_of, 1e-9, upper)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 4.0])
def test_single_release_matches_analytic_gaussian(sigma):
  c = 0.1  # sensitivity 2C under replacement, noise sigma * C
  want = analytic_gaussian_epsilon(2 * c, sigma * c, 1e-5)
  got = accounting.epsilon(accounting.cut_layer_event(sigma, 1), 1e-5, "pld")
  assert abs(got - want) <= 0.01 * want, (got, want)
  rdp = accounting.epsilon(accounting.cut_layer_event(sigma, 1), 1e-5, "rdp")
  assert want <= rdp <= 1.15 * want  # RDP is an upper bound, a little looser.


def test_epochs_compose_like_one_gaussian_with_less_noise():
  # E Gaussian releases = one release with noise / sqrt(E) (mu-GDP adds in squares).
  four = accounting.epsilon(accounting.cut_layer_event(2.0, 4), 1e-5)
  one = accounting.epsilon(accounting.cut_layer_event(1.0, 1), 1e-5)
  assert abs(four - one) <= 0.01 * one
  assert accounting.mu_gdp(2.0, 4) == pytest.approx(2.0)


@pytest.mark.parametrize("sigma", [0.05, 1e-3])
def test_small_sigma_is_accounted_on_a_coarser_grid(sigma):
  # Past epsilon 250 the PLD grid's step grows with epsilon (at the default
  # step sigma 0.05 took 2 minutes and 1e-3 asked for petabytes). Five epochs
  # are one release with noise sigma C / sqrt(5); the answer stays within
  # 1e-3 of the exact epsilon (4380 and 1.0e7), and above it. (Measured 2.2e-4
  # and 1.2e-7 above; at the default step sigma 0.05 gives 4381.4634, the
  # coarser grid 4381.4637.)
  c = 0.1
  want = analytic_gaussian_epsilon(2 * c, sigma * c / math.sqrt(5), 1e-5, upper=1e8)
  got = accounting.epsilon(accounting.cut_layer_event(sigma, 5), 1e-5, "pld")
  assert want <= got <= want * (1 + 1e-3), (got, want)


def test_epsilon_past_what_pld_represents_is_a_config_error():
  with pytest.raises(ConfigError, match=r"noise multiplier: epsilon above 1e\+08 "
                     r"\(RDP: 6.6e\+12\) is beyond what the PLD accountant"):
    accounting.epsilon(accounting.cut_layer_event(1e-6, 3), 1e-5)


@pytest.mark.parametrize("eps,k", [(1.0, 2), (3.0, 2), (0.5, 7)])
def test_randomized_response_epsilon_is_exact(eps, k):
  assert accounting.label_epsilon(eps, k) == pytest.approx(eps, abs=1e-12)
  assert math.isinf(accounting.label_epsilon(math.inf, k))


def test_label_epsilon_past_what_float32_draws_realise_is_refused():
  # At 40, keep/other is not even representable in float64 (ZeroDivisionError
  # before): the config check says the same thing first.
  with pytest.raises(ConfigError, match=r"defence.label_epsilon: must be in \(0, 10\] or inf"):
    accounting.label_epsilon(40.0, 2)


@pytest.mark.parametrize("target,epochs", [(1.0, 3), (4.0, 1), (8.0, 5)])
def test_calibration_round_trips(target, epochs):
  sigma = accounting.calibrate_noise_multiplier(target, epochs, 1e-5)
  got = accounting.epsilon(accounting.cut_layer_event(sigma, epochs), 1e-5)
  assert abs(got - target) <= 0.01 * target and got <= target * (1 + 1e-3)


def test_unreachable_target_is_a_config_error():
  with pytest.raises(ConfigError, match="defence.target_epsilon: 1e-05 is below"):
    accounting.calibrate_noise_multiplier(1e-5, 3, 1e-5)
  with pytest.raises(ConfigError, match=r"defence.delta: must be in \(0, 1\)"):
    accounting.calibrate_noise_multiplier(1.0, 3, 1.5)


def test_report_labels_the_dpsgd_number_and_is_inf_without_noise():
  rows = accounting.report(clip_norm=0.1, noise_multiplier=1.0, clip=True,
                           label_epsilon_=1.0, num_classes=2, num_epochs=3,
                           batch_size=256, num_train=32561, delta=1e-5)
  assert [r["epoch"] for r in rows] == [1, 2, 3]
  assert rows[0]["epsilon_pld"] < rows[2]["epsilon_pld"]
  assert rows[2]["epsilon_total"] == pytest.approx(rows[2]["epsilon_pld"] + 1.0)
  # Subsampling amplification makes DP-SGD's number far smaller: the wrong one here.
  assert rows[2]["epsilon_dpsgd_not_this_threat_model"] < rows[2]["epsilon_pld"] / 4
  clip_only = accounting.report(clip_norm=0.1, noise_multiplier=0.0, clip=True,
                                label_epsilon_=math.inf, num_classes=2, num_epochs=1,
                                batch_size=256, num_train=32561, delta=1e-5)
  assert math.isinf(clip_only[0]["epsilon_pld"])
