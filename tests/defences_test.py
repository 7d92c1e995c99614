"""The message hook's mechanisms (the defences issue adds accounting)."""

import jax
import jax.numpy as jnp
import numpy as np

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
