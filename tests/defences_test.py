"""The message hook's mechanisms (the defences issue adds accounting)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from splitjax import defences


def test_clip_bounds_every_norm_and_keeps_small_messages():
  key = jax.random.key(0)
  m = jnp.concatenate([jax.random.normal(key, (64, 8)) * 10.0,
                       jnp.zeros((1, 8)), jnp.full((1, 8), 1e30),
                       jnp.full((1, 8), 1e-3)])
  out = defences.clip_by_l2_norm(0.5).update(m, key)
  norms = jnp.linalg.norm(out, axis=-1)
  assert float(norms.max()) <= 0.5 * (1 + 1e-6)
  np.testing.assert_allclose(out[-1], m[-1])  # Under the bound: unchanged.
  np.testing.assert_array_equal(out[-3], 0.0)
  np.testing.assert_array_equal(defences.clip_by_l2_norm(0.0).update(m, key), m)


def test_gaussian_noise_statistics():
  # 200k draws: the sample std of N(0, 0.3^2) is within 0.3 * 4/sqrt(2n)
  # (4 standard errors) of 0.3, and the mean within 4 * 0.3/sqrt(n) of 0.
  m = jnp.zeros((1000, 200))
  noisy = defences.add_gaussian_noise(0.3).update(m, jax.random.key(1))
  n = noisy.size
  assert abs(float(noisy.std()) - 0.3) < 4 * 0.3 / np.sqrt(2 * n)
  assert abs(float(noisy.mean())) < 4 * 0.3 / np.sqrt(n)
  other = defences.add_gaussian_noise(0.3).update(m, jax.random.key(2))
  assert not np.allclose(noisy, other)


def test_randomized_response_keep_rate():
  # k = 2, eps = 1: keep w.p. e/(e+1) = 0.7311; 100k draws, 4-sigma band.
  y = jnp.zeros(100_000, jnp.int32)
  out = defences.randomized_response(jax.random.key(3), y, 2, 1.0)
  p = float(jnp.e / (jnp.e + 1))
  assert abs(float((out == 0).mean()) - p) < 4 * np.sqrt(p * (1 - p) / y.size)
  same = defences.randomized_response(jax.random.key(3), y, 2, jnp.inf)
  np.testing.assert_array_equal(same, y)


def test_randomized_response_never_inverts_a_large_epsilon():
  # exp(100) overflows float32: unclamped, keep = inf / inf = nan flipped every label.
  y = jnp.arange(1000, dtype=jnp.int32) % 3
  np.testing.assert_array_equal(defences.randomized_response(jax.random.key(0), y, 3, 100.0), y)


@pytest.mark.parametrize("k", [2, 5])
def test_float32_draws_realise_epsilon_up_to_the_cap(k):
  # The draw keeps a label iff u < keep, u a float32 uniform on the 2^-23 grid,
  # so it keeps w.p. ceil(keep * 2^23) / 2^23: its realised epsilon, against
  # the nominal one that accounting reports.
  u = np.asarray(jax.random.uniform(jax.random.key(1), (100_000,)), np.float64) * 2**23
  np.testing.assert_array_equal(u, np.round(u))

  def realised(eps):
    keep = float(defences.rr_probabilities(jnp.float32(eps), k)[0])
    p_keep = math.ceil(keep * 2**23) / 2**23
    return math.inf if p_keep == 1 else math.log(p_keep * (k - 1) / (1 - p_keep))

  for eps in (1.0, 3.0, defences.MAX_LABEL_EPSILON):
    assert abs(realised(eps) - eps) < 1e-3, (eps, realised(eps))
    keep, other = defences.rr_probabilities(np.float64(eps), k, np)
    assert keep == pytest.approx(float(defences.rr_probabilities(eps, k)[0]), rel=1e-6)
    assert keep + (k - 1) * other == pytest.approx(1.0, abs=1e-12)
  assert abs(realised(15.0) - 15.0) > 0.01 and realised(18.0) == math.inf
