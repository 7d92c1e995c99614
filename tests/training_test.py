"""SL/FSL training: determinism, vmap over settings, FedAvg, no recompiles."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from splitjax import data, models, training
from conftest import small_config

ROW = dict(seed=0, clip_norm=0.0, noise_stddev=0.0, label_epsilon=math.inf,
           use_private=1.0)


def _trainer(c):
  ds = data.load(c.data)
  model = models.make_model(ds.schema, c.model)
  spec = training.make_spec(c, model, ds.train)
  return training.Trainer(spec), jax.device_put(ds.train), jax.device_put(ds.test)


@pytest.fixture(scope="module")
def sl():
  return _trainer(small_config())


def _run(trainer, train, test, rows, epochs=2):
  _, history, views = training.train(trainer, train, test,
                                     training.make_settings(rows), epochs)
  return history, views


def test_same_seed_is_bit_identical(sl):
  a, _ = _run(*sl, [ROW])
  b, _ = _run(*sl, [ROW])
  assert a == b
  c, _ = _run(*sl, [dict(ROW, seed=1)])
  assert a != c


def test_vmapped_settings_match_separate_runs(sl):
  rows = [dict(ROW, seed=0), dict(ROW, seed=1, clip_norm=0.5, noise_stddev=0.5),
          dict(ROW, seed=2, label_epsilon=1.0), dict(ROW, seed=3, use_private=0.0)]
  together, _ = _run(*sl, rows)
  for i, row in enumerate(rows):
    alone, _ = _run(*sl, [row])
    for epoch in range(2):
      for k, v in alone[epoch][0].items():
        np.testing.assert_allclose(together[epoch][i][k], v, rtol=2e-4, atol=2e-5)


def test_epochs_do_not_recompile():
  trainer, train, test = _trainer(small_config())
  _run(trainer, train, test, [ROW], epochs=3)
  _run(trainer, train, test, [dict(ROW, seed=5, noise_stddev=2.0)], epochs=1)
  assert trainer._epoch._cache_size() == 1
  assert trainer.evaluate._cache_size() == 1


def test_settings_that_share_a_seed_share_its_shuffle():
  """Trainer.epoch shuffles once per distinct seed and hands each setting its
  seed's rows: the same rows as the setting's own epoch_rows."""
  trainer, train, test = _trainer(small_config(view__capture=True))
  rows = [dict(ROW, seed=3), dict(ROW, seed=1), dict(ROW, seed=3, noise_stddev=1.0)]
  _, views = _run(trainer, train, test, rows, epochs=1)
  ids = np.asarray(views[0].ids)
  for i, r in enumerate(rows):
    np.testing.assert_array_equal(ids[i], training.epoch_rows(trainer.spec, r["seed"], 0))
  assert not (ids[0] == ids[1]).all()


def test_model_learns_and_private_features_help(sl):
  history, _ = _run(*sl, [ROW, dict(ROW, use_private=0.0)], epochs=4)
  split, server_only = history[-1]
  assert split["test_auc"] > 0.75
  assert split["test_auc"] > server_only["test_auc"] + 0.01


def test_view_capture_records_messages_as_sent():
  c = small_config(view__capture=True)
  trainer, train, test = _trainer(c)
  _, views = _run(trainer, train, test, [ROW], epochs=1)
  v = views[0]
  steps, b = 1920 // 64, 64
  assert v.ids.shape == (1, steps, b) and v.messages.shape == (1, steps, b, 8)
  assert sorted(np.asarray(v.ids[0]).ravel().tolist()) == sorted(
      set(np.asarray(v.ids[0]).ravel().tolist()))  # Each record once an epoch.
  np.testing.assert_array_equal(v.step[0], np.arange(steps))
  assert jax.tree.leaves(v.device_params)[0].shape[:3] == (1, steps, 1)


def test_each_tower_takes_its_configured_optimizer():
  # Known first steps on a gradient g: plain SGD moves by -lr g; Adam's
  # first step is about -lr sign(g) whatever g's size (its moments are g and
  # g^2, bias-corrected), which is what lets noise walk a tower at full step.
  c = small_config(train__server_optimizer="sgd", train__server_learning_rate=0.1,
                   train__device_learning_rate=0.01)
  ds = data.load(c.data)
  spec = training.make_spec(c, models.make_model(ds.schema, c.model), ds.train)
  assert (spec.server_optimizer, spec.device_optimizer) == ("sgd", "adam")
  g = jnp.array([2.0, -1e-3, 0.5])
  step = lambda opt: opt.update(g, opt.init(jnp.zeros(3)))[0]
  np.testing.assert_allclose(step(spec.server_opt), -0.1 * g, rtol=1e-6)
  np.testing.assert_allclose(step(spec.device_opt), -0.01 * jnp.sign(g), rtol=1e-4)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_weight_decay_takes_lr_times_lambda_of_each_param_per_step(name):
  # Known answers on params theta: with a zero gradient both optimisers'
  # own step is 0, so the decay alone moves theta by -lr lambda theta; with a
  # gradient the step is the optimiser's own plus that. At lambda 0 the
  # transform is the plain optimiser's, step for step.
  c = small_config(train__server_optimizer=name, train__server_learning_rate=0.1,
                   train__server_weight_decay=2.0)
  ds = data.load(c.data)
  spec = training.make_spec(c, models.make_model(ds.schema, c.model), ds.train)
  plain = training._optimizer(name, 0.1)
  theta, g = jnp.array([1.0, -3.0, 0.25]), jnp.array([2.0, -1e-3, 0.5])
  step = lambda opt, grad: opt.update(grad, opt.init(theta), theta)[0]
  np.testing.assert_allclose(step(spec.server_opt, jnp.zeros(3)), -0.2 * theta, rtol=1e-6)
  np.testing.assert_allclose(step(spec.server_opt, g), step(plain, g) - 0.2 * theta,
                             rtol=1e-6)
  zero = training._optimizer(name, 0.1, 0.0)
  np.testing.assert_array_equal(step(zero, g), step(plain, g))
  assert spec.device_weight_decay == 0.0


def test_binary_auc_matches_pairwise_definition():
  rng = np.random.default_rng(0)
  s = rng.integers(0, 5, 300).astype(np.float32)  # many ties
  y = rng.integers(0, 2, 300)
  pos, neg = s[y == 1], s[y == 0]
  want = ((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())
  np.testing.assert_allclose(training.binary_auc(jnp.asarray(s), jnp.asarray(y)),
                             want, rtol=1e-5)


def test_fedavg_is_mean_of_client_params():
  c = small_config(train__mode="fsl", fsl__num_clients=4, fsl__local_steps=3,
                   fsl__client_batch_size=8)
  trainer, train, _ = _trainer(c)
  spec = trainer.spec
  setting = jax.tree.map(lambda a: a[0], training.make_settings([ROW]))
  state = training.init_state(spec, train.y, setting)
  part = training.client_partition(spec, setting.seed)
  idx = part[:, :3 * 8].reshape(4, 3, 8).transpose(1, 0, 2)
  keys = training.seed_keys(setting.seed)
  new, clients, _ = training.fsl_round(spec, train, setting, keys.noise,
                                       jnp.int32(0), state, idx)
  leaves = jax.tree.leaves(clients)
  assert leaves[0].shape[0] == 4
  # Clients drift apart during local steps...
  assert not np.allclose(leaves[0][0], leaves[0][1])
  # ...and the server's new model is exactly their mean.
  jax.tree.map(lambda avg, cl: np.testing.assert_allclose(avg, np.mean(cl, 0),
                                                          rtol=1e-6, atol=1e-7),
               new.device_params, clients)
  assert int(new.step) == 3


def test_fsl_with_100_clients_trains():
  c = small_config(train__mode="fsl", fsl__num_clients=100, fsl__local_steps=2,
                   fsl__client_batch_size=8, data__synthetic__num_examples=5000)
  trainer, train, test = _trainer(c)
  history, _ = _run(trainer, train, test, [ROW], epochs=2)
  assert history[-1][0]["test_auc"] > 0.6
  assert history[-1][0]["train_loss"] < history[0][0]["train_loss"]
